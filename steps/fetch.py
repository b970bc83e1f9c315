"""Fetching raw datasets: HTTP download with resume, retries and a cache; archive checks; the raw layout.

Pure functions, no MLflow (steps/download.py does the wiring). Whatever the source, the result is the
canonical raw layout in one directory: `words.txt` plus `words.tgz` (members like
`a01/a01-000u/a01-000u-00-00.png`), kept as an archive because preprocess reads it in place.

Every failure is a `DownloadError` whose message says what to do. Messages and records only ever
contain `redact()`ed URLs, so credentials never reach logs, params or artifacts.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import requests
import urllib3
from tqdm import tqdm

from steps import config, iam

try:  # a lock keeps two concurrent runs from writing the same .part file; POSIX only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
ASCII_ARCHIVE = "ascii.tgz"          # official IAM: words.txt and forms.txt live in here
IAM_REGISTER_URL = "https://fki.tic.heia-fr.ch/register"
CHUNK = 1 << 20


class DownloadError(Exception):
    """A download or archive problem; the message tells the user what to do."""


class CorruptArchive(DownloadError):
    """A truncated or corrupt archive: a cached copy of it must go, so that a rerun fetches it again."""


@dataclass(frozen=True)
class Fetched:
    """A fetched file: where it is locally, its digest and size, and what the network had to carry."""
    source: str          # redacted URL or local path
    path: Path
    sha256: str
    bytes: int
    downloaded: int      # bytes transferred in this call (0 for a cache hit or a local file)
    cached: bool

    def record(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "bytes": self.bytes,
                "downloaded": self.downloaded, "cached": self.cached}


# ---------------------------------------------------------------- sources and URLs

def default_cache_dir() -> Path:
    """$HWR_CACHE_DIR, else ~/.cache/handwriting-recognition."""
    return Path(os.environ.get("HWR_CACHE_DIR") or Path.home() / ".cache" / "handwriting-recognition")


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


def redact(url: str, keep_query: bool = False) -> str:
    """The URL without user:password@ and, unless keep_query, without the query (it may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "ftp", "file") or not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query if keep_query else "", ""))


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
            raise DownloadError(f"sha256 {item!r} is not a 64-digit hex digest "
                                "(give <hex> or words.tgz=<hex>,ascii.tgz=<hex>)")
        out[name.strip()] = digest
    return out


# ---------------------------------------------------------------- HTTP

def _lock(directory: Path):
    f = open(directory / ".lock", "w")
    if fcntl is not None:
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _auth_hint(sent: bool) -> str:
    if sent:
        return "IAM_USER/IAM_PASSWORD were sent and refused: check them"
    return (f"the official IAM archives need an account: register at {IAM_REGISTER_URL}, "
            "then set IAM_USER and IAM_PASSWORD in the environment")


def fetch_url(url: str, cache_dir: Path, *, auth: tuple[str, str] | None = None, sha256: str = "",
              retries: int = 5, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> Fetched:
    """Download `url` into the cache (or take it from there) and return it.

    The file streams into `<name>.part`, which a later call resumes with an HTTP Range request, and
    is renamed into place only when complete, checked to be an archive and to match `sha256`.
    Connection errors and 5xx are retried `retries` times in a row with exponential backoff
    (an attempt that made progress resets the count); 4xx are final.
    """
    shown = redact(url)
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
    # keyed by the URL with its query (another ?version= is another file) but never the credentials
    directory = cache_dir / hashlib.sha256(redact(url, keep_query=True).encode()).hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    final, part = directory / name, directory / (name + ".part")
    with contextlib.closing(_lock(directory)):
        if final.exists():
            digest = sha256_file(final)
            if not sha256 or digest == sha256:
                return Fetched(shown, final, digest, final.stat().st_size, 0, True)
            final.unlink()  # stale or corrupt cache entry: fetch again, then check again below
        downloaded = _download(url, shown, part, auth, retries, backoff, timeout, progress)
        try:
            sniff(part, shown)
        except DownloadError:
            part.unlink()  # never cache an HTML page
            raise
        digest = sha256_file(part)
        if sha256 and digest != sha256:
            part.unlink()
            raise DownloadError(f"sha256 mismatch for {shown}: expected {sha256}, got {digest}. The download "
                                "was deleted; rerun to fetch it again, or correct -P sha256.")
        os.replace(part, final)
        return Fetched(shown, final, digest, final.stat().st_size, downloaded, False)


def _download(url: str, shown: str, part: Path, auth, retries: int, backoff: float, timeout: float,
              progress: bool) -> int:
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
                    _check_status(r, shown, auth is not None)
                    if r.status_code == 206 and not _range_matches(r, offset):
                        part.unlink(missing_ok=True)  # a range we did not ask for: start over
                        raise _Retryable(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
                    if r.status_code == 200:
                        offset = 0  # the server ignored the Range: the body is the whole file
                    length = r.headers.get("Content-Length")
                    total = offset + int(length) if length and length.isdigit() else None
                    with open(part, "r+b" if offset else "wb") as f, tqdm(
                            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=part.name[:-5], disable=not progress or None, leave=False) as bar:
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
                raise DownloadError(f"could not download {shown} ({failures} attempts in a row failed: "
                                    f"{_describe(error)}). Check the network and rerun{resume}.") from None
            time.sleep(min(backoff * 2 ** max(failures - 1, 0), 60))


class _Retryable(Exception):
    """A 5xx answer: worth another attempt."""


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _range_matches(r: requests.Response, offset: int) -> bool:
    return r.headers.get("Content-Range", "").startswith(f"bytes {offset}-")


def _check_status(r: requests.Response, shown: str, auth_sent: bool) -> None:
    code = r.status_code
    if code in (200, 206):
        return
    if code >= 500:
        raise _Retryable(f"HTTP {code} {r.reason}")
    if code in (401, 403):
        raise DownloadError(f"access to {shown} was denied (HTTP {code}): {_auth_hint(auth_sent)}.")
    if code == 404:
        raise DownloadError(f"{shown} was not found (HTTP 404): check the source URL (an official-layout "
                            f"source is the directory URL holding {config.WORDS_ARCHIVE} and {ASCII_ARCHIVE}).")
    raise DownloadError(f"{shown} answered HTTP {code} {r.reason}: check the source URL.")


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
            f"when IAM_USER/IAM_PASSWORD are missing or wrong ({_auth_hint(False)}); otherwise the URL "
            "points at a web page rather than the file itself.")
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
    return DownloadError(f"{shown}: refusing unsafe archive member {member!r} ({why}). "
                         "The archive is not a genuine IAM archive: get it from the official site or the mirror.")


def _corrupt(shown: str, error: Exception) -> CorruptArchive:
    return CorruptArchive(f"{shown} is truncated or corrupt ({_describe(error)}).")


@contextlib.contextmanager
def _reading_tar(path: Path, shown: str) -> Iterator[tarfile.TarFile]:
    """Open a tar.gz in streaming mode, turning truncation/corruption anywhere inside into DownloadError."""
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _corrupt(shown, e) from None


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
    images = []
    with _reading_tar(path, shown) as tar:
        for m in tar:
            _check_tar_member(m, shown)
            if m.isreg() and iam.member_id(m.name) is not None:
                images.append(m.name)
    if not images:
        raise DownloadError(f"{shown} holds no word images: it is not IAM's {config.WORDS_ARCHIVE}.")
    return images


def extract_from_ascii(path: Path, out_dir: Path, shown: str) -> None:
    """Copy words.txt (required) and forms.txt (writer ids, if present) out of the official ascii.tgz.

    Every member is checked; only those two files are written, under fixed names.
    """
    wanted = {config.WORDS_TXT, config.FORMS_TXT}
    with _reading_tar(path, shown) as tar:
        for m in tar:
            _check_tar_member(m, shown)
            name = PurePosixPath(m.name).name
            if m.isreg() and name in wanted:
                with tar.extractfile(m) as src, open(out_dir / name, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                wanted.discard(name)
    if config.WORDS_TXT in wanted:
        raise _missing_words_txt(shown)


def _missing_words_txt(shown: str) -> DownloadError:
    return DownloadError(f"{shown} has no {config.WORDS_TXT}: the source must provide it (in the mirror zip, "
                         f"in {ASCII_ARCHIVE}, or beside {config.WORDS_ARCHIVE} in a directory).")


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
                parts = PurePosixPath(info.filename).parts
                wanted = parts[-1] if len(parts) <= 2 else None  # at the top or one folder down
                if wanted in (config.WORDS_ARCHIVE, config.WORDS_TXT, config.FORMS_TXT) and not info.is_dir():
                    picked.setdefault(wanted, info)
            if config.WORDS_TXT not in picked:
                raise _missing_words_txt(shown)
            if config.WORDS_ARCHIVE not in picked:
                raise DownloadError(f"{shown} has no {config.WORDS_ARCHIVE}: it is not the IAM words archive.")
            for target, info in picked.items():
                with zf.open(info) as src, open(out_dir / target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)  # zipfile checks the CRC at the end
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError) as e:
        raise _corrupt(shown, e) from None


def _place(src: Path, dest: Path) -> None:
    """Put a (cached or local) file into the output dir: a hard link when possible, else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


# ---------------------------------------------------------------- the raw layout

def describe_raw(out_dir: Path, origin: str = "") -> dict:
    """Validate a canonical raw dir (words.txt + words.tgz) and count what it holds.

    Also the final check for synthetic data, so every raw/ passes the same gate. `origin` names
    where the files came from, for error messages.
    """
    words_txt, archive = out_dir / config.WORDS_TXT, out_dir / config.WORDS_ARCHIVE
    if not words_txt.exists():
        raise _missing_words_txt(str(out_dir))
    with open(words_txt, encoding="utf-8", errors="replace") as f:
        words, malformed = iam.parse_words(f)
    if not words:
        raise DownloadError(f"{config.WORDS_TXT} has no word lines (id ok|err grey x y w h tag text): "
                            "it is not IAM's words.txt.")
    images = scan_words_archive(archive, f"{config.WORDS_ARCHIVE} from {origin}" if origin else config.WORDS_ARCHIVE)
    ids = {iam.member_id(n) for n in images}
    matched = sum(w.id in ids for w in words)
    if matched == 0:
        raise DownloadError(f"no word of {config.WORDS_TXT} has an image in {config.WORDS_ARCHIVE} "
                            f"(first image: {images[0]}): the two files do not belong together.")
    ok = sum(w.ok for w in words)
    present = [p for p in (words_txt, archive, out_dir / config.FORMS_TXT) if p.exists()]
    return {"words": len(words), "words_ok": ok, "words_err": len(words) - ok, "malformed_lines": len(malformed),
            "images": len(images), "words_without_image": len(words) - matched,
            "raw_files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in present}}


def _local(source: str) -> Fetched:
    path = local_path(source)
    if not path.exists():
        raise DownloadError(f"{source} does not exist: give a URL, a local zip, or a directory holding "
                            f"{config.WORDS_ARCHIVE} with {config.WORDS_TXT} or {ASCII_ARCHIVE}.")
    return Fetched(str(path), path, sha256_file(path), path.stat().st_size, 0, False)


def resolve_source(source: str) -> tuple[str, dict[str, str]]:
    """IAM `source` -> (layout, {file name: URL or path}); layout is zip, official or directory.

    A URL ending in `/`, without a dot in its last segment, or naming words.tgz/ascii.tgz is taken as
    the directory of the official archives; any other URL or a local file is a mirror-style zip.
    """
    if is_remote(source):
        path = urllib.parse.urlsplit(source).path
        name = PurePosixPath(path).name
        if not (path.endswith("/") or "." not in name or name in (config.WORDS_ARCHIVE, ASCII_ARCHIVE)):
            return "zip", {"": source}
        if path.endswith("/"):
            base = source
        elif "." in name:  # .../words.tgz or .../ascii.tgz
            base = source.rsplit("/", 1)[0] + "/"
        else:
            base = source + "/"
        return "official", {n: urllib.parse.urljoin(base, n) for n in (config.WORDS_ARCHIVE, ASCII_ARCHIVE)}
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive
        raise DownloadError(f"{redact(source)}: unsupported URL scheme {scheme!r} (use http(s)://, file:// or a path)")
    path = local_path(source)
    if not path.is_dir():
        return "zip", {"": str(path)}
    if not (path / config.WORDS_ARCHIVE).exists():
        raise DownloadError(f"{path} has no {config.WORDS_ARCHIVE}: give a directory holding "
                            f"{config.WORDS_ARCHIVE} with {config.WORDS_TXT} or {ASCII_ARCHIVE}.")
    for layout, second in (("directory", config.WORDS_TXT), ("official", ASCII_ARCHIVE)):
        if (path / second).exists():
            return layout, {n: str(path / n) for n in (config.WORDS_ARCHIVE, second)}
    raise _missing_words_txt(str(path))


def prepare_iam(source: str, out_dir: Path, *, cache_dir: Path, sha256: str = "",
                auth: tuple[str, str] | None = None, progress: bool = True,
                retries: int = 5, backoff: float = 1.0) -> dict:
    """Fetch IAM words from `source` and write the canonical layout into `out_dir`; returns the record.

    `source` ("" = the Keras example mirror) is one of: a zip URL or path with `IAM_Words/words.tgz` and
    `IAM_Words/words.txt`; the URL or path of a directory holding the official `words.tgz` and
    `ascii.tgz`; a local directory with `words.tgz` and `words.txt`. `auth` is sent only to an
    official-layout URL or the official host, never to the mirror. `sha256` is a bare hex for the
    zip or words.tgz, or `name=hex,...` per file.
    """
    source = source or config.IAM_MIRROR_URL
    expected = parse_sha256(sha256)
    layout, locations = resolve_source(source)
    if unknown := set(expected) - {"", *locations}:
        raise DownloadError(f"sha256 given for {sorted(unknown)}, but this source has {sorted(locations)}")
    iam_host = urllib.parse.urlsplit(config.IAM_OFFICIAL_BASE).hostname
    send_auth = layout == "official" or urllib.parse.urlsplit(source).hostname == iam_host
    started = time.monotonic()
    fetched: dict[str, Fetched] = {}
    for name, location in locations.items():
        want = expected.get(name) or (expected.get("", "") if name in ("", config.WORDS_ARCHIVE) else "")
        if is_remote(location):
            f = fetch_url(location, cache_dir, auth=auth if send_auth else None, sha256=want,
                          progress=progress, retries=retries, backoff=backoff)
        else:
            f = _local(location)
            if want and f.sha256 != want:
                raise DownloadError(f"sha256 mismatch for {f.source}: expected {want}, got {f.sha256} "
                                    "(the local file was left untouched): check the file or correct -P sha256.")
            if name != config.WORDS_TXT:
                sniff(f.path, f.source)
        fetched[name] = f
    download_seconds = time.monotonic() - started

    try:
        raw = _unpack(layout, fetched, out_dir, source)
    except CorruptArchive as e:
        # evict the cached download the message names (not, say, a good 1 GB words.tgz beside a bad ascii.tgz)
        cached = [f.path for f in fetched.values() if is_remote(f.source) and f.source in str(e)]
        for path in cached:
            path.unlink(missing_ok=True)
        raise CorruptArchive(f"{e} " + ("The cached download was deleted: rerun to fetch it again." if cached
                                        else "Replace it with a complete copy.")) from None
    return {"dataset": "iam", "source": redact(source), "layout": layout,
            "fetched": {f.path.name: f.record() for f in fetched.values()},
            "bytes": sum(f.bytes for f in fetched.values()),
            "bytes_downloaded": sum(f.downloaded for f in fetched.values()),
            "download_seconds": round(download_seconds, 3), **raw}


def _unpack(layout: str, fetched: dict[str, Fetched], out_dir: Path, source: str) -> dict:
    """Write the canonical layout from the fetched files; returns describe_raw()."""
    if layout == "zip":
        f = fetched[""]
        if sniff(f.path, f.source) != "zip":
            raise DownloadError(f"{f.source} is a gzip archive, not the mirror zip: give the directory (URL or "
                                f"path) holding {config.WORDS_ARCHIVE} and {ASCII_ARCHIVE} instead.")
        extract_from_zip(f.path, out_dir, f.source)
    else:
        _place(fetched[config.WORDS_ARCHIVE].path, out_dir / config.WORDS_ARCHIVE)
        if layout == "official":
            a = fetched[ASCII_ARCHIVE]
            extract_from_ascii(a.path, out_dir, a.source)
        else:
            _place(fetched[config.WORDS_TXT].path, out_dir / config.WORDS_TXT)
            forms = local_path(source) / config.FORMS_TXT
            if forms.is_file():
                _place(forms, out_dir / config.FORMS_TXT)
    words = fetched.get("") or fetched[config.WORDS_ARCHIVE]
    return describe_raw(out_dir, words.source)
