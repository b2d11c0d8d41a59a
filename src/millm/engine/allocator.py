"""Keep the memory a forward frees for the next forward, instead of handing it back to the kernel (glibc only).

A forward allocates its activations and frees them at its end; the next forward allocates the same sizes again.
glibc's malloc gives a block above its mmap threshold (128 KiB at start, raised as such blocks are freed) a mapping of
its own and unmaps it on free, and it returns the free top of a heap to the kernel once it exceeds the trim threshold.
Either way the next forward takes those pages fresh from the kernel, one page fault (and a zeroed page) at a time.
On the 2-core benchmark machine a prefill of eight 64-token prompts of the 2M demo model took 3,000-3,800 page
faults and 11-14 ms; with freed memory kept, none and 7.2-7.5 ms (docs/benchmarks-notes.md, tenth session).

`keep_freed_memory()` sets glibc's thresholds once for the process (`mallopt`): blocks up to `MMAP_THRESHOLD` come
from the heaps (larger ones, such as big weights, still get a mapping of their own, returned when freed), and a heap
keeps up to `TRIM_THRESHOLD` of free memory for reuse. The cost is that memory freed after a peak (a long prompt's
prefill) stays with the process, up to that much per heap, as PyTorch's own CUDA caching allocator keeps GPU memory.
A user who set glibc's malloc tuning in the environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
`GLIBC_TUNABLES` with `glibc.malloc.*`) keeps theirs; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Mapping

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def user_tuned(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment already tunes glibc's malloc thresholds."""
    return any(k in environ for k in _USER_TUNING) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module doc). True when set; False on another C library, or when
    the environment already tunes them."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_tuned():
        return False
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if ok:
        log.info("allocator: freed blocks up to %d MiB stay in the heaps for reuse (up to %d MiB free per heap)",
                 MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    return ok
