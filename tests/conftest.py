"""Shared fixtures: the provider simulator on a loopback port, an exporter app on another, a fake
clock, config writing and exposition parsing."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from hypothesis import settings
from prometheus_client.parser import text_string_to_metric_families

from exporter import simulator
from exporter.config import Config, validate_config
from exporter.service import Exporter, make_exporter
from exporter.web.app import build_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent


async def run_python(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """This Python run with ``args`` from the project's root, without blocking the loop (a
    simulator may be served from the same loop): its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def run_cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """``python -m exporter`` with ``args``; see :func:`run_python`."""
    return await run_python("-m", "exporter", *args, timeout=timeout)


# No hypothesis deadline anywhere: a deadline measures the machine's load as much as the code,
# and no property here is about speed (speed is the bench's business).
settings.register_profile("exporter", deadline=None)
settings.load_profile("exporter")


class FakeClock:
    """Wall time that moves only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """The exporter's clock in the harness. It starts at the machine's time, which the simulator
    dates its answers by (tokens, message times), and then moves only when the test says so."""
    return FakeClock(time.time())


@pytest.fixture
def sim() -> simulator.Simulator:
    return simulator.Simulator()


@pytest.fixture
async def sim_url(sim: simulator.Simulator) -> AsyncIterator[str]:
    runner, url = await simulator.start(sim)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[Any], Path]:
    """Write a config (a dict, dumped as YAML, or text as it is) and return its path."""

    def write(data: Any, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


Scrape = Callable[..., Awaitable[dict[tuple[str, frozenset[tuple[str, str]]], float]]]


class ExporterHarness:
    """An exporter app served on loopback, collections driven by the test (no background loop)."""

    def __init__(self, exporter: Exporter, client: TestClient[Any, Any]) -> None:
        self.exporter = exporter
        self.client = client

    async def collect(self) -> None:
        assert self.exporter.scheduler is not None
        await self.exporter.scheduler.run_all_once()

    async def scrape_text(self, **headers: str) -> str:
        response = await self.client.get(self.exporter.config.web.telemetry_path, headers=headers)
        assert response.status == 200
        return await response.text()

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_exposition(await self.scrape_text())


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as ``(name, frozenset(labels)) -> value``."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def series(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (metric, labels), value in samples.items() if metric == name}


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


@pytest.fixture
def make_config() -> Callable[..., Config]:
    def make(targets: list[dict[str, Any]], **top: Any) -> Config:
        return validate_config({"targets": targets, **top})

    return make


@pytest.fixture
async def harness(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], clock: FakeClock
) -> Callable[[Config], Awaitable[ExporterHarness]]:
    async def start(config: Config) -> ExporterHarness:
        exporter = make_exporter(config, clock=clock, autostart=False)
        client = await aiohttp_client(build_app(exporter))
        return ExporterHarness(exporter, client)

    return start


def promtool() -> str:
    """promtool's path; skips where it is absent, except in CI, where it must be there."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments (text in and out), run from the repository's root."""
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def no_env_leak() -> Iterator[None]:
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


async def eventually(predicate: Callable[[], bool], bound: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, checking every 20 ms, failing after ``bound`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {bound} s")
        await asyncio.sleep(0.02)


# -- markers ------------------------------------------------------------------------------------
# `slow` marks every test that starts a program (an exporter process, a venv with pip, promtool,
# prometheus, alertmanager, chromium, helm, hadolint, systemd-analyze, podman). It is found here,
# at collection, so that no test has to say it: a test starts a program when its code, a fixture
# it uses, or a function or class of the tests' own that these name (followed to any depth) calls
# subprocess.* or asyncio.create_subprocess_*. `-m 'not slow'` keeps the tests that run inside the
# pytest process only: they need nothing beyond the venv, so none of them skips for a missing tool.

_SPAWNERS = frozenset({"create_subprocess_exec", "create_subprocess_shell"})


def _ours(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "tests" or module.startswith("tests.")


_read: dict[Any, tuple[bool, tuple[Any, ...]]] = {}


def _read_code(obj: Any) -> tuple[bool, tuple[Any, ...]]:
    """Of a function or class of the tests' own: whether its code calls subprocess.* or
    asyncio.create_subprocess_*, and the tests' functions it names and classes it calls."""
    import ast
    import inspect
    import sys
    import textwrap

    if obj in _read:
        return _read[obj]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        tree = ast.Module(body=[], type_ignores=[])
    names = vars(sys.modules[obj.__module__])
    spawns = False
    named: list[Any] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            spawns = spawns or node.func.attr in _SPAWNERS
            spawns = spawns or (
                isinstance(owner, ast.Name)
                and (owner.id == "subprocess" or names.get(owner.id) is subprocess)
            )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called = names.get(node.func.id)
            spawns = spawns or getattr(called, "__module__", None) == "subprocess"
            if inspect.isclass(called) and _ours(called):
                named.append(called)
        elif isinstance(node, ast.Name):
            value = names.get(node.id)
            if inspect.isfunction(value) and _ours(value):
                named.append(value)
    _read[obj] = (spawns, tuple(named))
    return _read[obj]


def _starts_a_program(obj: Any) -> bool:
    """Whether a function or class of the tests' own starts a program, itself or through the
    tests' functions and classes it reaches."""
    seen: set[Any] = set()
    todo = [obj]
    while todo:
        current = todo.pop()
        if current in seen or not _ours(current):
            continue
        seen.add(current)
        spawns, named = _read_code(current)
        if spawns:
            return True
        todo.extend(named)
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    import inspect

    known: dict[Any, bool] = {}

    def starts(obj: Any) -> bool:
        obj = inspect.unwrap(obj)
        if obj not in known:
            known[obj] = _starts_a_program(obj)
        return known[obj]

    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("slow") is not None:
            continue
        fixtures = getattr(item, "_fixtureinfo", None)  # pytest's own record of what it uses
        used = [
            definition.func
            for definitions in (fixtures.name2fixturedefs.values() if fixtures else ())
            for definition in definitions
        ]
        if any(starts(obj) for obj in [item.function, *used]):
            item.add_marker(pytest.mark.slow)
