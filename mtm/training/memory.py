"""Give freed heap memory back to the OS during long CPU runs (glibc only).

Training on the CPU allocates tensors of a different size every step (the packed visible tokens
vary with the masks), and glibc's allocator keeps the freed pieces: resident memory grows with the
step count although nothing leaks (BENCHMARKS.md). `malloc_trim(0)` returns the free pages; called
every few hundred steps it costs microseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _libc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
        return None


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; False where the C library cannot."""
    trim = _libc_trim()
    if trim is None:
        return False
    trim(0)
    return True
