"""Give freed heap memory back to the operating system between the tensors of a streamed job.

A streamed merge or extraction allocates and frees tensors of many sizes; glibc keeps freed blocks
below its (adaptive, up to 32 MiB) mmap threshold in the heap, so the resident set grows well past
what is alive (measured on an SDXL-size extraction: 633 MiB peak instead of about 360 MiB).
:func:`release_freed_memory` calls glibc's ``malloc_trim(0)``; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Callable


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once on first use; None off Linux or without glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim(0)``); a no-op where glibc is absent."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
