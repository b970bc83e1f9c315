"""IAM lines as a source: the official lines.tgz + ascii.tgz (URL or local directory), or a local directory with
lines.tgz + lines.txt, written into the canonical raw layout (`lines.txt` + `lines.tgz`, plus `forms.txt`).

The same downloads as words (steps/sources/http.py: cache, resume, checksums, credentials sent only to the
official archives) and the same archive checks (steps/sources/archives.py). The Keras example's mirror
(IAM_Words.zip) holds words only: asking it for lines is an error that says where lines come from.
Pure functions, no MLflow (steps/download.py does the wiring).
"""

from __future__ import annotations

import shutil
import time
import urllib.parse
from pathlib import Path, PurePosixPath

from steps.sources import archives, http
from steps.sources.archives import ASCII_ARCHIVE
from steps.sources.errors import DownloadError
from steps.sources.http import Fetched
from steps.sources.raw import describe_raw
from steps.workflow import config

LEVEL = config.LEVELS["lines"]


def resolve_source(source: str) -> tuple[str, dict[str, str]]:
    """IAM lines `source` -> (layout, {file name: URL or path}); layout is official or directory."""
    if not source or source == config.IAM_MIRROR_URL:
        raise DownloadError(
            "the default IAM source (the Keras example's IAM_Words.zip) holds words only: for lines give "
            f"-P source=<the official archive directory, e.g. {config.IAM_OFFICIAL_BASE}> (with IAM_USER/IAM_PASSWORD) "
            f"or a local directory holding {LEVEL.archive} with {LEVEL.text_file} or {ASCII_ARCHIVE}"
        )
    if http.is_remote(source):
        path = urllib.parse.urlsplit(source).path
        name = PurePosixPath(path).name
        if path.endswith("/") or "." not in name:
            base = source if path.endswith("/") else source + "/"
        elif name in (LEVEL.archive, ASCII_ARCHIVE):
            base = source.rsplit("/", 1)[0] + "/"
        else:
            raise DownloadError(
                f"{http.redact(source)} names one file: IAM lines are {LEVEL.archive} + {ASCII_ARCHIVE}, "
                "so give the URL of the directory holding them"
            )
        return "official", {n: urllib.parse.urljoin(base, n) for n in (LEVEL.archive, ASCII_ARCHIVE)}
    path = http.local_path(source)
    if not path.is_dir() or not (path / LEVEL.archive).exists():
        raise DownloadError(
            f"{source} is not a directory holding {LEVEL.archive}: IAM lines need {LEVEL.archive} with "
            f"{LEVEL.text_file} or {ASCII_ARCHIVE} (the words mirror zip has no lines)"
        )
    for layout, second in (("directory", LEVEL.text_file), ("official", ASCII_ARCHIVE)):
        if (path / second).exists():
            return layout, {n: str(path / n) for n in (LEVEL.archive, second)}
    raise DownloadError(f"{path} has {LEVEL.archive} but neither {LEVEL.text_file} nor {ASCII_ARCHIVE}")


def _extract_from_ascii(path: Path, out_dir: Path, shown: str) -> None:
    """Copy lines.txt (required) and forms.txt (if present) out of ascii.tgz, every member checked."""
    wanted = {LEVEL.text_file, config.FORMS_TXT}
    with archives._reading_tar(path, shown) as tar:
        for m in tar:
            archives._check_tar_member(m, shown)
            name = PurePosixPath(m.name).name
            if m.isreg() and name in wanted:
                with tar.extractfile(m) as src, open(out_dir / name, "wb") as out:
                    shutil.copyfileobj(src, out, archives.CHUNK)
                wanted.discard(name)
    if LEVEL.text_file in wanted:
        raise DownloadError(f"{shown} has no {LEVEL.text_file}: it is not IAM's {ASCII_ARCHIVE}.")


def prepare_iam_lines(
    source: str,
    out_dir: Path,
    *,
    cache_dir: Path,
    sha256: str = "",
    auth: tuple[str, str] | None = None,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
) -> dict:
    """Fetch IAM lines from `source` and write the canonical lines layout into `out_dir`; returns the record.

    `sha256` is a bare hex for lines.tgz, or `name=hex,...` per file. `auth` goes to official URLs only.
    """
    expected = http.parse_sha256(sha256)
    layout, locations = resolve_source(source)
    if unknown := set(expected) - {"", *locations}:
        raise DownloadError(f"sha256 given for {sorted(unknown)}, but this source has {sorted(locations)}")
    started = time.monotonic()
    fetched: dict[str, Fetched] = {}
    for name, location in locations.items():
        want = expected.get(name) or (expected.get("", "") if name == LEVEL.archive else "")
        if http.is_remote(location):
            f = http.fetch_url(
                location, cache_dir, auth=auth, sha256=want, progress=progress, retries=retries, backoff=backoff
            )
        else:
            path = http.local_path(location)
            f = Fetched(str(path), path, http.sha256_file(path), path.stat().st_size, 0, False)
            if want and f.sha256 != want:
                raise DownloadError(
                    f"sha256 mismatch for {f.source}: expected {want}, got {f.sha256} "
                    "(the local file was left untouched): check the file or correct -P sha256."
                )
            if name != LEVEL.text_file:
                archives.sniff(f.path, f.source)
        fetched[name] = f
    download_seconds = time.monotonic() - started
    archives.place(fetched[LEVEL.archive].path, out_dir / LEVEL.archive)
    if layout == "official":
        a = fetched[ASCII_ARCHIVE]
        _extract_from_ascii(a.path, out_dir, a.source)
    else:
        archives.place(fetched[LEVEL.text_file].path, out_dir / LEVEL.text_file)
        forms = http.local_path(source) / config.FORMS_TXT
        if forms.is_file():
            archives.place(forms, out_dir / config.FORMS_TXT)
    return {
        "dataset": "iam",
        "level": "lines",
        "source": http.redact(source),
        "layout": layout,
        "fetched": {f.path.name: f.record() for f in fetched.values()},
        "bytes": sum(f.bytes for f in fetched.values()),
        "bytes_downloaded": sum(f.downloaded for f in fetched.values()),
        "download_seconds": round(download_seconds, 3),
        **describe_raw(out_dir, "lines", fetched[LEVEL.archive].source),
    }
