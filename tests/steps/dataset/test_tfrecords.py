"""steps.tfrecords: the writer and the parser agree, on real TFRecord files read back through tf.data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from steps.dataset import tfrecords
from steps.workflow import config

H, W = 32, 128


def samples(n: int, seed: int = 0) -> list[tuple[str, str, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    texts = ["a", "the", "Quick,", "été", "l'eau", '"42"', "x" * 24]
    return [
        (
            f"a01-{i:03d}u-00-{i:02d}",
            f"w{i % 3:03d}",
            texts[i % len(texts)],
            rng.integers(0, 256, (H, W, 1), dtype=np.uint8),
        )
        for i in range(n)
    ]


def write(path, items) -> None:
    with tf.io.TFRecordWriter(str(path)) as w:
        for sample_id, writer, text, canvas in items:
            w.write(tfrecords.serialize(sample_id, writer, text, canvas))


def test_round_trip_n_written_n_read_same_bytes_text_id_writer(tmp_path):
    items = samples(11)
    path = tmp_path / tfrecords.shard_name("train", 0, 1)
    write(path, items)
    ds = tf.data.TFRecordDataset(str(path)).map(lambda r: tfrecords.parse(r, H, W))
    read = list(ds.as_numpy_iterator())
    assert len(read) == len(items)
    for (sample_id, writer, text, canvas), ex in zip(items, read):
        assert ex["id"].decode() == sample_id
        assert ex["writer"].decode() == writer
        assert ex["text"].decode("utf-8") == text
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (H, W, 1)
        assert ex["image"].tobytes() == canvas.tobytes()


def test_parse_works_eagerly_on_one_record():
    ((sample_id, writer, text, canvas),) = samples(1)
    ex = tfrecords.parse(tf.constant(tfrecords.serialize(sample_id, writer, text, canvas)), H, W)
    np.testing.assert_array_equal(ex["image"].numpy(), canvas)
    assert ex["text"].numpy().decode() == text


def test_parse_many_reads_a_vector_of_records_as_parse_reads_each():
    items = samples(5)
    records = [tfrecords.serialize(*item) for item in items]
    many = tfrecords.parse_many(tf.constant(records), H, W)
    assert many["image"].shape == (5, H, W, 1)
    for i, record in enumerate(records):
        one = tfrecords.parse(tf.constant(record), H, W)
        np.testing.assert_array_equal(many["image"][i].numpy(), one["image"].numpy())
        np.testing.assert_array_equal(many["image"][i].numpy(), items[i][3])
        assert many["text"][i].numpy() == one["text"].numpy() == items[i][2].encode("utf-8")
        assert many["id"][i].numpy().decode() == items[i][0]


def test_parse_with_the_wrong_canvas_size_fails_loudly():
    ((sample_id, writer, text, canvas),) = samples(1)
    record = tf.constant(tfrecords.serialize(sample_id, writer, text, canvas))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tfrecords.parse(record, H, W * 2)


def test_serialize_refuses_a_canvas_that_is_not_uint8_hwc():
    with pytest.raises(AssertionError):
        tfrecords.serialize("id", "w", "t", np.zeros((H, W, 1), np.float32))
    with pytest.raises(AssertionError):
        tfrecords.serialize("id", "w", "t", np.zeros((H, W), np.uint8))


def test_shard_name_follows_the_pattern():
    assert tfrecords.shard_name("val", 3, 12) == "val-00003-of-00012.tfrecord"
    assert config.SHARD_PATTERN.format(split="train", index=0, count=1) == tfrecords.shard_name("train", 0, 1)


def test_shard_files_globs_one_split_sorted(tmp_path):
    for name in [
        "train-00001-of-00003.tfrecord",
        "train-00000-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
        "val-00000-of-00001.tfrecord",
        "test-00000-of-00001.tfrecord",
        "train.tfrecord",
        "trainx-00000-of-00001.tfrecord",
        "train-00000-of-00003.tfrecord.tmp",
        "manifest.parquet",
        "charset.json",
    ]:
        (tmp_path / name).write_bytes(b"")
    files = tfrecords.shard_files(str(tmp_path), "train")
    assert [f.rsplit("/", 1)[-1] for f in files] == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
    ]
    assert [f.rsplit("/", 1)[-1] for f in tfrecords.shard_files(str(tmp_path) + "/", "val")] == [
        "val-00000-of-00001.tfrecord"
    ]
    assert tfrecords.shard_files(str(tmp_path / "missing"), "train") == []


def test_records_across_shards_read_back_complete(tmp_path):
    items = samples(10)
    for index in range(3):
        write(tmp_path / tfrecords.shard_name("train", index, 3), items[index::3])
    files = tfrecords.shard_files(str(tmp_path), "train")
    ds = tf.data.TFRecordDataset(files).map(lambda r: tfrecords.parse(r, H, W))
    ids = sorted(ex["id"].decode() for ex in ds.as_numpy_iterator())
    assert ids == sorted(i for i, *_ in items)


@pytest.mark.parametrize("shape", [(32, 128, 1), (64, 3000, 1), (1, 1, 1)], ids=["word", "long varints", "one pixel"])
def test_serialized_records_are_tf_train_examples_with_every_field(shape):
    canvas = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    text = 'Grüße, "quoted" – ' * 10  # multi-byte UTF-8, longer than 127 bytes
    record = tfrecords.serialize("a01-000u-00-00", "w000", text, canvas)
    example = tf.train.Example.FromString(record)
    feature = example.features.feature
    assert sorted(feature) == ["height", "id", "image", "text", "width", "writer"]
    assert feature["id"].bytes_list.value == [b"a01-000u-00-00"]
    assert feature["writer"].bytes_list.value == [b"w000"]
    assert feature["text"].bytes_list.value[0].decode("utf-8") == text
    assert feature["image"].bytes_list.value == [canvas.tobytes()]
    assert (feature["height"].int64_list.value, feature["width"].int64_list.value) == ([shape[0]], [shape[1]])
    parsed = tfrecords.parse(tf.constant(record), shape[0], shape[1])
    np.testing.assert_array_equal(parsed["image"], canvas)
    # the same sample always gives the same bytes (shards written with any number of workers are identical)
    assert tfrecords.serialize("a01-000u-00-00", "w000", text, canvas.copy()) == record
