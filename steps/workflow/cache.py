"""The cache's bound: downloads, copied artifacts and resumable training state stay under $HWR_CACHE_MAX_GB.

Entries are complete by construction (each writer renames a finished file or directory into place), so
removing a whole entry never leaves a half one. What goes first is what was used longest ago; an entry touched
within the last hour may belong to a step running now (a download resuming, a training run's state) and is
never removed, even if the cache then stays above its bound for a while.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

LIMIT_ENV = "HWR_CACHE_MAX_GB"
DEFAULT_GB = 50.0
GROUPS = ("train", "artifacts")  # folders whose children are the entries; any other top-level child is one
IN_USE_SECONDS = 3600


def limit_bytes() -> int:
    """$HWR_CACHE_MAX_GB (default 50) in bytes; ValueError unless a positive number."""
    text = os.environ.get(LIMIT_ENV, "").strip() or str(DEFAULT_GB)
    try:
        gb = float(text)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise ValueError(f"{LIMIT_ENV}={text!r}: expected a positive number of gigabytes, e.g. {DEFAULT_GB:g}")
    return int(gb * 2**30)


def entries(root: Path) -> list[Path]:
    """The cache's removable units: each child of the GROUPS folders, and every other top-level child."""
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.name in GROUPS and child.is_dir():
            out.extend(child.iterdir())
        else:
            out.append(child)
    return out


def _usage(path: Path) -> tuple[int, float]:
    """(bytes, newest modification time) of a file or a directory tree."""
    if not path.is_dir():
        st = path.lstat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.lstat().st_mtime
    for base, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:  # removed meanwhile
                continue
            size, newest = size + st.st_size, max(newest, st.st_mtime)
    return size, newest


def prune(root: Path, max_bytes: int, now: float | None = None) -> list[Path]:
    """Remove the least recently used entries until the cache holds at most `max_bytes`; returns what went."""
    now = time.time() if now is None else now
    usage = {entry: _usage(entry) for entry in entries(root)}
    total = sum(size for size, _ in usage.values())
    removed = []
    for entry in sorted(usage, key=lambda e: usage[e][1]):
        if total <= max_bytes:
            break
        size, newest = usage[entry]
        if now - newest < IN_USE_SECONDS:
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        total -= size
        removed.append(entry)
    return removed
