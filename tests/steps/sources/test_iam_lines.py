"""IAM lines as a source: official lines.tgz + ascii.tgz, a directory with lines.txt, and the word-only mirror."""

from __future__ import annotations

import io
import tarfile

import pytest

from steps.sources import iam_lines
from steps.sources.errors import DownloadError
from steps.workflow import config

LINES_TXT = "# lines.txt\na01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to\na01-000u-01 err 156 19 395 932 1850 105 nominating|any\n"
FORMS_TXT = "a01-000u 000 2 prt 7 5 52 36\n"


def _tgz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def official(tmp_path):
    """A directory laid out like the official server: lines.tgz and ascii.tgz (lines.txt, words.txt, forms.txt)."""
    src = tmp_path / "iam"
    src.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    _tgz(src / "lines.tgz", {"a01/a01-000u/a01-000u-00.png": png, "a01/a01-000u/a01-000u-01.png": png})
    _tgz(
        src / "ascii.tgz",
        {"lines.txt": LINES_TXT.encode(), "forms.txt": FORMS_TXT.encode(), "words.txt": b"# words\n"},
    )
    return src


def test_official_archives_from_a_local_copy_give_the_canonical_lines_layout(official, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    info = iam_lines.prepare_iam_lines(str(official), out, cache_dir=tmp_path / "cache", progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([config.FORMS_TXT, config.LINES_TXT, config.LINES_ARCHIVE])
    assert (info["layout"], info["lines"], info["lines_err"], info["images"]) == ("official", 2, 1, 2)
    assert (out / config.LINES_TXT).read_text() == LINES_TXT


def test_a_directory_with_lines_txt_beside_lines_tgz(official, tmp_path):
    (official / "ascii.tgz").unlink()
    (official / "lines.txt").write_text(LINES_TXT)
    (official / "forms.txt").write_text(FORMS_TXT)
    out = tmp_path / "raw"
    out.mkdir()
    info = iam_lines.prepare_iam_lines(str(official), out, cache_dir=tmp_path / "cache", progress=False)
    assert info["layout"] == "directory" and (out / config.FORMS_TXT).read_text() == FORMS_TXT


def test_a_wrong_sha256_leaves_nothing_behind(official, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        iam_lines.prepare_iam_lines(str(official), out, cache_dir=tmp_path / "cache", sha256="0" * 64)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("source", ["", config.IAM_MIRROR_URL])
def test_the_word_only_mirror_has_no_lines_and_says_where_they_are(source):
    with pytest.raises(DownloadError, match="holds words only.*official"):
        iam_lines.resolve_source(source)


def test_a_zip_or_a_directory_without_lines_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="lines.tgz"):
        iam_lines.resolve_source(str(tmp_path / "IAM_Words.zip"))
    with pytest.raises(DownloadError, match="names one file"):
        iam_lines.resolve_source("https://example.org/IAM_Words.zip")
    (tmp_path / "lines.tgz").write_bytes(b"")
    with pytest.raises(DownloadError, match="neither lines.txt nor ascii.tgz"):
        iam_lines.resolve_source(str(tmp_path))


def test_official_urls_name_both_archives():
    layout, files = iam_lines.resolve_source(config.IAM_OFFICIAL_BASE)
    assert layout == "official"
    assert files == {n: config.IAM_OFFICIAL_BASE + n for n in ("lines.tgz", "ascii.tgz")}
