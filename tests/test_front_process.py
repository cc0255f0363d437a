"""The serving process (exporter.serving, started by exporter.front) as a user runs it: two real
processes on loopback, their JSON log lines read from stderr, their lifecycle watched through
/proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from yarl import URL

from exporter import timeslice
from exporter.simulator import Simulator
from tests.conftest import eventually, parse_exposition
from tests.test_cli import exporter_process, thulium_targets, wait_ready
from tests.test_timeslice import needs_custom_slices
from tests.test_webconfig import HASH, ca, certs, client_context, creds  # noqa: F401 (fixtures)

Process = asyncio.subprocess.Process
GONE_EVENT = "the collecting process is gone; the serving process stops"
FALLBACK_EVENT = "no private socket for the serving process; serving from the collecting process"


@pytest.fixture(autouse=True)
def short_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A $TMPDIR of this test's own for the exporter (its private directory goes there), short
    enough for a Unix socket's path (at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mse-"))
    monkeypatch.setenv("TMPDIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """The state and parent pid of ``pid`` from /proc/<pid>/stat; None once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = stat.rpartition(")")[2].split()[:2]
    return state, int(ppid)


def gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is None or stat[0] == "Z"


class Events:
    """The exporter's log (both processes write JSON lines to the same stderr), read as it comes."""

    def __init__(self, process: Process) -> None:
        assert process.stderr is not None
        self.records: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            try:
                self.records.append(json.loads(line))
            except ValueError:
                self.records.append({"event": None, "line": line.decode(errors="replace")})

    def find(self, *names: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("event") in names), None)

    async def wait(self, *names: str, bound: float = 30.0) -> dict[str, Any]:
        try:
            await eventually(lambda: self.find(*names) is not None, bound)
        except AssertionError:
            raise AssertionError(f"no {names} within {bound} s; the log: {self.records}") from None
        record = self.find(*names)
        assert record is not None
        return record


@contextlib.asynccontextmanager
async def exporter(*args: str) -> AsyncIterator[tuple[Process, int, Events]]:
    """``exporter_process`` with its log read as it comes; no process of it outlives the test."""
    async with exporter_process(*args) as (process, port):
        events = Events(process)
        try:
            yield process, port, events
        finally:
            serving = events.find("serving") or {}
            if process.returncode is None:
                process.kill()
            child = serving.get("serving_process")
            if child and not gone(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)  # 3.11: also waits for the pipes' end
            events.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events.reader


async def fetch(
    url: str | URL, method: str = "GET", bound: float = 30.0, **kw: Any
) -> tuple[int, str]:
    """``(status, text)`` of one request, retried while the port refuses connections (the
    exporter is starting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    timeout = aiohttp.ClientTimeout(total=bound)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.request(method, url, **kw) as response:
                    return response.status, await response.text()
            except aiohttp.ClientConnectorCertificateError:
                raise
            except aiohttp.ClientConnectorError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)


def accounts(text: str) -> set[str]:
    return {
        dict(labels)["account"]
        for name, labels in parse_exposition(text)
        if name == "messaging_exporter_collect_success"
    }


async def serves_both_accounts(port: int) -> None:
    """Once ready, ``/metrics`` answers with both targets' series."""
    await wait_ready(port)
    status, text = await fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert accounts(text) == {"thulium-acme", "thulium-globex"}


async def stops_with_0(process: Process) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 15) == 0


@pytest.fixture
def config(sim: Simulator, sim_url: str, write_config: Callable[..., Path]) -> Path:
    """Two targets; a short interval, so that their first runs are within a second."""
    path: Path = write_config(
        {"defaults": {"interval": "1s"}, "targets": thulium_targets(sim_url, sim)}
    )
    return path


async def test_serve_mode_runs_two_processes_and_sigterm_stops_both_with_0(
    config: Path, short_tmpdir: Path
) -> None:
    async with exporter("--config", str(config)) as (process, port, events):
        child = (await events.wait("serving"))["serving_process"]
        assert isinstance(child, int)
        assert child != process.pid
        stat = proc_stat(child)
        assert stat is not None
        assert stat[1] == process.pid  # a child of the exporter's process
        (private,) = short_tmpdir.glob("mse-*")
        assert private.stat().st_mode & 0o777 == 0o700
        await serves_both_accounts(port)
        await stops_with_0(process)
        assert gone(child)
        assert not list(short_tmpdir.iterdir())  # the private directory is removed
        assert events.find("the serving process exited; stopping") is None


async def test_a_killed_serving_process_makes_the_exporter_exit_1(config: Path) -> None:
    async with exporter("--config", str(config)) as (process, port, events):
        child = (await events.wait("serving"))["serving_process"]
        assert (await fetch(f"http://127.0.0.1:{port}/healthz"))[0] == 200
        os.kill(child, signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), 15) == 1
        record = await events.wait("the serving process exited; stopping", bound=5)
        assert record["exit_code"] == -signal.SIGKILL


async def test_the_serving_process_exits_when_the_collecting_process_is_killed(
    config: Path, short_tmpdir: Path
) -> None:
    async with exporter("--config", str(config)) as (process, port, events):
        child = (await events.wait("serving"))["serving_process"]
        assert (await fetch(f"http://127.0.0.1:{port}/healthz"))[0] == 200  # the feed is up
        process.kill()
        await eventually(lambda: gone(child), bound=10)
        assert (await events.wait(GONE_EVENT, bound=5))["level"] == "error"
    assert not list(short_tmpdir.iterdir())  # it removed the private directory


async def test_without_a_private_socket_one_process_serves_everything(
    config: Path, short_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A $TMPDIR too long for a Unix socket's path (at most 107 bytes)."""
    long = short_tmpdir / ("d" * 100)
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    async with exporter("--config", str(config)) as (process, port, events):
        warning = await events.wait(FALLBACK_EVENT)
        assert warning["level"] == "warning"
        assert (await events.wait("serving"))["serving_process"] is None
        await serves_both_accounts(port)
        await stops_with_0(process)
    assert not list(long.iterdir())  # nothing left behind


async def test_single_process_serves_and_collects_in_one_process(
    config: Path, short_tmpdir: Path
) -> None:
    async with exporter("--config", str(config), "--single-process") as (process, port, events):
        assert (await events.wait("serving"))["serving_process"] is None
        await serves_both_accounts(port)
        assert not list(short_tmpdir.iterdir())  # no private socket made
        await stops_with_0(process)
        assert events.find(FALLBACK_EVENT) is None  # asked for, not a fallback


@needs_custom_slices
async def test_the_serving_process_runs_with_the_shortest_time_slice(config: Path) -> None:
    async with exporter("--config", str(config)) as (process, port, events):
        serving = await events.wait("serving")
        assert serving["short_slice"] is True
        assert timeslice.slice_of(serving["serving_process"]) == timeslice.SHORTEST
        assert timeslice.slice_of(process.pid) != timeslice.SHORTEST  # the collections' is not
        await serves_both_accounts(port)
        await stops_with_0(process)


def web_yml(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


async def test_basic_auth_is_checked_by_the_serving_process(config: Path, tmp_path: Path) -> None:
    web = web_yml(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    async with exporter("--config", str(config), "--web.config.file", web) as (_, port, events):
        assert (await events.wait("serving"))["serving_process"] is not None
        base = f"http://127.0.0.1:{port}"
        assert await fetch(f"{base}/healthz") == (200, "ok\n")
        assert (await fetch(f"{base}/metrics"))[0] == 401
        assert (await fetch(f"{base}/readyz"))[0] == 401  # forwarded requests are guarded too
        right = creds("prometheus", "right-password")
        status, text = await fetch(f"{base}/metrics", headers=right)
        assert status == 200
        assert "messaging_exporter_build_info" in text


async def test_tls_is_served_by_the_serving_process(
    config: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    paths, authority = request.getfixturevalue("certs"), request.getfixturevalue("ca")
    tls = {"cert_file": str(paths["cert"]), "key_file": str(paths["key"])}
    web = web_yml(tmp_path, {"tls_server_config": tls})
    async with exporter("--config", str(config), "--web.config.file", web) as (_, port, events):
        serving = await events.wait("serving")
        assert serving["serving_process"] is not None
        assert serving["metrics"] == f"https://127.0.0.1:{port}/metrics"
        status, text = await fetch(serving["metrics"], ssl=client_context(authority))
        assert status == 200
        assert "messaging_exporter_build_info" in text


async def test_the_first_scrape_after_a_reload_shows_the_new_targets(
    sim: Simulator, sim_url: str, write_config: Callable[..., Path]
) -> None:
    targets = thulium_targets(sim_url, sim)
    path = write_config({"targets": targets})
    async with exporter("--config", str(path)) as (_, port, events):
        await wait_ready(port)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for _ in range(3):  # pushed bytes are answered from the serving process
                async with session.get(f"{base}/metrics") as response:
                    assert accounts(await response.text()) == {"thulium-acme", "thulium-globex"}
            write_config({"targets": targets[:1]})
            async with session.post(f"{base}/-/reload") as response:
                assert (response.status, await response.text()) == (200, "reloaded\n")
            async with session.get(f"{base}/metrics") as response:
                assert accounts(await response.text()) == {"thulium-acme"}
        assert (await events.wait("config reloaded", bound=5))["targets"] == 1


@pytest.mark.parametrize("path", ["/-/front/feed", "/-/front/./feed", "/x/../-/front/feed"])
async def test_the_feed_is_not_reachable_from_the_public_port(config: Path, path: str) -> None:
    async with exporter("--config", str(config)) as (_, port, events):
        await events.wait("serving")
        url = URL(f"http://127.0.0.1:{port}{path}", encoded=True)  # as sent, not normalised
        assert (await fetch(url))[0] == 404
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
        assert refused.value.status == 404
