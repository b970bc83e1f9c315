"""Where does imaging.preprocess_bytes spend its time, and is a histogram a drop-in for its sort?

    python benchmarks/profiles/profile_imaging.py [--words-dir benchmarks/work/data-6000/words] [--images 200]

preprocess_bytes runs once per image in preprocess (conversion), in the exported model (serve, infer,
mlflow models serve). This times its stages inside one graph (tf.map_fn over a batch of PNGs, so
Python call overhead is not counted), then checks on every word image of the benchmark that
`levels_histogram` returns exactly what imaging._levels returns (grey levels are integers 0..255, so
the k-th smallest value is read off a 256-bin cumulative histogram: O(n) instead of a full tf.sort).
Nothing in steps/ is modified.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from steps.inference import imaging  # noqa: E402


def levels_histogram(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The suggested imaging._levels: same (90th, 1st percentile) pixels of an integer-valued float image."""
    counts = tf.math.bincount(tf.reshape(tf.cast(x, tf.int32), [-1]), minlength=256, maxlength=256)
    below_or_at = tf.cumsum(counts)
    n = tf.size(x)

    def kth(k):  # the k-th smallest value (0-based) = the first grey level whose cumulative count exceeds k
        return tf.cast(tf.argmax(below_or_at > k, output_type=tf.int32), tf.float32)

    return kth((n * 9) // 10), kth(n // 100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--words-dir", type=Path, help="default: the latest benchmark data's words/")
    p.add_argument("--images", type=int, default=200)
    a = p.parse_args()
    if a.words_dir is None:
        from harness import latest_data_root

        a.words_dir = latest_data_root() / "words"
    files = sorted(a.words_dir.rglob("*.png"))
    data = [f.read_bytes() for f in files]
    data = [d for d in data if d]

    def decodable(d):
        try:
            imaging.decode_grayscale(tf.constant(d))
            return True
        except tf.errors.OpError:
            return False

    sample = [d for d in data[: a.images + 5] if decodable(d)][: a.images]
    batch = tf.constant(sample)

    def per_image_us(fn) -> float:
        g = tf.function(
            lambda b: tf.map_fn(
                lambda d: tf.reduce_sum(fn(d)), b, fn_output_signature=tf.float32, parallel_iterations=1
            )
        )
        g(batch)
        t0 = time.perf_counter()
        for _ in range(5):
            g(batch)
        return (time.perf_counter() - t0) / 5 / len(sample) * 1e6

    gray = lambda d: tf.cast(imaging.decode_grayscale(d), tf.float32)  # noqa: E731
    rows = [
        ("decode (PNG -> grayscale)", per_image_us(gray)),
        ("decode + imaging._levels (tf.sort)", per_image_us(lambda d: tf.stack(imaging._levels(gray(d))))),
        ("decode + levels_histogram (suggested)", per_image_us(lambda d: tf.stack(levels_histogram(gray(d))))),
        (
            "imaging.preprocess_bytes (all of it)",
            per_image_us(lambda d: tf.cast(imaging.preprocess_bytes(d, 32, 128), tf.float32)),
        ),
    ]
    print(f"{len(sample)} word images, one graph call, single thread\n{'stage':48s} {'us/image':>9s}")
    for name, us in rows:
        print(f"{name:48s} {us:9.0f}")

    old = tf.function(lambda d: tf.stack(imaging._levels(gray(d))), input_signature=[tf.TensorSpec([], tf.string)])
    new = tf.function(lambda d: tf.stack(levels_histogram(gray(d))), input_signature=[tf.TensorSpec([], tf.string)])
    checked = mismatches = 0
    for d in data:
        try:
            want = old(tf.constant(d)).numpy().tolist()
        except tf.errors.OpError:
            continue
        checked += 1
        mismatches += want != new(tf.constant(d)).numpy().tolist()
    print(f"\nlevels_histogram vs imaging._levels on {checked} images: {mismatches} differences")


if __name__ == "__main__":
    main()
