"""The measured phases of benchmarks/run.py, each run in its own child process.

    python benchmarks/phases.py <phase> <arguments.json> <result.json>

A fresh process per phase keeps TensorFlow's thread pools, caches and memory of one measurement out
of the next, and lets run.py sample each phase's RSS and CPU from outside. Every phase writes its
figures as JSON to <result.json>. The orchestrator (run.py) never imports TensorFlow.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ------------------------------------------------------------------------------------------ helpers

class PeakRSS:
    """Peak RSS of this process, sampled every `interval` seconds in a thread (between start and stop)."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def train_split(data_dir: str) -> tuple[list[str], list[str]]:
    """(ids, texts) of the training split, from the dataset's manifest (the images our shards hold)."""
    import pyarrow.parquet as pq

    from steps import config

    table = pq.read_table(f"{data_dir}/{config.MANIFEST_FILE}").to_pydict()
    rows = [(i, t) for i, t, s in zip(table["id"], table["text"], table["split"]) if s == "train"]
    return [r[0] for r in rows], [r[1] for r in rows]


def baseline_dataset(data_dir: str, raw_dir: str, words_dir: str, batch_size: int, cache: bool):
    """The Keras example's pipeline over the PNG files of exactly our training split."""
    import keras_baseline as kb

    ids, _ = train_split(data_dir)
    wanted = set(ids)
    lines = [line for line in Path(raw_dir, "words.txt").read_text(encoding="utf-8").splitlines(keepends=True)
             if line[:1] != "#" and line.split(" ", 1)[0] in wanted]
    # The example keeps only `ok` lines; ours already excludes err lines (keep_err=false), so this is a no-op
    # kept for faithfulness.
    lines = [line for line in lines if line.split(" ")[1] != "err"]
    paths, samples = kb.get_image_paths_and_labels(lines, words_dir)
    labels = kb.clean_labels(samples)
    pipe = kb.KerasExamplePipeline(labels, batch_size=batch_size)
    return pipe, pipe.prepare_dataset(paths, labels, cache=cache), len(paths)


def _epoch(ds) -> tuple[int, float]:
    """One full epoch through a new iterator (as Keras fit does each epoch) -> (images, seconds)."""
    count = 0
    t0 = time.perf_counter()
    for batch in ds:
        x = batch[0] if isinstance(batch, tuple) else batch["image"]
        count += int(x.shape[0])
    return count, time.perf_counter() - t0


def _time_epochs(makers: dict, min_warm_seconds: float, min_warm_epochs: int, max_epochs: int,
                 slice_seconds: float = 0.25) -> dict:
    """Epoch 1 of each pipeline is cold (start-up, cache filling); then the pipelines take turns, each
    running whole epochs for about `slice_seconds` per turn, until each has `min_warm_seconds` of warm
    epochs: load from other processes on a shared machine then falls on all of them alike."""
    datasets = {name: make() for name, make in makers.items()}
    epochs: dict[str, list[tuple[int, float]]] = {name: [_epoch(ds)] for name, ds in datasets.items()}

    def warm(name):
        return sum(e[1] for e in epochs[name][1:])

    def done(name):
        n = len(epochs[name]) - 1
        return n >= max_epochs or (n >= min_warm_epochs and warm(name) >= min_warm_seconds)

    while not all(done(n) for n in datasets):
        for name, ds in datasets.items():
            if done(name):
                continue
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < slice_seconds and not done(name):
                epochs[name].append(_epoch(ds))
    out = {}
    for name, es in epochs.items():
        rates = [i / s for i, s in es[1:]]
        out[name] = {
            "cold_images_per_second": es[0][0] / es[0][1],
            # Steady state: all warm images over all warm time (robust to one slow epoch), and the median epoch.
            "steady_images_per_second": sum(i for i, _ in es[1:]) / sum(s for _, s in es[1:]),
            "median_epoch_images_per_second": statistics.median(rates),
            "epochs": len(es), "images_per_epoch": es[0][0],
            "cold_epoch_seconds": round(es[0][1], 4), "warm_seconds": round(warm(name), 3),
        }
    return out


# ------------------------------------------------------------------------------------------- phases

def phase_generate(args: dict) -> dict:
    from steps import synthetic

    t0 = time.perf_counter()
    counts = synthetic.generate(Path(args["raw_dir"]), args["num_words"], args["num_writers"], args["seed"],
                                progress=False)
    return {"counts": counts, "seconds": time.perf_counter() - t0}


def phase_preprocess(args: dict) -> dict:
    """preprocess.build with `workers` (0 = all cores), exactly as the preprocess step calls it."""
    from steps import config, preprocess

    d = config.defaults("preprocess")
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.unlink()
    t0 = time.perf_counter()
    stats = preprocess.build(Path(args["raw_dir"]), out, d["split"], float(d["train_ratio"]), float(d["val_ratio"]),
                             int(d["seed"]), int(d["image_height"]), int(d["image_width"]),
                             int(d["max_label_length"]), str(d["keep_err"]).lower() == "true",
                             int(d["shard_size"]), args["workers"], progress=False)
    wall = time.perf_counter() - t0
    kept = sum(stats["samples"].values())
    return {"workers": args["workers"], "processes": args["workers"] or os.cpu_count(), "images": kept,
            "convert_seconds": stats["seconds"], "images_per_second": stats["images_per_second"],
            "build_seconds": wall, "build_images_per_second": kept / wall, "samples": stats["samples"]}


def _ready(_):
    time.sleep(0.2)
    return os.getpid()


def phase_convert_profile(args: dict) -> dict:
    """Where preprocess's time goes: archive streaming alone, pool start-up, and conversion with a warm pool.

    Uses steps.convert's own worker functions (_init_worker, _convert_chunk) on the samples that
    preprocess.build plans, with the images read into memory first so the archive is not in the loop.
    """
    import multiprocessing as mp

    from steps import config, convert, iam

    d = config.defaults("preprocess")
    raw = Path(args["raw_dir"])
    words, _ = iam.parse_words((raw / config.WORDS_TXT).read_text(encoding="utf-8").splitlines())
    writers = iam.parse_forms((raw / config.FORMS_TXT).read_text().splitlines())
    samples, _, _, _ = convert.plan(words, writers, d["split"], float(d["train_ratio"]), float(d["val_ratio"]),
                                    int(d["seed"]), int(d["max_label_length"]), False, int(d["shard_size"]))
    by_id = {s.id: s for s in samples}
    t0 = time.perf_counter()
    pairs = [(by_id[i], data) for i, data in iam.iter_images(raw / config.WORDS_ARCHIVE, set(by_id))]
    stream_seconds = time.perf_counter() - t0
    chunks = list(convert._chunks(pairs, 64))
    h, w = int(d["image_height"]), int(d["image_width"])
    out = {"images": len(pairs), "archive_stream_seconds": stream_seconds,
           "archive_stream_images_per_second": len(pairs) / stream_seconds}
    workers = args["workers"] or os.cpu_count()
    if workers == 1:
        t0 = time.perf_counter()
        convert._init_worker(h, w)
        out["startup_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for chunk in chunks:
            convert._convert_chunk(chunk)
        out["warm_seconds"] = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        pool = mp.get_context("spawn").Pool(workers, convert._init_worker, (h, w))
        seen: set[int] = set()
        while len(seen) < workers:  # every worker has run its initializer (imported TF) once it answers
            seen |= set(pool.map(_ready, range(workers * 2), chunksize=1))
        out["startup_seconds"] = time.perf_counter() - t0 - 0.2
        t0 = time.perf_counter()
        for _ in pool.imap(convert._convert_chunk, chunks, chunksize=1):
            pass
        out["warm_seconds"] = time.perf_counter() - t0
        pool.terminate()
    out["workers"] = workers
    out["warm_images_per_second"] = len(pairs) / out["warm_seconds"]
    return out


def phase_input(args: dict) -> dict:
    """images/s delivered by our reader (eval and augmenting train) and by the Keras example's pipeline."""
    import tensorflow as tf

    from steps import data

    data_dir, bs = args["data_dir"], args["batch_size"]

    def keras(cache):
        return lambda: baseline_dataset(data_dir, args["raw_dir"], args["words_dir"], bs, cache)[1]

    makers = {
        "ours_eval": lambda: data.batches(data_dir, "train", bs, training=False),
        "ours_train_augment": lambda: data.batches(data_dir, "train", bs, training=True, seed=42),
        "keras_per_epoch_decode": keras(False),
        "keras_as_published_cache": keras(True),
    }
    results = _time_epochs(makers, args["min_warm_seconds"], args["min_warm_epochs"], args["max_epochs"])
    results["tf_version"] = tf.__version__
    results["images"] = data.stats(data_dir)["samples"]["train"]
    return results


class _EpochTimer:
    """Keras callback: wall time of each training epoch (fit is given no validation data)."""

    def __init__(self):
        import keras

        outer = self

        class CB(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.seconds.append(time.perf_counter() - outer._t)
                outer.losses.append(float(logs.get("loss", float("nan"))))

        self.seconds: list[float] = []
        self.losses: list[float] = []
        self.callback = CB()


def _model_and_pipeline(args: dict, pipeline: str):
    """The default model (MLproject's train defaults, compiled as steps.train.fit does) and a function
    making the training dataset of `pipeline` (ours | keras_per_epoch_decode | keras_as_published_cache)."""
    import keras

    from steps import config, data, model as modelib

    d = config.defaults("train")
    bs = int(d["batch_size"])
    data_dir = args["data_dir"]
    meta, chars = data.stats(data_dir), data.charset(data_dir)
    if pipeline == "ours":
        augment = str(d["augment"]).lower() == "true"
        make = lambda: data.batches(data_dir, "train", bs, training=augment, seed=int(d["seed"]))  # noqa: E731
        images = meta["samples"]["train"]
    else:
        import keras_baseline as kb

        _, ds, images = baseline_dataset(data_dir, args["raw_dir"], args["words_dir"], bs,
                                         cache=pipeline == "keras_as_published_cache")
        make = lambda: kb.to_model_inputs(ds)  # noqa: E731
    keras.utils.set_random_seed(int(d["seed"]))      # the same initial weights for every pipeline
    conv = tuple(int(v) for v in str(d["conv_filters"]).split(","))
    rnn = tuple(int(v) for v in str(d["rnn_units"]).split(","))
    net = modelib.build(meta["image_height"], meta["image_width"], chars.size, conv, int(d["dense_units"]), rnn,
                        float(d["dropout"]))
    net.compile(optimizer=keras.optimizers.Adam(float(d["learning_rate"])), loss=modelib.ctc_loss)
    return net, make, images, bs, meta, chars


def _wait_loop(net, ds) -> dict:
    """One epoch of train_on_batch, timing next(iterator) (the wait for data) apart from the step.

    train_on_batch runs the step function outside fit's graph: it is traced first (a full and a
    smaller batch, so the traced shape is relaxed to any batch size), then a whole epoch is timed.
    """
    import numpy as np

    t0 = time.perf_counter()
    x, y = next(iter(ds))
    net.train_on_batch(x, y)
    net.train_on_batch(x[:-1], y[:-1])
    trace_seconds = time.perf_counter() - t0
    waits, steps = [], []
    it = iter(ds)
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        net.train_on_batch(x, y)
        t2 = time.perf_counter()
        waits.append(t1 - t0)
        steps.append(t2 - t1)
    later = np.array(waits[1:]) * 1000  # the first next() of an epoch starts the pipeline's threads
    return {"trace_seconds": trace_seconds, "steps": len(steps), "first_wait_ms": waits[0] * 1000,
            "wait_ms_mean": float(later.mean()), "wait_ms_p95": float(np.percentile(later, 95)),
            "wait_ms_max": float(later.max()), "step_ms_mean": float(np.mean(steps) * 1000),
            "wait_fraction": float(sum(waits) / (sum(waits) + sum(steps))),
            "seconds": sum(waits) + sum(steps)}


def phase_train(args: dict) -> dict:
    """Our training alone, as steps.train does it (Keras fit on steps.data.batches, default model):
    samples/s per epoch and the process's peak RSS; then the model is exported for the serving benchmark."""
    net, make, images, bs, meta, chars = _model_and_pipeline(args, "ours")
    timer = _EpochTimer()
    ds = make()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        net.fit(ds, epochs=args["epochs"], callbacks=[timer.callback], verbose=0)
        fit_seconds = time.perf_counter() - t0
    steady = timer.seconds[1:] or timer.seconds
    out = {"pipeline": "ours", "images_per_epoch": images, "batch_size": bs, "epochs": args["epochs"],
           "epoch_seconds": [round(s, 3) for s in timer.seconds], "losses": timer.losses,
           "first_epoch_samples_per_second": images / timer.seconds[0],
           "steady_samples_per_second": images * len(steady) / sum(steady),
           "fit_seconds": fit_seconds, "peak_rss_bytes": rss.peak, "parameters": net.count_params()}
    if args.get("export"):
        out["export"] = _export(net, chars, meta, args["data_dir"], args)
    return out


def phase_train_compare(args: dict) -> dict:
    """The same model trained on each pipeline, epochs interleaved (A, B, A, B...) so that load from
    other processes on a shared machine falls on all of them alike; then a data-wait loop for each.

    Epoch 1 of each (tracing, cache filling) is reported apart; the steady figure is over the later epochs.
    """
    timers, runs = {}, {}
    for name in args["pipelines"]:
        net, make, images, bs, _, _ = _model_and_pipeline(args, name)
        runs[name] = (net, make(), images)
        timers[name] = _EpochTimer()
    for _ in range(1 + args["rounds"]):
        for name, (net, ds, _) in runs.items():
            net.fit(ds, epochs=1, callbacks=[timers[name].callback], verbose=0)
    out = {"rounds": args["rounds"], "batch_size": bs, "pipelines": {}}
    for name, (net, ds, images) in runs.items():
        sec = timers[name].seconds
        out["pipelines"][name] = {
            "images_per_epoch": images, "epoch_seconds": [round(s, 3) for s in sec], "losses": timers[name].losses,
            "first_epoch_samples_per_second": images / sec[0],
            "steady_samples_per_second": images * len(sec[1:]) / sum(sec[1:])}
    for name, (net, ds, images) in runs.items():
        loop = _wait_loop(net, ds)
        loop["samples_per_second"] = images / loop.pop("seconds")
        out["pipelines"][name]["loop"] = loop
    return out


def _export(net, chars, meta: dict, data_dir: str, args: dict) -> dict:
    """Export the trained network as the project's pyfunc model, log it to the benchmark store, register it."""
    import tempfile

    import mlflow

    from steps import config, data, exported, train

    t0 = time.perf_counter()
    mlflow.set_tracking_uri(args["tracking_uri"])
    name = "benchmarks"
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=Path(args["artifacts_dir"]).resolve().as_uri())
    mlflow.set_experiment(name)
    example = next(data.records(data_dir, "val").take(1).as_numpy_iterator())["image"]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp, mlflow.start_run(run_name="benchmark-model"):
        exported.save(net, chars, meta["image_height"], meta["image_width"], Path(tmp) / "export")
        info = exported.log_model(Path(tmp) / "export", train.canvas_png(example), config.MODEL_ARTIFACT)
        mv = mlflow.register_model(info.model_uri, config.REGISTERED_MODEL)
    return {"model_uri": info.model_uri, "registered": f"models:/{mv.name}/{mv.version}", "version": mv.version,
            "seconds": time.perf_counter() - t0}


PHASES = {"generate": phase_generate, "preprocess": phase_preprocess, "convert_profile": phase_convert_profile,
          "input": phase_input, "train": phase_train, "train_compare": phase_train_compare}

if __name__ == "__main__":
    name, args_file, result_file = sys.argv[1:4]
    result = PHASES[name](json.loads(Path(args_file).read_text()))
    Path(result_file).write_text(json.dumps(result, indent=1, default=str))
