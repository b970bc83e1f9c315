"""What a line costs next to a word: training and inference steps of the default network on each level's canvas.

    python benchmarks/lines.py [--steps 10] [--batch 32]

Builds the default model (train's MLproject defaults) for the word canvas and for the line canvas (preprocess's
defaults for each level), and times Keras train steps and batched inference calls on random canvases (the
network's cost does not depend on what the pixels show). Prints samples/s per level, their ratio, how many epochs
of the default synthetic line sample fit in 25 minutes at that rate, and the load average, since the machine
may be shared. A figure script, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from steps.dataset.plan import PreprocessConfig  # noqa: E402
from steps.training.fit import TrainConfig  # noqa: E402
from steps.workflow import config  # noqa: E402

CHARSET = 79  # IAM's characters; the output layer's size barely matters
TRAIN_LINES = 1620  # training lines of the default synthetic line sample (seed 42), from its preprocess run


def _timed(fn, steps: int) -> float:
    fn()  # the first call traces and compiles
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - started) / steps


def measure(level: str, steps: int, batch: int) -> dict:
    import keras
    import tensorflow as tf

    from steps.inference import ctc
    from steps.training import model as modelib

    pre = PreprocessConfig.from_params({**config.defaults("preprocess"), "level": level})
    train = TrainConfig.from_params(config.defaults("train"))
    height, width = pre.image_height, pre.image_width
    net, trainer = modelib.build_for_training(train.model, height, width, CHARSET + 1)
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"logits": ctc.loss, "shortcut": ctc.loss} if trainer is not net else ctc.loss,
    )
    rng = np.random.default_rng(0)
    x = rng.random((batch, height, width, 1), dtype=np.float32)
    length = min(pre.max_label_length // 2, train.model.time_steps(width) // 2)
    y = rng.integers(1, CHARSET + 1, (batch, pre.max_label_length)).astype(np.int32)
    y[:, length:] = 0
    labels = {"logits": y, "shortcut": y} if trainer is not net else y
    step = _timed(lambda: trainer.train_on_batch(x, labels), steps)
    infer = tf.function(lambda images: net(images, training=False))
    call = _timed(lambda: infer(tf.constant(x[:8])).numpy(), steps)
    return {
        "level": level,
        "canvas": f"{height}x{width}",
        "time_steps": train.model.time_steps(width),
        "train_samples_per_s": batch / step,
        "infer_ms_per_image_batch8": 1000 * call / 8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = [measure(level, args.steps, args.batch) for level in ("words", "lines")]
    words, lines = rows
    print(f"load average at start {load:.2f}, now {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    for r in rows:
        print(
            f"{r['level']:5s} canvas {r['canvas']:>7s} ({r['time_steps']} time steps): "
            f"train {r['train_samples_per_s']:.1f} samples/s, inference {r['infer_ms_per_image_batch8']:.2f} ms/image"
        )
    epoch = TRAIN_LINES / lines["train_samples_per_s"]
    print(
        f"a line costs {words['train_samples_per_s'] / lines['train_samples_per_s']:.1f}x a word to train and "
        f"{lines['infer_ms_per_image_batch8'] / words['infer_ms_per_image_batch8']:.1f}x to read; "
        f"one epoch of {TRAIN_LINES} training lines takes {epoch:.0f} s here: {1500 / epoch:.1f} epochs in 25 min"
    )


if __name__ == "__main__":
    main()
