"""Where does the time of steps.data.batches go? Variants of the pipeline, timed in steady state.

    python benchmarks/profile_input.py [--data-dir benchmarks/work/data-6000/dataset] [--batch-size 32] [--seconds 3]

Each variant is the reader of steps/data.py with one thing changed or removed, so the differences
between the rows attribute the time to stages. The "batched" variants are the suggested changes to
steps/data.py (run after .batch(), one op call per batch instead of one per image); they draw the
same kinds of random transforms, though not the same random stream. Nothing in steps/ is modified.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from steps import data, imaging  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE


def augment_batch(canvas: tf.Tensor, seed: tf.Tensor, noise: str = "normal") -> tf.Tensor:
    """steps.data.augment over a whole uint8 batch [B, H, W, 1]: per-image random parameters, one op call.
    noise="uniform" draws the pixel noise from a uniform distribution of the same standard deviation."""
    h, w = canvas.shape[1], canvas.shape[2]
    b = tf.shape(canvas)[0]
    s = tf.random.stateless_uniform([b, 6], seed, -1.0, 1.0)
    shear, scale, dx, dy = 0.3 * s[:, 0], 1.0 + 0.1 * s[:, 1], 4.0 * s[:, 2], 2.0 * s[:, 3]
    zeros = tf.zeros_like(shear)
    transform = tf.stack([1 / scale, shear, dx - shear * h / 2 + (1 - 1 / scale) * w / 2,
                          zeros, 1 / scale, dy + (1 - 1 / scale) * h / 2, zeros, zeros], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(images=tf.cast(canvas, tf.float32), transforms=transform,
                                              output_shape=[h, w], interpolation="BILINEAR",
                                              fill_mode="CONSTANT", fill_value=0.0)
    gain = (1.0 + 0.25 * s[:, 4])[:, None, None, None]
    sd = tf.abs(s[:, 5])[:, None, None, None]
    if noise == "uniform":
        a = 6.0 * 3.0 ** 0.5
        x = x * gain + tf.random.stateless_uniform(tf.shape(x), seed + 1, -a, a) * sd
    else:
        x = x * gain + tf.random.stateless_normal(tf.shape(x), seed + 1, stddev=6.0) * sd
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def augment_uniform_noise(canvas: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """steps.data.augment with its Gaussian pixel noise replaced by uniform noise of the same standard
    deviation (6): Philox normals cost about 3x uniforms on CPU, and the noise's shape does not matter here."""
    h, w = canvas.shape[0], canvas.shape[1]
    s = tf.random.stateless_uniform([6], seed, -1.0, 1.0)
    shear, scale, dx, dy = 0.3 * s[0], 1.0 + 0.1 * s[1], 4.0 * s[2], 2.0 * s[3]
    transform = tf.stack([1 / scale, shear, dx - shear * h / 2 + (1 - 1 / scale) * w / 2,
                          0.0, 1 / scale, dy + (1 - 1 / scale) * h / 2, 0.0, 0.0])
    x = tf.cast(canvas, tf.float32)[tf.newaxis]
    x = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transform[tf.newaxis], output_shape=[h, w],
                                              interpolation="BILINEAR", fill_mode="CONSTANT", fill_value=0.0)[0]
    half_width = 6.0 * 3.0 ** 0.5   # uniform on [-a, a] has standard deviation a / sqrt(3)
    x = x * (1.0 + 0.25 * s[4]) + tf.random.stateless_uniform(tf.shape(x), seed + 1, -half_width, half_width) * tf.abs(s[5])
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def variants(data_dir: str, bs: int) -> dict:
    meta = data.stats(data_dir)
    encode = data.label_encoder(data.charset(data_dir), meta["max_label_length"])
    n = meta["samples"]["train"]

    def base(shuffle_files: bool):
        return data.records(data_dir, "train", shuffle_files=shuffle_files).map(
            lambda ex: (ex["image"], encode(ex["text"])), num_parallel_calls=AUTOTUNE).cache()

    def finish(ds):
        return ds.map(lambda i, l: (imaging.to_model_input(i), l), num_parallel_calls=AUTOTUNE).batch(bs).prefetch(AUTOTUNE)

    def shuffled(ds):
        ds = ds.shuffle(min(n, 10_000), seed=0, reshuffle_each_iteration=True)
        return tf.data.Dataset.zip((ds, tf.data.Dataset.random(0).batch(2)))

    def only_transform(pair, s):  # augment without the noise term
        canvas = pair[0]
        h, w = canvas.shape[0], canvas.shape[1]
        u = tf.random.stateless_uniform([6], s, -1.0, 1.0)
        shear, scale, dx, dy = 0.3 * u[0], 1.0 + 0.1 * u[1], 4.0 * u[2], 2.0 * u[3]
        t = tf.stack([1 / scale, shear, dx - shear * h / 2 + (1 - 1 / scale) * w / 2,
                      0.0, 1 / scale, dy + (1 - 1 / scale) * h / 2, 0.0, 0.0])
        x = tf.raw_ops.ImageProjectiveTransformV3(images=tf.cast(canvas, tf.float32)[None], transforms=t[None],
                                                  output_shape=[h, w], interpolation="BILINEAR",
                                                  fill_mode="CONSTANT", fill_value=0.0)[0]
        return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8), pair[1]

    def batched_train(noise="normal"):
        ds = shuffled(base(True)).map(lambda pair, s: (pair[0], pair[1], s))
        ds = ds.batch(bs)
        ds = ds.map(lambda i, l, s: (imaging.to_model_input(augment_batch(i, s[0], noise)), l),
                    num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    return {
        "eval: steps.data.batches(training=False)": lambda: data.batches(data_dir, "train", bs, training=False),
        "eval, suggested: batch before the float map": lambda: base(False).batch(bs).map(
            lambda i, l: (imaging.to_model_input(i), l), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE),
        "eval, suggested: cache float batches (as Keras)": lambda: base(False).batch(bs).map(
            lambda i, l: (imaging.to_model_input(i), l), num_parallel_calls=AUTOTUNE).cache().prefetch(AUTOTUNE),
        "train: steps.data.batches(training=True)": lambda: data.batches(data_dir, "train", bs, training=True),
        "train minus augment (shuffle + seed zip only)": lambda: finish(shuffled(base(True)).map(lambda p, s: p)),
        "train, augment without noise": lambda: finish(
            shuffled(base(True)).map(only_transform, num_parallel_calls=AUTOTUNE)),
        "train, augment with noise (= data.augment)": lambda: finish(
            shuffled(base(True)).map(lambda p, s: (data.augment(p[0], s), p[1]), num_parallel_calls=AUTOTUNE)),
        "train, suggested: augment whole batches": batched_train,
        "train, suggested: whole batches + uniform noise": lambda: batched_train("uniform"),
        "train, suggested: uniform instead of Gaussian noise": lambda: finish(
            shuffled(base(True)).map(lambda p, s: (augment_uniform_noise(p[0], s), p[1]), num_parallel_calls=AUTOTUNE)),
    }


def steady_rate(make, seconds: float) -> tuple[float, int]:
    ds = make()
    for _ in ds:  # first (cold) epoch fills the cache
        pass
    images, spent, epochs = 0, 0.0, 0
    while spent < seconds or epochs < 2:
        t0 = time.perf_counter()
        for x, _ in ds:
            images += int(x.shape[0])
        spent += time.perf_counter() - t0
        epochs += 1
    return images / spent, epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="default: the latest benchmark dataset (benchmarks/work/data-*/dataset)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    if a.data_dir is None:
        sys.path.insert(0, str(HERE))
        from run import latest_data_root

        a.data_dir = str(latest_data_root() / "dataset")
    print(f"{'variant':52s} {'images/s':>10s} epochs")
    for name, make in variants(a.data_dir, a.batch_size).items():
        rate, epochs = steady_rate(make, a.seconds)
        print(f"{name:52s} {rate:10.0f} {epochs:4d}", flush=True)


if __name__ == "__main__":
    main()
