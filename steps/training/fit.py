"""Fitting the recogniser: the distribution strategy, the Keras fit loop with validation CER, and resumable state.

Pure of MLflow: `fit` reports each epoch through `on_epoch(epoch, logs)`, which the train step logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import keras
import tensorflow as tf

from steps.dataset import reader
from steps.dataset.info import DatasetError, DatasetInfo
from steps.evaluation import metrics
from steps.inference import ctc
from steps.training import cluster, inputs, schedule
from steps.training import model as modelib
from steps.training.errors import ConfigError
from steps.training.model import ModelConfig
from steps.training.warmstart import WarmStart, widened
from steps.workflow import config, progress


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes; no defaults here (train's MLproject parameters)."""

    batch_size: int
    epochs: int
    learning_rate: float
    patience: int
    lr_schedule: str  # schedule.SCHEDULES
    min_epoch_steps: int  # an epoch of a small dataset is more than one pass (schedule.steps_per_epoch)
    augment: bool
    seed: int
    model: ModelConfig

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> "TrainConfig":
        """From train's parameters as MLproject and `mlflow run` spell them (every one needed, no defaults)."""
        return cls(
            batch_size=int(params["batch_size"]),
            epochs=int(params["epochs"]),
            learning_rate=float(params["learning_rate"]),
            patience=int(params["patience"]),
            lr_schedule=str(params["lr_schedule"]),
            min_epoch_steps=int(params["min_epoch_steps"]),
            augment=modelib.parse_bool(params["augment"]),
            seed=int(params["seed"]),
            model=ModelConfig.from_params(params),
        )


@dataclass
class Fitted:
    model: keras.Model  # with the best-val-CER weights
    history: dict[str, list[float]]
    dataset: DatasetInfo
    stopped: str  # why training ended, in words


# CTC models emit only blanks (val CER 1.0) for their first epochs; patience counts from the first epoch
# below this, so early stopping can never end a run before the model has started to read.
LEARNING_STARTED = 0.98


def stop_reason(val_cer: list[float], patience: int) -> str | None:
    """Why to stop after these epochs' validation CERs, or None to go on. Pure, and so resume-safe."""
    started = [i for i, c in enumerate(val_cer) if c < LEARNING_STARTED]
    if not started:
        return None
    best = min(range(started[0], len(val_cer)), key=lambda i: (val_cer[i], i))
    if len(val_cer) - 1 - best >= patience:
        return (
            f"stopped early after epoch {len(val_cer)}: val CER has not improved for {patience} epochs "
            f"(best {val_cer[best]:.4f} at epoch {best + 1})"
        )
    return None


class EarlyStop(keras.callbacks.Callback):
    """Stops on stop_reason(history of val CER); reads the history the EpochReport before it keeps."""

    def __init__(self, report: "EpochReport", patience: int):
        super().__init__()
        self.report, self.patience, self.reason = report, patience, None

    def on_epoch_end(self, epoch, logs=None):
        self.reason = stop_reason(self.report.history["val_cer"], self.patience)
        if self.reason:
            self.model.stop_training = True


def ctc_length(text: str) -> int:
    """Time steps CTC needs for a label: one per character, plus a blank between each pair of repeats."""
    return len(text) + sum(a == b for a, b in zip(text, text[1:]))


def check_feasible(cfg: TrainConfig, info: DatasetInfo, train_texts: list[str]) -> None:
    """Refuse, before any work, a configuration that cannot learn these labels."""
    try:
        modelib.check_shape(cfg.model, info.image_height, info.image_width)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    steps = cfg.model.time_steps(info.image_width)
    longest = max(train_texts, key=ctc_length)
    if steps < ctc_length(longest):
        raise ConfigError(
            f"the model reads {steps} time steps ({info.image_width} px wide canvas / 2**{cfg.model.width_pools}), "
            f"but CTC needs {ctc_length(longest)} for the longest training label {longest!r}: use fewer width "
            f"pools (-P width_pools={max(cfg.model.width_pools - 1, 0)}), a wider canvas at preprocess "
            f"(-P image_width={info.image_width * 2}) or a lower -P max_label_length"
        )
    if cfg.lr_schedule not in schedule.SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(schedule.SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.batch_size > info.samples["train"]:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is larger than the {info.samples['train']} training samples: "
            f"use -P batch_size={max(1, info.samples['train'] // 4)} or more data"
        )


def work_dir_for(data_dir: str, cfg: TrainConfig) -> Path:
    """Resumable state lives under the cache, keyed by dataset, configuration and code (not by run id)."""
    key = hashlib.sha256(json.dumps([data_dir, asdict(cfg), config.code_digest()], sort_keys=True).encode())
    path = config.cache_dir() / "train" / key.hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_history(path: Path) -> dict[str, list[float]]:
    """The saved per-epoch history, or {} when there is none or it is damaged (then said, and started afresh)."""
    if not path.exists():
        return {}
    try:
        history = json.loads(path.read_text())
        if isinstance(history, dict) and all(isinstance(v, list) for v in history.values()):
            return history
    except ValueError:
        pass
    print(f"warning: discarding the damaged training history {path}", file=sys.stderr, flush=True)
    return {}


class CosineDecay(keras.callbacks.Callback):
    """Sets the optimizer's rate before every batch from the global step (epoch * steps + batch), so a run
    resumed at epoch k by BackupAndRestore continues the same curve (schedule.cosine)."""

    def __init__(self, initial: float, epochs: int, steps: int):
        super().__init__()
        self.initial, self.steps, self.total, self.epoch = initial, steps, epochs * steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(
            schedule.cosine(self.epoch * self.steps + batch, self.total, self.initial)
        )


class EpochReport(keras.callbacks.Callback):
    """Owns the run's history and the validation: adds val loss (per head, as Keras names it), val CER/WER,
    learning rate and samples/s to each epoch's logs, saves the history atomically and the best-val-CER
    weights. Must come before the callbacks that read val_cer or val_loss."""

    def __init__(
        self,
        val_ds: tf.data.Dataset,
        val_texts: list[str],
        characters: tf.Tensor,
        loss_weights: Mapping[str, float] | None,
        epoch_samples: int,
        work_dir: Path,
        on_epoch: Callable[[int, dict], None] | None,
    ):
        super().__init__()
        self.val_ds, self.val_texts, self.characters = val_ds, val_texts, characters
        self.loss_weights = loss_weights  # per head of a two-headed trainer (as compiled); None: one output
        self.epoch_samples, self.on_epoch = epoch_samples, on_epoch
        self.history_file, self.best_file = work_dir / "history.json", work_dir / "best.weights.h5"
        self.history = read_history(self.history_file)
        # One pass and one graph per batch for the losses and the decoding. Keras' own validation pass ran the
        # network over the split a second time for the loss alone (2.6 s of a 44-s epoch), and decoding
        # eagerly batch by batch took 6.1 s instead of 0.9 s (benchmarks/profiles/profile_train.py).
        self.validate = tf.function(self._validate, reduce_retracing=True)

    def _validate(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """A validation batch -> (greedy texts [B], summed CTC loss per head)."""
        out = self.model(images, training=False)
        heads = out if isinstance(out, dict) else {"logits": out}
        texts, _ = ctc.decode(heads["logits"], self.characters)
        return texts, {name: tf.reduce_sum(ctc.loss(labels, logits)) for name, logits in heads.items()}

    def on_epoch_begin(self, epoch, logs=None):
        # Epochs 0..epoch-1 are done: a kill after the history was written but before Keras' backup was makes
        # a resumed run redo that epoch, so whatever the history holds from it on is dropped first.
        self.history = {k: v[:epoch] for k, v in self.history.items()}
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        train_seconds = time.perf_counter() - self.start  # samples/s of training, not validation
        predicted, sums = [], {}
        for images, labels in self.val_ds:
            texts, losses = self.validate(images, labels)
            predicted += [t.decode() for t in texts.numpy()]
            for name, total in losses.items():
                sums[name] = sums.get(name, 0.0) + float(total)
        # means over samples (Keras' val_loss is one too; its per-head figures were means of batch means)
        head_losses = {name: total / len(predicted) for name, total in sums.items()}
        if self.loss_weights is None:
            logs["val_loss"] = head_losses["logits"]
        else:
            logs["val_loss"] = sum(self.loss_weights[name] * v for name, v in head_losses.items())
            logs.update({f"val_{name}_loss": v for name, v in head_losses.items()})
        rates = metrics.error_rates(self.val_texts, predicted)
        logs["val_cer"], logs["val_wer"] = rates["cer"], rates["wer"]
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["samples_per_second"] = self.epoch_samples / train_seconds
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        if logs["val_cer"] <= min(self.history["val_cer"]):  # best so far, resumed epochs included
            self.model.save_weights(self.best_file)
        partial = self.history_file.with_suffix(".partial")
        partial.write_text(json.dumps(self.history))
        os.replace(partial, self.history_file)
        if self.on_epoch:
            self.on_epoch(epoch, {k: float(v) for k, v in logs.items()})


def fit(
    data_dir: str,
    work_dir: Path,
    cfg: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
    warm_start: WarmStart | None = None,
) -> Fitted:
    """Train on the dataset at `data_dir` and return the model with the best val-CER weights and its history.

    `work_dir` holds the resumable state (Keras BackupAndRestore, best weights, history); a rerun
    with the same `work_dir` continues where a killed run stopped. `on_epoch(epoch, logs)` reports.
    With `warm_start` the model starts from the parent's weights and its charset is the parent's
    extended by the dataset's (Fitted.dataset carries that charset).
    """
    keras.utils.set_random_seed(cfg.seed)
    info = DatasetInfo.load(data_dir)
    if warm_start is not None:
        info = widened(info, warm_start.parent)
    if info.samples["val"] == 0:
        raise DatasetError("the dataset has no validation samples: preprocess with val_ratio > 0")
    machines = cluster.from_env()
    if machines.workers > 1:
        cluster.check_shards(info, machines)
    dist = cluster.strategy(machines)
    global_batch = cfg.batch_size * dist.num_replicas_in_sync  # batch_size is per replica
    two_heads = cfg.model.shortcut > 0  # the trainer's second output (model.build_for_training)
    heads = (lambda ds: ds.map(lambda x, y: (x, {"logits": y, "shortcut": y}))) if two_heads else (lambda ds: ds)
    steps = schedule.steps_per_epoch(info.samples["train"], global_batch, cfg.min_epoch_steps)
    if machines.workers > 1:

        def share(batch: int, shard: tuple[int, int]) -> tf.data.Dataset:
            # each worker its own augmentation seeds, or both would warp their (different) images alike
            return heads(
                inputs.batches(info, "train", batch, training=cfg.augment, seed=cfg.seed + shard[0], shard=shard)
            )

        train_ds = cluster.worker_batches(dist, share, global_batch)
    else:
        train_ds = heads(inputs.batches(info, "train", global_batch, training=cfg.augment, seed=cfg.seed)).repeat()
    val_ds = inputs.batches(info, "val", global_batch)
    val_texts = reader.texts(info, "val")
    train_texts = reader.texts(info, "train")
    check_feasible(cfg, info, train_texts)
    with dist.scope():
        net, trainer = modelib.build_for_training(
            cfg.model, info.image_height, info.image_width, info.charset.size, config.LEVELS[info.level].windowed
        )
        # CTC's gradients are large and erratic while the model still emits only blanks; clipping each
        # variable's gradient norm to 1 got a 1,000-word model reading two epochs sooner (README).
        optimizer = keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0)
        # both heads learn the same labels; the shortcut's loss is weighted down
        loss_weights = {"logits": 1.0, "shortcut": cfg.model.shortcut} if two_heads else None
        if trainer is net:
            trainer.compile(optimizer=optimizer, loss=ctc.loss)
        else:
            trainer.compile(
                optimizer=optimizer, loss={"logits": ctc.loss, "shortcut": ctc.loss}, loss_weights=loss_weights
            )
        if warm_start is not None:
            warm_start.apply(trainer, info.charset)
    assert (trainer is not net) == two_heads
    if machines.workers > 1:
        cluster.patch_keras_fit(trainer, dist)
    report = EpochReport(
        # validation is the report's, not fit's: every worker reads the whole split, outside the strategy
        val_ds,
        val_texts,
        tf.constant(list(info.charset.characters)),
        loss_weights,
        # what an epoch trains on: steps of the global batch, which is more than the split when min_epoch_steps
        # passes over it more than once (the last batch of a pass may be short: this is the upper bound)
        steps * global_batch,
        work_dir,
        on_epoch,
    )
    stop = EarlyStop(report, cfg.patience)
    callbacks = [  # in this order: the report writes val_cer into the logs and the history the last two read
        *(warm_start.callbacks() if warm_start is not None else []),
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        report,
        (
            CosineDecay(cfg.learning_rate, cfg.epochs, steps)
            if cfg.lr_schedule == "cosine"
            else keras.callbacks.ReduceLROnPlateau(
                "val_loss", factor=0.5, patience=max(1, cfg.patience // 2), min_lr=1e-5
            )
        ),
        stop,
        progress.epoch_lines(),  # a line every 30 s within an epoch (verbose=2 prints only at its end)
    ]
    trainer.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=2)
    if report.best_file.exists():
        trainer.load_weights(report.best_file)  # the recogniser shares the trainer's layers
    if machines.workers > 1:
        # The chief exports and calibrates alone, after the other workers have gone: on a copy whose variables
        # are plain, so nothing it does afterwards waits for a collective the others will never join.
        weights = trainer.get_weights()
        net, trainer = modelib.build_for_training(
            cfg.model, info.image_height, info.image_width, info.charset.size, config.LEVELS[info.level].windowed
        )
        trainer.set_weights(weights)
    epochs = len(report.history["val_cer"])
    stopped = stop.reason or (
        f"ran all {cfg.epochs} epochs"
        if min(report.history["val_cer"]) < LEARNING_STARTED
        else f"ran all {cfg.epochs} epochs and the model never started to read (val CER stayed at "
        f"{min(report.history['val_cer']):.2f}): train longer, on more data, or with another learning rate"
    )
    if epochs < cfg.epochs and not stop.reason:
        stopped = f"stopped after epoch {epochs}"
    return Fitted(net, report.history, info, stopped)
