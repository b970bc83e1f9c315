"""Archive checks: what a downloaded file is (zip, gzip, or an HTML page), and safe reading of zip and tar.

Members with absolute paths, `..`, links or special files are refused before anything is written; only
the files the raw layout needs are extracted, under fixed names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator

from steps.dataset import iam_format
from steps.sources.errors import CorruptArchive, DownloadError, auth_hint, describe
from steps.workflow import config

ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
ASCII_ARCHIVE = "ascii.tgz"  # official IAM: words.txt and forms.txt live in here
CHUNK = 1 << 20
# Bounds checked from the headers, before a byte is extracted (IAM: words.txt 6 MB, words.tgz 1.1 GB,
# text deflates about 5x, images not at all): a 3.9 MB zip holding a 300 MB words.txt is refused up front.
MAX_TEXT_BYTES = 64 << 20  # words.txt, forms.txt
MAX_MEMBER_BYTES = 8 << 30  # anything else (words.tgz)
MAX_RATIO = 50  # uncompressed / compressed, once past RATIO_FLOOR (tiny files may compress further)
RATIO_FLOOR = 16 << 20


# ---------------------------------------------------------------- archive checks


def sniff(path: Path, shown: str) -> str:
    """'zip' or 'gzip' from the magic bytes; anything else (typically an HTML page) is an error."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text:
        raise DownloadError(
            f"{shown} is an HTML page, not an archive. The IAM server answers with an HTML (login) page "
            f"when IAM_USER/IAM_PASSWORD are missing or wrong ({auth_hint(False)}); otherwise the URL "
            "points at a web page rather than the file itself."
        )
    if not head:
        raise DownloadError(f"{shown} is empty: delete it or check the source.")
    raise DownloadError(f"{shown} is not a zip or gzip archive (it starts with {head[:16]!r}): check the source.")


def _unsafe(name: str) -> str | None:
    """Why an archive member name could escape the output directory, or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "'..' component"
    return None


def _refuse(shown: str, member: str, why: str) -> DownloadError:
    return DownloadError(
        f"{shown}: refusing unsafe archive member {member!r} ({why}). "
        "The archive is not a genuine IAM archive: get it from the official site or the mirror."
    )


def check_size(shown: str, member: str, size: int, compressed: int) -> None:
    """Refuse a member (or a whole stream) whose declared size or compression ratio no genuine IAM file has."""
    limit = MAX_TEXT_BYTES if PurePosixPath(member).suffix == ".txt" else MAX_MEMBER_BYTES
    why = ""
    if size > limit:
        why = f"{size / 1e6:.0f} MB, above the {limit / 1e6:.0f} MB a genuine one has"
    elif size > RATIO_FLOOR and size > MAX_RATIO * max(compressed, 1):
        why = f"{size / 1e6:.0f} MB from {compressed / 1e6:.1f} MB compressed, a ratio above {MAX_RATIO}"
    if why:
        raise DownloadError(
            f"{shown}: refusing {member!r} ({why}): a compression bomb or not an IAM archive; nothing was extracted. "
            "Get the archive from the official site or the mirror."
        )


def _corrupt(shown: str, error: Exception) -> CorruptArchive:
    return CorruptArchive(f"{shown} is truncated or corrupt ({describe(error)}).")


@contextlib.contextmanager
def _reading_tar(path: Path, shown: str) -> Iterator[tarfile.TarFile]:
    """Open a tar.gz in streaming mode, turning truncation/corruption anywhere inside into DownloadError."""
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _corrupt(shown, e) from None


class _TarBudget:
    """The sizes the tar headers declare so far, against the compressed size: checked before each member's data."""

    def __init__(self, path: Path, shown: str):
        self.compressed, self.shown, self.total = path.stat().st_size, shown, 0

    def admit(self, m: tarfile.TarInfo) -> None:
        self.total += m.size
        check_size(self.shown, m.name, m.size, self.compressed)
        check_size(self.shown, f"{PurePosixPath(self.shown).name} (all members)", self.total, self.compressed)


def _check_tar_member(m: tarfile.TarInfo, shown: str) -> None:
    why = _unsafe(m.name)
    if why is None and not (m.isreg() or m.isdir()):
        why = "symlink" if m.issym() else "hard link" if m.islnk() else "device or special file"
    if why:
        raise _refuse(shown, m.name, why)


def scan_words_archive(path: Path, shown: str) -> list[str]:
    """Walk every member of words.tgz (so truncation shows) and return the image member names.

    Refuses absolute paths, `..`, links and special files; reads all data, extracts nothing.
    """
    images, budget = [], _TarBudget(path, shown)
    with _reading_tar(path, shown) as tar:
        for m in tar:
            _check_tar_member(m, shown)
            budget.admit(m)
            if m.isreg() and iam_format.member_id(m.name) is not None:
                images.append(m.name)
    if not images:
        raise DownloadError(f"{shown} holds no word images: it is not IAM's {config.WORDS_ARCHIVE}.")
    return images


def extract_from_ascii(path: Path, out_dir: Path, shown: str) -> None:
    """Copy words.txt (required) and forms.txt (writer ids, if present) out of the official ascii.tgz.

    Every member is checked; only those two files are written, under fixed names.
    """
    wanted, budget = {config.WORDS_TXT, config.FORMS_TXT}, _TarBudget(path, shown)
    with _reading_tar(path, shown) as tar:
        for m in tar:
            _check_tar_member(m, shown)
            budget.admit(m)
            name = PurePosixPath(m.name).name
            if m.isreg() and name in wanted:
                with tar.extractfile(m) as src, open(out_dir / name, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                wanted.discard(name)
    if config.WORDS_TXT in wanted:
        raise missing_words_txt(shown)


def missing_words_txt(shown: str) -> DownloadError:
    return DownloadError(
        f"{shown} has no {config.WORDS_TXT}: the source must provide it (in the mirror zip, "
        f"in {ASCII_ARCHIVE}, or beside {config.WORDS_ARCHIVE} in a directory)."
    )


def extract_from_zip(path: Path, out_dir: Path, shown: str) -> None:
    """Copy words.tgz, words.txt (and forms.txt if present) out of a mirror-style zip into out_dir.

    The mirror holds `IAM_Words/words.tgz` and `IAM_Words/words.txt`. Every member is checked
    first; only those files are written, under fixed names.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            picked: dict[str, zipfile.ZipInfo] = {}
            for info in zf.infolist():
                kind = (info.external_attr >> 16) & 0o170000  # Unix file type; 0 when made elsewhere
                why = _unsafe(info.filename)
                if why is None and kind not in (0, 0o100000, 0o040000):
                    why = "symlink" if kind == 0o120000 else "special file"
                if why:
                    raise _refuse(shown, info.filename, why)
                check_size(shown, info.filename, info.file_size, info.compress_size)
                parts = PurePosixPath(info.filename).parts
                wanted = parts[-1] if len(parts) <= 2 else None  # at the top or one folder down
                if wanted in (config.WORDS_ARCHIVE, config.WORDS_TXT, config.FORMS_TXT) and not info.is_dir():
                    picked.setdefault(wanted, info)
            if config.WORDS_TXT not in picked:
                raise missing_words_txt(shown)
            if config.WORDS_ARCHIVE not in picked:
                raise DownloadError(f"{shown} has no {config.WORDS_ARCHIVE}: it is not the IAM words archive.")
            for target, info in picked.items():
                with zf.open(info) as src, open(out_dir / target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)  # zipfile checks the CRC at the end
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError) as e:
        raise _corrupt(shown, e) from None


def place(src: Path, dest: Path) -> None:
    """Put a (cached or local) file into the output dir: a hard link when possible, else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
