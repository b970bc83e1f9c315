"""Preprocessing lines: the level picks lines.txt + lines.tgz and the line canvas; words and lines never mix."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from steps.dataset import tfrecords
from steps.dataset.build import RawDataError, build
from steps.dataset.info import DatasetInfo
from steps.dataset.plan import PreprocessConfig
from steps.sources import synthetic, synthetic_lines
from steps.workflow import config


def _cfg(level: str, **overrides) -> PreprocessConfig:
    params = {**config.defaults("preprocess"), "level": level, "workers": 1, "train_ratio": 0.5, "val_ratio": 0.25}
    return PreprocessConfig.from_params({**params, **overrides})


@pytest.fixture(scope="module")
def raw_lines(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw-lines")
    synthetic_lines.generate(out, 40, 4, 3, progress=False)
    return out


def test_the_level_chooses_the_canvas_parameters():
    defaults = config.defaults("preprocess")
    words, lines = _cfg("words"), _cfg("lines")
    assert (words.image_height, words.image_width, words.max_label_length) == tuple(
        defaults[p] for p in ("image_height", "image_width", "max_label_length")
    )
    assert (lines.image_height, lines.image_width, lines.max_label_length) == tuple(
        defaults[p] for p in ("line_height", "line_width", "max_line_length")
    )
    assert lines.image_width >= 4 * words.image_width and lines.max_label_length >= 90  # IAM lines reach ~90


def test_lines_become_line_canvases_with_their_whole_text(raw_lines, tmp_path):
    stats = build(raw_lines, tmp_path, _cfg("lines", line_width=256), progress=False)
    assert stats["level"] == "lines" and (stats["image_height"], stats["image_width"]) == (32, 256)
    info = DatasetInfo.load(str(tmp_path))
    assert info.level == "lines"
    manifest = pq.read_table(tmp_path / config.MANIFEST_FILE).to_pylist()
    listed = [line.split(" ") for line in (raw_lines / config.LINES_TXT).read_text().splitlines() if line[0] != "#"]
    truth = {fields[0]: fields[8] for fields in listed}
    assert all(row["text"] == truth[row["id"]].replace("|", " ") for row in manifest)
    assert sum(stats["samples"].values()) == len(manifest) > 20
    assert stats["dropped"]["err_flag"] > 0  # err lines are dropped by default, as err words are
    record = next(iter(tf.data.TFRecordDataset(str(next(tmp_path.glob("train-*.tfrecord"))))))
    assert tfrecords.parse(record, 32, 256)["image"].shape == (32, 256, 1)
    assert json.loads((tmp_path / config.STATS_FILE).read_text())["max_label_length"] == 96


def test_lines_longer_than_max_line_length_are_dropped_and_counted(raw_lines, tmp_path):
    stats = build(raw_lines, tmp_path, _cfg("lines", max_line_length=20), progress=False)
    assert stats["dropped"]["too_long"] > 0


def test_a_word_download_preprocessed_as_lines_says_which_download_to_run(tmp_path):
    synthetic.generate(tmp_path / "raw", 40, 2, 1, progress=False)
    (tmp_path / "ds").mkdir()
    with pytest.raises(RawDataError, match="lines.txt not found.*-P level=lines"):
        build(tmp_path / "raw", tmp_path / "ds", _cfg("lines"), progress=False)
