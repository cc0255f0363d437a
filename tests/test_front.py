"""The serving process's app and the collecting process's feed, in one test process: the feed on a
Unix socket, the serving app on loopback. A scrape gets pushed bytes only when the collecting
process would have answered with the same bytes (current, or gzip within the reuse window); every
other request is forwarded as it is; a reload's outcome is never answered from older bytes."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter import front as front_module
from exporter.front import FEED_PATH, Feed, Front
from exporter.web import Exporter, build_app
from tests.test_exposition import OPENMETRICS, TEXT, Monotonic, expected, fill, timed_exporter

GZIP = {"Accept-Encoding": "gzip"}


@dataclass
class Pair:
    exporter: Exporter
    front: Front
    client: TestClient[Any, Any]
    monotonic: Monotonic
    socket: Path
    runner: web.AppRunner

    def fill(self, round_: int) -> None:
        fill(self.exporter, self.exporter.clock, round_)  # type: ignore[arg-type]

    async def scrape(self, **headers: str) -> tuple[bytes, bool]:
        """The body (decompressed) and whether the serving process answered it itself."""
        before = self.front.forwarded
        response = await self.client.get(
            "/metrics",
            headers=headers,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),  # identity unless asked
        )
        assert response.status == 200
        raw = await response.read()
        gzipped = response.headers.get("Content-Encoding") == "gzip"
        assert gzipped == ("gzip" in headers.get("Accept-Encoding", ""))
        if gzipped:
            raw = gzip.decompress(raw)
        return raw, self.front.forwarded == before

    async def pushed(self, total: int) -> None:
        """Until the serving process has taken ``total`` messages from the feed in all."""
        while self.front.messages < total:
            self.front.received.clear()
            await asyncio.wait_for(self.front.received.wait(), 10)


async def start_collector(exporter: Exporter, path: Path) -> web.AppRunner:
    app = build_app(exporter)
    Feed.attach(app, exporter.exposition, exporter.store)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


@pytest.fixture
async def pair(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[Pair]:
    exporter, _, monotonic = timed_exporter([f"t{i}" for i in range(40)])
    # Background builds only when a test makes them: a change's build waits an hour.
    exporter.exposition.rebuild_interval = 3600
    path = tmp_path / "collector.sock"
    runner = await start_collector(exporter, path)
    front = Front(str(path), "/metrics")
    front.now = monotonic
    client = await aiohttp_client(front.build_app())
    await asyncio.wait_for(front.connected.wait(), 10)
    yield Pair(exporter, front, client, monotonic, path, runner)
    await client.close()
    await runner.cleanup()
    await exporter.exposition.aclose()


@pytest.mark.parametrize(
    ("headers", "accept"),
    [(GZIP, ""), ({}, ""), ({**GZIP, "Accept": OPENMETRICS}, OPENMETRICS)],
    ids=["gzip", "identity", "openmetrics-gzip"],
)
async def test_current_bytes_are_answered_by_the_serving_process(pair, headers, accept):
    pair.fill(1)
    first, answered = await pair.scrape(**headers)
    assert first == expected(pair.exporter, accept)
    assert not answered  # nothing pushed yet: the collecting process built it
    await pair.pushed(1)
    again, answered = await pair.scrape(**headers)
    assert answered
    assert again == first
    assert pair.front.answered == 1


async def test_after_a_change_gzip_bytes_are_answered_only_within_the_window(pair):
    window = pair.exporter.exposition.reuse_window
    pair.fill(1)
    round_1 = expected(pair.exporter)
    await pair.scrape(**GZIP)  # its build begins now
    await pair.pushed(1)
    pair.monotonic.now += window / 2
    pair.fill(2)  # the store moves on: "changed"
    await pair.pushed(2)
    pair.monotonic.now += window - 0.001
    got, answered = await pair.scrape(**GZIP)  # current until less than the window ago
    assert (got, answered) == (round_1, True)
    pair.monotonic.now += 0.002
    got, answered = await pair.scrape(**GZIP)
    assert (got, answered) == (expected(pair.exporter), False)


async def test_after_a_change_identity_bytes_are_never_answered(pair):
    pair.fill(1)
    await pair.scrape()
    await pair.pushed(1)
    pair.fill(2)
    await pair.pushed(2)
    assert (TEXT, False) not in pair.front._entries  # never answered again: not kept
    got, answered = await pair.scrape()  # well within the window: identity has none
    assert (got, answered) == (expected(pair.exporter), False)


async def test_a_reload_outcome_is_never_answered_from_older_bytes(pair):
    pair.fill(1)
    await pair.scrape(**GZIP)
    await pair.pushed(1)
    pair.exporter.store.reloaded(ok=False)  # as after SIGHUP
    await pair.pushed(2)
    got, answered = await pair.scrape(**GZIP)  # within the window of the pushed build
    assert not answered
    assert b"messaging_exporter_config_last_reload_successful 0.0" in got


async def test_a_forwarded_request_other_than_get_drops_the_pushed_bytes(pair):
    pair.fill(1)
    await pair.scrape(**GZIP)
    await pair.pushed(1)
    response = await pair.client.post("/-/reload")
    assert response.status == 500  # this exporter has no config file to reload
    assert "started without a config file" in await response.text()
    _, answered = await pair.scrape(**GZIP)
    assert not answered


async def test_answered_scrapes_keep_the_collectors_background_builds_going(pair):
    pair.fill(1)
    await pair.scrape(**GZIP)
    await pair.pushed(1)
    builder = pair.exporter.exposition._builders[TEXT]
    for _ in range(3):
        pair.monotonic.now += front_module.NOTE_INTERVAL
        _, answered = await pair.scrape(**GZIP)
        assert answered
        noted = pair.monotonic.now
        for _ in range(1000):
            if builder.scraped == noted:
                break
            await asyncio.sleep(0.005)
        assert builder.scraped == noted  # as if the scrape had come to the collecting process


async def test_other_paths_are_forwarded_with_their_status_and_headers(pair):
    response = await pair.client.get("/readyz")
    assert response.status == 503  # nothing collected yet
    assert "not ready" in await response.text()
    response = await pair.client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "messaging-stats-exporter" in await response.text()
    response = await pair.client.get(FEED_PATH)
    assert response.status == 404  # the feed is never reachable through the serving process
    assert pair.front.forwarded == 2


async def test_without_the_collecting_process_requests_get_503_then_work_once_it_is_back(
    pair, monkeypatch
):
    monkeypatch.setattr(front_module, "STARTUP_WAIT", 0.2)
    pair.fill(1)
    await pair.scrape(**GZIP)
    await pair.pushed(1)
    await pair.runner.cleanup()
    for _ in range(1000):
        if not pair.front.connected.is_set():
            break
        await asyncio.sleep(0.005)
    response = await pair.client.get("/metrics", headers=GZIP)
    assert response.status == 503  # the pushed bytes left with the feed
    pair.runner = await start_collector(pair.exporter, pair.socket)
    await asyncio.wait_for(pair.front.connected.wait(), 10)
    got, _ = await pair.scrape(**GZIP)
    assert got == expected(pair.exporter)


async def test_malformed_feed_messages_are_logged_and_ignored(pair):
    with structlog.testing.capture_logs() as logs:
        pair.front._take(b"a body without its header")
        pair.front._notice('{"kind": "build", "content_type": "text/plain"}')  # no "gzip"
        pair.front._take(b"body")
        pair.front._notice("not json")
        pair.front._notice('{"kind": "changed", "fresh_until": "soon"}')
        assert not pair.front._entries
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(pair.socket))) as session,
            session.ws_connect(f"http://collector{FEED_PATH}") as ws,
        ):
            await ws.send_str("not json")
            await ws.send_str('{"accept": 1, "accept_encoding": "gzip"}')
            malformed = "ignored a malformed note from the serving process"
            for _ in range(1000):
                if [entry["event"] for entry in logs].count(malformed) == 2:
                    break
                await asyncio.sleep(0.005)
        pair.fill(1)
        got, _ = await pair.scrape(**GZIP)  # the feed and the collecting process still work
    assert got == expected(pair.exporter)
    events = [entry["event"] for entry in logs]
    assert "ignored a build body without its header from the collecting process" in events
    assert "ignored a malformed build from the collecting process" in events
    assert events.count("ignored a malformed notice from the collecting process") == 2
    assert events.count(malformed) == 2
