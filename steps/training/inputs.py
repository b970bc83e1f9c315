"""The training input pipeline: cached, shuffled, augmented batches of (image, label) over a dataset's records.

Shared by train, evaluate and the benchmarks. The dataset is described by a DatasetInfo, whose
directory may be a local path or any URI tf.io.gfile reads, so remote data is streamed, not copied.
"""

from __future__ import annotations

import math

import tensorflow as tf

from steps.dataset.info import DatasetInfo
from steps.dataset.reader import label_encoder, records
from steps.inference import imaging

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 4 << 30  # cache decoded canvases in memory below this size


def augment_batch(canvases: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random shear, scale, shift, stroke-strength and noise on uint8 canvases [B, H, W, 1], each image its own
    parameters; training branch only.

    Handwriting varies in slant and size far more than in anything else; these are the cheap,
    label-preserving transforms for that (stateless ops, so a seed reproduces the stream). One call per
    batch: the warp and the noise are single batched kernels, several times cheaper than per image.
    """
    h, w = canvases.shape[1], canvases.shape[2]
    s = tf.random.stateless_uniform([tf.shape(canvases)[0], 6], seed, -1.0, 1.0)
    shear, scale, dx, dy = 0.3 * s[:, 0], 1.0 + 0.1 * s[:, 1], 4.0 * s[:, 2], 2.0 * s[:, 3]
    # Projective transform maps output (x, y) to input: x' = a0 x + a1 y + a2, y' = b1 y + b2.
    zeros = tf.zeros_like(shear)
    transforms = tf.stack(
        [
            1 / scale,
            shear,
            dx - shear * h / 2 + (1 - 1 / scale) * w / 2,
            zeros,
            1 / scale,
            dy + (1 - 1 / scale) * h / 2,
            zeros,
            zeros,
        ],
        axis=1,
    )
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(canvases, tf.float32),
        transforms=transforms,
        output_shape=[h, w],
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )
    strength, noise = (1.0 + 0.25 * s[:, 4])[:, None, None, None], tf.abs(s[:, 5])[:, None, None, None]
    x = x * strength + tf.random.stateless_normal(tf.shape(x), seed + 1, stddev=6.0) * noise
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def augment(canvas: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """augment_batch for one uint8 canvas [H, W, 1]."""
    return augment_batch(canvas[tf.newaxis], seed)[0]


def batches(
    info: DatasetInfo,
    split: str,
    batch_size: int,
    training: bool = False,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """(float image [B, H, W, 1], int32 labels [B, max_label_length]) batches for Keras fit/evaluate.

    Parsed canvases are cached in memory when they fit (so each epoch after the first costs no I/O),
    augmentation runs after the cache and only when training, and prefetch overlaps input with compute.
    `shard` = (i, n): only files i, i + n, ... of the split (reader.records).
    """
    encode = label_encoder(info.charset, info.max_label_length)
    ds = records(info, split, shuffle_files=training, shard=shard).map(
        lambda ex: (ex["image"], encode(ex["text"])), num_parallel_calls=AUTOTUNE
    )
    n = info.samples[split]
    if n * info.image_height * info.image_width < CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(n, 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    if training:
        # new seeds every epoch, so an image is never warped the same way twice
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed, rerandomize_each_iteration=True).batch(2)))
        ds = ds.map(lambda pair, s: (augment_batch(pair[0], s), pair[1]), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda images, labels: (imaging.to_model_input(images), labels), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def steps_per_epoch(info: DatasetInfo, split: str, batch_size: int) -> int:
    return math.ceil(info.samples[split] / batch_size)
