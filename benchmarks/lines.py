"""What a line costs next to a word: training and inference steps of the default network on each level's canvas.

    python benchmarks/lines.py [--steps 10] [--batch 32]

Builds the default model (train's MLproject defaults) for the word canvas and for the line canvas (preprocess's
defaults for each level), and times Keras train steps and inference calls on random canvases (the network's cost
does not depend on what the pixels show). Lines are read in windows as wide as their ink (imaging.crop_window):
the line row is timed at the whole canvas and at the sample's mean window (WINDOW, measured on the seed-42 line
sample's training lines), and inference as the exported model reads lines (each in its own window). Prints
samples/s per row, their ratios, how many epochs of the default synthetic line sample fit in 25 minutes, and the
load average, since the machine may be shared. A figure script, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steps.workflow import config  # noqa: E402

for _name, _value in config.TRAINING_ENV.items():  # train as the train step does: set before TensorFlow loads
    os.environ.setdefault(_name, _value)

import numpy as np  # noqa: E402

from steps.dataset.plan import PreprocessConfig  # noqa: E402
from steps.training.fit import TrainConfig  # noqa: E402

CHARSET = 79  # IAM's characters; the output layer's size barely matters
TRAIN_LINES = 1618  # training lines of the default synthetic line sample (seed 42), from its preprocess run
WINDOW = 407  # their mean window width (imaging.window_width) on the 768-px canvas: 1.9x fewer columns


def _timed(fn, steps: int) -> float:
    fn()  # the first call traces and compiles
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - started) / steps


def measure(level: str, steps: int, batch: int, window: int | None = None) -> dict:
    """Train samples/s and inference ms/image of the default network on `level`'s canvas; `window`: train on
    that width (what a windowed batch of lines that wide costs) and read canvases whose ink needs about that."""
    import keras
    import tensorflow as tf

    from steps.inference import ctc, imaging
    from steps.training import model as modelib

    pre = PreprocessConfig.from_params({**config.defaults("preprocess"), "level": level})
    train = TrainConfig.from_params(config.defaults("train"))
    height, width = pre.image_height, pre.image_width
    windowed = config.LEVELS[level].windowed
    net, trainer = modelib.build_for_training(train.model, height, width, CHARSET + 1, windowed)
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"logits": ctc.loss, "shortcut": ctc.loss} if trainer is not net else ctc.loss,
    )
    rng = np.random.default_rng(0)
    trained = window or width
    x = rng.random((batch, height, trained, 1), dtype=np.float32)
    length = min(pre.max_label_length // 2, train.model.time_steps(trained) // 2)
    y = rng.integers(1, CHARSET + 1, (batch, pre.max_label_length)).astype(np.int32)
    y[:, length:] = 0
    labels = {"logits": y, "shortcut": y} if trainer is not net else y
    step = _timed(lambda: trainer.train_on_batch(x, labels), steps)
    # inference as the exported model reads: uint8 canvases, ink centred, as wide as `window` needs
    ink = int((window or width) / 1.15)
    canvases = np.zeros((8, height, width, 1), np.uint8)
    left = (width - ink) // 2
    canvases[:, :, left : left + ink] = rng.integers(0, 256, (8, height, ink, 1), dtype=np.uint8)
    infer = tf.function(lambda images: modelib.read_canvases(net, images))
    call = _timed(lambda: infer(tf.constant(canvases)).numpy(), steps)
    # what reading a windowed batch cost before windows: the whole batch at once on the whole canvas
    whole = tf.function(lambda images: net(imaging.to_model_input(images), training=False))
    batched = _timed(lambda: whole(tf.constant(canvases)).numpy(), steps)
    return {
        "level": level + (f", {trained}-px windows" if window else ""),
        "canvas": f"{height}x{trained}",
        "time_steps": train.model.time_steps(trained),
        "train_samples_per_s": batch / step,
        "infer_ms_per_image_batch8": 1000 * call / 8,
        "infer_ms_per_image_batch8_whole_canvas": 1000 * batched / 8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = [measure("words", args.steps, args.batch), measure("lines", args.steps, args.batch)]
    rows.append(measure("lines", args.steps, args.batch, window=WINDOW // 4 * 4))
    words, whole, windowed = rows
    print(f"load average at start {load:.2f}, now {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    for r in rows:
        print(
            f"{r['level']:25s} {r['canvas']:>7s} ({r['time_steps']} time steps): "
            f"train {r['train_samples_per_s']:.1f} samples/s, inference {r['infer_ms_per_image_batch8']:.2f} ms/image"
            f" (batches of 8; the whole batch on the whole canvas: {r['infer_ms_per_image_batch8_whole_canvas']:.2f})"
        )
    epoch = TRAIN_LINES / windowed["train_samples_per_s"]
    print(
        f"read in windows, a line costs {words['train_samples_per_s'] / windowed['train_samples_per_s']:.1f}x a word "
        f"to train (whole canvas: {words['train_samples_per_s'] / whole['train_samples_per_s']:.1f}x) and "
        f"{windowed['infer_ms_per_image_batch8'] / words['infer_ms_per_image_batch8']:.1f}x to read; "
        f"a pass over the {TRAIN_LINES} training lines takes {epoch:.0f} s here: {1500 / epoch:.1f} passes in 25 min"
    )


if __name__ == "__main__":
    main()
