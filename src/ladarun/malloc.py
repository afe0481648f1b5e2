"""Keep freed CPU buffers in the process heap instead of handing them back to the OS.

glibc serves allocations above its mmap threshold (128 KiB by default, adapting up to
32 MiB) with fresh mmap'd pages and unmaps them on free, so every large temporary tensor
costs a round of page faults and kernel page zeroing. On CPU runs that was a third of the
wall time: InfoMixup's acquisition on Fashion-MNIST took 15.4 s with the defaults and 8.7 s
with these settings (2-core machine, CNN, 2000 candidates). CUDA memory is unaffected: it
has its own caching allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_done = False


def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). Returns whether it applied."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if not _done:
        log.debug("mallopt refused the allocator settings; continuing with the defaults")
    return _done
