"""glibc's allocator settings (exporter/memory.py): set where there is a glibc, never over what
the environment sets."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from exporter import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mallopt_takes_both_settings_on_this_linux() -> None:
    assert memory.tune_malloc() is True


class FakeMallopt:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return 1


class FakeLibc:
    def __init__(self) -> None:
        self.mallopt = FakeMallopt()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, [(memory.M_MMAP_THRESHOLD, 131072), (memory.M_ARENA_MAX, 2)]),
        ({"MALLOC_ARENA_MAX": "4"}, [(memory.M_MMAP_THRESHOLD, 131072)]),
        ({"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "4"}, []),
    ],
)
def test_what_the_environment_sets_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], expected: list[Any]
) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert memory.tune_malloc() is True
    assert libc.mallopt.calls == expected


def test_without_glibc_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.tune_malloc() is False
