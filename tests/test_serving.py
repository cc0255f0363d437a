"""What faces the network, tried as an attacker would: the exporter as ``serve`` starts it (a
process, 1,000 Thulium targets, 10,000 provider series) against an endless header, a client that
pipelines scrapes and never reads, idle and trickling connections; HEAD; SIGTERM with requests in
flight."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from exporter import simulator
from exporter.simulator.thulium import Campaign, Tenant
from tests.conftest import free_port
from tests.test_cli import wait_ready

ROOT = Path(__file__).resolve().parent.parent
TARGETS = 1000
KEEPALIVE = 2.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Served:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def rss(self) -> float:
        return rss_mib(self.process.pid)

    async def scrape(self, **headers: str) -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/metrics", headers=headers) as response,
        ):
            assert response.status == 200
            return await response.read()


async def _simulator() -> tuple[web.AppRunner, str]:
    sim = simulator.Simulator(record_requests=False)
    rng = random.Random(7)
    sim.state["thulium"].tenants = {
        f"t{i:04d}": Tenant(
            "u",
            "p",
            [
                Campaign(f"{c + 1:05d}", rng.randint(0, 100_000), rng.randint(0, 100))
                for c in range(4 + i % 2)
            ],
        )
        for i in range(TARGETS)
    }
    return await simulator.start(sim)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    runner, url = await _simulator()
    config = {
        "log": {"level": "warning"},
        "web": {"keepalive_timeout": f"{KEEPALIVE:g}s"},
        "defaults": {"interval": "1h"},
        "targets": [
            {
                "name": f"thulium-t{i:04d}",
                "provider": "thulium",
                "base_url": f"{url}/thulium/t{i:04d}/api",
                "username": "u",
                "password": "p",
            }
            for i in range(TARGETS)
        ],
    }
    path = tmp_path_factory.mktemp("serving") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--config",
        str(path),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        served = Served(process, port)
        await wait_ready(port, bound=60)
        body = await served.scrape()
        assert body.count(b"\nthulium_outbound_campaign_records{") >= 4000
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await runner.cleanup()


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _send_endlessly(writer: asyncio.StreamWriter, size: int) -> None:
    for _ in range(size // 4096):
        writer.write(b"a" * 4096)
        await writer.drain()


async def test_an_endless_header_line_is_refused_early(served):
    await served.scrape()
    before = served.rss
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    answer = b""
    try:
        # 64 KiB (of the 30 MiB an attacker would send): the server has refused the request
        # by then; writing on fails once it has closed the connection.
        with contextlib.suppress(ConnectionError):
            await _send_endlessly(writer, 64 * 1024)
        with contextlib.suppress(ConnectionError):
            answer = await asyncio.wait_for(reader.read(), 10)
        with pytest.raises((ConnectionError, OSError)):
            await _send_endlessly(writer, 30 * 1024 * 1024)
    finally:
        writer.close()
    status = answer.split(b"\r\n", 1)[0]
    assert status in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request", b"")
    assert served.rss - before < 5
    assert b"messaging_exporter_build_info" in await served.scrape()


async def test_pipelined_scrapes_from_a_client_that_never_reads_hold_little(served):
    await served.scrape()
    before = served.rss
    _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
    try:
        for _ in range(20):  # others keep getting answers meanwhile
            assert b"messaging_exporter_build_info" in await served.scrape()
        grown = served.rss - before
    finally:
        writer.close()
    assert grown < 50, f"RSS grew by {grown:.1f} MiB"


async def test_idle_and_trickling_connections_do_not_hold_the_server(served):
    idle = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(500)]
    trickle_reader, trickle_writer = await asyncio.open_connection("127.0.0.1", served.port)

    async def trickle() -> None:
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
            trickle_writer.write(bytes([byte]))
            await trickle_writer.drain()
            await asyncio.sleep(1)

    async def until_closed(reader: asyncio.StreamReader) -> bytes:
        # A server that closes a connection with bytes it has not read yet (the trickle's) sends
        # a reset, not a FIN: either is the connection given up.
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""

    trickling = asyncio.ensure_future(trickle())
    try:
        assert b"messaging_exporter_build_info" in await served.scrape(**{"Accept-Encoding": ""})
        # Every idle connection, and the trickling one, is closed after the keep-alive timeout.
        closed = await asyncio.wait_for(
            asyncio.gather(
                *(until_closed(reader) for reader, _ in [*idle, (trickle_reader, None)])
            ),
            KEEPALIVE * 5,
        )
        assert all(data == b"" for data in closed[:-1])
        assert not closed[-1].startswith(b"HTTP/1.1 200")
    finally:
        trickling.cancel()
        for _, writer in [*idle, (trickle_reader, trickle_writer)]:
            writer.close()
    assert b"messaging_exporter_build_info" in await served.scrape()


async def test_head_answers_the_headers_without_a_body(served):
    async with (
        aiohttp.ClientSession() as session,
        session.head(f"{served.url}/metrics", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert await response.read() == b""


async def test_sigterm_with_requests_in_flight_exits_0(served):
    """Last in this module: it stops the exporter. Answers begun before the signal are given
    whole."""
    connections = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await reader.readline() == b"HTTP/1.1 200 OK\r\n"  # the answer has begun
        connections.append((reader, writer))
    os.kill(served.process.pid, signal.SIGTERM)
    for reader, writer in connections:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        assert body.rstrip().endswith(b"}") or body.endswith(b"\n")
        assert b"messaging_exporter_build_info" in body
        writer.close()
    assert await asyncio.wait_for(served.process.wait(), 10) == 0
