"""Step `train`: fit the CNN-BiLSTM-CTC recogniser on a preprocessed dataset and log the exported model.

Inputs:  `data`, the URI of a preprocess run's dataset/ (local path, runs:/, s3://, gs://, hdfs://,
         http(s)://); when empty, the newest finished preprocess run with the same split ratios,
         and if there is none, download + preprocess are run first (as child runs).
Outputs: the pyfunc model `handwriting_recognition_model` (bytes in, text out; see exported.py),
         loss/CER plots, a grid of validation predictions; per-epoch loss, val_loss, val_cer,
         val_wer, learning rate and samples/s. Keeps the best-val-CER weights, stops on a plateau,
         and a rerun with the same data and parameters resumes a killed run from its last epoch.

    mlflow run . -e train --env-manager local -P batch_size=32 -P epochs=50 -P train_ratio=0.75 -P val_ratio=0.15
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import click
import mlflow

from steps import config, tracking

D = config.defaults("train")


def strategy():
    """Default strategy on one device, MirroredStrategy over several GPUs, MultiWorker when TF_CONFIG names workers."""
    import tensorflow as tf

    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def fit(data_dir: str, work_dir: Path, batch_size: int, epochs: int, learning_rate: float, patience: int,
        augment: bool, conv_filters: tuple[int, ...], dense_units: int, rnn_units: tuple[int, ...],
        dropout: float, seed: int, on_epoch=None):
    """Train and return (keras model with the best val-CER weights, history dict, charset, dataset stats).

    `work_dir` holds the resumable state (Keras BackupAndRestore, best weights, history); a rerun
    with the same `work_dir` continues where a killed run stopped. `on_epoch(epoch, logs)` reports.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from steps import ctc, data, model as modelib

    keras.utils.set_random_seed(seed)
    meta, chars = data.stats(data_dir), data.charset(data_dir)
    if meta["samples"]["val"] == 0:
        raise data.DatasetError("the dataset has no validation samples: preprocess with val_ratio > 0")
    dist = strategy()
    global_batch = batch_size * dist.num_replicas_in_sync
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if meta["shards"]["train"] >= dist.num_replicas_in_sync
        else tf.data.experimental.AutoShardPolicy.DATA)
    train_ds = data.batches(data_dir, "train", global_batch, training=augment, seed=seed).with_options(options)
    val_ds = data.batches(data_dir, "val", global_batch)
    val_texts = [t.decode() for t in data.records(data_dir, "val").map(lambda ex: ex["text"]).as_numpy_iterator()]
    with dist.scope():
        net = modelib.build(meta["image_height"], meta["image_width"], chars.size, conv_filters, dense_units,
                            rnn_units, dropout)
        net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=modelib.ctc_loss)
    characters = tf.constant(list(chars.characters))
    history_file, best_file = work_dir / "history.json", work_dir / "best.weights.h5"
    history = json.loads(history_file.read_text()) if history_file.exists() else {}

    class Report(keras.callbacks.Callback):
        """Adds val CER/WER to the logs (before checkpointing reads them), tracks samples/s, saves history."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.train_seconds = time.perf_counter() - self.start  # samples/s of training, not validation

        def on_epoch_end(self, epoch, logs=None):
            predicted = []
            for images, _ in val_ds:
                texts, _ = ctc.decode(self.model(images, training=False), characters)
                predicted += [t.decode() for t in texts.numpy()]
            rates = ctc.error_rates(val_texts, predicted)
            logs["val_cer"], logs["val_wer"] = rates["cer"], rates["wer"]
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["samples_per_second"] = meta["samples"]["train"] / self.train_seconds
            for k, v in logs.items():
                history.setdefault(k, []).append(float(v))
            history_file.write_text(json.dumps(history))
            if on_epoch:
                on_epoch(epoch, {k: float(v) for k, v in logs.items()})

    class SaveBest(keras.callbacks.Callback):
        """Best val_cer weights, with the best figure kept in history so a resumed run compares correctly."""

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_cer"] <= min(history["val_cer"]):
                self.model.save_weights(best_file)

    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        Report(), SaveBest(),
        keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=max(1, patience // 2), min_lr=1e-5),
        keras.callbacks.EarlyStopping("val_cer", patience=patience, mode="min"),
    ]
    net.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=2)
    if best_file.exists():
        net.load_weights(best_file)
    return net, history, chars, meta


def work_dir_for(data_dir: str, params: dict) -> Path:
    """Resumable state lives under the cache, keyed by dataset and hyperparameters (not by run id)."""
    key = hashlib.sha256(json.dumps([data_dir, params, config.code_digest()], sort_keys=True).encode()).hexdigest()[:16]
    root = Path(os.environ.get("HWR_CACHE_DIR", Path.home() / ".cache" / "handwriting-recognition"))
    path = root / "train" / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def canvas_png(canvas) -> bytes:
    """A canvas as a dark-on-light PNG (what a user would upload), for the model's input example."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(255 - canvas[..., 0]).save(buf, "PNG")
    return buf.getvalue()


def resolve_data(data_uri: str, train_ratio: float, val_ratio: float) -> str:
    """`data` if given; else the newest matching preprocess run's dataset; else run download + preprocess now."""
    if data_uri:
        return data_uri
    run = tracking.find_run("preprocess", {"train_ratio": train_ratio, "val_ratio": val_ratio})
    if run is None:
        tracking.log(f"no finished preprocess run with train_ratio={train_ratio} val_ratio={val_ratio}: "
                     "running download and preprocess first")
        download = mlflow.projects.run(str(config.ROOT), "download", env_manager="local")
        run_id = mlflow.projects.run(str(config.ROOT), "preprocess", env_manager="local", parameters={
            "raw_data": f"runs:/{download.run_id}/{config.RAW_ARTIFACT}",
            "train_ratio": train_ratio, "val_ratio": val_ratio}).run_id
    else:
        run_id = run.info.run_id
    uri = f"runs:/{run_id}/{config.DATASET_ARTIFACT}"
    tracking.log(f"using {uri}")
    return uri


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return values


@click.command()
@click.option("--data", default=D["data"], help="URI of a preprocess run's dataset/ ('' = newest matching run)")
@click.option("--train-ratio", type=float, default=D["train_ratio"])
@click.option("--val-ratio", type=float, default=D["val_ratio"])
@click.option("--batch-size", type=click.IntRange(1), default=D["batch_size"])
@click.option("--epochs", type=click.IntRange(1), default=D["epochs"])
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=D["learning_rate"])
@click.option("--patience", type=click.IntRange(1), default=D["patience"])
@click.option("--augment", type=click.BOOL, default=D["augment"])
@click.option("--conv-filters", default=D["conv_filters"])
@click.option("--dense-units", type=click.IntRange(1), default=D["dense_units"])
@click.option("--rnn-units", default=D["rnn_units"])
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=D["dropout"])
@click.option("--seed", type=int, default=D["seed"])
def main(data: str, train_ratio: float, val_ratio: float, **params) -> None:
    conv_filters, rnn_units = _ints(params.pop("conv_filters")), _ints(params.pop("rnn_units"))
    with tracking.start_step("train", {"data": data, "train_ratio": train_ratio, "val_ratio": val_ratio, **params,
                                       "conv_filters": ",".join(map(str, conv_filters)),
                                       "rnn_units": ",".join(map(str, rnn_units))}):
        from steps import data as datalib, exported, plots

        data_uri = resolve_data(data, train_ratio, val_ratio)
        data_dir = tracking.readable_dir(data_uri)
        mlflow.set_tag("hwr.data", data_uri)
        work_dir = work_dir_for(data_dir, {**params, "conv_filters": conv_filters, "rnn_units": rnn_units})
        try:
            meta = datalib.stats(data_dir)
        except datalib.DatasetError as e:
            raise click.ClickException(str(e)) from None
        if meta["samples"]["train"] == 0:
            raise click.ClickException(f"{data_uri} has no training samples")
        # The figures the seed logged, plus what a reader needs to reproduce the run.
        mlflow.log_params({"image_height": meta["image_height"], "image_width": meta["image_width"],
                           "max_sequence_length": meta["max_label_length"], "charset_size": meta["charset_size"],
                           "dataset_digest": meta["digest"], "train_samples": meta["samples"]["train"]})
        resumed = (work_dir / "history.json").exists()
        if resumed:
            tracking.log(f"resuming from {work_dir} (state of an earlier run with the same data and parameters)")
            mlflow.set_tag("hwr.resumed", "true")

        def on_epoch(epoch: int, logs: dict) -> None:
            mlflow.log_metrics({k: v for k, v in logs.items()}, step=epoch)

        net, history, chars, meta = fit(data_dir, work_dir, conv_filters=conv_filters, rnn_units=rnn_units,
                                        on_epoch=on_epoch, **params)
        mlflow.log_metrics({"best_val_cer": min(history["val_cer"]), "epochs_run": len(history["val_cer"]),
                            "parameters": net.count_params()})
        with tempfile.TemporaryDirectory(prefix="train-") as tmp:
            tmp = Path(tmp)
            plots.curves({"train": history["loss"], "val": history["val_loss"]}, tmp / "loss.png", "CTC loss", "loss")
            plots.curves({"val CER": history["val_cer"], "val WER": history["val_wer"]}, tmp / "cer.png",
                         "validation error rates", "rate")
            examples = _validation_grid(net, data_dir, chars, tmp / "val_predictions.png")
            exported.save(net, chars, meta["image_height"], meta["image_width"], tmp / "export")
            for name in ("loss.png", "cer.png", "val_predictions.png"):
                mlflow.log_artifact(str(tmp / name))
            info = exported.log_model(tmp / "export", canvas_png(examples[0]), config.MODEL_ARTIFACT)
        shutil.rmtree(work_dir, ignore_errors=True)  # finished: nothing left to resume
        tracking.log(f"best val CER {min(history['val_cer']):.4f}; model {info.model_uri} "
                     f"(runs:/{mlflow.active_run().info.run_id}/{config.MODEL_ARTIFACT})")


def _validation_grid(net, data_dir: str, chars, path: Path, count: int = 16) -> list:
    """Plot validation images with true and predicted text; returns their canvases."""
    import numpy as np
    import tensorflow as tf

    from steps import ctc, data as datalib, imaging, plots

    examples = list(datalib.records(data_dir, "val").take(count).as_numpy_iterator())
    canvases = np.stack([e["image"] for e in examples])
    texts, _ = ctc.decode(net(imaging.to_model_input(canvases), training=False), tf.constant(list(chars.characters)))
    items = [(e["image"], f"{e['text'].decode()} -> {t.decode()}") for e, t in zip(examples, texts.numpy())]
    plots.image_grid(items, path, "validation: truth -> prediction")
    return [e["image"] for e in examples]


if __name__ == "__main__":
    main()
