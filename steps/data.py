"""Reading a preprocessed dataset: its metadata and the tf.data input pipeline over its shards.

Shared by train, evaluate and the benchmarks. `data_dir` may be a local path or any URI tf.io.gfile
reads (s3://, gs://, hdfs://, az:// through tensorflow-io), so remote data is streamed, not copied.
"""
from __future__ import annotations

import json
import math

import tensorflow as tf

from steps import config, tfrecords
from steps.charset import Charset

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 4 << 30  # cache decoded canvases in memory below this size


class DatasetError(ValueError):
    """A dataset directory that is missing files or is inconsistent."""


def read_json(data_dir: str, name: str) -> dict:
    path = f"{data_dir.rstrip('/')}/{name}"
    if not tf.io.gfile.exists(path):
        raise DatasetError(f"{name} not found in {data_dir}: `data` must be a preprocess run's dataset/ folder")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def stats(data_dir: str) -> dict:
    return read_json(data_dir, config.STATS_FILE)


def charset(data_dir: str) -> Charset:
    with tf.io.gfile.GFile(f"{data_dir.rstrip('/')}/{config.CHARSET_FILE}") as f:
        return Charset.from_json(f.read())


def label_encoder(chars: Charset, max_length: int):
    """text (scalar string) -> int32 [max_length] class ids (1..n), padded with the blank 0."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(chars.characters)),
                                            tf.range(1, len(chars.characters) + 1, dtype=tf.int32)),
        default_value=-1)

    def encode(text: tf.Tensor) -> tf.Tensor:
        ids = table.lookup(tf.strings.unicode_split(text, "UTF-8"))
        tf.debugging.assert_non_negative(ids, "label holds a character outside the charset")
        return tf.pad(ids, [[0, max_length - tf.shape(ids)[0]]])

    return encode


def augment(canvas: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random shear, scale, shift, stroke-strength and noise on a uint8 canvas; training branch only.

    Handwriting varies in slant and size far more than in anything else; these are the cheap,
    label-preserving transforms for that (stateless ops, so a seed reproduces the stream).
    """
    h, w = canvas.shape[0], canvas.shape[1]
    s = tf.random.stateless_uniform([6], seed, -1.0, 1.0)
    shear, scale, dx, dy = 0.3 * s[0], 1.0 + 0.1 * s[1], 4.0 * s[2], 2.0 * s[3]
    # Projective transform maps output (x, y) to input: x' = a0 x + a1 y + a2, y' = b1 y + b2.
    transform = tf.stack([1 / scale, shear, dx - shear * h / 2 + (1 - 1 / scale) * w / 2,
                          0.0, 1 / scale, dy + (1 - 1 / scale) * h / 2, 0.0, 0.0])
    x = tf.cast(canvas, tf.float32)[tf.newaxis]
    x = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transform[tf.newaxis], output_shape=[h, w],
                                              interpolation="BILINEAR", fill_mode="CONSTANT", fill_value=0.0)[0]
    x = x * (1.0 + 0.25 * s[4]) + tf.random.stateless_normal(tf.shape(x), seed + 1, stddev=6.0) * tf.abs(s[5])
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def records(data_dir: str, split: str, shuffle_files: bool = False) -> tf.data.Dataset:
    """Parsed examples of one split: {id, writer, text, image uint8 [H, W, 1]}."""
    meta = stats(data_dir)
    files = tfrecords.shard_files(data_dir, split)
    if not files:
        raise DatasetError(f"no {split} shards in {data_dir}")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE,
                       deterministic=not shuffle_files)
    ds = ds.map(lambda r: tfrecords.parse(r, meta["image_height"], meta["image_width"]), num_parallel_calls=AUTOTUNE)
    # A known length lets Keras show progress and size its epochs without a first blind pass.
    return ds.apply(tf.data.experimental.assert_cardinality(meta["samples"][split]))


def batches(data_dir: str, split: str, batch_size: int, training: bool = False, seed: int = 0) -> tf.data.Dataset:
    """(float image [B, H, W, 1], int32 labels [B, max_label_length]) batches for Keras fit/evaluate.

    Parsed canvases are cached in memory when they fit (so each epoch after the first costs no I/O),
    augmentation runs after the cache and only when training, and prefetch overlaps input with compute.
    """
    from steps import imaging

    meta = stats(data_dir)
    encode = label_encoder(charset(data_dir), meta["max_label_length"])
    ds = records(data_dir, split, shuffle_files=training).map(lambda ex: (ex["image"], encode(ex["text"])),
                                                              num_parallel_calls=AUTOTUNE)
    n = meta["samples"][split]
    if n * meta["image_height"] * meta["image_width"] < CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(n, 10_000), seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed).batch(2)))
        ds = ds.map(lambda pair, s: (augment(pair[0], s), pair[1]), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda image, label: (imaging.to_model_input(image), label), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=False).prefetch(AUTOTUNE)


def steps_per_epoch(data_dir: str, split: str, batch_size: int) -> int:
    return math.ceil(stats(data_dir)["samples"][split] / batch_size)
