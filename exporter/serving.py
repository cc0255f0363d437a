"""The serving process: a small second process that owns the listening sockets and answers
``/metrics`` from bytes the collecting process pushed to it, so that a scrape never waits behind
the collections' work on the collecting process's event loop.

It is a fresh interpreter (``python -m exporter.serving``, started by
:func:`exporter.front.spawn_front`) that imports the standard library, httptools (the llhttp
parser, as in aiohttp and Node.js) and, with basic-auth users, bcrypt: nothing of the exporter
but :mod:`exporter.tlsauth`. So it holds ~15 MiB of its own, where a fork of the collecting
process copies ~35 MiB of pages that both write, and a process with aiohttp ~25 MiB. Its settings
come as JSON on stdin (the listening sockets are inherited descriptors).

* It serves HTTP/1.1 (keep-alive, pipelining, HEAD) with the web config: TLS, basic auth (every
  path but ``/healthz``), the configured response headers on every answer.
* It answers a scrape from the newest pushed bytes of its content type and encoding while they
  hold every change the collecting process would have given it (the guarantee of
  :mod:`exporter.metrics.exposition`): identity bytes while they are current (the store has not changed
  since), gzip ones also less than the reuse window after they began or after they stopped being
  current. Which content type and encoding a set of ``Accept``/``Accept-Encoding`` headers gets is
  learned from the collecting process's answer to the first scrape that sends them.
* Every other request, and a scrape without such bytes, is forwarded to the collecting process's
  HTTP server on a Unix socket in a private directory (mode 0700), and its answer returned as it
  is (gzip bodies stay compressed). A forwarded request other than GET and HEAD (a reload) drops
  the pushed bytes.
* The *feed*, a second Unix socket in that directory, carries frames both ways
  (:func:`frame`): builds, "changed" and "invalidate" from the collecting process; notes of the
  content types it answered (at most every :data:`NOTE_INTERVAL`), so their background builds go
  on.

Lifecycle: SIGTERM stops it (it stops accepting, finishes the requests in flight, exits 0);
SIGINT and SIGHUP are the collecting process's. When the collecting process is gone it exits 1
and removes the private directory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httptools

from exporter.tlsauth import CHALLENGE, OPEN_PATHS, BasicAuth, server_context

NOTE_INTERVAL = 0.25
"""Seconds: how often at most the serving process reports a content type it answered (the
collecting process counts scrapes less than a second apart as a stream)."""
PROXY_TIMEOUT = 120.0
"""Seconds a forwarded request may take (a reload reads files; ``/metrics`` never waits on a
provider)."""
STARTUP_WAIT = 30.0
"""Seconds a request waits for the collecting process to come up before a 503."""
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)
"""Seconds between attempts to (re)connect the feed."""
SHUTDOWN_TIMEOUT = 5.0
KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle connection (or one sending a request too slowly) is kept."""
MAX_HEADER_BYTES = 64 * 1024
MAX_URL_BYTES = 8 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_PIPELINED = 16
"""Requests of one connection waiting for their answer before it is read no further."""
WRITE_BUFFER_HIGH = 4 * 1024 * 1024
"""Bytes a connection may buffer before it is read no further (the transport's high-water mark):
a whole identity body (2 MB with 10,000 series). Measured on 2 cores, 8 connections scraping a
2 MB body: with the default 64 KiB, pausing and resuming at every answer cost ~10 %; writing the
body in 1 MiB or 256 KiB chunks as the socket took them, 40-50 %; headers and body as two writes
(no 2 MB join), about half."""
SAFE_WRITELINES = (3, 12, 9) <= sys.version_info < (3, 13) or sys.version_info >= (3, 13, 2)
"""Whether the transport's ``writelines`` sends the parts without joining them and safely: as
aiohttp decides it (``http_writer.SKIP_WRITELINES``; CVE-2024-12254 before 3.12.9 and 3.13.2;
before 3.12 it joins them itself). Else one joined write: headers and body as two writes cost
half the identity throughput (measured on 3.11)."""
MAX_KEYS = 64
"""Header sets whose negotiated content type is remembered (the few that scrapers send)."""

FRAME = struct.Struct("!II")
"""A feed frame's head: the length of its JSON header, the length of its body."""
MAX_FRAME_META = 64 * 1024
MAX_FRAME_BODY = 1 << 30

# Per connection, not passed on (RFC 9110 7.6.1), and what the other side sets itself.
_NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"authorization",  # checked here; the collecting process has no use for it
        b"expect",  # the body is read already: no "100 Continue" to wait for
    }
)
_NOT_RETURNED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
        b"server",
    }
)
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def frame(meta: dict[str, Any], body: bytes = b"") -> list[bytes]:
    """A feed frame: its head, its JSON header and its body (written one after another, so a
    2 MB body is not copied to be prefixed)."""
    header = json.dumps(meta, separators=(",", ":")).encode()
    return [FRAME.pack(len(header), len(body)), header, body]


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next frame; ValueError for a frame that breaks the framing (the connection is then
    useless), ``asyncio.IncompleteReadError`` at the end."""
    meta_size, body_size = FRAME.unpack(await reader.readexactly(FRAME.size))
    if meta_size > MAX_FRAME_META or body_size > MAX_FRAME_BODY:
        raise ValueError(f"a frame of {meta_size} + {body_size} bytes")
    meta = await reader.readexactly(meta_size)
    body = await reader.readexactly(body_size) if body_size else b""
    try:
        parsed = json.loads(meta)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        # The framing holds; only this frame is lost.
        return {"kind": "malformed", "error": "the header is not a JSON object"}, body
    return parsed, body


class Log:
    """JSON lines (or the console format) on stderr, with the fields of the collecting process's
    structlog set-up (``event``, ``level``, ``logger``, ``timestamp``)."""

    def __init__(self, level: str = "info", fmt: str = "json", stream: Any = None) -> None:
        self.threshold = _LEVELS.get(level, 20)
        self.format = fmt
        self.stream = stream

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        if _LEVELS[level] < self.threshold:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        if self.format == "console":
            pairs = " ".join(f"{key}={value}" for key, value in fields.items())
            line = f"{stamp} [{level:<9}] {event:<40} {pairs}".rstrip()
        else:
            line = json.dumps(
                {
                    "event": event,
                    **fields,
                    "level": level,
                    "logger": "exporter.serving",
                    "timestamp": stamp,
                },
                default=str,
            )
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write(line + "\n")
            stream.flush()


@dataclass(slots=True)
class Entry:
    """Pushed bytes: the head of their answer (status line and headers but ``Date`` and the
    connection's) and body, until when they may be answered, whether they are current."""

    head: bytes
    body: bytes
    gzipped: bool
    fresh_until: float
    current: bool


@dataclass(slots=True)
class Request:
    method: bytes = b""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    keep_alive: bool = True
    refused: int = 0
    """The status of a request that could not be read (answered, then the connection closed)."""

    @property
    def path(self) -> bytes:
        return self.url.partition(b"?")[0]

    def header(self, name: bytes) -> str:
        """The request's header ``name`` (lowercase), joined with ", " if repeated."""
        values = [value for key, value in self.headers if key.lower() == name]
        return b", ".join(values).decode("latin-1")


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reason: bytes = b""
    head: bytes | None = None
    """The status line and headers, ready (pushed bytes): ``headers`` and ``reason`` unused."""
    length: int | None = None
    """The ``Content-Length`` of an answer to HEAD (its body is empty)."""


class Front:
    """The serving process's state: pushed bytes, the feed, forwarding."""

    def __init__(
        self,
        backend: str,
        feed: str,
        telemetry_path: str,
        users: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        parent: int | None = None,
        log: Log | None = None,
    ) -> None:
        self.backend = backend
        self.feed_path = feed
        self.telemetry_path = telemetry_path.encode()
        self.auth = BasicAuth(users) if users else None
        self.extra = b"".join(
            f"{name}: {value}\r\n".encode() for name, value in (headers or {}).items()
        )
        """The configured response headers, on every answer."""
        self._extra_names = {name.lower().encode() for name in (headers or {})}
        self._parent = parent
        self.log = log or Log()
        self.entries: dict[tuple[str, bool], Entry] = {}
        self._keys: dict[tuple[str, str], tuple[str, bool]] = {}
        self._noted: dict[tuple[str, bool], float] = {}
        self._notes: dict[tuple[str, bool], tuple[str, str]] = {}
        self._wake = asyncio.Event()
        self._feed_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.gone = asyncio.Event()
        """Set when the collecting process is gone (the serving process then exits)."""
        self.now: Callable[[], float] = time.monotonic
        self.answered = 0
        """Scrapes answered from pushed bytes."""
        self.forwarded = 0
        """Requests forwarded to the collecting process."""
        self.messages = 0
        """Builds and notices taken from the feed."""
        self.received = asyncio.Event()
        """Set at every frame of the feed (tests wait on it)."""
        self.connections: set[Connection] = set()
        self.stopping = False
        """Set on SIGTERM: answers close their connections."""

    def start(self) -> None:
        self._feed_task = asyncio.get_running_loop().create_task(self._feed())

    async def stop(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task

    # -- requests --------------------------------------------------------------------------------

    def answer(self, request: Request) -> Response | None:
        """The answer from pushed bytes, or None (:meth:`forward` it)."""
        if request.method not in (b"GET", b"HEAD") or request.path != self.telemetry_path:
            return None
        negotiated = (request.header(b"accept"), request.header(b"accept-encoding"))
        key = self._keys.get(negotiated)
        if key is None:
            return None
        entry = self.entries.get(key)
        if entry is None or not (entry.current or self.now() < entry.fresh_until):
            return None
        self.answered += 1
        if entry.gzipped:
            self._note(key, negotiated)
        return Response(200, [], entry.body, head=entry.head)

    def _note(self, key: tuple[str, bool], negotiated: tuple[str, str]) -> None:
        now = self.now()
        if now - self._noted.get(key, -math.inf) >= NOTE_INTERVAL:
            self._noted[key] = now
            self._notes[key] = negotiated
            self._wake.set()

    async def forward(self, request: Request) -> Response:
        if not self.connected.is_set():
            try:
                await asyncio.wait_for(self.connected.wait(), STARTUP_WAIT)
            except TimeoutError:
                return text_response(503, "the exporter's collecting process is not available\n")
        self.forwarded += 1
        body = b"".join(request.body)
        lines = [request.method + b" " + request.url + b" HTTP/1.1", b"Host: collector"]
        lines += [
            name + b": " + value
            for name, value in request.headers
            if name.lower() not in _NOT_FORWARDED
        ]
        lines += [b"Content-Length: %d" % len(body), b"Connection: close", b"", body]
        try:
            async with asyncio.timeout(PROXY_TIMEOUT):
                response = await _exchange(self.backend, b"\r\n".join(lines), request.method)
        except (OSError, TimeoutError, ValueError) as exc:
            self.log(
                "error",
                "the collecting process did not answer",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                error=type(exc).__name__,
            )
            return text_response(502, "the exporter's collecting process did not answer\n")
        if request.method == b"HEAD":
            for name, value in response.headers:
                if name.lower() == b"content-length" and value.isdigit():
                    response.length = int(value)
        elif request.method != b"GET":
            self.entries.clear()  # a reload: its outcome is never answered from older bytes
        elif response.status == 200 and request.path == self.telemetry_path:
            self._learn(request, response)
        response.headers = [
            (name, value) for name, value in response.headers if name.lower() not in _NOT_RETURNED
        ]
        return response

    def _learn(self, request: Request, response: Response) -> None:
        """Which bytes these request headers get: the content type and encoding the collecting
        process answered them with."""
        negotiated = (request.header(b"accept"), request.header(b"accept-encoding"))
        if negotiated in self._keys or len(self._keys) >= MAX_KEYS:
            return
        content_type = encoding = ""
        for name, value in response.headers:
            lowered = name.lower()
            if lowered == b"content-type":
                content_type = value.decode("latin-1")
            elif lowered == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        if content_type and encoding in ("", "gzip"):
            self._keys[negotiated] = (content_type, encoding == "gzip")

    # -- the feed --------------------------------------------------------------------------------

    async def _feed(self) -> None:
        attempt = 0
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    self.feed_path, limit=1024 * 1024
                )
            except OSError as exc:
                self.log("debug", "feed not connected", error=type(exc).__name__)
            else:
                attempt = 0
                self.connected.set()
                sender = asyncio.get_running_loop().create_task(self._send_notes(writer))
                try:
                    while True:
                        meta, body = await read_frame(reader)
                        self._take(meta, body)
                        self.received.set()
                except (asyncio.IncompleteReadError, OSError):
                    pass
                except ValueError as exc:
                    self.log("error", "the feed broke its framing", error=str(exc))
                finally:
                    sender.cancel()
                    writer.close()
            self.connected.clear()
            self.entries.clear()
            if self._parent is not None and os.getppid() != self._parent:
                self.log("error", "the collecting process is gone; the serving process stops")
                # Its private directory: the collecting process, killed, left it behind.
                shutil.rmtree(os.path.dirname(self.backend), ignore_errors=True)
                self.gone.set()
                return
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1

    async def _send_notes(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._wake.wait()
                self._wake.clear()
                notes, self._notes = self._notes, {}
                for accept, accept_encoding in notes.values():
                    meta = {"kind": "note", "accept": accept, "accept_encoding": accept_encoding}
                    writer.writelines(frame(meta))
                await writer.drain()

    def _take(self, meta: dict[str, Any], body: bytes) -> None:
        kind = meta.get("kind")
        try:
            if kind == "build":
                content_type = meta["content_type"]
                if not isinstance(content_type, str):
                    raise TypeError("content_type is not a string")
                gzipped = bool(meta["gzip"])
                until = meta["fresh_until"]
                headers = [
                    (b"Content-Type", content_type.encode("latin-1")),
                    (b"Vary", b"Accept, Accept-Encoding"),
                ]
                if gzipped:
                    headers.append((b"Content-Encoding", b"gzip"))
                entry = Entry(
                    self.head(Response(200, headers, body)),
                    body,
                    gzipped,
                    -math.inf if until is None else float(until),
                    bool(meta["current"]),
                )
                self.entries[(content_type, gzipped)] = entry
            elif kind == "changed":
                self._changed(float(meta.get("fresh_until") or -math.inf))
            elif kind == "invalidate":
                self.entries.clear()
            else:
                raise ValueError(f"unknown kind {kind!r}: {meta.get('error', '')}")
        except (ValueError, KeyError, TypeError, UnicodeError) as exc:
            self.log(
                "error", "ignored a malformed frame from the collecting process", error=str(exc)
            )
            return
        self.messages += 1

    def _changed(self, until: float) -> None:
        # Identity bodies are answered only while current. A gzip one that was current until now
        # is answered for a window more (``until``). Whatever can no longer be answered is
        # dropped: a 2 MB body need not wait for the next build of its kind.
        now = self.now()
        for key, entry in list(self.entries.items()):
            if entry.current and entry.gzipped:
                entry.fresh_until = max(entry.fresh_until, until)
            entry.current = False
            if entry.fresh_until <= now:
                del self.entries[key]

    def head(self, response: Response) -> bytes:
        """The status line and headers of ``response`` with the configured ones (whose values
        win), but ``Date`` and the connection's."""
        reason = response.reason or _REASONS.get(response.status, b"Unknown")
        lines = [b"HTTP/1.1 %d %s" % (response.status, reason)]
        extra = self.extra
        for name, value in response.headers:
            if extra and name.lower() in self._extra_names:
                continue
            lines.append(name + b": " + value)
        length = len(response.body) if response.length is None else response.length
        lines.append(b"Content-Length: %d" % length)
        return b"\r\n".join(lines) + b"\r\n" + extra


def text_response(status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> Response:
    return Response(
        status, [(b"Content-Type", b"text/plain; charset=utf-8"), *headers], text.encode()
    )


class _ResponseReader:
    """httptools' callbacks for one answer of the collecting process."""

    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


async def _exchange(path: str, request: bytes, method: bytes) -> Response:
    """One request to the HTTP server on the Unix socket ``path``, on a connection of its own."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(request)
        answer = _ResponseReader()
        parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = await reader.read(256 * 1024)
            if not data:
                if method == b"HEAD" and parser.get_status_code():
                    break  # a HEAD answer ends with the connection
                raise ConnectionError("the answer ended early")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ValueError(str(exc)) from None
        return Response(
            parser.get_status_code(), answer.headers, b"".join(answer.body), answer.reason
        )
    finally:
        writer.close()


class Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 with keep-alive and pipelining; answers in order."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.request: Request | None = None
        self.header_bytes = 0
        self.body_bytes = 0
        self.queue: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.reading = True
        self.writing = True
        self.timer: asyncio.TimerHandle | None = None
        self.refusal = 0
        """The status of a request over a limit."""

    # -- transport -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.front.connections.add(self)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.writing = False
        self._flow()

    def resume_writing(self) -> None:
        self.writing = True
        self._flow()

    def _flow(self) -> None:
        assert self.transport is not None
        wanted = self.writing and len(self.queue) < MAX_PIPELINED and not self.closing
        if wanted != self.reading and not self.transport.is_closing():
            self.reading = wanted
            (self.transport.resume_reading if wanted else self.transport.pause_reading)()

    def _touch(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(KEEPALIVE_TIMEOUT, self._expire)

    def _expire(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._touch()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A request asking to switch protocols: answered as HTTP/1.1, then closed.
            if self.request is not None and self.request.url:
                self.request.keep_alive = False
                self._complete()
            self.closing = True
        except httptools.HttpParserError:
            # A limit's status (httptools wraps what a callback raises), else a bad request.
            self._refuse(self.refusal or 400)

    def _refuse(self, status: int) -> None:
        """An answer to a request that cannot be read, after those before it; then close."""
        self.closing = True
        self.queue.append(Request(keep_alive=False, refused=status))
        self._next()

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = Request()
        self.header_bytes = self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.url += url
        if len(self.request.url) > MAX_URL_BYTES:
            self._too_big(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES:
            self._too_big(431)
        self.request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.request is not None
        self.request.method = self.parser.get_method()
        self.request.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        assert self.request is not None
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            self._too_big(413)
        self.request.body.append(body)

    def on_message_complete(self) -> None:
        self._complete()

    def _too_big(self, status: int) -> None:
        self.refusal = status
        raise _TooBig(status)

    def _complete(self) -> None:
        request, self.request = self.request, None
        assert request is not None
        self.queue.append(request)
        self._next()

    # -- answers ---------------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the queued requests in order: at once while they can be, else in a task."""
        while self.queue and self.task is None:
            request = self.queue[0]
            if request.refused:
                self.queue.clear()
                reason = _REASONS.get(request.refused, b"Bad Request").decode()
                self._write(request, text_response(request.refused, reason + "\n"))
                return
            response = self._answer_now(request)
            if response is None:
                self.task = asyncio.get_running_loop().create_task(self._answer_later(request))
                break
            self.queue.popleft()
            self._write(request, response)
        self._flow()

    def _answer_now(self, request: Request) -> Response | None:
        front = self.front
        if front.auth is not None and request.path not in _OPEN:
            known = front.auth.known(request.header(b"authorization"))
            if known is None:
                return None
            if not known:
                return _unauthorized()
        return front.answer(request)

    async def _answer_later(self, request: Request) -> None:
        front = self.front
        try:
            response: Response | None = None
            if (
                front.auth is not None
                and request.path not in _OPEN
                and not await front.auth.check(request.header(b"authorization"))
            ):
                response = _unauthorized()
            if response is None:
                response = front.answer(request) or await front.forward(request)
        except Exception as exc:  # one answer fails, not the process
            front.log("error", "a request failed", error=type(exc).__name__)
            response = text_response(500, "Internal Server Error\n")
        self.task = None
        if self.queue and self.queue[0] is request:
            self.queue.popleft()
            self._write(request, response)
            self._next()

    def _write(self, request: Request, response: Response) -> None:
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            return
        # Open after this answer while the client wants it, or while answers it already asked
        # for are due (after a request that cannot be read, say).
        more = not self.closing or bool(self.queue)
        keep = request.keep_alive and not self.front.stopping and more
        tail = b"Date: " + _date() + (b"\r\n\r\n" if keep else b"\r\nConnection: close\r\n\r\n")
        head = response.head if response.head is not None else self.front.head(response)
        if request.method == b"HEAD" or not response.body:
            transport.write(head + tail)
        else:
            parts = (head, tail, response.body)
            if SAFE_WRITELINES:
                transport.writelines(parts)  # one sendmsg, the body not copied
            else:
                # One write: what the socket does not take at once is copied into the
                # transport's buffer anyway.
                transport.write(b"".join(parts))
        if self.front.log.threshold <= 10:
            self.front.log(
                "debug",
                "request",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                status=response.status,
                bytes=len(response.body),
            )
        self._finish(keep)

    def _finish(self, keep: bool) -> None:
        """After an answer: close the connection, or wait for its next request."""
        assert self.transport is not None
        if not keep:
            self.closing = True
            self.transport.close()
        else:
            self._touch()


_OPEN = frozenset(path.encode() for path in OPEN_PATHS)


class _TooBig(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _unauthorized() -> Response:
    return text_response(401, "Unauthorized\n", [(b"WWW-Authenticate", CHALLENGE.encode())])


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        # The C locale's day and month names: Python never sets LC_TIME from the environment.
        _date_cache = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date_cache[1]


# -- the process -------------------------------------------------------------------------------


async def serve(settings: dict[str, Any]) -> int:
    """Serve until SIGTERM (0) or until the collecting process is gone (1)."""
    log = Log(settings.get("log_level", "info"), settings.get("log_format", "json"))
    front = Front(
        settings["backend"],
        settings["feed"],
        settings["telemetry_path"],
        users=settings.get("users") or None,
        headers=settings.get("headers") or None,
        parent=settings.get("parent"),
        log=log,
    )
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(
        lambda _, context: log("error", "unexpected error", message=context.get("message"))
    )
    tls = settings.get("tls")
    context = server_context(tls) if tls else None
    front.start()
    servers = [
        await loop.create_server(
            lambda: Connection(front),
            sock=socket.socket(fileno=fd),
            ssl=context,
            backlog=settings.get("backlog", 128),
        )
        for fd in settings["fds"]
    ]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopped = loop.create_task(stop.wait())
    gone = loop.create_task(front.gone.wait())
    await asyncio.wait([stopped, gone], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    gone.cancel()
    front.stopping = True
    for server in servers:
        server.close()
    await _drain(front)
    await front.stop()
    return 0 if stop.is_set() else 1


async def _drain(front: Front) -> None:
    """Close idle connections; give the others up to :data:`SHUTDOWN_TIMEOUT` to finish their
    answers (each closes its connection after its answer)."""
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while front.connections and time.monotonic() < deadline:
        for connection in list(front.connections):
            # Idle, or its last answer written: ``close`` sends what is buffered first.
            if not connection.queue and connection.task is None and connection.transport:
                connection.transport.close()
        await asyncio.sleep(0.05)
    for connection in list(front.connections):
        if connection.transport is not None:
            connection.transport.abort()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C: the collecting process stops it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the collecting process's
    code = 1
    try:
        settings = json.loads(sys.stdin.buffer.read())
        code = asyncio.run(serve(settings))
    except Exception as exc:
        Log()("error", "the serving process failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
