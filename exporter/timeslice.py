"""A short time slice for the serving process: scrapes do not wait for a busy core.

On Linux 6.12 and later the fair scheduler (EEVDF) takes a per-task slice from
``sched_setattr(2)``'s ``sched_runtime``: a task asking for a short one gets an earlier virtual
deadline, so when it wakes up it preempts a task running a long one instead of waiting for that
slice (0.7 to 3 ms, by the number of CPUs) to end. The serving process is that kind of task: it
wakes for a scrape, works ~0.1 ms and sleeps again. It asks for the shortest slice there is
(0.1 ms); its share of the CPU does not change, only how soon it gets it. No privilege is needed,
and the slice is inherited by threads and across ``exec``.

Older kernels ignore ``sched_runtime`` for normal tasks, and a process under another policy
(``chrt``), on another architecture or in a sandbox that refuses the call keeps the kernel's
default: :func:`request` then returns False and nothing else changes.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable

SHORTEST = 100_000
"""Nanoseconds: the shortest slice the kernel grants (0.1 ms)."""

SCHED_OTHER = 0
SCHED_FLAG_RESET_ON_FORK = 0x01

# (sched_setattr, sched_getattr) by architecture; the asm-generic numbers for arm64.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "arm64": (274, 275)}


class SchedAttr(ctypes.Structure):
    """``struct sched_attr`` (its first version with utilization clamps, 56 bytes)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]


def _syscalls() -> tuple[Callable[..., int], int, int] | None:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc.syscall, numbers[0], numbers[1]


def slice_of(pid: int) -> int | None:
    """The slice ``pid`` runs with, in nanoseconds (None: the kernel does not say)."""
    calls = _syscalls()
    if calls is None:
        return None
    syscall, _, getattr_number = calls
    attr = SchedAttr()
    if syscall(getattr_number, pid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    if attr.sched_policy != SCHED_OTHER or not attr.sched_runtime:
        return None
    return int(attr.sched_runtime)


def request(pid: int, nanoseconds: int = SHORTEST) -> bool:
    """Ask for a ``nanoseconds`` slice for ``pid`` (all of its threads started later too);
    True when the kernel reports it back. Its policy and nice value are kept."""
    calls = _syscalls()
    if calls is None:
        return False
    syscall, setattr_number, getattr_number = calls
    attr = SchedAttr()
    if syscall(getattr_number, pid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return False
    if attr.sched_policy != SCHED_OTHER:
        return False  # chosen by whoever started it (chrt, a batch policy): theirs to keep
    attr.size = ctypes.sizeof(attr)
    attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK  # kept; nothing else asked for
    attr.sched_runtime = nanoseconds
    if syscall(setattr_number, pid, ctypes.byref(attr), 0) != 0:
        return False
    return slice_of(pid) == nanoseconds
