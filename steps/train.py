"""Step `train`: fit the CNN-BiLSTM-CTC recogniser on a preprocessed dataset and log the exported model.

Inputs:  `data`, the URI of a preprocess run's dataset/ (local path, runs:/, s3://, gs://, hdfs://,
         http(s)://); when empty, the newest finished preprocess run with the same split ratios and
         `level` (words | lines), and if there is none, the pipeline's chain runs download + preprocess
         first (as runs of their own). The model reads what its dataset holds: the level and canvas
         are the dataset's (tag hwr.level, and the logged model's metadata).
Outputs: the pyfunc model `handwriting_recognition_model` (bytes in, text and confidence out; see
         steps/inference; the confidence is calibrated on the validation split),
         loss/CER plots, a grid of validation predictions; per-epoch loss, val_loss, val_cer,
         val_wer, learning rate and samples/s. Keeps the best-val-CER weights, stops on a plateau,
         and a rerun with the same data and parameters resumes a killed run from its last epoch.
Fine-tuning: `init_model` (a model URI, e.g. models:/HandwritingRecognitionModel@champion) starts from that
         model's weights, its output layer extended for the dataset's new characters (the architecture
         parameters must be the parent's); `freeze_epochs` keeps the conv blocks frozen that many epochs.
         Lineage: param init_model as given, tag hwr.parent_model the fixed URI (models:/<name>/<version>).
Serving speed: a word model ships its network as TensorFlow Lite too, with int8 weights when they read the
         validation words within export.int8_allowance of float weights (metrics lite_float_check_cer and
         lite_int8_check_cer; `-P int8_weights=false` keeps float weights).
Several machines: with TF_CONFIG naming two or more workers (steps/training/cluster.py) every worker runs this
         step with the same `data` URI; worker 0 (the chief) logs the run and the model, the others log nothing.

    mlflow run . -e train --env-manager local -P batch_size=32 -P epochs=50 -P train_ratio=0.75 -P val_ratio=0.15
    mlflow run . -e train --env-manager local -P level=lines
    mlflow run . -e train --env-manager local -P data=runs:/<preprocess_run>/dataset \
        -P init_model=models:/HandwritingRecognitionModel@champion -P freeze_epochs=2
"""

from __future__ import annotations

import os

from steps.workflow import config

# TensorFlow reads these once, when it is imported: before the imports below bring it in. A user's own
# setting wins.
for _name, _value in config.TRAINING_ENV.items():
    os.environ.setdefault(_name, _value)

import hashlib
import shutil
import tempfile
from pathlib import Path

import click
import mlflow

from steps.dataset.info import DatasetError, DatasetInfo
from steps.inference.charset import CharsetError
from steps.inference.loading import ModelLoadError
from steps.training.errors import ConfigError
from steps.training.schedule import SCHEDULES
from steps.workflow import artifacts, chain, cli, runs

D = config.defaults("train")


def resolve_data(data_uri: str, train_ratio: float, val_ratio: float, level: str) -> str:
    """`data` if given; else the newest preprocess run with these ratios and level; else the chain runs download +
    preprocess."""
    if data_uri:
        return data_uri
    ratios = {"train_ratio": train_ratio, "val_ratio": val_ratio}
    run = runs.find_run("preprocess", {**ratios, "level": level})
    if run is None:
        runs.log(
            f"no finished preprocess run with train_ratio={train_ratio} val_ratio={val_ratio} level={level}: "
            "running download and preprocess first"
        )
        ids = chain.run_steps(
            ("download", "preprocess"),
            {"download": {"level": level}, "preprocess": {**{k: str(v) for k, v in ratios.items()}, "level": level}},
            runs.current_experiment_id(),
            env_manager="local",
        )
        run_id = ids["preprocess"]
    else:
        run_id = run.info.run_id
    uri = f"runs:/{run_id}/{config.DATASET_ARTIFACT}"
    runs.log(f"using {uri}")
    return uri


def onednn() -> str:
    """on | off: whether TensorFlow computes with oneDNN's kernels in this process (config.TRAINING_ENV)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # no public API says it (TF 2.17)

        return "on" if _pywrap_util_port.IsMklEnabled() else "off"
    except (ImportError, AttributeError):
        return "unknown"


def ship_lite(fitted, out: Path, int8_weights: bool):
    """Write the network as TensorFlow Lite into `out` (export.save_lite), with int8 weights if asked and
    they read the validation words as well; logged -> its LiteNetwork, or None when it stays TensorFlow only."""
    from steps.inference.lite import LiteNetwork
    from steps.inference.recognizer import LITE
    from steps.training import export

    runs.log(export.save_lite(fitted.model, export.check_canvases(fitted.dataset), out))
    if not (out / LITE).exists():
        return None
    if int8_weights:
        canvases, texts = export.check_words(fitted.dataset)
        said, figures = export.save_int8_weights(fitted.model, canvases, texts, fitted.dataset.charset.characters, out)
        runs.log(said)
        mlflow.log_metrics(figures)
    return LiteNetwork((out / LITE).read_bytes())


def calibrate(model, info: DatasetInfo, network=None):
    """The confidence calibration fitted on the validation split (the identity when it is empty), logged;
    on the readings of `network` (a LiteNetwork) when the model ships one."""
    from steps.dataset import reader
    from steps.inference.calibration import Calibration
    from steps.training import export

    if not info.samples.get("val"):
        runs.log("no validation words: the confidence is the uncalibrated score")
        return Calibration.identity()
    calibration = export.calibrate(model, reader.records(info, "val").batch(64), info.charset, network)
    mlflow.log_metric("calibration_samples", calibration.samples)
    runs.log(f"confidence calibrated on {calibration.samples} validation words ({len(calibration.scores)} knots)")
    return calibration


def train_as_worker(machines, data: str, init_model: str, freeze_epochs: int, model, params: dict) -> None:
    """A worker other than the chief: trains its share in step with the others and logs nothing (the chief
    logs the run, its metrics and the model). Its resumable state sits beside the chief's."""
    from steps.training import fit, warmstart

    cfg = fit.TrainConfig(model=model, **params)
    data_dir = artifacts.readable_dir(data)
    warm = warmstart.WarmStart(warmstart.load_parent(init_model), freeze_epochs) if init_model else None
    work_dir = fit.work_dir_for(data_dir, cfg)
    work_dir = work_dir.with_name(f"{work_dir.name}-worker{machines.index}")
    work_dir.mkdir(parents=True, exist_ok=True)
    runs.log(f"worker {machines.index} of {machines.workers}: training with the chief on {data}")
    fitted = fit.fit(data_dir, work_dir, cfg, warm_start=warm)
    shutil.rmtree(work_dir, ignore_errors=True)
    runs.log(f"worker {machines.index}: {fitted.stopped}; the chief (worker 0) logs the run and the model")


@click.command(help=__doc__.split("\n\n")[0])
@click.option(
    "--data", default=D["data"], show_default=True, help="URI of a preprocess run's dataset/ ('' = newest matching run)"
)
@click.option(
    "--train-ratio",
    type=float,
    default=D["train_ratio"],
    show_default=True,
    help="used only to find or make a dataset when --data is ''",
)
@click.option("--val-ratio", type=float, default=D["val_ratio"], show_default=True)
@click.option(
    "--level",
    type=click.Choice(sorted(config.LEVELS)),
    default=D["level"],
    show_default=True,
    help="used only to find or make a dataset when --data is ''",
)
@click.option("--batch-size", type=click.IntRange(1), default=D["batch_size"], show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=D["epochs"], show_default=True)
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=D["learning_rate"], show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(1),
    default=D["patience"],
    show_default=True,
    help="epochs without a better val CER before stopping",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(SCHEDULES),
    default=D["lr_schedule"],
    show_default=True,
    help="cosine: decay over the planned epochs; plateau: halve when val_loss stalls",
)
@click.option(
    "--min-epoch-steps",
    type=click.IntRange(1),
    default=D["min_epoch_steps"],
    show_default=True,
    help="an epoch is at least this many batches (a small dataset is passed over more than once)",
)
@click.option("--augment", type=click.BOOL, default=D["augment"], show_default=True)
@click.option(
    "--conv-filters",
    default=D["conv_filters"],
    show_default=True,
    help="filters per conv block, comma-separated (one 2x2 pooling each)",
)
@click.option(
    "--width-pools",
    type=click.IntRange(0),
    default=D["width_pools"],
    show_default=True,
    help="conv blocks that halve the width too (time steps = image width / 2**width_pools)",
)
@click.option(
    "--column-pool",
    type=click.BOOL,
    default=D["column_pool"],
    show_default=True,
    help="collapse each CNN column by max over height",
)
@click.option("--dense-units", type=click.IntRange(1), default=D["dense_units"], show_default=True)
@click.option("--rnn-units", default=D["rnn_units"], show_default=True, help="units per BiLSTM layer, comma-separated")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=D["dropout"], show_default=True)
@click.option(
    "--shortcut",
    type=click.FloatRange(0),
    default=D["shortcut"],
    show_default=True,
    help="weight of the auxiliary CTC head on the CNN features (0 = off)",
)
@click.option("--seed", type=int, default=D["seed"], show_default=True)
@click.option(
    "--init-model", default=D["init_model"], show_default=True, help="start from this model's weights ('' = random)"
)
@click.option(
    "--freeze-epochs",
    type=click.IntRange(0),
    default=D["freeze_epochs"],
    show_default=True,
    help="with --init-model: epochs the conv blocks stay frozen",
)
@click.option(
    "--int8-weights",
    type=click.BOOL,
    default=D["int8_weights"],
    show_default=True,
    help="ship the TensorFlow Lite network with int8 weights when they read the validation words as well",
)
@cli.user_errors(
    artifacts.ArtifactError,
    runs.UpstreamNotFound,
    chain.StepFailed,
    DatasetError,
    ConfigError,
    CharsetError,
    ModelLoadError,
)
def main(
    data: str,
    init_model: str,
    freeze_epochs: int,
    train_ratio: float,
    val_ratio: float,
    level: str,
    conv_filters: str,
    width_pools: int,
    column_pool: bool,
    dense_units: int,
    rnn_units: str,
    dropout: float,
    shortcut: float,
    int8_weights: bool,
    **params,
) -> None:
    from steps.training.model import ModelConfig

    if freeze_epochs and not init_model:
        raise click.BadParameter("freeze_epochs applies to fine-tuning: give -P init_model=<model URI> too")
    model = ModelConfig(
        cli.ints(conv_filters), width_pools, column_pool, dense_units, cli.ints(rnn_units), dropout, shortcut
    )
    logged = {"conv_filters": ",".join(map(str, model.conv_filters)), "rnn_units": ",".join(map(str, model.rnn_units))}
    model_params = {"width_pools": width_pools, "column_pool": column_pool, "dense_units": dense_units}
    from steps.training import cluster

    machines = cluster.from_env()
    if machines.workers > 1 and not data:
        raise click.BadParameter(
            "multi-worker training (TF_CONFIG) needs the same -P data=<dataset URI> on every worker"
        )
    if not machines.chief:
        return train_as_worker(machines, data, init_model, freeze_epochs, model, params)
    with runs.start_step(
        "train",
        {
            "data": data,
            "train_ratio": train_ratio,
            "val_ratio": val_ratio,
            "level": level,
            **params,
            **logged,
            **model_params,
            "dropout": dropout,
            "shortcut": shortcut,
            "init_model": init_model,
            "freeze_epochs": freeze_epochs,
            "int8_weights": int8_weights,
        },
    ):
        from steps.training import export, fit, schedule, warmstart
        from steps.training.report import augmentation_grid, training_plots

        cfg = fit.TrainConfig(model=model, **params)
        data_uri = resolve_data(data, train_ratio, val_ratio, level)
        data_dir = artifacts.readable_dir(data_uri)
        mlflow.set_tag("hwr.data", data_uri)
        info = DatasetInfo.load(data_dir)
        mlflow.set_tag("hwr.level", info.level)  # the data's level, whatever -P level said
        mlflow.set_tag("hwr.onednn", onednn())  # runs that differ in it differ in float rounding
        if machines.workers > 1:
            mlflow.set_tag("hwr.workers", str(machines.workers))
            runs.log(
                f"chief of {machines.workers} workers: each reads every {machines.workers}th of the "
                f"{info.shards['train']} training shards, the batch of {cfg.batch_size} is per worker"
            )
        if info.samples["train"] == 0:
            raise DatasetError(f"{data_uri} has no training samples")
        # The figures the seed logged, plus what a reader needs to reproduce the run.
        mlflow.log_params(
            {
                "image_height": info.image_height,
                "image_width": info.image_width,
                "max_sequence_length": info.max_label_length,
                "charset_size": info.charset_size,
                "dataset_digest": info.digest,
                "train_samples": info.samples["train"],
                # batch_size is per replica, one replica per worker (fit.fit computes the same)
                "steps_per_epoch": schedule.steps_per_epoch(
                    info.samples["train"], cfg.batch_size * machines.workers, cfg.min_epoch_steps
                ),
            }
        )
        warm = None
        if init_model:
            warm = warmstart.WarmStart(warmstart.load_parent(init_model), freeze_epochs)
            mlflow.set_tag(config.TAG_PARENT_MODEL, warm.parent.resolved)
            runs.log(f"fine-tuning {warm.parent.resolved} ({len(warm.parent.charset.characters)} characters)")
        work_dir = fit.work_dir_for(data_dir, cfg)
        if warm is not None:  # resumable state of a fine-tuning run is its parent's too
            work_dir = work_dir / f"from-{hashlib.sha256(warm.parent.resolved.encode()).hexdigest()[:12]}"
            work_dir = work_dir / f"frozen-{freeze_epochs}"
            work_dir.mkdir(parents=True, exist_ok=True)
        if (work_dir / "history.json").exists():
            runs.log(f"resuming from {work_dir} (state of an earlier run with the same data and parameters)")
            mlflow.set_tag("hwr.resumed", "true")

        fitted = fit.fit(
            data_dir, work_dir, cfg, on_epoch=lambda epoch, logs: mlflow.log_metrics(logs, step=epoch), warm_start=warm
        )
        history = fitted.history
        runs.log(fitted.stopped)
        mlflow.set_tag("hwr.stopped", fitted.stopped)
        mlflow.log_metrics(
            {
                "best_val_cer": min(history["val_cer"]),
                "epochs_run": len(history["val_cer"]),
                "parameters": fitted.model.count_params(),
            }
        )
        with tempfile.TemporaryDirectory(prefix="train-") as tmp:
            tmp = Path(tmp)
            examples = training_plots(fitted, tmp)
            if cfg.augment:
                augmentation_grid(fitted, tmp)
            # fitted.dataset's charset: the dataset's, extended by the parent's characters when fine-tuning
            out = tmp / "export"
            out.mkdir()
            network = ship_lite(fitted, out, int8_weights)
            calibration = calibrate(fitted.model, fitted.dataset, network)
            export.save(fitted.model, fitted.dataset.charset, calibration, info.image_height, info.image_width, out)
            for png in sorted(tmp.glob("*.png")):
                mlflow.log_artifact(str(png))
            model_info = export.log_model(
                out, export.example_png(examples[0]), config.MODEL_ARTIFACT, export.metadata(info)
            )
        shutil.rmtree(work_dir, ignore_errors=True)  # finished: nothing left to resume
        runs.log(
            f"best val CER {min(history['val_cer']):.4f}; model {model_info.model_uri} "
            f"(runs:/{mlflow.active_run().info.run_id}/{config.MODEL_ARTIFACT})"
        )


if __name__ == "__main__":
    main()
