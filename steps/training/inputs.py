"""The training input pipeline: cached, shuffled, augmented batches of (image, label) over a dataset's records.

Shared by train, evaluate and the benchmarks. The dataset is described by a DatasetInfo, whose
directory may be a local path or any URI tf.io.gfile reads, so remote data is streamed, not copied.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import tensorflow as tf

from steps.dataset.info import DatasetInfo
from steps.dataset.reader import label_encoder, records
from steps.inference import imaging
from steps.inference.lite import native_stderr_without
from steps.workflow import config

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 4 << 30  # cache decoded canvases in memory below this size


NOISE_PATTERNS = 64  # per-pixel noise is drawn from a fixed bank: generating it per batch was a third of the cost


@functools.lru_cache(maxsize=4)
def noise_bank(height: int, width: int) -> np.ndarray:
    """int8 [NOISE_PATTERNS, height, 2 * width, 1] Gaussian grain (sd 6 grey levels), the same in every process.

    Twice the canvas width, so that a batch reads it at a random column offset: 64 patterns x `width`
    offsets x a random amplitude per image is variety enough for grain of a few grey levels, and a gather
    of 4 kB per image costs a twentieth of drawing 4,096 normal numbers.
    """
    rng = np.random.default_rng(20261202)
    grain = rng.normal(0.0, 6.0, size=(NOISE_PATTERNS, height, 2 * width, 1))
    return np.clip(np.round(grain), -127, 127).astype(np.int8)


def augment_batch(canvases: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """warp_batch as uint8 canvases (what the sample grid shows and the tests check)."""
    return tf.cast(tf.round(warp_batch(canvases, seed)), tf.uint8)


def warp_batch(canvases: tf.Tensor, seed: tf.Tensor, full_width: int | None = None) -> tf.Tensor:
    """Random shear, scale, shift, stroke-strength and noise on uint8 canvases [B, H, W, 1], each image its own
    parameters -> float32 [B, H, W, 1] in [0, 255]; training branch only.

    Handwriting varies in slant and size far more than in anything else; these are the cheap,
    label-preserving transforms for that (stateless ops, so a seed reproduces the stream). One call per
    batch: the warp and the noise are batched, several times cheaper than per image, and the grain comes
    from noise_bank. A batch of whole canvases (words) is distorted in one XLA-compiled pass (affine_warp);
    windowed batches (lines) vary in width, `full_width` being their canvas's, and keep TF's warp kernel.
    """
    h, w = canvases.shape[1], tf.shape(canvases)[2]
    bank_width = full_width or canvases.shape[2]
    s = tf.random.stateless_uniform([tf.shape(canvases)[0], 6], seed, -1.0, 1.0)
    shear, scale, dx, dy = 0.3 * s[:, 0], 1.0 + 0.1 * s[:, 1], 4.0 * s[:, 2], 2.0 * s[:, 3]
    # Projective transform maps output (x, y) to input: x' = a0 x + a1 y + a2, y' = b1 y + b2.
    zeros = tf.zeros_like(shear)
    transforms = tf.stack(
        [
            1 / scale,
            shear,
            dx - shear * h / 2 + (1 - 1 / scale) * tf.cast(w, tf.float32) / 2,
            zeros,
            1 / scale,
            dy + (1 - 1 / scale) * h / 2,
            zeros,
            zeros,
        ],
        axis=1,
    )
    pattern = tf.random.stateless_uniform([tf.shape(canvases)[0]], seed + 1, 0, NOISE_PATTERNS, dtype=tf.int32)
    offset = tf.random.stateless_uniform([], seed + 2, 0, bank_width, dtype=tf.int32)
    bank = tf.constant(noise_bank(h, bank_width))
    grain = tf.gather(bank[:, :, offset : offset + w], pattern)
    strength, noise = 1.0 + 0.25 * s[:, 4], tf.abs(s[:, 5])
    if full_width is not None:  # windows of many widths and batch sizes: XLA would compile each shape anew
        return _distort(canvases, transforms, grain, strength, noise, kernel_warp)
    _start_xla_quietly()
    return _distort_compiled(canvases, transforms, grain, strength, noise)


def _distort(
    canvases: tf.Tensor,
    transforms: tf.Tensor,
    grain: tf.Tensor,
    strength: tf.Tensor,
    noise: tf.Tensor,
    warp: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
) -> tf.Tensor:
    """warp_batch's pixel work: the canvases warped, strokes times `strength` [B], plus int8 `grain`
    [B, H, W, 1] times `noise` [B], clipped to [0, 255]."""
    per_image = lambda v: v[:, tf.newaxis, tf.newaxis, tf.newaxis]  # noqa: E731
    distorted = warp(canvases, transforms) * per_image(strength) + tf.cast(grain, tf.float32) * per_image(noise)
    return tf.clip_by_value(distorted, 0.0, 255.0)


@tf.function(jit_compile=True)
def _distort_compiled(canvases, transforms, grain, strength, noise):
    """_distort with affine_warp, compiled by XLA into one pass over the pixels (once per batch shape)."""
    return _distort(canvases, transforms, grain, strength, noise, affine_warp)


@functools.cache
def _start_xla_quietly() -> None:
    """XLA announces itself on stderr once per process (absl lines no log level stops): compile a tiny
    _distort_compiled here, eagerly even while a tf.data map is being traced, with those lines held back."""
    with tf.init_scope(), native_stderr_without():
        pixel, one = tf.zeros([1, 1, 1, 1], tf.uint8), tf.ones([1])
        _distort_compiled(pixel, tf.zeros([1, 8]), tf.zeros([1, 1, 1, 1], tf.int8), one, one)


def kernel_warp(canvases: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """tf.raw_ops.ImageProjectiveTransformV3 on uint8 canvases (bilinear, 0 outside) -> float32 [B, H, W, 1]."""
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=canvases,
        transforms=transforms,
        output_shape=tf.shape(canvases)[1:3],
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )
    return tf.cast(warped, tf.float32)


def affine_warp(canvases: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """kernel_warp for affine `transforms` [B, 8] (output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2),
    the last two 0), written as the kernel's formula in plain TF ops so that XLA can compile it.

    Bilinear, 0 outside, truncated to whole grey levels as the kernel's uint8 output is: run as it is, the
    kernel's pixels exactly; compiled, XLA's fused multiply-adds move about 1 pixel in 10,000 by one grey
    level. The kernel evaluates a generator per pixel, about 90 us of a 32x128 canvas and 90% of the
    augmenting reader; compiled, this takes a third of that (README, "Performance"). Uncompiled it is
    slower than the kernel, so only _distort_compiled uses it.
    """
    batch, height, width = tf.shape(canvases)[0], tf.shape(canvases)[1], tf.shape(canvases)[2]
    a0, a1, a2, b0, b1, b2 = (transforms[:, i, tf.newaxis, tf.newaxis] for i in range(6))
    y = tf.cast(tf.range(height), tf.float32)[tf.newaxis, :, tf.newaxis]
    x = tf.cast(tf.range(width), tf.float32)[tf.newaxis, tf.newaxis, :]
    source_x, source_y = a0 * x + a1 * y + a2, b0 * x + b1 * y + b2  # [B, H, W]
    x0, y0 = tf.floor(source_x), tf.floor(source_y)
    fx, fy = source_x - x0, source_y - y0
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    pixels = tf.reshape(tf.cast(canvases, tf.float32), [-1])
    first = tf.range(batch)[:, tf.newaxis, tf.newaxis] * height * width

    def read(row: tf.Tensor, column: tf.Tensor) -> tf.Tensor:  # 0 outside the canvas, as fill_value 0
        inside = (row >= 0) & (row < height) & (column >= 0) & (column < width)
        index = first + tf.clip_by_value(row, 0, height - 1) * width + tf.clip_by_value(column, 0, width - 1)
        return tf.where(inside, tf.gather(pixels, index), 0.0)

    top = (1.0 - fx) * read(y0, x0) + fx * read(y0, x0 + 1)
    bottom = (1.0 - fx) * read(y0 + 1, x0) + fx * read(y0 + 1, x0 + 1)
    return tf.floor((1.0 - fy) * top + fy * bottom)[..., tf.newaxis]


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
    `shard` = (i, n): only files i, i + n, ... of the split (reader.records). For a windowed level (lines)
    W is the batch's ink window (imaging.crop_window), and training batches hold samples of one window
    width, so a batch of short lines costs what short lines cost.
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
    windowed = config.LEVELS[info.level].windowed
    if windowed and training:
        ds = ds.group_by_window(
            key_func=lambda image, label: tf.cast(imaging.window_width(image[tf.newaxis])[0], tf.int64),
            reduce_func=lambda _, window: window.batch(batch_size),
            window_size=batch_size,
        )
    else:
        ds = ds.batch(batch_size, drop_remainder=False)
    if windowed:
        ds = ds.map(lambda images, labels: (imaging.crop_window(images), labels), num_parallel_calls=AUTOTUNE)
    if training:
        # new seeds every epoch, so an image is never warped the same way twice
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed, rerandomize_each_iteration=True).batch(2)))
        ds = ds.map(
            # straight to the model's scaling: a round trip through uint8 would cost more than the warp's noise
            lambda pair, s: (warp_batch(pair[0], s, info.image_width if windowed else None) * (1.0 / 255.0), pair[1]),
            num_parallel_calls=AUTOTUNE,
        )
        # No tf.data autotuning thread for the training stream. Keras drops this iterator when fit ends, and
        # dropping it waited for that thread, intermittently for 4 to 50 s (TF 2.17, README "Performance").
        # The stream stays the same (AUTOTUNE values are then fixed instead of tuned), and the reader is not
        # the limit (0.7% of a step waits for it).
        options = tf.data.Options()
        options.autotune.enabled = False
        ds = ds.with_options(options)
    else:
        ds = ds.map(lambda images, labels: (imaging.to_model_input(images), labels), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
