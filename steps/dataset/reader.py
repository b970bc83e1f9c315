"""Reading a dataset's records: parsed TFRecord examples of a split, and labels encoded for CTC.

Shared by training, evaluation and the benchmarks; the directory may be any URI tf.io.gfile reads.
"""

from __future__ import annotations

import tensorflow as tf

from steps.dataset import tfrecords
from steps.dataset.info import DatasetError, DatasetInfo
from steps.inference.charset import Charset

AUTOTUNE = tf.data.AUTOTUNE


def records(
    info: DatasetInfo, split: str, shuffle_files: bool = False, shard: tuple[int, int] | None = None
) -> tf.data.Dataset:
    """Parsed examples of one split: {id, writer, text, image uint8 [H, W, 1]}.

    `shard` = (i, n) reads only files i, i + n, ... of the split (one worker's share in multi-worker training);
    the count of examples is then not known in advance.
    """
    files = tfrecords.shard_files(info.data_dir, split)
    if shard is not None:
        files = files[shard[0] :: shard[1]]
    if not files:
        raise DatasetError(f"no {split} shards in {info.data_dir}" + (f" for worker {shard[0]}" if shard else ""))
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), reshuffle_each_iteration=True)
    # Deterministic even when shuffled: the shuffle is seeded, and an order that depended on thread timing made
    # two runs with the same seed train on different batches (and differ by a fifth in test CER).
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda r: tfrecords.parse(r, info.image_height, info.image_width), num_parallel_calls=AUTOTUNE)
    if shard is not None:
        return ds
    # A known length lets Keras show progress and size its epochs without a first blind pass.
    return ds.apply(tf.data.experimental.assert_cardinality(info.samples[split]))


def single_pass(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with no tf.data autotuning thread, for a stream read once and dropped.

    An iterator with that thread waits for its next wake-up when dropped: up to 0.6 s after reading the
    4,066 texts of the benchmark's training split in 0.5 s, and its period grows with the read.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def texts(info: DatasetInfo, split: str) -> list[str]:
    """The texts of a split, in record order, in a single pass."""
    return [t.decode() for t in single_pass(records(info, split).map(lambda ex: ex["text"])).as_numpy_iterator()]


def label_encoder(chars: Charset, max_length: int):
    """text (scalar string) -> int32 [max_length] class ids (1..n), padded with the blank 0."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(chars.characters)), tf.range(1, len(chars.characters) + 1, dtype=tf.int32)
        ),
        default_value=-1,
    )

    def encode(text: tf.Tensor) -> tf.Tensor:
        ids = table.lookup(tf.strings.unicode_split(text, "UTF-8"))
        tf.debugging.assert_non_negative(ids, "label holds a character outside the charset")
        return tf.pad(ids, [[0, max_length - tf.shape(ids)[0]]])

    return encode
