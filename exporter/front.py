"""The serving process: a second process that owns the listening sockets and answers ``/metrics``
from bytes the collecting process pushed to it, so that a scrape never waits behind the
collections' work on the collecting process's event loop.

``serve`` binds the listening sockets, then forks (before any event loop or thread exists):

* the child, the **serving process** (:class:`Front`), serves the sockets with the web config
  (TLS, basic auth, headers) and keeps a WebSocket to the collecting process (the *feed*) over a
  Unix socket in a private directory (mode 0700). It answers a scrape from the newest pushed bytes
  of its content type and encoding while they hold every change the collecting process would
  have given it (the guarantee of :mod:`exporter.exposition`): identity bytes while they are
  current (the store has not changed since), gzip ones also less than the reuse window after
  they began or after they stopped being current. Every other request, and a scrape without such
  bytes, is forwarded to the collecting process over the same Unix socket, and its answer
  returned as it is (gzip bodies stay compressed).
* the parent, the **collecting process**, runs the scheduler, the store and the exposition as
  before, serves the app on the Unix socket (no web config there: the directory's mode is the
  guard), and pushes each build to the serving process (:class:`Feed`): the bytes, until when they
  may be served, whether they are current; then "changed" (with until when what was current may
  still be served) when the store moves on, and "invalidate" after a reload or a new target
  list. The serving process reports which content
  types it answered (at most every :data:`NOTE_INTERVAL`), so their background builds go on.

Lifecycle: SIGTERM or SIGINT to the collecting process stops the serving process first (it
finishes its requests), then the collections; a serving process that dies makes the collecting
process exit 1 (the supervisor restarts the pair); a serving process whose collecting process is
gone exits 1 (and removes the private directory). When no private Unix socket can be made (no
temporary directory can be created, or ``$TMPDIR``'s path is too long for a socket's), the
collecting process serves the sockets itself, as the one process it used to be, and logs a
warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import posixpath
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict

from exporter.exposition import Exposition, Rendered, fast_key
from exporter.logs import setup_logging
from exporter.store import Store
from exporter.webconfig import WebConfigFile, ssl_context, web_middlewares

log = structlog.get_logger("exporter.front")

FEED_PATH = "/-/front/feed"
"""The feed's WebSocket, served only on the collecting process's Unix socket."""
_INTERNAL = "/-/front/"
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

# Per connection, not passed on (RFC 9110 7.6.1), and what the other side sets itself.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",  # checked here; the collecting process has no use for it
    }
)
_NOT_RETURNED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
    }
)
_UNKNOWN = ("", False)
"""Header sets not negotiated yet."""
_INVALIDATE = json.dumps({"kind": "invalidate"})


# -- the collecting process's end --------------------------------------------------------------


@dataclass(eq=False)
class _Subscriber:
    ws: web.WebSocketResponse
    builds: dict[tuple[str, bool], tuple[Rendered, float, bool]] = field(default_factory=dict)
    changed: float | None = None
    """Until when the bytes it holds as current may still be answered, once the store changed."""
    invalidate: bool = False
    holds_current: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Feed:
    """Pushes the exposition's builds to the serving process and tells it when the store moved
    on; takes its reports of what it answered. Pending builds are coalesced per content type and
    encoding: a slow reader gets the newest, never a queue."""

    def __init__(self, exposition: Exposition, store: Store) -> None:
        self._exposition = exposition
        self._store = store
        self._state = (store.epoch, store.layout)
        self._subscribers: set[_Subscriber] = set()
        exposition.on_build = self._built
        exposition.on_change = self._changed

    def _built(self, rendered: Rendered, fresh_until: float, current: bool) -> None:
        key = (rendered.content_type, rendered.gzipped)
        for subscriber in self._subscribers:
            subscriber.builds[key] = (rendered, fresh_until, current)
            subscriber.wake.set()

    def _changed(self) -> None:
        state = (self._store.epoch, self._store.layout)
        invalidate = state != self._state
        self._state = state
        for subscriber in self._subscribers:
            if invalidate:
                # A reload's outcome or another target list: nothing built before is served.
                subscriber.builds.clear()
                subscriber.invalidate = True
                subscriber.holds_current = False
                subscriber.wake.set()
                continue
            for key, (rendered, fresh_until, current) in subscriber.builds.items():
                if current:
                    subscriber.builds[key] = (rendered, fresh_until, False)
            if subscriber.holds_current:
                # What was current until now may be answered for a window more: a scrape then
                # still has every change older than the window.
                exposition = self._exposition
                subscriber.changed = exposition.now() + exposition.reuse_window
                subscriber.holds_current = False
                subscriber.wake.set()

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        subscriber = _Subscriber(ws)
        self._subscribers.add(subscriber)
        sender = asyncio.create_task(self._send(subscriber))
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._note(message.data)
        finally:
            self._subscribers.discard(subscriber)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    def _note(self, data: str) -> None:
        try:
            note = json.loads(data)
            accept, accept_encoding = note["accept"], note["accept_encoding"]
            if not isinstance(accept, str) or not isinstance(accept_encoding, str):
                raise TypeError("not strings")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed note from the serving process", error=str(exc))
            return
        self._exposition.scraped(accept, accept_encoding)

    async def _send(self, subscriber: _Subscriber) -> None:
        ws = subscriber.ws
        try:
            while True:
                await subscriber.wake.wait()
                subscriber.wake.clear()
                if subscriber.invalidate:
                    subscriber.invalidate, subscriber.changed = False, None
                    await ws.send_str(_INVALIDATE)
                if subscriber.changed is not None:
                    until, subscriber.changed = subscriber.changed, None
                    await ws.send_str(json.dumps({"kind": "changed", "fresh_until": until}))
                builds, subscriber.builds = subscriber.builds, {}
                for rendered, fresh_until, current in builds.values():
                    # Set before the send: a change while it is on its way sends "changed" after.
                    subscriber.holds_current |= current
                    header = {
                        "kind": "build",
                        "content_type": rendered.content_type,
                        "gzip": rendered.gzipped,
                        "fresh_until": fresh_until if math.isfinite(fresh_until) else None,
                        "current": current,
                    }
                    # The body as a message of its own: no copy of a 2 MB body to prefix it.
                    await ws.send_str(json.dumps(header))
                    await ws.send_bytes(rendered.body)
        except (ConnectionError, RuntimeError) as exc:  # the serving process went away
            log.debug("feed closed", error=type(exc).__name__)

    async def close(self, app: web.Application | None = None) -> None:
        for subscriber in list(self._subscribers):
            await subscriber.ws.close()

    @classmethod
    def attach(cls, app: web.Application, exposition: Exposition, store: Store) -> Feed:
        """A feed of ``exposition`` on ``app`` (the collecting process's app), closed with it."""
        feed = cls(exposition, store)
        app.router.add_get(FEED_PATH, feed.handler)
        app.on_shutdown.append(feed.close)
        return feed


# -- the serving process -----------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    rendered: Rendered
    fresh_until: float
    current: bool


class Front:
    """The serving process's app: pushed bytes when they may be served, else the collecting
    process's answer."""

    def __init__(self, backend: str, telemetry_path: str, parent: int | None = None) -> None:
        self.backend = backend
        self.telemetry_path = telemetry_path
        self._parent = parent
        self._entries: dict[tuple[str, bool], _Entry] = {}
        self._header: dict[str, Any] | None = None
        """The header of the build whose body is the feed's next message."""
        self._keys: dict[tuple[str, str], tuple[str, bool] | None] = {}
        self._noted: dict[tuple[str, bool], float] = {}
        self._notes: dict[tuple[str, bool], tuple[str, str]] = {}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
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
        """Set at every message of the feed (tests wait on it)."""

    def build_app(self, web_config: WebConfigFile | None = None) -> web.Application:
        app = web.Application(middlewares=web_middlewares(web_config))
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        app.router.add_get(self.telemetry_path, self.metrics)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def _start(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            "http://collector",
            connector=aiohttp.UnixConnector(self.backend),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT),
        )
        self._feed_task = asyncio.create_task(self._feed())

    async def _stop(self, app: web.Application) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
        if self._session is not None:
            await self._session.close()

    # -- requests --------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        accept, accept_encoding = headers.get("Accept", ""), headers.get("Accept-Encoding", "")
        negotiated = (accept, accept_encoding)
        key = self._keys.get(negotiated, _UNKNOWN)
        if key is _UNKNOWN:
            key = fast_key(accept, accept_encoding)
            if len(self._keys) < 64:  # the few header sets scrapers send
                self._keys[negotiated] = key
        if key is not None:
            entry = self._entries.get(key)
            if entry is not None and (entry.current or self.now() < entry.fresh_until):
                self.answered += 1
                if key[1]:
                    self._note(key, negotiated)
                return web.Response(body=entry.rendered.body, headers=entry.rendered.headers)
        return await self.forward(request)

    def _note(self, key: tuple[str, bool], negotiated: tuple[str, str]) -> None:
        now = self.now()
        if now - self._noted.get(key, -math.inf) >= NOTE_INTERVAL:
            self._noted[key] = now
            self._notes[key] = negotiated
            self._wake.set()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if posixpath.normpath(request.path).startswith(_INTERNAL):
            raise web.HTTPNotFound()  # the feed, however the path is spelled
        if not self.connected.is_set():
            try:
                await asyncio.wait_for(self.connected.wait(), STARTUP_WAIT)
            except TimeoutError:
                return web.Response(
                    status=503, text="the exporter's collecting process is not available\n"
                )
        assert self._session is not None
        self.forwarded += 1
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _NOT_FORWARDED
        )
        body = await request.read() if request.body_exists else None
        try:
            async with self._session.request(
                request.method,
                request.rel_url,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            ) as response:
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error(
                "the collecting process did not answer",
                method=request.method,
                path=request.path,
                error=type(exc).__name__,
            )
            return web.Response(
                status=502, text="the exporter's collecting process did not answer\n"
            )
        if request.method not in ("GET", "HEAD"):
            self._entries.clear()  # a reload: its outcome is never answered from older bytes
        answer = web.Response(status=response.status, reason=response.reason, body=payload)
        for name, value in response.headers.items():
            if name.lower() not in _NOT_RETURNED:
                answer.headers.add(name, value)
        return answer

    # -- the feed --------------------------------------------------------------------------------

    async def _feed(self) -> None:
        assert self._session is not None
        attempt = 0
        while True:
            try:
                async with self._session.ws_connect(FEED_PATH, max_msg_size=0) as ws:
                    attempt = 0
                    self.connected.set()
                    sender = asyncio.create_task(self._send_notes(ws))
                    try:
                        async for message in ws:
                            if message.type is aiohttp.WSMsgType.BINARY:
                                self._take(message.data)
                            elif message.type is aiohttp.WSMsgType.TEXT:
                                self._notice(message.data)
                            self.received.set()
                    finally:
                        sender.cancel()
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("feed not connected", error=type(exc).__name__)
            self.connected.clear()
            self._entries.clear()
            self._header = None
            if self._parent is not None and os.getppid() != self._parent:
                log.error("the collecting process is gone; the serving process stops")
                # Its private directory: the collecting process, killed, left it behind.
                shutil.rmtree(os.path.dirname(self.backend), ignore_errors=True)
                self.gone.set()
                return
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1

    async def _send_notes(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await self._wake.wait()
                self._wake.clear()
                notes, self._notes = self._notes, {}
                for accept, accept_encoding in notes.values():
                    await ws.send_str(
                        json.dumps({"accept": accept, "accept_encoding": accept_encoding})
                    )

    def _take(self, body: bytes) -> None:
        """A build's body: it follows its header (:meth:`_notice`)."""
        meta, self._header = self._header, None
        if meta is None:
            log.error("ignored a build body without its header from the collecting process")
            return
        try:
            rendered = Rendered(str(meta["content_type"]), body, gzipped=bool(meta["gzip"]))
            fresh_until = meta["fresh_until"]
            entry = _Entry(
                rendered,
                -math.inf if fresh_until is None else float(fresh_until),
                bool(meta["current"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignored a malformed build from the collecting process", error=str(exc))
            return
        self._entries[(rendered.content_type, rendered.gzipped)] = entry
        self.messages += 1

    def _notice(self, data: str) -> None:
        try:
            meta = json.loads(data)
            kind = meta["kind"]
            until = float(meta.get("fresh_until") or -math.inf)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("ignored a malformed notice from the collecting process", error=str(exc))
            return
        if kind == "build":
            self._header = meta
            return
        self.messages += 1
        if kind == "invalidate":
            self._entries.clear()
        elif kind == "changed":
            # Identity bodies are answered only while current. A gzip one that was current until
            # now is answered for a window more (``fresh_until``). Whatever can no longer be
            # answered is dropped: a 2 MB body need not wait for the next build of its kind.
            now = self.now()
            for key, entry in list(self._entries.items()):
                if entry.current and entry.rendered.gzipped:
                    entry.fresh_until = max(entry.fresh_until, until)
                entry.current = False
                if entry.fresh_until <= now:
                    del self._entries[key]


async def _serve_front(
    sockets: list[socket.socket],
    backend: str,
    telemetry_path: str,
    web_config: WebConfigFile | None,
    parent: int,
) -> int:
    front = Front(backend, telemetry_path, parent)
    runner = web.AppRunner(
        front.build_app(web_config), handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    tls = web_config.tls_server_config if web_config else None
    context = ssl_context(tls) if tls else None
    for sock in sockets:
        await web.SockSite(runner, sock, ssl_context=context).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopped = asyncio.create_task(stop.wait())
    gone = asyncio.create_task(front.gone.wait())
    await asyncio.wait([stopped, gone], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    gone.cancel()
    await runner.cleanup()
    return 0 if stop.is_set() else 1


# -- the collecting process's side of the pair -------------------------------------------------


def bind(host: str, port: int, backlog: int = 128) -> list[socket.socket]:
    """The listening sockets for ``host:port`` (an empty host: every interface), as asyncio's
    ``create_server`` binds them."""
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ServingProcess:
    """The forked serving process, as the collecting process sees it."""

    def __init__(self, pid: int, directory: str, collector: socket.socket) -> None:
        self.pid = pid
        self.directory = directory
        self.collector = collector
        """The listening Unix socket the collecting process serves the feed and forwarded
        requests on."""
        self.returncode: int | None = None
        self._exited = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._lock = threading.Lock()
        # A daemon thread reaps it: it never holds up the interpreter's exit.
        threading.Thread(target=self._reap, name="serving-process", daemon=True).start()

    def _reap(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        with self._lock:
            self.returncode = os.waitstatus_to_exitcode(status)
            waiters, self._waiters = self._waiters, []
            self._exited.set()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_resolve, future, self.returncode)

    def exited(self) -> asyncio.Future[int]:
        """A future of the exit code (-N for a signal)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._lock:
            if self.returncode is None:
                self._waiters.append((loop, future))
                return future
        future.set_result(self.returncode)
        return future

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT + 2) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code. Blocks: for the end only."""
        for send in (self.terminate, self.kill):
            send()
            if self._exited.wait(timeout):
                break
        self._exited.wait()
        self.collector.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def _resolve(future: asyncio.Future[int], code: int) -> None:
    if not future.done():
        future.set_result(code)


def _private_socket() -> tuple[str, socket.socket] | None:
    """A listening Unix socket in a new private directory (mode 0700) of ``$TMPDIR``, or None
    (logged) when there is none to be had."""
    try:
        directory = tempfile.mkdtemp(prefix="mse-")
    except OSError as exc:
        error = exc.strerror or str(exc)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.path.join(directory, "c.sock"))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:  # e.g. a $TMPDIR too long for a socket's path (~100 bytes)
            sock.close()
            shutil.rmtree(directory, ignore_errors=True)
            error = exc.strerror or str(exc)
        else:
            return directory, sock
    log.warning(
        "no private socket for the serving process; serving from the collecting process",
        error=error,
        hint="a writable $TMPDIR with a short path (the socket's must stay under ~100 bytes)",
    )
    return None


def fork_front(
    sockets: list[socket.socket],
    telemetry_path: str,
    web_config: WebConfigFile | None,
    log_level: str,
    log_format: str,
) -> ServingProcess | None:
    """Fork the serving process with ``sockets`` (then closed here). None when no private Unix
    socket can be made: the caller serves the sockets itself. Call before any event loop or
    thread is started."""
    private = _private_socket()
    if private is None:
        return None
    directory, collector = private
    backend = collector.getsockname()
    parent = os.getpid()
    # What exists now lives as long as either process: out of the collector's scans, so that
    # neither process's collections write to (and so copy) the pages they share.
    gc.collect()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its behaviour is tested through the CLI
        code = 1
        try:
            collector.close()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C: the parent stops it
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the parent's
            setup_logging(log_level, log_format)
            code = asyncio.run(_serve_front(sockets, backend, telemetry_path, web_config, parent))
        except BaseException:
            log.exception("the serving process failed")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    for sock in sockets:
        sock.close()
    return ServingProcess(pid, directory, collector)
