"""Fine-tuning: `train -P init_model=<model URI>` starts from a trained model's weights instead of random ones.

The parent's weights are read from its exported SavedModel (variables keep their Keras paths, `conv1/kernel`).
The new model's charset is the parent's extended by the dataset's new characters; in the output layers
(`logits`, and the training-only `shortcut` head, which the parent does not carry) each character the parent
knew keeps its weights, new characters start fresh. Every other layer must match the parent's shape (train
with the parent's architecture parameters). Optionally the convolutional blocks stay frozen for the first
`freeze_epochs` epochs, so the new characters' outputs settle before the features move.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass

import keras
import numpy as np

from steps.dataset.info import DatasetInfo
from steps.inference.charset import BLANK_INDEX, Charset
from steps.training.errors import ConfigError

OUTPUT_LAYERS = ("logits", "shortcut")  # last axis: blank + one class per character
FROZEN_PREFIXES = ("conv", "bn")  # the convolutional blocks (model.py names them conv<i>, bn<i>)
SAME_ARCHITECTURE = (
    "train with the parent's architecture (its train run's conv_filters, width_pools, column_pool, dense_units, "
    "rnn_units)"
)


@dataclass(frozen=True)
class Parent:
    uri: str  # as given, e.g. models:/HandwritingRecognitionModel@champion
    resolved: str  # a URI that will not move: models:/<name>/<version> for an alias
    charset: Charset
    weights: dict[str, np.ndarray]  # variable path -> value


def key(path: str) -> str:
    """A variable's path without Keras' per-process uniquifying suffixes (`forward_lstm_3` -> `forward_lstm`).

    The top-level layers carry explicit names (conv1, bilstm2, logits), so paths stay distinct without them.
    """
    return "/".join(re.sub(r"_\d+$", "", part) for part in path.split(":")[0].split("/"))


def resolve(uri: str) -> str:
    """models:/<name>@<alias> -> models:/<name>/<version> (what the alias points at now); other URIs unchanged."""
    if uri.startswith("models:/") and "@" in uri:
        from mlflow.tracking import MlflowClient

        name, alias = uri[len("models:/") :].split("@", 1)
        return f"models:/{name}/{MlflowClient().get_model_version_by_alias(name, alias).version}"
    return uri


def load_parent(uri: str) -> Parent:
    """The model at `uri` (any URI loading.load takes) -> its charset and weights; ModelLoadError if unusable."""
    from steps.inference import loading

    resolved = resolve(uri)
    recognizer = loading.load(resolved)
    weights = {key(v.name): v.numpy() for v in recognizer.module.variables}
    return Parent(uri, resolved, recognizer.charset, weights)


def widened(info: DatasetInfo, parent: Parent) -> DatasetInfo:
    """The dataset as the fine-tuned model sees it: its charset is the parent's plus the dataset's new characters."""
    union = Charset(tuple(sorted(set(parent.charset.characters) | set(info.charset.characters))))
    return dataclasses.replace(info, charset=union)


def class_map(old: Charset, new: Charset) -> list[int]:
    """For each class of `new` (blank first), its class in `old`, or -1 for a character `old` lacks."""
    index = {c: i + 1 for i, c in enumerate(old.characters)}
    return [BLANK_INDEX] + [index.get(c, -1) for c in new.characters]


def transfer(model: keras.Model, parent: Parent, charset: Charset) -> dict[str, int]:
    """Copy the parent's weights into `model` (built for `charset`) -> counts: copied, extended, fresh.

    ConfigError, before anything is copied, when the networks differ other than in the output layers: a
    layer of another shape, or weights that one has and the other lacks (a BiLSTM more or fewer); or when
    nothing matches.
    """
    mapping = class_map(parent.charset, charset)
    keep = [j for j, o in enumerate(mapping) if o >= 0]
    counts = {"copied": 0, "extended": 0, "fresh": 0, "new_characters": len(mapping) - len(keep)}
    pairs = [(v, key(v.path)) for v in model.variables if "seed_generator" not in v.path]
    matched = {name for _, name in pairs if name in parent.weights}
    if not any(name.split("/")[0] not in OUTPUT_LAYERS for name in matched):
        raise ConfigError(f"no layer of {parent.uri} matches this network: is it a model trained by this pipeline?")
    only_here = [name for _, name in pairs if name not in matched and name.split("/")[0] not in OUTPUT_LAYERS]
    only_there = [name for name in parent.weights if name not in matched and "seed_generator" not in name]
    if only_here or only_there:
        what = f"{only_there[0]} is only there" if only_there else f"{only_here[0]} is only here"
        raise ConfigError(f"{parent.uri} does not fit this network: {what}: {SAME_ARCHITECTURE}")
    for variable, name in pairs:
        old = parent.weights.get(name)
        if old is None:
            counts["fresh"] += 1
        elif name.split("/")[0] in OUTPUT_LAYERS and old.shape[:-1] == tuple(variable.shape)[:-1]:
            value = keras.ops.convert_to_numpy(variable).copy()
            value[..., keep] = old[..., [mapping[j] for j in keep]]
            variable.assign(value)
            counts["extended"] += 1
        elif old.shape == tuple(variable.shape):
            variable.assign(old)
            counts["copied"] += 1
        else:
            raise ConfigError(
                f"{parent.uri} does not fit this network: {name} is {old.shape} there and {tuple(variable.shape)} "
                f"here: {SAME_ARCHITECTURE}"
            )
    return counts


class FreezeConvolutions(keras.callbacks.Callback):
    """Keeps the conv blocks frozen for the first `epochs` epochs (resume-safe: decided by the epoch number).

    The optimizer must already be built over every variable (see WarmStart.apply), so unfreezing later only
    widens the set it updates; the train function is retraced whenever the set changes.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.frozen = epochs, None

    def on_epoch_begin(self, epoch, logs=None):
        frozen = epoch < self.epochs
        if frozen != self.frozen:
            for layer in self.model.layers:
                if layer.name.startswith(FROZEN_PREFIXES):
                    layer.trainable = not frozen
            if self.frozen is not None or epoch > 0:
                self.model.make_train_function(force=True)
            self.frozen = frozen


@dataclass(frozen=True)
class WarmStart:
    """What fit needs to start from a parent: the parent and how long to keep the convolutions frozen."""

    parent: Parent
    freeze_epochs: int

    def apply(self, trainer: keras.Model, charset: Charset) -> dict[str, int]:
        """Copy the weights into the compiled trainer and build its optimizer over all variables."""
        counts = transfer(trainer, self.parent, charset)
        trainer.optimizer.build(trainer.trainable_variables)
        print(
            f"started from {self.parent.resolved}: {counts['copied']} variables copied, {counts['extended']} "
            f"output variables extended by {counts['new_characters']} new characters, {counts['fresh']} fresh",
            file=sys.stderr,
            flush=True,
        )
        return counts

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [FreezeConvolutions(self.freeze_epochs)] if self.freeze_epochs else []
