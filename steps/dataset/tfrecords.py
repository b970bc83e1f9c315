"""The TFRecord schema: writer and parser side by side, so they cannot disagree.

One tf.train.Example per word: the preprocessed uint8 canvas as raw bytes (no decode at training
time), the text, and ids for tracing a sample back to the manifest.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from steps.workflow import config


def serialize(sample_id: str, writer: str, text: str, canvas: np.ndarray) -> bytes:
    """One sample -> serialized tf.train.Example. `canvas` is uint8 [H, W, 1] from imaging.preprocess_bytes."""
    assert canvas.dtype == np.uint8 and canvas.ndim == 3, canvas.shape

    def _bytes(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "id": _bytes(sample_id.encode()),
                "writer": _bytes(writer.encode()),
                "text": _bytes(text.encode("utf-8")),
                "image": _bytes(canvas.tobytes()),
                "height": _int(canvas.shape[0]),
                "width": _int(canvas.shape[1]),
            }
        )
    ).SerializeToString()


_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "writer": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string),
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
}


def parse(serialized: tf.Tensor, height: int, width: int) -> dict[str, tf.Tensor]:
    """Serialized example -> {id, writer, text: string; image: uint8 [height, width, 1]}. Works in tf.data."""
    ex = tf.io.parse_single_example(serialized, _FEATURES)
    image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [height, width, 1])
    return {"id": ex["id"], "writer": ex["writer"], "text": ex["text"], "image": image}


def shard_name(split: str, index: int, count: int) -> str:
    return config.SHARD_PATTERN.format(split=split, index=index, count=count)


def shard_files(data_dir: str, split: str) -> list[str]:
    """The shards of one split under a local or remote (s3://, gs://, hdfs://...) dataset directory."""
    pattern = f"{data_dir.rstrip('/')}/{split}-*-of-*.tfrecord"
    return sorted(tf.io.gfile.glob(pattern))
