"""Process-wide memory settings of glibc's allocator, for the CPU training step and its probes."""

from __future__ import annotations

import ctypes


def retain_freed_memory(max_bytes: int = 1 << 30) -> bool:
    """Let glibc keep freed blocks of up to `max_bytes` for reuse instead of unmapping them.

    A CPU training step allocates and frees ~0.5 GB of activations and gradients in blocks of
    tens of MB, which glibc serves with fresh pages from the OS every time: the page faults cost
    ~10% of the step. Afterwards the process keeps its peak memory instead of returning it.
    Returns whether the setting was applied (glibc only).
    """
    return set_malloc_thresholds(mmap=min(max_bytes, 2**31 - 1), trim=2**31 - 1)


def set_malloc_thresholds(mmap: int, trim: int) -> bool:
    """glibc's M_MMAP_THRESHOLD (allocations above it are mapped and unmapped on their own) and
    M_TRIM_THRESHOLD (free heap top above it goes back to the OS), in bytes, for this process.

    Returns whether both were applied; False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_threshold, trim_threshold = -3, -1  # mallopt parameters from malloc.h
        return bool(
            libc.mallopt(mmap_threshold, ctypes.c_int(mmap))
            and libc.mallopt(trim_threshold, ctypes.c_int(trim))
        )
    except (OSError, AttributeError):
        return False
