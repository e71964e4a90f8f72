"""Giving the heap a build or a version swap freed back to the operating system.

glibc's allocator keeps freed arenas for reuse rather than returning them, so a server that builds versions
in its own process (scheduled and API reloads) would keep the peak of every build resident and its memory
would climb in steps with the first reloads; `malloc_trim` returns the free pages at the end of each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None on a C library without it (musl, macOS), where this is a no-op."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Returns the allocator's free pages to the system; True when the C library could do so."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
