"""Your own data's `source` as a local directory: a directory as it is, a zip or tar(.gz) archive unpacked
safely, a URL fetched into the download cache (resumed, checksummed) and then unpacked.

Archive members with absolute paths, `..`, links or special files are refused before anything is written.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from steps.sources import archives, http
from steps.sources.errors import CorruptArchive, DownloadError, describe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def as_directory(source: str, work_dir: Path, cache_dir: Path, sha256: str = "", progress: bool = True) -> Path:
    """`source` (directory, archive path, file:// or http(s) URL) -> a directory holding its files."""
    if not source:
        raise DownloadError(
            "this dataset reads your files: pass -P source=<directory, zip, tar.gz or URL> (see the README)"
        )
    if http.is_remote(source):
        archive = http.fetch_url(source, cache_dir, sha256=sha256, progress=progress).path
        shown = http.redact(source)
    else:
        archive = http.local_path(source)
        shown = str(archive)
        if not archive.exists():
            raise DownloadError(f"{shown} does not exist: give a directory, a zip or tar.gz archive, or a URL")
        if archive.is_dir():
            if sha256:
                raise DownloadError("-P sha256 checks an archive or a download, and the source is a directory: drop it")
            return archive
        if sha256 and http.sha256_file(archive) != sha256.strip().lower():
            raise DownloadError(f"sha256 mismatch for {shown}: check the file or correct -P sha256")
    out = work_dir / "unpacked"
    out.mkdir(parents=True, exist_ok=True)
    kind = archives.sniff(archive, shown)
    try:
        _unzip(archive, out, shown) if kind == "zip" else _untar(archive, out, shown)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise CorruptArchive(
            f"{shown} is truncated or corrupt ({describe(e)}): replace it with a complete copy"
        ) from None
    return out


def _unsafe(name: str) -> str | None:
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' component"
    return None


def _refuse(shown: str, member: str, why: str) -> DownloadError:
    return DownloadError(f"{shown}: refusing unsafe archive member {member!r} ({why}); nothing was used from it")


def _unzip(path: Path, out: Path, shown: str) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        for info in infos:
            kind = (info.external_attr >> 16) & 0o170000
            why = _unsafe(info.filename) or (
                None if kind in (0, 0o100000, 0o040000) else "symlink" if kind == 0o120000 else "special file"
            )
            if why:
                raise _refuse(shown, info.filename, why)
        zf.extractall(out)


def _untar(path: Path, out: Path, shown: str) -> None:
    with tarfile.open(path, mode="r:*") as tar:
        members = tar.getmembers()
        for m in members:
            why = _unsafe(m.name) or (
                None if m.isreg() or m.isdir() else "symlink" if m.issym() else "hard link" if m.islnk() else "special"
            )
            if why:
                raise _refuse(shown, m.name, why)
        tar.extractall(out, members=members, filter="data")


def content_root(directory: Path) -> Path:
    """The directory itself, or its single subdirectory when it holds nothing else (archives often wrap one)."""
    entries = [p for p in directory.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    return content_root(entries[0]) if len(entries) == 1 and entries[0].is_dir() else directory
