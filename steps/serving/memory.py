"""Giving memory back to the OS after a large decode, and reading the process' size (glibc only; else no-ops).

glibc raises its mmap threshold after large frees, so later large buffers come from the heap and are never
returned: a server that once decoded a 40-megapixel image would stay gigabytes larger. A fixed threshold
keeps large buffers in mmap (returned on free), and malloc_trim hands back freed heap pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 1 << 20  # buffers larger than this are mmapped, so freeing one returns it


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _libc()


def fix_mmap_threshold() -> bool:
    """Stop glibc from raising its mmap threshold (call once at start-up); False where not glibc."""
    return bool(_LIBC and _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release() -> None:
    """Return freed heap memory to the OS."""
    if _LIBC:
        _LIBC.malloc_trim(0)


def rss_bytes() -> int:
    """Resident set size of this process (0 if /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
