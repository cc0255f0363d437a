"""glibc's allocator, set as the container image sets it (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_ARENA_MAX``), for every way the exporter is run.

By default glibc serves an allocation of 128 KiB or more with its own mapping, returned to the
system when freed, but raises that threshold to the size of each such block freed, up to 32 MiB.
After the first 2 MB exposition body or socket buffer is freed, every later one comes from the
heap, which keeps the pages: the RSS grows with the largest bursts seen (8 identity scrapes of 2 MB
in flight) and stays there. A fixed threshold keeps big buffers in mappings. Two arenas are enough
for a process whose threads (gzip of the slow road, bcrypt, config reloads) allocate little."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2


def tune_malloc() -> bool:
    """Set both unless the environment sets them; False where there is no glibc ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and ok
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = mallopt(M_ARENA_MAX, ARENA_MAX) == 1 and ok
    return ok
