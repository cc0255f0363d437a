"""exporter.timeslice against the running kernel: real processes, their scheduling read back with
sched_getattr(2) and /proc."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from exporter import timeslice


def kernel_has_custom_slices() -> bool:
    """Linux 6.12 and later take a fair task's slice from sched_setattr(2)."""
    match = re.match(r"(\d+)\.(\d+)", platform.release())
    return (
        platform.system() == "Linux"
        and platform.machine() in ("x86_64", "aarch64", "arm64")
        and match is not None
        and (int(match[1]), int(match[2])) >= (6, 12)
    )


needs_custom_slices = pytest.mark.skipif(
    not kernel_has_custom_slices(), reason="the kernel has no per-task slices (Linux < 6.12)"
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    os.setpriority(os.PRIO_PROCESS, process.pid, 5)
    yield process
    process.kill()
    process.wait()


@needs_custom_slices
def test_a_process_gets_the_shortest_slice_and_keeps_its_nice_value(
    sleeper: subprocess.Popen[bytes],
) -> None:
    default = timeslice.slice_of(sleeper.pid)
    assert default is not None
    assert default > timeslice.SHORTEST
    assert timeslice.request(sleeper.pid) is True
    assert timeslice.slice_of(sleeper.pid) == timeslice.SHORTEST
    assert os.getpriority(os.PRIO_PROCESS, sleeper.pid) == 5
    assert os.sched_getscheduler(sleeper.pid) == os.SCHED_OTHER


@needs_custom_slices
def test_threads_it_starts_later_run_with_it_too() -> None:
    code = (
        "import sys, threading\n"
        "sys.stdin.readline()\n"
        "t = threading.Thread(target=lambda: (print(threading.get_native_id(), flush=True),"
        " sys.stdin.readline()))\n"
        "t.start(); t.join()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert timeslice.request(process.pid) is True
        process.stdin.write(b"start\n")
        process.stdin.flush()
        thread = int(process.stdout.readline())
        assert thread != process.pid
        assert timeslice.slice_of(thread) == timeslice.SHORTEST
    finally:
        process.kill()
        process.wait()


def test_a_process_under_another_policy_is_left_alone(sleeper: subprocess.Popen[bytes]) -> None:
    os.sched_setscheduler(sleeper.pid, os.SCHED_BATCH, os.sched_param(0))
    before = timeslice.slice_of(sleeper.pid)
    if kernel_has_custom_slices():
        assert before is not None
        assert before > timeslice.SHORTEST
    assert timeslice.request(sleeper.pid) is False
    assert os.sched_getscheduler(sleeper.pid) == os.SCHED_BATCH
    assert timeslice.slice_of(sleeper.pid) == before


def test_a_process_that_is_gone_is_refused_without_an_exception() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert timeslice.request(process.pid) is False
    assert timeslice.slice_of(process.pid) is None


@needs_custom_slices
def test_bench_sliced_runs_its_command_with_the_shortest_slice() -> None:
    """As the bench starts wrk: the command itself, after exec, has it."""
    code = "import os; from exporter import timeslice; print(timeslice.slice_of(os.getpid()))"
    out = subprocess.run(
        [sys.executable, "-m", "bench.sliced", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(out) == timeslice.SHORTEST
