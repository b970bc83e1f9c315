"""Where does preprocess's conversion time go, and what would scale better on few cores?

    python benchmarks/profile_preprocess.py [--raw-dir benchmarks/work/data-6000/raw]
    python benchmarks/profile_preprocess.py --only-tfdata     # alternative B, in a fresh process
    python benchmarks/profile_preprocess.py --only-tfdata --histogram-levels   # B with profile_imaging's levels

--histogram-levels replaces imaging._levels (a full tf.sort per image) by profile_imaging.levels_histogram
(the same values from a 256-bin histogram) in this process: the in-process variants show its effect.

Times, on the planned samples of the benchmark's raw words (images read into memory first):
- steps.convert as it is: a spawn pool of N processes (start-up = each worker importing TensorFlow),
  then the conversion with the warm pool; and N=1 in-process;
- alternative A: a forkserver pool whose server preloads TensorFlow once (workers fork from it);
- alternative B: no processes at all: imaging.preprocess_bytes in a tf.data map with
  num_parallel_calls=AUTOTUNE in this process (TF ops release the GIL, so they use every core).
Nothing in steps/ is modified; the alternatives call the same steps.imaging / steps.convert code.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _ready(_):
    time.sleep(0.2)
    return os.getpid()


def load_pairs(raw: Path | None):
    if raw is None:
        sys.path.insert(0, str(HERE))
        from run import latest_data_root

        raw = latest_data_root() / "raw"
    from steps import config, convert, iam

    d = config.defaults("preprocess")
    words, _ = iam.parse_words((raw / config.WORDS_TXT).read_text(encoding="utf-8").splitlines())
    writers = iam.parse_forms((raw / config.FORMS_TXT).read_text().splitlines())
    samples, _, _, _ = convert.plan(words, writers, d["split"], float(d["train_ratio"]), float(d["val_ratio"]),
                                    int(d["seed"]), int(d["max_label_length"]), False, int(d["shard_size"]))
    by_id = {s.id: s for s in samples}
    return [(by_id[i], data) for i, data in iam.iter_images(raw / config.WORDS_ARCHIVE, set(by_id))]


def pool_run(context: str, workers: int, chunks, h: int, w: int) -> tuple[float, float]:
    from steps import convert

    ctx = mp.get_context(context)
    if context == "forkserver":
        ctx.set_forkserver_preload(["tensorflow", "steps.convert", "steps.imaging"])
    t0 = time.perf_counter()
    pool = ctx.Pool(workers, convert._init_worker, (h, w))
    seen: set[int] = set()
    while len(seen) < workers:
        seen |= set(pool.map(_ready, range(workers * 2), chunksize=1))
    startup = time.perf_counter() - t0 - 0.2
    t0 = time.perf_counter()
    for _ in pool.imap(convert._convert_chunk, chunks, chunksize=1):
        pass
    warm = time.perf_counter() - t0
    pool.terminate()
    return startup, warm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-dir", type=Path, help="default: the latest benchmark data's raw/")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    a = p.parse_args()
    from steps import config, convert

    d = config.defaults("preprocess")
    h, w = int(d["image_height"]), int(d["image_width"])
    pairs = load_pairs(a.raw_dir)
    n = len(pairs)
    chunks = list(convert._chunks(pairs, 64))
    print(f"{n} images, {a.workers} workers\n{'variant':58s} {'start-up s':>10s} {'convert s':>9s} {'images/s incl. start-up':>24s}")

    def show(name, startup, warm):
        print(f"{name:58s} {startup:10.2f} {warm:9.2f} {n / (startup + warm):24.0f}", flush=True)

    show(f"steps.convert, spawn pool of {a.workers}", *pool_run("spawn", a.workers, chunks, h, w))
    show(f"alternative A: forkserver pool of {a.workers}, TF preloaded", *pool_run("forkserver", a.workers, chunks, h, w))

    # In-process, after the pools (this process then has TF thread pools: forking is no longer safe).
    import tensorflow as tf

    from steps import imaging

    t0 = time.perf_counter()
    convert._init_worker(h, w)           # sets this process to 1 TF thread: exactly workers=1
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for chunk in chunks:
        convert._convert_chunk(chunk)
    show("steps.convert, workers=1 (in process)", startup, time.perf_counter() - t0)
    print("(alternative B needs a process with default TF threading: run it with --only-tfdata)")


def tfdata_only(raw: Path) -> None:
    """Alternative B in a fresh process (TF threading must not have been pinned to 1 thread)."""
    import numpy as np
    import tensorflow as tf

    from steps import config, imaging

    d = config.defaults("preprocess")
    h, w = int(d["image_height"]), int(d["image_width"])
    pairs = load_pairs(raw)
    n = len(pairs)
    data = [p[1] for p in pairs if p[1]]   # convert skips empty files before decoding too
    t0 = time.perf_counter()
    ds = tf.data.Dataset.from_generator(lambda: iter(data), output_signature=tf.TensorSpec([], tf.string))
    ds = ds.map(lambda b: imaging.preprocess_bytes(b, h, w), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).ignore_errors().prefetch(64)   # convert counts corrupt files and skips them
    count = 0
    from steps import tfrecords

    for canvas in ds.as_numpy_iterator():
        tfrecords.serialize("x", "w", "t", canvas)   # the parent's share of convert's work
        count += 1
    seconds = time.perf_counter() - t0
    print(f"{'alternative B: tf.data map, AUTOTUNE, one process':58s} {0.0:10.2f} {seconds:9.2f} {n / seconds:24.0f}")


if __name__ == "__main__":
    if "--histogram-levels" in sys.argv:
        sys.argv.remove("--histogram-levels")
        sys.path.insert(0, str(HERE))
        from profile_imaging import levels_histogram

        from steps import imaging

        imaging._levels = levels_histogram
        print("imaging._levels replaced by profile_imaging.levels_histogram (in-process variants only)")
    if "--only-tfdata" in sys.argv:
        sys.argv.remove("--only-tfdata")
        p = argparse.ArgumentParser()
        p.add_argument("--raw-dir", type=Path, help="default: the latest benchmark data's raw/")
        tfdata_only(p.parse_args().raw_dir)
    else:
        main()
