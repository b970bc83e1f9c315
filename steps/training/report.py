"""The plots a training run logs: learning curves, a grid of validation predictions and what augmentation does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from steps.dataset import reader
from steps.inference import ctc
from steps.reports import plots
from steps.training import inputs
from steps.training import model as modelib
from steps.training.fit import Fitted


def training_plots(fitted: Fitted, out: Path, count: int = 16) -> list[np.ndarray]:
    """loss.png, cer.png and val_predictions.png into `out`; returns the grid's validation canvases."""
    history = fitted.history
    plots.curves({"train": history["loss"], "val": history["val_loss"]}, out / "loss.png", "CTC loss", "loss")
    plots.curves(
        {"val CER": history["val_cer"], "val WER": history["val_wer"]},
        out / "cer.png",
        "validation error rates",
        "rate",
    )
    examples = list(reader.records(fitted.dataset, "val").take(count).as_numpy_iterator())
    canvases = np.stack([e["image"] for e in examples])
    characters = tf.constant(list(fitted.dataset.charset.characters))
    texts, _ = ctc.decode(modelib.read_canvases(fitted.model, tf.constant(canvases)), characters)
    items = [(e["image"], f"{e['text'].decode()} -> {t.decode()}") for e, t in zip(examples, texts.numpy())]
    plots.image_grid(items, out / "val_predictions.png", "validation: truth -> prediction")
    return [e["image"] for e in examples]


def augmentation_grid(fitted: Fitted, out: Path, count: int = 4, draws: int = 3, seed: int = 0) -> Path:
    """augmented.png: `count` training canvases as stored, then `draws` rows of the same canvases as the
    augmenting reader warps them (inputs.augment_batch), so a reader can judge the augmentation by eye."""
    examples = list(reader.records(fitted.dataset, "train").take(count).as_numpy_iterator())
    canvases = np.stack([e["image"] for e in examples])
    groups = {"as stored": [(e["image"], e["text"].decode()) for e in examples]}
    for d in range(draws):
        warped = inputs.augment_batch(tf.constant(canvases), tf.constant([seed, d], tf.int64)).numpy()
        groups[f"draw {d + 1}"] = [(w, e["text"].decode()) for w, e in zip(warped, examples)]
    return plots.image_rows(groups, out / "augmented.png", "training augmentation: the same words, warped anew")
