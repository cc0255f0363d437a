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
FAIR_POLICIES = frozenset({SCHED_OTHER, 3, 5})
"""SCHED_OTHER, SCHED_BATCH and SCHED_IDLE: the fair class, whose ``sched_runtime`` is the slice."""
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


def _syscall() -> Callable[..., int] | None:
    if platform.system() != "Linux" or platform.machine() not in _SYSCALLS:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    syscall: Callable[..., int] = libc.syscall
    return syscall


def _get(syscall: Callable[..., int], pid: int) -> SchedAttr | None:
    attr = SchedAttr()
    number = _SYSCALLS[platform.machine()][1]
    args = (ctypes.c_uint(ctypes.sizeof(attr)), ctypes.c_uint(0))
    if syscall(ctypes.c_long(number), ctypes.c_long(pid), ctypes.byref(attr), *args) != 0:
        return None
    return attr


def slice_of(pid: int) -> int | None:
    """The slice ``pid`` runs with, in nanoseconds (None: the kernel does not say)."""
    syscall = _syscall()
    attr = None if syscall is None else _get(syscall, pid)
    if attr is None or attr.sched_policy not in FAIR_POLICIES or not attr.sched_runtime:
        return None
    return int(attr.sched_runtime)


def request(pid: int, nanoseconds: int = SHORTEST) -> bool:
    """Ask for a ``nanoseconds`` slice for ``pid`` (all of its threads started later too);
    True when the kernel reports it back. Its policy and nice value are kept."""
    syscall = _syscall()
    attr = None if syscall is None else _get(syscall, pid)
    if syscall is None or attr is None:
        return False
    if attr.sched_policy != SCHED_OTHER:
        return False  # chosen by whoever started it (chrt, a batch policy): theirs to keep
    attr.size = ctypes.sizeof(attr)
    attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK  # kept; nothing else asked for
    attr.sched_runtime = nanoseconds
    number = _SYSCALLS[platform.machine()][0]
    if syscall(ctypes.c_long(number), ctypes.c_long(pid), ctypes.byref(attr), ctypes.c_uint(0)):
        return False
    return slice_of(pid) == nanoseconds
