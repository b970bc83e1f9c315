"""IAM as a source: the mirror zip, the official words.tgz + ascii.tgz (URL or local), or a local directory,
all written into the canonical raw layout (`words.txt` + `words.tgz`, plus `forms.txt` when the source has it).

Pure functions, no MLflow (steps/download.py does the wiring).
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path, PurePosixPath

from steps.sources import archives, http
from steps.sources.archives import ASCII_ARCHIVE
from steps.sources.errors import CorruptArchive, DownloadError
from steps.sources.http import Fetched
from steps.sources.raw import describe_raw
from steps.workflow import config


def _local(source: str) -> Fetched:
    path = http.local_path(source)
    if not path.exists():
        raise DownloadError(
            f"{source} does not exist: give a URL, a local zip, or a directory holding "
            f"{config.WORDS_ARCHIVE} with {config.WORDS_TXT} or {ASCII_ARCHIVE}."
        )
    return Fetched(str(path), path, http.sha256_file(path), path.stat().st_size, 0, False)


def auth_withheld(url: str, layout: str, auth_host: str) -> str:
    """'' when basic auth may go to `url`, else why not: only to an official-layout URL, the official host or
    the host the user named (`auth_host`, env IAM_AUTH_HOST), and only over HTTPS unless that host is named."""
    parts = urllib.parse.urlsplit(url)
    host, named = parts.hostname or "", bool(auth_host) and parts.hostname == auth_host.lower()
    if not (named or layout == "official" or host == urllib.parse.urlsplit(config.IAM_OFFICIAL_BASE).hostname):
        return f"{host} is not the IAM server (set IAM_AUTH_HOST={host} to send them there)"
    if parts.scheme != "https" and not named:
        return f"{http.redact(url)} is not HTTPS (set IAM_AUTH_HOST={host} to send them there anyway)"
    return ""


def resolve_source(source: str) -> tuple[str, dict[str, str]]:
    """IAM `source` -> (layout, {file name: URL or path}); layout is zip, official or directory.

    A URL ending in `/`, without a dot in its last segment, or naming words.tgz/ascii.tgz is taken as
    the directory of the official archives; any other URL or a local file is a mirror-style zip.
    """
    if http.is_remote(source):
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
        raise DownloadError(
            f"{http.redact(source)}: unsupported URL scheme {scheme!r} (use http(s)://, file:// or a path)"
        )
    path = http.local_path(source)
    if not path.is_dir():
        return "zip", {"": str(path)}
    if not (path / config.WORDS_ARCHIVE).exists():
        raise DownloadError(
            f"{path} has no {config.WORDS_ARCHIVE}: give a directory holding "
            f"{config.WORDS_ARCHIVE} with {config.WORDS_TXT} or {ASCII_ARCHIVE}."
        )
    for layout, second in (("directory", config.WORDS_TXT), ("official", ASCII_ARCHIVE)):
        if (path / second).exists():
            return layout, {n: str(path / n) for n in (config.WORDS_ARCHIVE, second)}
    raise archives.missing_words_txt(str(path))


def prepare_iam(
    source: str,
    out_dir: Path,
    *,
    cache_dir: Path,
    sha256: str = "",
    auth: tuple[str, str] | None = None,
    auth_host: str = "",
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
) -> dict:
    """Fetch IAM words from `source` and write the canonical layout into `out_dir`; returns the record.

    `source` ("" = the Keras example mirror) is one of: a zip URL or path with `IAM_Words/words.tgz` and
    `IAM_Words/words.txt`; the URL or path of a directory holding the official `words.tgz` and
    `ascii.tgz`; a local directory with `words.tgz` and `words.txt`. `auth` is sent only where
    `auth_withheld` allows (`auth_host`: the host the user named for it). `sha256` is a bare hex for the
    zip or words.tgz, or `name=hex,...` per file.
    """
    source = source or config.IAM_MIRROR_URL
    expected = http.parse_sha256(sha256)
    layout, locations = resolve_source(source)
    if unknown := set(expected) - {"", *locations}:
        raise DownloadError(f"sha256 given for {sorted(unknown)}, but this source has {sorted(locations)}")
    started = time.monotonic()
    fetched: dict[str, Fetched] = {}
    for name, location in locations.items():
        want = expected.get(name) or (expected.get("", "") if name in ("", config.WORDS_ARCHIVE) else "")
        if http.is_remote(location):
            withheld = auth_withheld(location, layout, auth_host) if auth else ""
            f = http.fetch_url(
                location,
                cache_dir,
                auth=None if withheld else auth,
                withheld=withheld,
                sha256=want,
                progress=progress,
                retries=retries,
                backoff=backoff,
            )
        else:
            f = _local(location)
            if want and f.sha256 != want:
                raise DownloadError(
                    f"sha256 mismatch for {f.source}: expected {want}, got {f.sha256} "
                    "(the local file was left untouched): check the file or correct -P sha256."
                )
            if name != config.WORDS_TXT:
                archives.sniff(f.path, f.source)
        fetched[name] = f
    download_seconds = time.monotonic() - started

    try:
        raw = _unpack(layout, fetched, out_dir, source)
    except CorruptArchive as e:
        # evict the cached download the message names (not, say, a good 1 GB words.tgz beside a bad ascii.tgz)
        cached = [f.path for f in fetched.values() if http.is_remote(f.source) and f.source in str(e)]
        for path in cached:
            path.unlink(missing_ok=True)
        raise CorruptArchive(
            f"{e} "
            + (
                "The cached download was deleted: rerun to fetch it again."
                if cached
                else "Replace it with a complete copy."
            )
        ) from None
    return {
        "dataset": "iam",
        "source": http.redact(source),
        "layout": layout,
        "fetched": {f.path.name: f.record() for f in fetched.values()},
        "bytes": sum(f.bytes for f in fetched.values()),
        "bytes_downloaded": sum(f.downloaded for f in fetched.values()),
        "download_seconds": round(download_seconds, 3),
        **raw,
    }


def _unpack(layout: str, fetched: dict[str, Fetched], out_dir: Path, source: str) -> dict:
    """Write the canonical layout from the fetched files; returns describe_raw()."""
    if layout == "zip":
        f = fetched[""]
        if archives.sniff(f.path, f.source) != "zip":
            raise DownloadError(
                f"{f.source} is a gzip archive, not the mirror zip: give the directory (URL or "
                f"path) holding {config.WORDS_ARCHIVE} and {ASCII_ARCHIVE} instead."
            )
        archives.extract_from_zip(f.path, out_dir, f.source)
    else:
        archives.place(fetched[config.WORDS_ARCHIVE].path, out_dir / config.WORDS_ARCHIVE)
        if layout == "official":
            a = fetched[ASCII_ARCHIVE]
            archives.extract_from_ascii(a.path, out_dir, a.source)
        else:
            archives.place(fetched[config.WORDS_TXT].path, out_dir / config.WORDS_TXT)
            forms = http.local_path(source) / config.FORMS_TXT
            if forms.is_file():
                archives.place(forms, out_dir / config.FORMS_TXT)
    words = fetched.get("") or fetched[config.WORDS_ARCHIVE]
    return describe_raw(out_dir, "words", words.source)
