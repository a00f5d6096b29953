"""glibc heap settings for the supervisor, so that the span exporter's large buffers reuse heap memory.

Per export batch the supervisor allocates and frees a few hundred KiB (the workers' SPANS frames, the
request body). With glibc's defaults a block over 128 KiB comes from its own mmap, and the top of the heap
goes back to the kernel once 128 KiB of it are free, so every batch touched fresh pages: page faults, brk
and munmap were a quarter of the supervisor's CPU at sampling 1.0 (docs/performance.md). With these
thresholds such blocks stay in the heap; what the heap keeps unused is bounded by `TRIM_THRESHOLD`.
"""

from __future__ import annotations

import ctypes
from typing import Final

MMAP_THRESHOLD: Final = 4 * 1024 * 1024  # blocks from here up still get their own mmap
TRIM_THRESHOLD: Final = 16 * 1024 * 1024  # free memory at the top of the heap kept for reuse

_M_TRIM_THRESHOLD: Final = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD: Final = -3


def keep_large_blocks_in_heap() -> list[str]:
    """Apply the thresholds to this process's allocator; returns the ones it refused (all of them where
    there is no glibc `mallopt`: the process then runs with its allocator's defaults)."""
    wanted = {
        "M_MMAP_THRESHOLD": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    }
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return list(wanted)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success (musl's stub returns 0: nothing changes there).
    return [name for name, (param, value) in wanted.items() if mallopt(param, value) != 1]
