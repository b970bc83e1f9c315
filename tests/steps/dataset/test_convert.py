"""steps.dataset: plan, convert and build on a tiny IAM-layout archive built here.

The archive holds real PNGs rendered with Pillow plus the bad cases a real scan set has: an empty
file, a truncated PNG, HTML saved as .png, a blank page, a word whose image is missing, an `err`
line, a too-long word, malformed lines in words.txt, and a word whose character only its writer uses.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from steps.dataset import convert, tfrecords
from steps.dataset import iam_format as iam
from steps.dataset.build import RawDataError, build
from steps.dataset.plan import PreprocessConfig, plan
from steps.inference.charset import Charset
from steps.workflow import config

H, W = 32, 128
ALPHABET = "acdehilmnorstw"  # every writer writes it once, so train covers it
VOCABULARY = ["the", "cat", "in", "hat", "red", "wind", "more", "list", "comet", "dream"]
N_WRITERS = 12
PARAMS = dict(
    level="words",
    split="writer",
    train_ratio=0.6,
    val_ratio=0.2,
    image_height=H,
    image_width=W,
    max_label_length=24,
    keep_err=False,
    shard_size=5,
)


def cfg(seed: int, workers: int = 1, **overrides) -> PreprocessConfig:
    return PreprocessConfig(seed=seed, workers=workers, **{**PARAMS, **overrides})


SHARD_NAME = re.compile(r"^(train|val|test)-(\d{5})-of-(\d{5})\.tfrecord$")


def render(text: str) -> bytes:
    font = ImageFont.load_default(size=20)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 10, bottom - top + 10), 255)
    ImageDraw.Draw(image).text((5 - left, 5 - top), text, fill=0, font=font)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (60, 30), 255).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Raw:
    dir: Path
    words: dict[str, str]  # word id -> text of every well-formed line
    writer_of: dict[str, str]  # word id -> writer
    special: dict[str, str]  # reason -> the word id that should be dropped for it


def make_raw(root: Path) -> Raw:
    """words.txt, forms.txt and words.tgz in IAM layout (a01/a01-000/a01-000-00-00.png)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["#--- words.txt", "# format: a01-000u-00-00 ok 154 408 768 27 51 AT A"]
    forms, members, words, writer_of = [], {}, {}, {}
    special = {
        "err_flag": "f00-000-00-00",
        "too_long": "f01-000-00-00",
        "empty_image": "f02-000-00-00",
        "corrupt_image": "f03-000-00-00",
        "not_an_image": "f04-000-00-00",
        "blank_image": "f05-000-00-00",
        "missing_image": "f06-000-00-00",
        "out_of_charset": "f11-000-00-00",
    }
    for w in range(N_WRITERS):
        form = f"f{w:02d}-000"
        forms.append(f"{form} {w:03d} 2 prt 7 5 52 36")
        texts = [VOCABULARY[w % 10], ALPHABET, VOCABULARY[(w + 3) % 10], VOCABULARY[(w + 7) % 10]]
        if w == 1:
            texts[0] = "extraordinarilylongwordsx"  # 25 > max_label_length
        if w == 11:
            texts[0] = "Qat"  # Q: only this writer has it
        for k, text in enumerate(texts):
            word_id = f"{form}-00-{k:02d}"
            flag = "err" if word_id == special["err_flag"] else "ok"
            lines.append(f"{word_id} {flag} 154 408 768 27 51 NN {text}")
            words[word_id], writer_of[word_id] = text, f"{w:03d}"
            data = render(text)
            if word_id == special["empty_image"]:
                data = b""
            elif word_id == special["corrupt_image"]:
                data = data[: len(data) // 2]
            elif word_id == special["not_an_image"]:
                data = b"<html><body>Forbidden</body></html>"
            elif word_id == special["blank_image"]:
                data = blank_png()
            if word_id != special["missing_image"]:
                members[f"f{w:02d}/{form}/{word_id}.png"] = data
        if w == 4:
            lines.append("f04-000-00-09 ok 154 408")  # too few fields
            lines.append("f04-000-00-10 maybe 154 408 768 27 51 NN bad")  # bad flag
    with tarfile.open(root / config.WORDS_ARCHIVE, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / config.WORDS_TXT).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "forms.txt").write_text("\n".join(["# forms"] + forms) + "\n")
    return Raw(root, words, writer_of, special)


def plan_for(raw: Raw, seed: int, **overrides):
    words, _ = iam.parse_words((raw.dir / config.WORDS_TXT).read_text().splitlines())
    writers = iam.parse_forms((raw.dir / "forms.txt").read_text().splitlines())
    return plan(words, writers, cfg(seed, **overrides))


def seed_with_writer_outside_train(raw: Raw, writer: str) -> int:
    """A seed that puts `writer` in val or test, so its unique character must be dropped, not learnt."""
    for seed in range(100):
        samples, *_ = plan_for(raw, seed)
        if all(s.split != "train" for s in samples if s.writer == writer):
            return seed
    raise AssertionError("no seed puts the writer outside train")


@dataclass
class Built:
    raw: Raw
    seed: int
    dirs: dict[int, Path]  # workers -> dataset dir
    stats: dict[int, dict]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("preprocess")
    raw = make_raw(root / "raw")
    seed = seed_with_writer_outside_train(raw, "011")
    dirs, stats = {}, {}
    for workers in (1, 2):
        out = root / f"dataset-w{workers}"
        out.mkdir()
        stats[workers] = build(raw.dir, out, cfg(seed, workers), progress=False)
        dirs[workers] = out
    return Built(raw, seed, dirs, stats)


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / config.MANIFEST_FILE).to_pylist()


def read_shard(path: Path) -> list[dict]:
    ds = tf.data.TFRecordDataset(str(path)).map(lambda r: tfrecords.parse(r, H, W))
    return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


# --- build end to end -----------------------------------------------------------------


def test_drop_reasons_are_counted(built):
    assert built.stats[1]["dropped"] == {
        "blank_image": 1,
        "corrupt_image": 1,
        "empty_image": 1,
        "err_flag": 1,
        "malformed_line": 2,
        "missing_image": 1,
        "not_an_image": 1,
        "out_of_charset": 1,
        "too_long": 1,
    }


def test_dropped_words_are_not_in_the_manifest_and_every_other_word_is(built):
    rows = manifest(built.dirs[1])
    ids = {r["id"] for r in rows}
    assert not ids & set(built.raw.special.values())
    assert ids == set(built.raw.words) - set(built.raw.special.values())
    assert len(rows) == len(ids) == N_WRITERS * 4 - 8


def test_shards_are_named_by_split_index_and_count(built):
    out = built.dirs[1]
    names = sorted(p.name for p in out.glob("*.tfrecord"))
    by_split = Counter()
    for name in names:
        m = SHARD_NAME.match(name)
        assert m, name
        split, index, count = m.group(1), int(m.group(2)), int(m.group(3))
        assert index < count
        by_split[split] += 1
    for split in config.SPLITS:
        count = built.stats[1]["shards"][split]
        assert by_split[split] == count
        assert sorted(p.name for p in out.glob(f"{split}-*.tfrecord")) == [
            tfrecords.shard_name(split, i, count) for i in range(count)
        ]
    # shard_size 5: shards are planned from words.txt (before any image is read), several for train
    planned, *_ = plan_for(built.raw, built.seed)
    for split in config.SPLITS:
        assert built.stats[1]["shards"][split] == -(-sum(s.split == split for s in planned) // 5)
    assert built.stats[1]["shards"]["train"] > 1


def test_manifest_rows_equal_the_records_written(built):
    out = built.dirs[1]
    rows = manifest(out)
    records = {p.name: read_shard(p) for p in sorted(out.glob("*.tfrecord"))}
    assert sum(len(r) for r in records.values()) == len(rows)
    for row in rows:
        in_shard = {ex["id"]: ex for ex in records[row["shard"]]}
        ex = in_shard[row["id"]]
        assert ex["text"] == row["text"] == built.raw.words[row["id"]]
        assert ex["writer"] == row["writer"] == built.raw.writer_of[row["id"]]
        assert row["shard"].startswith(row["split"] + "-")
        assert ex["image"].shape == (H, W, 1) and ex["image"].any()
        assert row["original_height"] > 0 and row["original_width"] > 0


def test_manifest_keeps_the_original_image_sizes(built):
    rows = {r["id"]: r for r in manifest(built.dirs[1])}
    word_id = "f07-000-00-01"
    width, height = Image.open(io.BytesIO(render(built.raw.words[word_id]))).size
    assert (rows[word_id]["original_height"], rows[word_id]["original_width"]) == (height, width)


def test_writers_are_disjoint_across_splits(built):
    rows = manifest(built.dirs[1])
    writers = {s: {r["writer"] for r in rows if r["split"] == s} for s in config.SPLITS}
    assert all(writers.values())
    assert not writers["train"] & writers["val"] and not writers["train"] & writers["test"]
    assert not writers["val"] & writers["test"]


def test_charset_is_that_of_the_training_split_only(built):
    chars = Charset.load(built.dirs[1] / config.CHARSET_FILE)
    rows = manifest(built.dirs[1])
    assert chars == Charset.from_texts(r["text"] for r in rows if r["split"] == "train")
    assert chars.characters == tuple(sorted(ALPHABET))
    assert "Q" not in chars.characters  # written only by a val/test writer: dropped, not learnt
    assert all(chars.covers(r["text"]) for r in rows)


def test_stats_json_describes_the_dataset(built):
    out = built.dirs[1]
    stats = json.loads((out / config.STATS_FILE).read_text())
    assert stats == built.stats[1]
    rows = manifest(out)
    assert stats["samples"] == {s: sum(r["split"] == s for r in rows) for s in config.SPLITS}
    assert stats["writers"] == {s: len({r["writer"] for r in rows if r["split"] == s}) for s in config.SPLITS}
    assert (stats["image_height"], stats["image_width"], stats["max_label_length"]) == (H, W, 24)
    assert stats["split_method"] == "writer" and stats["seed"] == built.seed and stats["keep_err"] is False
    assert stats["charset_size"] == len(ALPHABET)
    assert re.fullmatch(r"[0-9a-f]{16}", stats["digest"]) and stats["images_per_second"] > 0


def test_sample_grids_are_written_as_png(built):
    for split in config.SPLITS:
        path = built.dirs[1] / f"samples_{split}.png"
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 50


def test_one_and_two_workers_give_identical_shards(built):
    one, two = built.dirs[1], built.dirs[2]
    names = sorted(p.name for p in one.glob("*.tfrecord"))
    assert names == sorted(p.name for p in two.glob("*.tfrecord"))
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert (one / config.CHARSET_FILE).read_bytes() == (two / config.CHARSET_FILE).read_bytes()
    assert manifest(one) == manifest(two)
    assert built.stats[1]["digest"] == built.stats[2]["digest"]
    assert built.stats[1]["dropped"] == built.stats[2]["dropped"]


def test_build_without_words_txt_or_archive_says_what_is_wrong(tmp_path):
    with pytest.raises(RawDataError, match="words.txt not found"):
        build(tmp_path, tmp_path, cfg(0, 1), progress=False)
    (tmp_path / config.WORDS_TXT).write_text("# nothing\n")
    with pytest.raises(RawDataError, match="words.tgz not found"):
        build(tmp_path, tmp_path, cfg(0, 1), progress=False)


def test_build_with_no_valid_word_lines_says_so(tmp_path):
    (tmp_path / config.WORDS_TXT).write_text("# comment\nbroken line\n")
    with tarfile.open(tmp_path / config.WORDS_ARCHIVE, "w:gz"):
        pass
    with pytest.raises(RawDataError, match="no valid word entries"):
        build(tmp_path, tmp_path, cfg(0, 1), progress=False)


@pytest.mark.parametrize("damage, workers", [("html", 1), ("truncated", 1), ("truncated", 2)])
def test_build_with_a_broken_archive_stops_with_one_clear_message(built, tmp_path, damage, workers):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in (config.WORDS_TXT, "forms.txt"):
        (raw / name).write_bytes((built.raw.dir / name).read_bytes())
    data = (built.raw.dir / config.WORDS_ARCHIVE).read_bytes()
    (raw / config.WORDS_ARCHIVE).write_bytes(
        b"<html><body>Login required</body></html>" if damage == "html" else data[: len(data) // 2]
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RawDataError, match="words.tgz"):
        build(raw, out, cfg(built.seed, workers), progress=False)


# --- plan ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(built) -> Raw:
    return built.raw


def test_plan_is_deterministic_and_decided_before_any_image_is_read(raw):
    first = plan_for(raw, seed=5)
    assert plan_for(raw, seed=5) == first
    samples, charset, dropped, shard_counts = first
    assert set(dropped) <= {"err_flag", "too_long", "empty_text", "out_of_charset"}
    assert dropped["err_flag"] == 1 and dropped["too_long"] == 1


def test_plan_assigns_shards_round_robin(raw):
    samples, _, _, shard_counts = plan_for(raw, seed=5, shard_size=4)
    for split in config.SPLITS:
        members = [s for s in samples if s.split == split]
        assert shard_counts[split] == max(1, -(-len(members) // 4))
        sizes = Counter(s.shard for s in members)
        assert set(sizes) == set(range(shard_counts[split]))
        assert max(sizes.values()) - min(sizes.values()) <= 1


def test_plan_keep_err_keeps_err_lines(raw):
    samples, _, dropped, _ = plan_for(raw, seed=5, keep_err=True)
    assert "err_flag" not in dropped
    assert raw.special["err_flag"] in {s.id for s in samples}


def test_plan_random_split_can_share_writers(raw):
    samples, _, _, _ = plan_for(raw, seed=5, split="random")
    splits_of_writer = {}
    for s in samples:
        splits_of_writer.setdefault(s.writer, set()).add(s.split)
    assert {s.split for s in samples} == set(config.SPLITS)
    assert any(len(v) > 1 for v in splits_of_writer.values())


def test_plan_refuses_an_unknown_split_method(raw):
    with pytest.raises(ValueError, match="split must be one of"):
        plan_for(raw, seed=5, split="by_colour")


def test_plan_with_no_usable_words_raises(raw):
    words, _ = iam.parse_words((raw.dir / config.WORDS_TXT).read_text().splitlines())
    with pytest.raises(ValueError, match="training split is empty"):
        plan(words, {}, cfg(0, max_label_length=1))


def test_plan_without_forms_uses_the_form_as_the_writer(raw):
    words, _ = iam.parse_words((raw.dir / config.WORDS_TXT).read_text().splitlines())
    samples, *_ = plan(words, {}, cfg(0))
    assert {s.writer for s in samples} <= {w.form for w in words}


# --- convert.convert directly ------------------------------------------------------------------------


def test_convert_in_a_process_where_tf_already_ran_counts_missing_images_and_writes_the_rest(raw, tmp_path):
    # workers=1 converts in the caller's process; TF's thread pools are fixed once an op has run.
    assert int(tf.constant(1) + 1) == 2
    samples, _, _, shard_counts = plan_for(raw, seed=5)
    result = convert.convert(
        raw.dir / config.WORDS_ARCHIVE, samples, shard_counts, H, W, tmp_path, workers=1, progress=False, previews=2
    )
    assert sum(result.dropped.values()) + len(result.written) == len(samples)
    assert result.dropped["missing_image"] == 1
    assert all(len(v) <= 2 for v in result.previews.values())
    text, canvas = result.previews["train"][0]
    assert isinstance(text, str) and canvas.shape == (H, W, 1) and canvas.dtype == np.uint8
    # the sample grid shows what the shards hold: each preview is a stored record, text and canvas
    stored = {
        (ex["text"].decode(), ex["image"].tobytes())
        for name in set(result.written.values())
        for ex in tf.data.TFRecordDataset(str(tmp_path / name))
        .map(lambda r: tfrecords.parse(r, H, W))
        .as_numpy_iterator()
    }
    shown = [(t, c.tobytes()) for items in result.previews.values() for t, c in items]
    assert len(shown) == sum(min(2, n) for n in Counter(s.split for s in samples if s.id in result.written).values())
    assert all(item in stored for item in shown)
