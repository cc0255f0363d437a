"""The serving process (:mod:`exporter.serving`) and the collecting process's feed, in one test
process: the collecting app and the feed on Unix sockets, the serving process's HTTP server on
loopback. A scrape gets pushed bytes only when the collecting process would have answered with the
same bytes (current, or gzip within the reuse window); every other request is forwarded as it is;
a reload's outcome is never answered from older bytes. Then the HTTP/1.1 server itself: pipelining,
HEAD, limits, timeouts, the web config's headers and basic auth."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import web

from exporter import serving
from exporter.front import Feed, _unix_listener
from exporter.serving import Connection, Front, Log, frame
from exporter.web.app import Exporter, build_app
from tests.test_exposition import OPENMETRICS, TEXT, Monotonic, expected, fill, timed_exporter
from tests.test_webconfig import HASH

GZIP = {"Accept-Encoding": "gzip"}


@dataclass
class Pair:
    exporter: Exporter
    front: Front
    client: aiohttp.ClientSession
    monotonic: Monotonic
    directory: Path
    runner: web.AppRunner
    port: int
    log: io.StringIO = field(default_factory=io.StringIO)

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
        """Until the serving process has taken ``total`` frames from the feed in all."""
        while self.front.messages < total:
            self.front.received.clear()
            await asyncio.wait_for(self.front.received.wait(), 10)

    def logged(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


async def start_collector(exporter: Exporter, directory: Path) -> web.AppRunner:
    app = build_app(exporter)
    feed = directory / "f.sock"
    feed.unlink(missing_ok=True)  # a collecting process before this one's
    Feed.attach(app, exporter.exposition, exporter.store, _unix_listener(str(feed)))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.UnixSite(runner, str(directory / "c.sock")).start()
    return runner


async def start_front(
    directory: Path, monotonic: Any = None, **options: Any
) -> tuple[Front, asyncio.Server, io.StringIO]:
    stream = io.StringIO()
    front = Front(
        str(directory / "c.sock"),
        str(directory / "f.sock"),
        "/metrics",
        log=Log("info", "json", stream),
        **options,
    )
    if monotonic is not None:
        front.now = monotonic
    front.start()
    server = await asyncio.get_running_loop().create_server(
        lambda: Connection(front), "127.0.0.1", 0
    )
    await asyncio.wait_for(front.connected.wait(), 10)
    return front, server, stream


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    exporter, _, monotonic = timed_exporter([f"t{i}" for i in range(40)])
    # Background builds only when a test makes them: a change's build waits an hour.
    exporter.exposition.rebuild_interval = 3600
    runner = await start_collector(exporter, tmp_path)
    front, server, stream = await start_front(tmp_path, monotonic)
    port = server.sockets[0].getsockname()[1]
    client = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
    yield Pair(exporter, front, client, monotonic, tmp_path, runner, port, stream)
    await client.close()
    server.close()
    await front.stop()
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
    assert (TEXT, False) not in pair.front.entries  # never answered again: not kept
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
        pair.monotonic.now += serving.NOTE_INTERVAL
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
    response = await pair.client.get("/-/front/feed")
    assert response.status == 404  # the feed is a socket of its own, not an HTTP path
    assert pair.front.forwarded == 3


async def test_without_the_collecting_process_requests_get_503_then_work_once_it_is_back(
    pair, monkeypatch
):
    monkeypatch.setattr(serving, "STARTUP_WAIT", 0.2)
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
    pair.runner = await start_collector(pair.exporter, pair.directory)
    await asyncio.wait_for(pair.front.connected.wait(), 10)
    got, _ = await pair.scrape(**GZIP)
    assert got == expected(pair.exporter)


async def test_malformed_feed_frames_are_logged_and_ignored(pair):
    front = pair.front
    front._take({"kind": "build", "content_type": "text/plain"}, b"body")  # no "gzip"
    front._take({"kind": "build", "content_type": 1, "gzip": True}, b"body")
    front._take({"kind": "changed", "fresh_until": "soon"}, b"")
    front._take({"kind": "malformed", "error": "the header is not a JSON object"}, b"")
    assert not front.entries
    assert front.messages == 0
    events = [line["event"] for line in pair.logged()]
    assert events == ["ignored a malformed frame from the collecting process"] * 4
    with structlog.testing.capture_logs() as logs:
        reader, writer = await asyncio.open_unix_connection(str(pair.directory / "f.sock"))
        writer.write(serving.FRAME.pack(8, 0) + b"not json")
        writer.writelines(frame({"kind": "note", "accept": 1, "accept_encoding": "gzip"}))
        writer.write(serving.FRAME.pack(serving.MAX_FRAME_META + 1, 0))  # breaks the framing
        assert await reader.read() == b""  # that connection is closed, and only that one
        writer.close()
        pair.fill(1)
        got, _ = await pair.scrape(**GZIP)  # the feed and the collecting process still work
        await pair.pushed(1)
        _, answered = await pair.scrape(**GZIP)
    assert got == expected(pair.exporter)
    assert answered
    events = [entry["event"] for entry in logs]
    assert events.count("ignored a malformed note from the serving process") == 2
    assert "the serving process broke the feed's framing" in events


# -- the HTTP/1.1 server ---------------------------------------------------------------------------


async def exchange(port: int, data: bytes) -> bytes:
    """Everything the server sends for ``data`` until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


def responses(raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """The status lines, headers (lowercase names) and bodies of ``raw`` answers in order (to
    HEAD: one answer, whose body is empty)."""
    found = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        size = int(headers.get("content-length", "0"))
        found.append((status, headers, raw[:size]))
        if not raw:
            break
        raw = raw[size:]
    return found


async def test_pipelined_requests_are_answered_in_order_pushed_and_forwarded_alike(pair):
    pair.fill(1)
    await pair.scrape(**GZIP)
    await pair.pushed(1)
    request = b"GET %s HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
    raw = await exchange(
        pair.port,
        request % b"/readyz"  # forwarded: its answer comes later
        + request % b"/metrics"  # answered from pushed bytes at once, but after /readyz
        + request % b"/"
        + b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    answers = responses(raw)
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * 4
    assert b"ready" in answers[0][2]
    assert gzip.decompress(answers[1][2]) == expected(pair.exporter)
    assert b"<html" in answers[2][2].lower()
    assert answers[3][1]["connection"] == "close"
    assert all("date" in headers for _, headers, _ in answers)


@pytest.mark.parametrize("writelines", [True, False], ids=["writelines", "joined"])
async def test_pushed_bytes_are_written_whole_either_way(pair, monkeypatch, writelines):
    """On Python >= 3.12.9 an answer goes out with ``writelines``, before as one joined write
    (here, on whichever Python runs the tests, both roads)."""
    monkeypatch.setattr(serving, "SAFE_WRITELINES", writelines)
    pair.fill(1)
    for headers in ({}, GZIP):
        await pair.scrape(**headers)
    await pair.pushed(2)
    for headers in ({}, GZIP):
        got, answered = await pair.scrape(**headers)
        assert (got, answered) == (expected(pair.exporter), True)


async def test_head_answers_the_headers_of_a_get_without_a_body(pair):
    pair.fill(1)
    get = await pair.client.get("/metrics", headers=GZIP, auto_decompress=False)
    size = len(await get.read())
    await pair.pushed(1)
    head = (
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nAccept-Encoding: gzip\r\n"
        b"Connection: close\r\n\r\n"
    )
    for accept in (b"*/*", b"text/plain"):  # pushed bytes (as the GET); forwarded (a new set)
        before = pair.front.forwarded
        status, headers, body = responses(await exchange(pair.port, head % accept))[0]
        assert status == "HTTP/1.1 200 OK"
        assert (headers["content-length"], headers["content-encoding"]) == (str(size), "gzip")
        assert body == b""
        assert pair.front.forwarded == before + (accept == b"text/plain")


async def test_a_slow_reader_pauses_the_connection_and_later_answers_keep_their_order(
    pair, monkeypatch
):
    resumed = []
    resume = Connection.resume_writing

    def counted(self: Connection) -> None:
        resumed.append(True)
        resume(self)

    monkeypatch.setattr(Connection, "resume_writing", counted)
    pair.fill(1)
    await pair.scrape()  # identity, pushed afterwards
    await pair.pushed(1)
    body = expected(pair.exporter)
    assert len(body) > 20 * 2048
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client reads slowly
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", pair.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    healthz = responses(head)[0]
    await reader.readexactly(int(healthz[1]["content-length"]))
    (connection,) = [
        c
        for c in pair.front.connections
        if c.transport and c.transport.get_extra_info("peername") == sock.getsockname()
    ]
    assert connection.transport is not None
    connection.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
    )
    connection.transport.set_write_buffer_limits(high=2048)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    writer.write(request * 2 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    answers = responses(raw)
    assert [a[2] for a in answers[:2]] == [body, body]
    assert answers[2][0] == healthz[0]
    assert resumed  # the buffer went over its mark (reading paused), then drained
    assert pair.front.answered == 2


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "400 Bad Request"),
        (b"GET /" + b"a" * (serving.MAX_URL_BYTES + 1) + b" HTTP/1.1\r\n\r\n", "414 URI Too Long"),
        (
            b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * serving.MAX_HEADER_BYTES + b"\r\n\r\n",
            "431 Request Header Fields Too Large",
        ),
        (
            b"POST /-/reload HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (serving.MAX_BODY_BYTES + 1)
            + b"x" * (serving.MAX_BODY_BYTES + 1),
            "413 Payload Too Large",
        ),
    ],
    ids=["garbage", "long-url", "big-header", "big-body"],
)
async def test_requests_that_cannot_be_read_get_their_status_and_the_connection_closes(
    pair, request_, status
):
    raw = await exchange(pair.port, request_)  # returns once the server closes the connection
    assert raw.startswith(f"HTTP/1.1 {status}\r\n".encode())
    assert b"Connection: close" in raw
    assert pair.front.forwarded == 0


async def test_the_answers_before_a_request_that_cannot_be_read_are_all_given(pair):
    raw = await exchange(
        pair.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # forwarded: answered later
        b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"NOT HTTP AT ALL\r\n\r\n",
    )
    statuses = [status for status, _, _ in responses(raw)]
    assert statuses == [
        "HTTP/1.1 200 OK",
        "HTTP/1.1 503 Service Unavailable",
        "HTTP/1.1 400 Bad Request",
    ]


async def test_http_1_0_without_keep_alive_is_closed_after_its_answer(pair):
    raw = await exchange(pair.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in raw


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(pair, monkeypatch):
    monkeypatch.setattr(serving, "KEEPALIVE_TIMEOUT", 0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.port)
    writer.write(b"GET /metr")  # a request that never ends
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_the_configured_headers_and_basic_auth_apply_to_every_answer(pair):
    front, server, _ = await start_front(
        pair.directory, users={"prometheus": HASH}, headers={"X-Frame-Options": "deny"}
    )
    port = server.sockets[0].getsockname()[1]
    good = "Basic " + base64.b64encode(b"prometheus:right-password").decode()
    bad = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
            cases = [("/metrics", {}), ("/metrics", {"Authorization": bad}), ("/healthz", {})]
            cases += [("/metrics", {"Authorization": good})] * 2  # the second: remembered
            statuses = []
            for path, headers in cases:
                response = await client.get(path, headers=headers)
                await response.read()
                statuses.append(response.status)
                assert response.headers["X-Frame-Options"] == "deny"
                if response.status == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert statuses == [401, 401, 200, 200, 200]
            while front.messages < 1:  # the build of those scrapes, pushed
                front.received.clear()
                await asyncio.wait_for(front.received.wait(), 10)
            before = front.answered
            response = await client.get("/metrics", headers={"Authorization": good})
            await response.read()
            assert front.answered == before + 1  # from pushed bytes, with the configured header
            assert response.headers["X-Frame-Options"] == "deny"
    finally:
        server.close()
        await front.stop()
