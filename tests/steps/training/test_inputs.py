"""steps.training.inputs and steps.dataset.reader: label encoding, augmentation and the tf.data pipeline over a
real dataset directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from steps.dataset import reader, tfrecords
from steps.dataset.info import DatasetError, DatasetInfo
from steps.inference import imaging
from steps.inference.charset import Charset, CharsetError
from steps.training import inputs
from steps.workflow import config

H, W, MAX_LEN = 32, 128, 12
TEXTS = {
    "train": ["hello", "a", "world", "its", "the", "l'eau", "ok", "dog", "zebra", "hi", "x"],
    "val": ["cat", "ill"],
    "test": ["eat"],
}


def canvas(seed: int) -> np.ndarray:
    """A paper canvas with a few strokes of ink (uint8, ink high)."""
    rng = np.random.default_rng(seed)
    c = np.zeros((H, W, 1), np.uint8)
    for _ in range(6):
        y, x = rng.integers(4, H - 8), rng.integers(8, W - 20)
        c[y : y + 4, x : x + 14] = 255
    return c


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """A dataset/ folder as preprocess writes it: shards (train split over two), charset.json, stats.json."""
    root = tmp_path_factory.mktemp("dataset")
    chars = Charset.from_texts(TEXTS["train"])
    chars.save(root / config.CHARSET_FILE)
    n = 0
    for split, texts in TEXTS.items():
        count = 2 if split == "train" else 1
        writers = [tf.io.TFRecordWriter(str(root / tfrecords.shard_name(split, i, count))) for i in range(count)]
        for i, text in enumerate(texts):
            writers[i % count].write(tfrecords.serialize(f"{split}-{i}", f"w{i}", text, canvas(n)))
            n += 1
        for w in writers:
            w.close()
    stats = {
        "image_height": H,
        "image_width": W,
        "max_label_length": MAX_LEN,
        "samples": {k: len(v) for k, v in TEXTS.items()},
    }
    (root / config.STATS_FILE).write_text(json.dumps(stats))
    return root


# --- label_encoder ------------------------------------------------------------------------------


def test_label_encoder_pads_with_blank_and_keeps_the_true_length():
    chars = Charset.from_texts(["hello world"])
    encode = reader.label_encoder(chars, MAX_LEN)
    ids = encode(tf.constant("hello")).numpy()
    assert ids.dtype == np.int32 and ids.shape == (MAX_LEN,)
    assert list(ids[:5]) == chars.encode("hello") and not ids[5:].any()
    assert np.count_nonzero(ids) == 5  # what ctc_loss will count as the label length
    assert chars.decode(ids) == "hello"


def test_label_encoder_in_tf_data_gives_the_same_ids():
    chars = Charset.from_texts(["hello world", "été"])
    encode = reader.label_encoder(chars, MAX_LEN)
    words = ["hello", "été", "", "w" * MAX_LEN]
    got = list(tf.data.Dataset.from_tensor_slices(words).map(encode).as_numpy_iterator())
    for word, ids in zip(words, got):
        assert list(ids) == chars.encode(word) + [0] * (MAX_LEN - len(word))  # UTF-8 aware: "été" is 3 labels


def test_label_encoder_refuses_a_character_outside_the_charset():
    encode = reader.label_encoder(Charset.from_texts(["abc"]), MAX_LEN)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the charset"):
        encode(tf.constant("abz"))


def test_label_encoder_refuses_a_label_longer_than_max_length():
    encode = reader.label_encoder(Charset.from_texts(["abc"]), 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        encode(tf.constant("abca"))


# --- augment ----------------------------------------------------------------------------------


def test_augment_keeps_shape_and_dtype_and_changes_the_image():
    c = tf.constant(canvas(0))
    out = inputs.augment(c, tf.constant([1, 2], tf.int64)).numpy()
    assert out.shape == (H, W, 1) and out.dtype == np.uint8
    assert not np.array_equal(out, c.numpy())
    assert out.any()  # the word is still there


def test_augment_is_deterministic_for_a_seed_and_differs_across_seeds():
    c = tf.constant(canvas(0))
    a = inputs.augment(c, tf.constant([1, 2], tf.int64)).numpy()
    b = inputs.augment(c, tf.constant([1, 2], tf.int64)).numpy()
    other = inputs.augment(c, tf.constant([3, 4], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other)


def test_augment_in_tf_data_equals_eager():
    c = canvas(3)
    seed = tf.constant([5, 6], tf.int64)
    eager = inputs.augment(tf.constant(c), seed).numpy()
    graph = next(iter(tf.data.Dataset.from_tensors((c, seed)).map(inputs.augment))).numpy()
    np.testing.assert_array_equal(eager, graph)


def test_augment_batch_gives_each_image_its_own_warp_and_equals_itself_in_tf_data():
    batch = np.stack([canvas(1)] * 4)
    seed = tf.constant([7, 8], tf.int64)
    eager = inputs.augment_batch(tf.constant(batch), seed).numpy()
    assert eager.shape == batch.shape and eager.dtype == np.uint8
    assert len({out.tobytes() for out in eager}) == 4  # the same canvas, four different outcomes
    graph = next(iter(tf.data.Dataset.from_tensors((batch, seed)).map(inputs.augment_batch))).numpy()
    np.testing.assert_array_equal(eager, graph)


def random_affine(batch: int, seed: int) -> tf.Tensor:
    """[B, 8] transforms of warp_batch's ranges (shear, scale, shift) and beyond, with the rows' shifts."""
    rng = np.random.default_rng(seed)
    a0, b1 = rng.uniform(0.8, 1.25, batch), rng.uniform(0.8, 1.25, batch)
    a1, a2, b2 = rng.uniform(-0.5, 0.5, batch), rng.uniform(-20, 20, batch), rng.uniform(-6, 6, batch)
    zeros = np.zeros(batch)
    return tf.constant(np.stack([a0, a1, a2, zeros, b1, b2, zeros, zeros], 1), tf.float32)


def test_affine_warp_gives_the_kernels_pixels():
    batch = tf.constant(np.stack([canvas(i) for i in range(6)]))
    transforms = random_affine(6, 0)
    np.testing.assert_array_equal(
        inputs.affine_warp(batch, transforms).numpy(), inputs.kernel_warp(batch, transforms).numpy()
    )


def test_the_compiled_distortion_is_the_kernels_but_for_rare_float_rounding():
    rng = np.random.default_rng(1)
    batch = tf.constant(rng.integers(0, 256, (32, H, W, 1), dtype=np.uint8))  # every grey level, everywhere
    transforms, grain = random_affine(32, 1), tf.zeros([32, H, W, 1], tf.int8)
    one = tf.ones([32])
    compiled = inputs._distort_compiled(batch, transforms, grain, one, one).numpy()
    kernel = inputs._distort(batch, transforms, grain, one, one, inputs.kernel_warp).numpy()
    differ = compiled != kernel
    assert np.abs(compiled - kernel).max() <= 1.0 and differ.mean() < 1e-3


def test_xla_starting_up_prints_nothing():
    import subprocess
    import sys

    script = (
        "import numpy as np, tensorflow as tf\n"
        "from steps.training import inputs\n"
        "batch = tf.constant(np.zeros((4, 32, 128, 1), np.uint8))\n"
        "ds = tf.data.Dataset.from_tensors((batch, tf.constant([1, 2], tf.int64))).map(inputs.warp_batch)\n"
        "print(next(iter(ds)).shape, inputs.augment_batch(batch, tf.constant([3, 4], tf.int64)).shape)\n"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(4, 32, 128, 1) (4, 32, 128, 1)"
    assert "XLA" not in done.stderr and "absl" not in done.stderr, done.stderr


def test_augment_keeps_most_of_the_ink():
    c = tf.constant(canvas(1))
    for s in range(5):
        out = inputs.augment(c, tf.constant([s, s + 1], tf.int64)).numpy().astype(float)
        assert 0.5 < out.sum() / c.numpy().astype(float).sum() < 1.6


def test_grain_differs_between_images_and_stays_a_few_grey_levels():
    blank = tf.zeros([8, H, W, 1], tf.uint8)
    out = inputs.augment_batch(blank, tf.constant([3, 9], tf.int64)).numpy().astype(int)
    noisy = [o for o in out if o.any()]  # an image drawn with zero grain amplitude stays blank
    assert len(noisy) >= 4 and len({o.tobytes() for o in noisy}) == len(noisy)
    assert max(o.max() for o in noisy) <= 40  # grain, not ink: ink is 255
    assert 0.5 < np.mean([o.std() for o in noisy]) < 6.0


def test_noise_bank_is_the_same_in_every_process():
    inputs.noise_bank.cache_clear()
    a = inputs.noise_bank(H, W)
    inputs.noise_bank.cache_clear()
    np.testing.assert_array_equal(a, inputs.noise_bank(H, W))
    assert a.shape == (inputs.NOISE_PATTERNS, H, 2 * W, 1) and a.dtype == np.int8
    assert 5.0 < a.std() < 7.0


def test_the_training_reader_feeds_the_warp_scaled_to_unit_range(dataset_dir):
    info = DatasetInfo.load(str(dataset_dir))
    x, _ = next(iter(inputs.batches(info, "train", batch_size=4, training=True, seed=1)))
    assert x.dtype == tf.float32 and float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0
    assert float(tf.reduce_max(x)) > 0.5  # ink survives


def test_the_training_stream_runs_without_tf_data_autotuning(dataset_dir):
    """Keras drops its training iterator when fit ends, and with autotuning on that waited for tf.data's
    optimisation thread, for up to 50 s (README, "Performance"). Evaluation streams end on their own and keep it."""
    info = DatasetInfo.load(str(dataset_dir))
    assert inputs.batches(info, "train", 4, training=True, seed=1).options().autotune.enabled is False
    assert inputs.batches(info, "val", 4).options().autotune.enabled is not False


# --- reading a dataset directory -------------------------------------------------------------------


def test_records_cardinality_matches_stats_and_records_round_trip(dataset_dir):
    for split, texts in TEXTS.items():
        ds = reader.records(DatasetInfo.load(str(dataset_dir)), split)
        assert int(ds.cardinality()) == len(texts)
        got = list(ds.as_numpy_iterator())
        assert sorted(ex["text"].decode() for ex in got) == sorted(texts)
        assert all(ex["image"].shape == (H, W, 1) and ex["image"].dtype == np.uint8 for ex in got)


def test_texts_are_every_record_text_of_the_split_in_record_order(dataset_dir):
    info = DatasetInfo.load(str(dataset_dir))
    for split, texts in TEXTS.items():
        in_records = [ex["text"].decode() for ex in reader.records(info, split).as_numpy_iterator()]
        assert reader.texts(info, split) == in_records
        assert sorted(in_records) == sorted(texts)
        once = reader.single_pass(reader.records(info, split))
        assert once.options().autotune.enabled is False  # nothing to wait for when it is dropped
        assert [ex["text"].decode() for ex in once.as_numpy_iterator()] == in_records


def test_the_shuffled_training_stream_is_the_same_for_the_same_seed(tmp_path):
    """Two trainings with one seed must see the same batches: the shard files are read in parallel, and an
    order that followed thread timing made same-seed runs train on different data."""
    shards, per_shard = 8, 40
    Charset.from_texts(["ab"]).save(tmp_path / config.CHARSET_FILE)
    for s in range(shards):
        with tf.io.TFRecordWriter(str(tmp_path / tfrecords.shard_name("train", s, shards))) as w:
            for i in range(per_shard):
                w.write(tfrecords.serialize(f"{s}-{i}", "w", "ab", canvas(s * per_shard + i)))
    stats = {"image_height": H, "image_width": W, "max_label_length": MAX_LEN, "samples": {"train": shards * per_shard}}
    (tmp_path / config.STATS_FILE).write_text(json.dumps(stats))
    info = DatasetInfo.load(str(tmp_path))

    def order() -> list[str]:
        tf.random.set_seed(42)  # what fit's keras.utils.set_random_seed does
        return [ex["id"].decode() for ex in reader.records(info, "train", shuffle_files=True).as_numpy_iterator()]

    first = order()
    assert sorted(first) != first  # the files really were shuffled
    assert all(order() == first for _ in range(5))


def test_records_with_a_wrong_count_in_stats_fails_when_read(dataset_dir, tmp_path):
    for f in dataset_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    stats = json.loads((tmp_path / config.STATS_FILE).read_text())
    stats["samples"]["val"] += 1
    (tmp_path / config.STATS_FILE).write_text(json.dumps(stats))
    with pytest.raises(tf.errors.FailedPreconditionError):
        list(reader.records(DatasetInfo.load(str(tmp_path)), "val"))


def test_missing_stats_or_shards_raise_dataset_error(dataset_dir, tmp_path):
    with pytest.raises(DatasetError, match="stats.json not found"):
        reader.records(DatasetInfo.load(str(tmp_path)), "train")
    for name in (config.STATS_FILE, config.CHARSET_FILE):
        (tmp_path / name).write_bytes((dataset_dir / name).read_bytes())
    with pytest.raises(DatasetError, match="no train shards"):
        reader.records(DatasetInfo.load(str(tmp_path)), "train")


def test_charset_is_read_from_the_dataset(dataset_dir, tmp_path):
    assert DatasetInfo.load(str(dataset_dir)).charset == Charset.from_texts(TEXTS["train"])
    (tmp_path / config.STATS_FILE).write_bytes((dataset_dir / config.STATS_FILE).read_bytes())
    (tmp_path / config.CHARSET_FILE).write_text("{broken")
    with pytest.raises(CharsetError):
        DatasetInfo.load(str(tmp_path))


def test_batches_yield_float_images_in_unit_range_and_int_labels(dataset_dir):
    chars = DatasetInfo.load(str(dataset_dir)).charset
    batches = list(inputs.batches(DatasetInfo.load(str(dataset_dir)), "train", batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 4, 3]
    texts = []
    for images, labels in batches:
        assert images.dtype == tf.float32 and images.shape[1:] == (H, W, 1)
        assert labels.dtype == tf.int32 and labels.shape[1:] == (MAX_LEN,)
        x = images.numpy()
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
        texts += [chars.decode(row) for row in labels.numpy()]
    assert sorted(texts) == sorted(TEXTS["train"])


def test_eval_batches_are_the_stored_canvases_scaled(dataset_dir):
    images = np.concatenate([b[0].numpy() for b in inputs.batches(DatasetInfo.load(str(dataset_dir)), "train", 5)])
    stored = np.stack(
        [ex["image"] for ex in reader.records(DatasetInfo.load(str(dataset_dir)), "train").as_numpy_iterator()]
    )
    np.testing.assert_array_equal(images, imaging.to_model_input(stored).numpy())


def test_training_batches_are_augmented_but_still_valid(dataset_dir):
    plain = np.concatenate([b[0].numpy() for b in inputs.batches(DatasetInfo.load(str(dataset_dir)), "train", 16)])
    (first,) = list(inputs.batches(DatasetInfo.load(str(dataset_dir)), "train", 16, training=True, seed=3))
    images, labels = first
    assert images.shape == (len(TEXTS["train"]), H, W, 1) and images.dtype == tf.float32
    x = images.numpy()
    assert 0.0 <= x.min() and x.max() <= 1.0
    # Every augmented image differs from every stored one (shuffled, so compare as sets).
    assert not any(np.array_equal(a, p) for a in x for p in plain)
    chars = DatasetInfo.load(str(dataset_dir)).charset
    assert sorted(chars.decode(r) for r in labels.numpy()) == sorted(TEXTS["train"])


# --- windowed levels (lines): batches as wide as their ink ------------------------------------------------

LINE_W = 512
LINE_INK = [40, 60, 90, 120, 300, 320, 340, 480, 50, 310, 70, 330]  # px of ink per line: short and long lines


def line_canvas(ink: int) -> np.ndarray:
    """A line canvas as resize_pad stores it: `ink` px of strokes centred on a LINE_W canvas."""
    c = np.zeros((H, LINE_W, 1), np.uint8)
    left = (LINE_W - ink) // 2
    c[8:24, left : left + ink : 3] = 255
    return c


@pytest.fixture(scope="module")
def lines_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lines")
    Charset.from_texts(["a line"]).save(root / config.CHARSET_FILE)
    for split in ("train", "val"):
        with tf.io.TFRecordWriter(str(root / tfrecords.shard_name(split, 0, 1))) as w:
            for i, ink in enumerate(LINE_INK):
                w.write(tfrecords.serialize(f"{split}-{i}", "w", "a line", line_canvas(ink)))
    stats = {
        "image_height": H,
        "image_width": LINE_W,
        "max_label_length": 20,
        "samples": {"train": len(LINE_INK), "val": len(LINE_INK)},
        "level": "lines",
    }
    (root / config.STATS_FILE).write_text(json.dumps(stats))
    return root


def test_a_training_batch_of_lines_holds_lines_of_one_window_width(lines_dir):
    info = DatasetInfo.load(str(lines_dir))
    widths = {ink: int(imaging.window_width(line_canvas(ink)[np.newaxis])[0]) for ink in LINE_INK}
    seen = 0
    for images, labels in inputs.batches(info, "train", batch_size=3, training=True, seed=0):
        width = images.shape[2]
        assert width % imaging.WINDOW_STEP == 0 and width < LINE_W or width == LINE_W
        assert images.shape[0] == labels.shape[0] <= 3
        seen += images.shape[0]
    assert seen == len(LINE_INK)
    # short lines are read in narrow windows: far fewer columns than the canvas
    assert min(widths.values()) <= 128 and max(widths.values()) == LINE_W


def test_training_batches_group_lines_by_width(lines_dir):
    info = DatasetInfo.load(str(lines_dir))
    by_width = {}
    for ink in LINE_INK:
        by_width.setdefault(int(imaging.window_width(line_canvas(ink)[np.newaxis])[0]), []).append(ink)
    batches = list(inputs.batches(info, "train", batch_size=3, training=True, seed=0))
    sizes = {}
    for images, _ in batches:
        sizes.setdefault(images.shape[2], []).append(images.shape[0])
    assert {w: sum(n) for w, n in sizes.items()} == {w: len(v) for w, v in by_width.items()}


def test_eval_batches_of_lines_are_cropped_to_their_widest_line_without_losing_ink(lines_dir):
    info = DatasetInfo.load(str(lines_dir))
    batches = list(inputs.batches(info, "val", batch_size=4))
    stored = [ex["image"] for ex in reader.records(info, "val").as_numpy_iterator()]
    for b, (images, _) in enumerate(batches):
        canvases = np.stack(stored[4 * b : 4 * b + 4])
        assert images.shape[2] == int(imaging.window_width(canvases).numpy().max())
        np.testing.assert_allclose(images.numpy().sum(), canvases.astype(np.float64).sum() / 255.0, rtol=1e-5)


def test_word_batches_keep_the_whole_canvas(dataset_dir):
    info = DatasetInfo.load(str(dataset_dir))
    assert {b[0].shape[2] for b in inputs.batches(info, "train", batch_size=4, training=True, seed=0)} == {W}
