"""The measured phases of benchmarks/run.py, each run in its own child process.

    python benchmarks/phases.py <phase> <arguments.json> <result.json>

A fresh process per phase keeps TensorFlow's thread pools, caches and memory of one measurement out
of the next, and lets the harness sample each phase's RSS and CPU from outside. Every phase writes its
figures as JSON to <result.json>. This module holds the data phases (generate, preprocess,
convert_profile, input); the training phases are in train_phases.py, the quality comparison with the
Keras IAM example in versus_keras.py. Everything measured is the
library's own code (steps.sources, steps.dataset, steps.training), configured with MLproject's defaults.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train_phases import phase_train, phase_train_compare  # noqa: E402
from versus_keras import phase_quality_vs_keras  # noqa: E402

# ------------------------------------------------------------------------------------------ helpers


def preprocess_config(workers: int):
    """The PreprocessConfig of MLproject's preprocess defaults (what the preprocess step runs) with `workers`."""
    from steps.dataset.plan import PreprocessConfig
    from steps.workflow import config

    return PreprocessConfig.from_params({**config.defaults("preprocess"), "workers": workers})


def planned_samples(raw: Path, cfg) -> dict:
    """{id: Sample} of every sample that steps.dataset.plan plans for the raw words in `raw`."""
    from steps.dataset import iam_format
    from steps.dataset.plan import plan
    from steps.workflow import config

    words, _ = iam_format.parse_words((raw / config.WORDS_TXT).read_text(encoding="utf-8").splitlines())
    writers = iam_format.parse_forms((raw / config.FORMS_TXT).read_text().splitlines())
    samples, _, _, _ = plan(words, writers, cfg)
    return {s.id: s for s in samples}


def read_images(raw: Path, by_id: dict) -> list:
    """(Sample, encoded bytes) of the planned samples, streamed from the words archive into memory."""
    from steps.dataset import iam_format
    from steps.workflow import config

    return [(by_id[i], data) for i, data in iam_format.iter_images(raw / config.WORDS_ARCHIVE, set(by_id))]


def converter_run(pairs: list, height: int, width: int, parallel: int) -> tuple[float, float]:
    """steps.dataset.convert's StreamConverter over in-memory (sample, bytes), `parallel` images at a time
    -> (start-up s, conversion s)."""
    from steps.dataset import convert

    t0 = time.perf_counter()
    converter = convert.StreamConverter(height, width, parallel)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in converter(pairs):
        pass
    return startup, time.perf_counter() - t0


class Passes:
    """An endless stream read as steps.train's fit reads its training stream: one iterator for the whole fit,
    an epoch the next `steps` batches of it. (A new iterator per epoch, as Keras makes for a finite
    dataset, would pay the stream's set-up each epoch: ~50 ms of graph optimization for the warp map.)"""

    persistent = True  # it buffers ahead while other pipelines take their turn

    def __init__(self, ds, steps: int):
        self._ds, self._steps, self._it = ds, steps, None

    def __iter__(self):
        if self._it is None:
            self._it = iter(self._ds)
        return itertools.islice(self._it, self._steps)


def _epoch(ds) -> tuple[int, float]:
    """One full epoch: through a new iterator for a dataset (as Keras fit does each epoch for a finite one),
    the next pass of a Passes -> (images, seconds)."""
    count = 0
    t0 = time.perf_counter()
    for batch in ds:
        x = batch[0] if isinstance(batch, tuple) else batch["image"]
        count += int(x.shape[0])
    return count, time.perf_counter() - t0


def _time_epochs(
    makers: dict,
    min_warm_seconds: float,
    min_warm_epochs: int,
    max_epochs: int,
    slice_seconds: float = 0.25,
    min_turns: int = 3,
) -> dict:
    """Epoch 1 of each pipeline is cold (start-up, cache filling); then the pipelines take turns, each
    running whole epochs for about `slice_seconds` per turn, until each has `min_warm_seconds` of warm
    epochs and `min_turns` turns: load from other processes on a shared machine then falls on all of them
    alike. Each pipeline's turns are kept as (images, seconds): the n-th turns of two pipelines are a round of
    the two taking turns (comparisons compares them round by round). A persistent pipeline (Passes) reads one
    uncounted epoch at the start of each turn."""
    datasets = {name: make() for name, make in makers.items()}
    epochs: dict[str, list[tuple[int, float]]] = {name: [_epoch(ds)] for name, ds in datasets.items()}
    turns: dict[str, list[tuple[int, float]]] = {name: [] for name in datasets}

    def warm(name):
        return sum(e[1] for e in epochs[name][1:])

    def done(name):
        n = len(epochs[name]) - 1
        enough = n >= min_warm_epochs and warm(name) >= min_warm_seconds and len(turns[name]) >= min_turns
        return n >= max_epochs or enough

    while not all(done(n) for n in datasets):
        for name, ds in datasets.items():
            if done(name):
                continue
            if getattr(ds, "persistent", False):
                _epoch(ds)  # not counted: it reads what the stream buffered during the others' turns
            first = len(epochs[name])
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < slice_seconds and len(epochs[name]) - 1 < max_epochs:
                epochs[name].append(_epoch(ds))
            if turn := epochs[name][first:]:
                turns[name].append((sum(i for i, _ in turn), sum(s for _, s in turn)))
    out = {}
    for name, es in epochs.items():
        rates = [i / s for i, s in es[1:]]
        out[name] = {
            "cold_images_per_second": es[0][0] / es[0][1],
            # Steady state: all warm images over all warm time (robust to one slow epoch), and the median epoch.
            "steady_images_per_second": sum(i for i, _ in es[1:]) / sum(s for _, s in es[1:]),
            "median_epoch_images_per_second": statistics.median(rates),
            "turns": [[i, round(s, 5)] for i, s in turns[name]],
            "epochs": len(es),
            "images_per_epoch": es[0][0],
            "cold_epoch_seconds": round(es[0][1], 4),
            "warm_seconds": round(warm(name), 3),
        }
    return out


# ------------------------------------------------------------------------------------------- phases


def phase_generate(args: dict) -> dict:
    from steps.sources import synthetic

    t0 = time.perf_counter()
    counts = synthetic.generate(
        Path(args["raw_dir"]), args["num_words"], args["num_writers"], args["seed"], progress=False
    )
    return {"counts": counts, "seconds": time.perf_counter() - t0}


def phase_preprocess(args: dict) -> dict:
    """steps.dataset.build.build with `workers` (0 = all cores), exactly as the preprocess step calls it."""
    from steps.dataset.build import build

    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.unlink()
    t0 = time.perf_counter()
    stats = build(Path(args["raw_dir"]), out, preprocess_config(args["workers"]), progress=False)
    wall = time.perf_counter() - t0
    kept = sum(stats["samples"].values())
    return {
        "workers": args["workers"],
        "processes": args["workers"] or os.cpu_count(),
        "images": kept,
        "convert_seconds": stats["seconds"],
        "images_per_second": stats["images_per_second"],
        "build_seconds": wall,
        "build_images_per_second": kept / wall,
        "samples": stats["samples"],
    }


def phase_convert_profile(args: dict) -> dict:
    """Where preprocess's time goes: archive streaming alone, and conversion of the images in memory.

    Uses steps.dataset.convert's own StreamConverter on the samples that build plans, with the images read
    into memory first so the archive is not in the loop.
    """

    cfg = preprocess_config(args["workers"])
    by_id = planned_samples(Path(args["raw_dir"]), cfg)
    t0 = time.perf_counter()
    pairs = read_images(Path(args["raw_dir"]), by_id)
    stream_seconds = time.perf_counter() - t0
    out = {
        "images": len(pairs),
        "archive_stream_seconds": stream_seconds,
        "archive_stream_images_per_second": len(pairs) / stream_seconds,
    }
    workers = args["workers"] or os.cpu_count()
    h, w = cfg.image_height, cfg.image_width
    out["startup_seconds"], out["warm_seconds"] = converter_run(pairs, h, w, workers)
    out["workers"] = workers
    out["warm_images_per_second"] = len(pairs) / out["warm_seconds"]
    return out


def phase_input(args: dict) -> dict:
    """images/s delivered by our reader (eval and augmenting train) and by the Keras example's pipeline."""
    import keras_baseline as kb
    import tensorflow as tf

    from steps.dataset.info import DatasetInfo
    from steps.training import inputs

    data_dir, bs = args["data_dir"], args["batch_size"]
    info = DatasetInfo.load(data_dir)

    def keras(cache):
        return lambda: kb.for_training_split(data_dir, args["raw_dir"], args["words_dir"], bs, cache)[1]

    def augmenting():
        return inputs.batches(info, "train", bs, training=True, seed=42)

    # Each pipeline read as its own training reads it: Keras fit makes a new iterator per epoch of the Keras
    # example's finite dataset and of our eval reader (evaluate, validation); steps.train's fit reads one
    # iterator of the repeated training stream for the whole fit (Passes). The augmenting stream is also timed
    # with a new iterator per epoch, to show what that would cost.
    makers = {
        "ours_eval": lambda: inputs.batches(info, "train", bs, training=False),
        "ours_train_augment": lambda: Passes(augmenting().repeat(), -(-info.samples["train"] // bs)),
        "ours_train_augment_new_iterator": augmenting,
        "keras_per_epoch_decode": keras(False),
        "keras_as_published_cache": keras(True),
    }
    results = _time_epochs(makers, args["min_warm_seconds"], args["min_warm_epochs"], args["max_epochs"])
    results["tf_version"] = tf.__version__
    results["images"] = info.samples["train"]
    return results


PHASES = {
    "generate": phase_generate,
    "preprocess": phase_preprocess,
    "convert_profile": phase_convert_profile,
    "input": phase_input,
    "train": phase_train,
    "train_compare": phase_train_compare,
    "quality_vs_keras": phase_quality_vs_keras,
}

if __name__ == "__main__":
    name, args_file, result_file = sys.argv[1:4]
    result = PHASES[name](json.loads(Path(args_file).read_text()))
    Path(result_file).write_text(json.dumps(result, indent=1, default=str))
