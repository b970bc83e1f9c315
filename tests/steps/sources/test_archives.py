"""steps.sources.archives: compression bombs are refused from the headers, before anything is extracted."""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from pathlib import Path

import pytest

from steps.sources import archives
from steps.sources.errors import DownloadError
from steps.workflow import config
from tests.steps.sources.test_http import member_name, words_tgz, words_txt

MB = 1 << 20


def _zip_with_big_words_txt(path: Path, megabytes: int) -> Path:
    """A mirror-style zip whose words.txt is `megabytes` of valid-looking lines, deflated to a few MB."""
    line = words_txt().splitlines(keepends=True)[1]
    block = line * (MB // len(line) + 1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IAM_Words/words.tgz", words_tgz())
        with zf.open("IAM_Words/words.txt", "w", force_zip64=True) as f:
            for _ in range(megabytes):
                f.write(block[:MB])
    return path


def test_a_small_zip_holding_a_300_mb_words_txt_is_refused_before_extracting(tmp_path):
    bomb = _zip_with_big_words_txt(tmp_path / "IAM_Words.zip", 300)
    assert bomb.stat().st_size < 4 * MB  # like the probe's 3.9 MB zip
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError) as e:
        archives.extract_from_zip(bomb, out, "IAM_Words.zip")
    assert "refusing 'IAM_Words/words.txt' (315 MB, above the 67 MB a genuine one has)" in str(e.value)
    assert "nothing was extracted" in str(e.value)
    assert list(out.iterdir()) == []


def test_a_zip_member_with_a_bomb_ratio_is_refused(tmp_path):
    path = tmp_path / "IAM_Words.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IAM_Words/words.txt", words_txt())
        zf.writestr("IAM_Words/words.tgz", bytes(40 * MB))  # zeros: about 1000x
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError, match=r"refusing 'IAM_Words/words.tgz' \(42 MB from 0.0 MB compressed"):
        archives.extract_from_zip(path, out, "IAM_Words.zip")
    assert list(out.iterdir()) == []


def test_a_tgz_whose_members_inflate_far_beyond_its_size_is_refused_at_the_header(tmp_path):
    path = tmp_path / config.WORDS_ARCHIVE
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo(member_name("a01-000u-00-00"))
        info.size = 40 * MB
        tar.addfile(info, _Zeros(info.size))
    with pytest.raises(DownloadError, match="a ratio above 50"):
        archives.scan_words_archive(path, config.WORDS_ARCHIVE)


def test_an_ascii_tgz_with_an_oversized_words_txt_writes_nothing(tmp_path):
    path = tmp_path / archives.ASCII_ARCHIVE
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo(config.WORDS_TXT)
        info.size = 70 * MB
        tar.addfile(info, _Zeros(info.size))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError, match="above the 67 MB a genuine one has"):
        archives.extract_from_ascii(path, out, archives.ASCII_ARCHIVE)
    assert list(out.iterdir()) == []


def test_genuine_sizes_pass():
    archives.check_size("x.zip", "IAM_Words/words.txt", 6 * MB, 1 * MB)  # IAM's words.txt deflates ~5x
    archives.check_size("x.zip", "IAM_Words/words.tgz", 1100 * MB, 1100 * MB)
    archives.check_size("x.zip", "tiny.txt", 100_000, 100)  # below the floor, any ratio


class _Zeros:
    """A file object of n zero bytes, without holding them in memory."""

    def __init__(self, n: int):
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)
