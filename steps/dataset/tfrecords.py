"""The TFRecord schema: writer and parser side by side, so they cannot disagree.

One tf.train.Example per word: the preprocessed uint8 canvas as raw bytes (no decode at training
time), the text, and ids for tracing a sample back to the manifest.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from steps.workflow import config


def serialize(sample_id: str, writer: str, text: str, canvas: np.ndarray) -> bytes:
    """One sample -> serialized tf.train.Example. `canvas` is uint8 [H, W, 1] from imaging.preprocess_bytes.

    Written in protobuf's wire format directly (a test parses it back with tf.train.Example and with
    parse): building the message objects cost ~50 us of GIL-held Python per image, time that preprocess's
    writing thread cannot share with any other core. Map entries come in a fixed order, so the same sample
    always gives the same bytes.
    """
    assert canvas.dtype == np.uint8 and canvas.ndim == 3, canvas.shape
    features = b"".join(
        (
            _entry(b"id", _bytes_feature(sample_id.encode())),
            _entry(b"writer", _bytes_feature(writer.encode())),
            _entry(b"text", _bytes_feature(text.encode("utf-8"))),
            _entry(b"image", _bytes_feature(canvas.tobytes())),
            _entry(b"height", _int_feature(canvas.shape[0])),
            _entry(b"width", _int_feature(canvas.shape[1])),
        )
    )
    return _field(1, features)  # Example.features


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: bytes, feature: bytes) -> bytes:
    """One entry of Features.feature, a map<string, Feature>: field 1 of repeated {1: key, 2: value}."""
    return _field(1, _field(1, key) + _field(2, feature))


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list = BytesList{value: [value]}


def _int_feature(value: int) -> bytes:
    return _field(3, _field(1, _varint(value)))  # Feature.int64_list = Int64List{value: [value]}, packed


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


def parse_many(serialized: tf.Tensor, height: int, width: int) -> dict[str, tf.Tensor]:
    """parse for a vector of serialized examples: {id, writer, text: string [N]; image: uint8 [N, height, width, 1]}."""
    ex = tf.io.parse_example(serialized, _FEATURES)
    image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, height, width, 1])
    return {"id": ex["id"], "writer": ex["writer"], "text": ex["text"], "image": image}


def shard_name(split: str, index: int, count: int) -> str:
    return config.SHARD_PATTERN.format(split=split, index=index, count=count)


def shard_files(data_dir: str, split: str) -> list[str]:
    """The shards of one split under a local or remote (s3://, gs://, hdfs://...) dataset directory."""
    pattern = f"{data_dir.rstrip('/')}/{split}-*-of-*.tfrecord"
    return sorted(tf.io.gfile.glob(pattern))
