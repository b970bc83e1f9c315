"""The training phases of benchmarks/run.py (run through phases.py, each in its own child process).

- train: our training alone, as the train step fits (the default model, MLproject's train defaults, on
  steps.training.inputs.batches): samples/s per epoch and peak RSS; then the model is exported with
  steps.training.export and registered in the benchmark's own tracking store, for the serving phase;
- train_compare: the same model on our pipeline and on the Keras example's, epochs interleaved, then a
  train_on_batch loop that times the wait for each batch apart from the step.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


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


def train_config():
    """The TrainConfig of MLproject's train defaults (what the train step fits when given no parameters)."""
    from steps.training.fit import TrainConfig
    from steps.workflow import config

    return TrainConfig.from_params(config.defaults("train"))


def _model_and_pipeline(args: dict, pipeline: str):
    """The default model (compiled as steps.training.fit does) and a function making the training dataset
    of `pipeline` (ours | keras_per_epoch_decode | keras_as_published_cache)."""
    import keras

    from steps.dataset.info import DatasetInfo
    from steps.inference import ctc
    from steps.training import inputs
    from steps.training import model as modelib

    cfg = train_config()
    info = DatasetInfo.load(args["data_dir"])
    if pipeline == "ours":
        make = lambda: inputs.batches(info, "train", cfg.batch_size, training=cfg.augment, seed=cfg.seed)  # noqa: E731
        images = info.samples["train"]
    else:
        import keras_baseline as kb

        _, ds, images = kb.for_training_split(
            args["data_dir"],
            args["raw_dir"],
            args["words_dir"],
            cfg.batch_size,
            cache=pipeline == "keras_as_published_cache",
        )
        make = lambda: kb.to_model_inputs(ds)  # noqa: E731
    keras.utils.set_random_seed(cfg.seed)  # the same initial weights for every pipeline
    net = modelib.build(cfg.model, info.image_height, info.image_width, info.charset.size)
    net.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=ctc.loss)
    return net, make, images, cfg.batch_size, info


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
    return {
        "trace_seconds": trace_seconds,
        "steps": len(steps),
        "first_wait_ms": waits[0] * 1000,
        "wait_ms_mean": float(later.mean()),
        "wait_ms_p95": float(np.percentile(later, 95)),
        "wait_ms_max": float(later.max()),
        "step_ms_mean": float(np.mean(steps) * 1000),
        "wait_fraction": float(sum(waits) / (sum(waits) + sum(steps))),
        "seconds": sum(waits) + sum(steps),
    }


def phase_train(args: dict) -> dict:
    """Our training alone (Keras fit on steps.training.inputs.batches, default model): samples/s per epoch
    and the process's peak RSS; then the model is exported for the serving benchmark."""
    net, make, images, bs, info = _model_and_pipeline(args, "ours")
    timer = _EpochTimer()
    ds = make()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        net.fit(ds, epochs=args["epochs"], callbacks=[timer.callback], verbose=0)
        fit_seconds = time.perf_counter() - t0
    steady = timer.seconds[1:] or timer.seconds
    out = {
        "pipeline": "ours",
        "images_per_epoch": images,
        "batch_size": bs,
        "epochs": args["epochs"],
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "losses": timer.losses,
        "first_epoch_samples_per_second": images / timer.seconds[0],
        "steady_samples_per_second": images * len(steady) / sum(steady),
        "fit_seconds": fit_seconds,
        "peak_rss_bytes": rss.peak,
        "parameters": net.count_params(),
    }
    if args.get("export"):
        out["export"] = _export(net, info, args)
    return out


def phase_train_compare(args: dict) -> dict:
    """The same model trained on each pipeline, epochs interleaved (A, B, A, B...) so that load from
    other processes on a shared machine falls on all of them alike; then a data-wait loop for each.

    Epoch 1 of each (tracing, cache filling) is reported apart; the steady figure is over the later epochs.
    """
    timers, runs = {}, {}
    for name in args["pipelines"]:
        net, make, images, bs, _ = _model_and_pipeline(args, name)
        runs[name] = (net, make(), images)
        timers[name] = _EpochTimer()
    for _ in range(1 + args["rounds"]):
        for name, (net, ds, _) in runs.items():
            net.fit(ds, epochs=1, callbacks=[timers[name].callback], verbose=0)
    out = {"rounds": args["rounds"], "batch_size": bs, "pipelines": {}}
    for name, (_net, _ds, images) in runs.items():
        sec = timers[name].seconds
        out["pipelines"][name] = {
            "images_per_epoch": images,
            "epoch_seconds": [round(s, 3) for s in sec],
            "losses": timers[name].losses,
            "first_epoch_samples_per_second": images / sec[0],
            "steady_samples_per_second": images * len(sec[1:]) / sum(sec[1:]),
        }
    for name, (net, ds, images) in runs.items():
        loop = _wait_loop(net, ds)
        loop["samples_per_second"] = images / loop.pop("seconds")
        out["pipelines"][name]["loop"] = loop
    return out


def _export(net, info, args: dict) -> dict:
    """Export the trained network as the project's pyfunc model, log it to the benchmark store, register it."""
    import tempfile

    import mlflow

    from steps.dataset import reader
    from steps.inference.calibration import Calibration
    from steps.inference.recognizer import LITE
    from steps.training import export
    from steps.workflow import config

    t0 = time.perf_counter()
    mlflow.set_tracking_uri(args["tracking_uri"])
    name = "benchmarks"
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=Path(args["artifacts_dir"]).resolve().as_uri())
    mlflow.set_experiment(name)
    example = next(reader.records(info, "val").take(1).as_numpy_iterator())["image"]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp, mlflow.start_run(run_name="benchmark-model"):
        export.save(
            net, info.charset, Calibration.identity(), info.image_height, info.image_width, Path(tmp) / "export"
        )
        lite = export.save_lite(net, export.check_canvases(info), Path(tmp) / "export")  # as train ships it
        if (Path(tmp) / "export" / LITE).exists():
            canvases, texts = export.check_words(info)
            int8, _ = export.save_int8_weights(net, canvases, texts, info.charset.characters, Path(tmp) / "export")
            lite += f"; {int8}"
        model = export.log_model(
            Path(tmp) / "export", export.example_png(example), config.MODEL_ARTIFACT, export.metadata(info)
        )
        mv = mlflow.register_model(model.model_uri, config.REGISTERED_MODEL)
    return {
        "model_uri": model.model_uri,
        "registered": f"models:/{mv.name}/{mv.version}",
        "version": mv.version,
        "lite": lite,
        "seconds": time.perf_counter() - t0,
    }
