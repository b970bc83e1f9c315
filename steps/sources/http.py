"""HTTP downloads into a cache: resume with Range, bounded retries with backoff, checksums, redacted URLs.

Pure functions, no MLflow. Every failure is a `DownloadError` whose message says what to do. Messages
and records only ever contain `redact()`ed URLs, so credentials never reach logs, params or artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
import urllib3

from steps.sources import archives
from steps.sources.errors import DownloadError, auth_hint, describe
from steps.workflow import config
from steps.workflow.progress import bar as progress_bar
from steps.workflow.redaction import redact

try:  # a lock keeps two concurrent runs from writing the same .part file; POSIX only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CHUNK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    """A fetched file: where it is locally, its digest and size, and what the network had to carry."""

    source: str  # redacted URL or local path
    path: Path
    sha256: str
    bytes: int
    downloaded: int  # bytes transferred in this call (0 for a cache hit or a local file)
    cached: bool

    def record(self) -> dict:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "downloaded": self.downloaded,
            "cached": self.cached,
        }


# ---------------------------------------------------------------- sources and URLs


def is_remote(source: str) -> bool:
    """True for http(s) URLs; file:// URLs and plain paths are local."""
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    """A plain path or a file:// URL -> Path."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"{source}: file:// URLs must name a local file (file:///path)")
        return Path(urllib.request.url2pathname(parts.path))
    return Path(source).expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def parse_sha256(value: str) -> dict[str, str]:
    """`-P sha256` -> {file name: hex}; a bare hex is keyed "" (the source's main archive).

    Accepted: "<hex>" or "words.tgz=<hex>,ascii.tgz=<hex>" (for sources made of several files).
    """
    out = {}
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, _, digest = item.rpartition("=")
        digest = digest.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DownloadError(
                f"sha256 {item!r} is not a 64-digit hex digest (give <hex> or words.tgz=<hex>,ascii.tgz=<hex>)"
            )
        out[name.strip()] = digest
    return out


# ---------------------------------------------------------------- HTTP


def _lock(directory: Path):
    f = open(directory / ".lock", "w")
    if fcntl is not None:
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


def fetch_url(
    url: str,
    cache_dir: Path,
    *,
    auth: tuple[str, str] | None = None,
    withheld: str = "",
    sha256: str = "",
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Fetched:
    """Download `url` into the cache (or take it from there) and return it.

    The file streams into `<name>.part`, which a later call resumes with an HTTP Range request, and
    is renamed into place only when complete, checked to be an archive and to match `sha256`.
    Connection errors and 5xx are retried `retries` times in a row with exponential backoff
    (an attempt that made progress resets the count); 4xx are final. `withheld` says why credentials that
    are set were not sent (the 401 message tells it).
    """
    shown = redact(url)
    url = redact(url, keep_query=True)  # credentials go only as `auth`, never implicitly from user:password@
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
    # keyed by the URL with its query (another ?version= is another file) but never the credentials
    directory = cache_dir / hashlib.sha256(redact(url, keep_query=True).encode()).hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    final, part = directory / name, directory / (name + ".part")
    try:
        with contextlib.closing(_lock(directory)):
            if final.exists():
                digest = sha256_file(final)
                if not sha256 or digest == sha256:
                    return Fetched(shown, final, digest, final.stat().st_size, 0, True)
                final.unlink()  # stale or corrupt cache entry: fetch again, then check again below
            downloaded = _download(url, shown, part, auth, withheld, retries, backoff, timeout, progress)
            try:
                archives.sniff(part, shown)
            except DownloadError:
                part.unlink()  # never cache an HTML page
                raise
            digest = sha256_file(part)
            if sha256 and digest != sha256:
                part.unlink()
                raise DownloadError(
                    f"sha256 mismatch for {shown}: expected {sha256}, got {digest}. The download "
                    "was deleted; rerun to fetch it again, or correct -P sha256."
                )
            os.replace(part, final)
            return Fetched(shown, final, digest, final.stat().st_size, downloaded, False)
    finally:
        _drop_if_empty(directory)


def _drop_if_empty(directory: Path) -> None:
    """A failed first download leaves a folder holding only its lock: remove it (a .part to resume stays)."""
    with contextlib.suppress(OSError):
        if {p.name for p in directory.iterdir()} <= {".lock"}:
            shutil.rmtree(directory, ignore_errors=True)


def _download(
    url: str, shown: str, part: Path, auth, withheld: str, retries: int, backoff: float, timeout: float, progress: bool
) -> int:
    """Complete `part` from `url`; returns the bytes transferred."""
    transferred, failures = 0, 0
    with requests.Session() as session:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            # identity: byte offsets must refer to the file itself, not to a compressed transfer of it
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
            wrote, error = 0, None
            try:
                with session.get(url, headers=headers, auth=auth, stream=True, timeout=(30, timeout)) as r:
                    if r.status_code == 416 and offset:  # the .part is already the whole file, or is junk
                        total = r.headers.get("Content-Range", "").rpartition("/")[2]
                        if total.isdigit() and int(total) == offset:
                            return transferred
                        part.unlink()
                        continue  # from zero, without a Range header
                    _check_status(r, shown, auth is not None, withheld)
                    if r.status_code == 206 and not _range_matches(r, offset):
                        part.unlink(missing_ok=True)  # a range we did not ask for: start over
                        raise _Retryable(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
                    if r.status_code == 200:
                        offset = 0  # the server ignored the Range: the body is the whole file
                    length = r.headers.get("Content-Length")
                    total = offset + int(length) if length and length.isdigit() else None
                    with (
                        open(part, "r+b" if offset else "wb") as f,
                        progress_bar(
                            total=total,
                            initial=offset,
                            unit="B",
                            unit_scale=True,
                            unit_divisor=1024,
                            desc=part.name[:-5],
                            disable=not progress or None,
                            leave=False,
                        ) as bar,
                    ):
                        f.seek(offset)
                        f.truncate()
                        # read1 hands over whatever has arrived, so a dropped connection loses nothing
                        # that was received; decode_content=False keeps the archive bytes as served.
                        while block := r.raw.read1(CHUNK, decode_content=False):
                            f.write(block)
                            wrote += len(block)
                            bar.update(len(block))
                    if total is not None and offset + wrote != total:
                        raise requests.ConnectionError(f"got {offset + wrote} of {total} bytes")
                    return transferred + wrote
            except _Retryable as e:
                error = e
            except (requests.RequestException, urllib3.exceptions.HTTPError) as e:  # reset, timeout, cut body
                error = e
            transferred += wrote
            failures = 0 if wrote else failures + 1
            if failures >= retries:
                kept = part.stat().st_size if part.exists() else 0
                resume = f": the {kept} bytes received are kept in {part} and will be resumed" if kept else ""
                raise DownloadError(
                    f"could not download {shown} ({failures} attempts in a row failed: "
                    f"{describe(error)}). Check the network and rerun{resume}."
                ) from None
            time.sleep(min(backoff * 2 ** max(failures - 1, 0), 60))


class _Retryable(Exception):
    """A 5xx answer: worth another attempt."""


def _range_matches(r: requests.Response, offset: int) -> bool:
    return r.headers.get("Content-Range", "").startswith(f"bytes {offset}-")


def _check_status(r: requests.Response, shown: str, auth_sent: bool, withheld: str) -> None:
    code = r.status_code
    if code in (200, 206):
        return
    if code >= 500:
        raise _Retryable(f"HTTP {code} {r.reason}")
    if code in (401, 403):
        raise DownloadError(f"access to {shown} was denied (HTTP {code}): {auth_hint(auth_sent, withheld)}.")
    if code == 404:
        raise DownloadError(
            f"{shown} was not found (HTTP 404): check the source URL (an official-layout "
            f"source is the directory URL holding {config.WORDS_ARCHIVE} and {archives.ASCII_ARCHIVE})."
        )
    raise DownloadError(f"{shown} answered HTTP {code} {r.reason}: check the source URL.")
