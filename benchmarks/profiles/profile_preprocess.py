"""Where does preprocess's conversion time go, and what would scale better on few cores?

    python benchmarks/profiles/profile_preprocess.py [--raw-dir benchmarks/work/data-6000/raw] [--workers N]
    python benchmarks/profiles/profile_preprocess.py --only-tfdata     # alternative B, in a fresh process

Times, on the samples that steps.dataset.plan plans for the benchmark's raw words (images read into
memory first, with the helpers of the benchmark's convert_profile phase in benchmarks/phases.py):
- steps.dataset.convert as it is: a spawn pool of N processes (start-up = each worker importing
  TensorFlow), then the conversion with the warm pool; and N=1 in-process;
- alternative A: the same worker functions in a forkserver pool whose server preloads TensorFlow once
  (workers fork from it; the start method and the preload are parameters of phases.pool_run);
- alternative B: no processes at all: imaging.preprocess_bytes in a tf.data map with
  num_parallel_calls=AUTOTUNE in this process (TF ops release the GIL, so they use every core), and
  tfrecords.serialize of each canvas (the parent's share of convert's work).
Nothing in steps/ is modified or copied; every variant calls steps.dataset / steps.inference code.
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

import phases  # noqa: E402


def load_pairs(raw: Path | None, workers: int) -> tuple[list, int, int]:
    """(Sample, bytes) of the planned samples of `raw` (default: the latest benchmark data) and the canvas size."""
    if raw is None:
        from harness import latest_data_root

        raw = latest_data_root() / "raw"
    cfg = phases.preprocess_config(workers)
    return phases.read_images(raw, phases.planned_samples(raw, cfg)), cfg.image_height, cfg.image_width


def show(name: str, n: int, startup: float, warm: float) -> None:
    print(f"{name:58s} {startup:10.2f} {warm:9.2f} {n / (startup + warm):24.0f}", flush=True)


def pools(raw: Path | None, workers: int) -> None:
    from steps.dataset import convert

    pairs, h, w = load_pairs(raw, workers)
    n = len(pairs)
    chunks = list(convert._chunks(pairs, 64))
    print(
        f"{n} images, {workers} workers\n{'variant':58s} {'start-up s':>10s} {'convert s':>9s} "
        f"{'images/s incl. start-up':>24s}"
    )
    show(f"steps.dataset.convert, spawn pool of {workers}", n, *phases.pool_run("spawn", workers, chunks, h, w))
    preload = ["tensorflow", "steps.dataset.convert", "steps.inference.imaging"]
    show(
        f"alternative A: forkserver pool of {workers}, TF preloaded",
        n,
        *phases.pool_run("forkserver", workers, chunks, h, w, preload),
    )
    # In-process, after the pools (this process then has TF thread pools: forking is no longer safe).
    show("steps.dataset.convert, workers=1 (in process)", n, *phases.in_process_run(chunks, h, w))
    print("(alternative B needs a process with default TF threading: run it with --only-tfdata)")


def tfdata_only(raw: Path | None) -> None:
    """Alternative B in a fresh process (TF threading must not have been pinned to 1 thread)."""
    import tensorflow as tf

    from steps.dataset import tfrecords
    from steps.inference import imaging

    pairs, h, w = load_pairs(raw, 0)
    n = len(pairs)
    data = [p[1] for p in pairs if p[1]]  # convert skips empty files before decoding too
    t0 = time.perf_counter()
    ds = tf.data.Dataset.from_generator(lambda: iter(data), output_signature=tf.TensorSpec([], tf.string))
    ds = (
        ds.map(lambda b: imaging.preprocess_bytes(b, h, w), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .prefetch(64)
    )  # convert counts corrupt files and skips them
    for canvas in ds.as_numpy_iterator():
        tfrecords.serialize("x", "w", "t", canvas)
    seconds = time.perf_counter() - t0
    print(f"{'alternative B: tf.data map, AUTOTUNE, one process':58s} {0.0:10.2f} {seconds:9.2f} {n / seconds:24.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-dir", type=Path, help="default: the latest benchmark data's raw/")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--only-tfdata", action="store_true", help="run alternative B alone (in this fresh process)")
    a = p.parse_args()
    if a.only_tfdata:
        tfdata_only(a.raw_dir)
    else:
        pools(a.raw_dir, a.workers)


if __name__ == "__main__":
    main()
