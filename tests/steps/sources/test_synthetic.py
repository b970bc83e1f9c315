"""The synthetic dataset: IAM's exact layout, deterministic, writer-consistent, legible-looking images."""

from __future__ import annotations

import io
import re
import string
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from steps.dataset import iam_format
from steps.sources import synthetic
from steps.workflow import config

NUM_WORDS, NUM_WRITERS = 150, 6
WORD_ID = re.compile(r"^(([a-z]\d{2})-\d{3}[a-z]?)-(\d{2})-(\d{2})$")


def _data_lines(path):
    return [
        line.rstrip("\n").split(" ")
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
        if not line.startswith("#")
    ]


def _members(path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two generations with the same arguments, one with another seed: (dir a, dir b, dir c, counts of a)."""
    dirs = [tmp_path_factory.mktemp(name) for name in "abc"]
    counts = [synthetic.generate(d, NUM_WORDS, NUM_WRITERS, seed, progress=False) for d, seed in zip(dirs, (3, 3, 4))]
    return (*dirs, counts[0])


def test_deterministic_and_seed_dependent(generated):
    a, b, c, _ = generated
    for name in (config.WORDS_TXT, config.WORDS_ARCHIVE):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between identical runs"
        assert (a / name).read_bytes() != (c / name).read_bytes(), f"{name} ignores the seed"
    assert sorted(p.name for p in a.iterdir()) == sorted(
        [config.WORDS_TXT, config.WORDS_ARCHIVE, config.FORMS_TXT]
    )  # no leftovers


def test_same_bytes_with_worker_processes(tmp_path, monkeypatch):
    serial = synthetic.generate(tmp_path / "serial", 40, 4, 11, progress=False)
    monkeypatch.setattr(synthetic, "PARALLEL_MIN_WORDS", 1)
    monkeypatch.setattr(synthetic, "_workers", lambda num_words: 2)
    parallel = synthetic.generate(tmp_path / "parallel", 40, 4, 11, progress=False)
    assert serial == parallel
    for name in (config.WORDS_TXT, config.WORDS_ARCHIVE):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes()


def test_counts(generated):
    a, _, _, counts = generated
    assert counts["words"] == NUM_WORDS and counts["writers"] == NUM_WRITERS
    assert counts["ok"] + counts["err"] == NUM_WORDS
    assert 1 <= counts["fonts"] <= len(synthetic.list_fonts())
    assert counts["empty"] >= 1 and counts["corrupt"] == 1


def test_words_txt_is_iam_format(generated):
    a, _, _, counts = generated
    text = (a / config.WORDS_TXT).read_text(encoding="utf-8")
    assert text.startswith("#--- words.txt")
    lines = _data_lines(a / config.WORDS_TXT)
    assert len(lines) == NUM_WORDS
    for fields in lines:
        assert len(fields) == 9, fields
        word_id, flag, grey, x, y, w, h, tag, word = fields
        assert WORD_ID.match(word_id), word_id
        assert flag in ("ok", "err")
        assert 0 <= int(grey) <= 255 and int(x) >= 0 and int(y) >= 0 and int(w) > 0 and int(h) > 0
        assert tag and word and set(word) <= set(synthetic.IAM_CHARSET), word
    assert len({f[0] for f in lines}) == NUM_WORDS, "duplicate word ids"
    flags = Counter(f[1] for f in lines)
    assert flags["err"] == counts["err"] and 0 < flags["err"] < 0.3 * NUM_WORDS
    # The pipeline's own parser takes every line.
    words, malformed = iam_format.parse_words(text.splitlines())
    assert len(words) == NUM_WORDS and malformed == []


def test_archive_layout_matches_ids(generated):
    a, _, _, _ = generated
    ids = [f[0] for f in _data_lines(a / config.WORDS_TXT)]
    members = _members(a / config.WORDS_ARCHIVE)
    names = [m.name for m, _ in members]
    assert names == [f"{i[:3]}/{i.rsplit('-', 2)[0]}/{i}.png" for i in ids]
    assert [iam_format.member_id(n) for n in names] == ids
    for m, _ in members:
        assert m.isreg() and m.mtime == 0 and m.uid == m.gid == 0 and m.uname == m.gname == ""


def test_writers_own_their_forms(generated):
    a, _, _, _ = generated
    ids = [f[0] for f in _data_lines(a / config.WORDS_TXT)]
    forms = {WORD_ID.match(i).group(1) for i in ids}
    groups = {WORD_ID.match(i).group(2) for i in ids}
    assert len(groups) == NUM_WRITERS  # the form group is the writer
    # Each form belongs to exactly one writer, and that writer's style is the same on all its words.
    fonts = [f.name for f in synthetic.list_fonts()]
    writers, planned = synthetic.plan(NUM_WORDS, NUM_WRITERS, 3, fonts, synthetic.load_vocabulary())
    assert [p.id for p in planned] == ids
    writer_of_form: dict[str, synthetic.Writer] = {}
    for p in planned:
        form = p.id.rsplit("-", 2)[0]
        assert writer_of_form.setdefault(form, p.job.writer) == p.job.writer
        assert p.job.writer.group == form[:3]
    assert len(set(writer_of_form.values())) == NUM_WRITERS
    assert len({w.group for w in writers}) == NUM_WRITERS
    assert len(forms) >= NUM_WRITERS


def test_images_are_grayscale_dark_ink_on_light_paper(generated):
    a, _, _, _ = generated
    boxes = {f[0]: (int(f[5]), int(f[6]), f[8]) for f in _data_lines(a / config.WORDS_TXT)}
    decoded = 0
    for m, data in _members(a / config.WORDS_ARCHIVE):
        word_id = iam_format.member_id(m.name)
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception:  # the deliberate empty/corrupt ones, checked below
            continue
        decoded += 1
        w, h, text = boxes[word_id]
        assert img.mode == "L" and img.size == (w, h)
        pixels = np.asarray(img, dtype=float)
        paper, ink = np.percentile(pixels, 75), np.percentile(pixels, 2)
        assert paper > 150 and paper - ink > 60, (word_id, text, paper, ink)
        if len(text) >= 3 and text.isalpha():
            assert 20 <= h <= 200 and w >= h / 2, (word_id, text, w, h)
    assert decoded >= NUM_WORDS - 3


def test_empty_and_corrupt_images_exist(generated):
    a, _, _, counts = generated
    flags = {f[0]: f[1] for f in _data_lines(a / config.WORDS_TXT)}
    empty, corrupt = [], []
    for m, data in _members(a / config.WORDS_ARCHIVE):
        if not data:
            empty.append(m.name)
            continue
        try:
            Image.open(io.BytesIO(data)).load()
        except Exception:
            corrupt.append(m.name)
    assert len(empty) == counts["empty"] >= 1
    assert len(corrupt) == 1 and corrupt[0] not in empty
    for name in empty + corrupt:
        assert flags[iam_format.member_id(name)] in ("ok", "err")  # listed in words.txt like IAM's empty ones


def test_texts_look_like_iam():
    """Over a bigger plan (no rendering): IAM's characters only, with its kinds of tokens."""
    fonts = [f.name for f in synthetic.list_fonts()]
    _, planned = synthetic.plan(4000, 40, 5, fonts, synthetic.load_vocabulary())
    texts = [p.job.text for p in planned]
    assert set("".join(texts)) <= set(synthetic.IAM_CHARSET)
    assert all(t and " " not in t for t in texts)
    counts = Counter(texts)
    for token in (".", ",", "'s", '"', "-", "the"):
        assert counts[token] > 0, token
    assert any(t.isdigit() for t in texts)
    assert any(t[0].isupper() and t[1:].islower() and len(t) > 1 for t in texts)
    assert len(counts) > 1000  # a real vocabulary, not a handful of words
    assert counts["the"] > counts["of"] > 20  # Zipf-like function words
    err = sum(p.flag == "err" for p in planned) / len(planned)
    assert 0.06 < err < 0.14
    assert sum(p.job.kind == "empty" for p in planned) == round(0.002 * 4000)


def test_every_font_renders_iam_charset():
    """Bundled fonts draw every IAM character with ink, and lowercase unlike capitals.

    All-caps fonts (fonts-bwht, Humor Sans) draw `a` as a small `A`; with them a model could not learn
    case. Their lowercase/capital shape overlap (IoU at a common size) is >= 0.59, the kept fonts' <= 0.49.
    """
    for path in synthetic.list_fonts():
        font = ImageFont.truetype(str(path), 60)

        def glyph(ch: str, font: ImageFont.FreeTypeFont = font) -> Image.Image:
            img = Image.new("L", (160, 160), 0)
            ImageDraw.Draw(img).text((30, 110), ch, font=font, fill=255, anchor="ls")
            return img

        for ch in synthetic.IAM_CHARSET:
            assert np.asarray(glyph(ch)).max() > 128, (path.name, ch)
        overlaps = []
        for lower in "abdeghmqr":
            small, capital = (
                np.asarray(g.crop(g.getbbox()).resize((24, 24), Image.Resampling.BILINEAR)) > 100
                for g in (glyph(lower), glyph(lower.upper()))
            )
            overlaps.append((small & capital).sum() / (small | capital).sum())
        assert np.mean(overlaps) < 0.55, (path.name, np.mean(overlaps))


def test_word_list_is_clean():
    words = synthetic.load_vocabulary()
    assert len(words) > 3000 and len(set(words)) == len(words)
    assert all(set(w) <= set(string.ascii_letters + "'") for w in words)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least num_writers"):
        synthetic.plan(3, 5, 0, ["Breip.ttf"], ("word",))
    with pytest.raises(ValueError, match="num_writers"):
        synthetic.plan(3, 0, 0, ["Breip.ttf"], ("word",))


def test_forms_txt_names_each_forms_writer(generated):
    a, _, _, counts = generated
    writers = iam_format.parse_forms((a / config.FORMS_TXT).read_text().splitlines())
    words, _ = iam_format.parse_words((a / config.WORDS_TXT).read_text().splitlines())
    assert {w.form for w in words} == set(writers)  # every form has its writer
    assert len(set(writers.values())) == counts["hands"]
    # a form group belongs to one synthetic writer, so all its forms name the same writer id
    by_group = {}
    for form, writer in writers.items():
        assert by_group.setdefault(form[:3], writer) == writer


def test_writer_id_is_the_hand_so_no_font_can_be_in_two_splits():
    """Writers who share a font family share the writer id that preprocess splits on (font-held-out)."""
    fonts = [p.name for p in synthetic.list_fonts()]
    families = {synthetic.font_family(f) for f in fonts}
    num_writers = len(families) + 5  # more writers than families: some families write twice
    writers, planned = synthetic.plan(600, num_writers, 0, fonts, synthetic.load_vocabulary())
    assert max(Counter(synthetic.font_family(w.font) for w in writers).values()) >= 2  # a family writes twice
    with tempfile.TemporaryDirectory() as tmp:
        counts = synthetic.generate(Path(tmp), 600, num_writers, 0, progress=False)
        forms = iam_format.parse_forms((Path(tmp) / config.FORMS_TXT).read_text().splitlines())
    assert counts["hands"] == len(families) and len(set(forms.values())) == len(families)
    family_of_group = {w.group: synthetic.font_family(w.font) for w in writers}
    hand_families: dict[str, set[str]] = {}
    for form, hand in forms.items():
        hand_families.setdefault(hand, set()).add(family_of_group[form[:3]])
    assert all(len(f) == 1 for f in hand_families.values())  # one hand id, one font family
