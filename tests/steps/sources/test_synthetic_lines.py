"""The synthetic lines: IAM's lines layout, deterministic, the words' hands, and lines that look like lines."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from steps.dataset import iam_format
from steps.sources import synthetic, synthetic_lines
from steps.sources.raw import describe_raw
from steps.workflow import config

NUM_LINES, NUM_WRITERS = 40, 4
MEMBER = re.compile(r"^lines/([a-z]\d{2})/(\1-\d{3}[a-z]?)/(\2-\d{2})\.png$")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two generations with the same arguments and one with another seed: (dir a, dir b, dir c, counts of a)."""
    dirs = [tmp_path_factory.mktemp(n) for n in "abc"]
    counts = synthetic_lines.generate(dirs[0], NUM_LINES, NUM_WRITERS, 7, progress=False)
    synthetic_lines.generate(dirs[1], NUM_LINES, NUM_WRITERS, 7, progress=False)
    synthetic_lines.generate(dirs[2], NUM_LINES, NUM_WRITERS, 8, progress=False)
    return (*dirs, counts)


def _images(path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_same_seed_same_bytes_other_seed_other_data(generated):
    a, b, c, _ = generated
    for name in (config.LINES_TXT, config.LINES_ARCHIVE, config.FORMS_TXT):
        assert _digest(a / name) == _digest(b / name)
    assert _digest(a / config.LINES_ARCHIVE) != _digest(c / config.LINES_ARCHIVE)


def test_iam_lines_layout_that_the_parser_and_the_raw_check_accept(generated):
    a, _, _, counts = generated
    lines, malformed = iam_format.parse_lines((a / config.LINES_TXT).read_text().splitlines())
    assert malformed == [] and len(lines) == NUM_LINES == counts["lines"]
    members = _images(a / config.LINES_ARCHIVE)
    assert all(MEMBER.match(m) for m in members), sorted(members)[:3]
    assert {iam_format.member_id(m) for m in members} == {line.id for line in lines}
    assert sum(not line.ok for line in lines) == counts["err"] > 0
    described = describe_raw(a, "lines")
    assert (described["lines"], described["images"], described["lines_without_image"]) == (NUM_LINES, NUM_LINES, 0)
    # every line has several words, in IAM's spelling (| in the file, words in the parsed text)
    assert all(len(line.text.split()) >= synthetic_lines.WORDS_PER_LINE[0] for line in lines)
    assert all(set(line.text) <= set(synthetic.IAM_CHARSET + " ") for line in lines)


def test_forms_name_each_forms_hand(generated):
    a, _, _, _ = generated
    writers = iam_format.parse_forms((a / config.FORMS_TXT).read_text().splitlines())
    lines, _ = iam_format.parse_lines((a / config.LINES_TXT).read_text().splitlines())
    assert {line.form for line in lines} == set(writers)
    assert len(set(writers.values())) == NUM_WRITERS  # 4 writers, 4 different font families


def test_line_images_are_wide_dark_ink_on_light_paper_and_a_few_are_unreadable(generated):
    a, _, _, counts = generated
    lines, _ = iam_format.parse_lines((a / config.LINES_TXT).read_text().splitlines())
    box = {line.id: line.bbox for line in lines}
    empty, corrupt, aspects = 0, 0, []
    for name, data in _images(a / config.LINES_ARCHIVE).items():
        if not data:
            empty += 1
            continue
        try:
            image = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        except OSError:
            corrupt += 1
            continue
        line_id = iam_format.member_id(name)
        assert box[line_id][2:] == (image.shape[1], image.shape[0])  # w h in lines.txt are the image's
        aspects.append(image.shape[1] / image.shape[0])
        dark, light = np.percentile(image, 1), np.percentile(image, 90)
        assert light - dark > 60, line_id
    assert (empty, corrupt) == (counts["empty"], counts["corrupt"]) == (1, 1)
    assert np.median(aspects) > 4  # lines, not words: several words side by side


def test_a_line_is_its_words_side_by_side(generated):
    # The ink of a line splits into as many wide blobs as it has words of two letters or more (gaps between words
    # are wider than gaps inside them): counted on the clean mask, before paper and noise.
    _, planned = synthetic_lines.plan(
        NUM_LINES, NUM_WRITERS, 7, [p.name for p in synthetic.list_fonts()], synthetic.load_vocabulary()
    )
    line = next(p for p in planned if all(j.text.isalpha() and len(j.text) > 2 for j in p.words))
    mask = synthetic_lines._compose(line, synthetic._rng(line.seed, synthetic_lines._LINE_SALT, line.index))
    columns = mask.max(axis=0) > synthetic_lines.INK
    runs = np.flatnonzero(np.diff(np.r_[0, columns.astype(int), 0]) == 1)
    gaps = np.flatnonzero(np.diff(np.r_[0, columns.astype(int), 0]) == -1)
    widths = runs[1:] - gaps[:-1]  # blank columns between ink runs
    assert (widths >= 10).sum() + 1 >= len(line.words) - 1


def test_plan_refuses_fewer_lines_than_writers():
    with pytest.raises(ValueError, match="at least num_writers"):
        synthetic_lines.plan(3, 4, 1, ["a.ttf"], ("word",))
