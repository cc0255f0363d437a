"""The collecting process's side of the pair: it starts the serving process
(:mod:`exporter.serving`) with the listening sockets, pushes the exposition's builds to it over
the *feed*, and serves the requests it forwards.

``serve`` binds the listening sockets and makes a private directory (mode 0700) with two Unix
sockets: ``c.sock``, where the collecting process serves its app (no web config there: the
directory's mode is the guard) for the requests the serving process forwards, and ``f.sock``,
the feed. Then it starts the serving process, a fresh interpreter that inherits the listening
sockets. :class:`Feed` pushes each build (the bytes, until when they may be served, whether they
are current), then "changed" (with until when what was current may still be served) when the
store moves on, and "invalidate" after a reload or a new target list; it takes the serving
process's notes of the content types it answered, so their background builds go on.

Lifecycle: SIGTERM or SIGINT to the collecting process stops the serving process first (it
finishes its requests), then the collections; a serving process that dies makes the collecting
process exit 1 (the supervisor restarts the pair); a serving process whose collecting process is
gone exits 1 (and removes the private directory). When no private directory with its sockets can
be made (no temporary directory can be created, or ``$TMPDIR``'s path is too long for a socket's),
or the serving process cannot be started, the collecting process serves the sockets itself, as
the one process it used to be, and logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from exporter import serving, timeslice
from exporter.metrics.exposition import Exposition, Rendered
from exporter.metrics.store import Store
from exporter.serving import frame, read_frame
from exporter.web.webconfig import WebConfigFile, tls_settings

log = structlog.get_logger("exporter.front")

SHUTDOWN_TIMEOUT = serving.SHUTDOWN_TIMEOUT
_INVALIDATE = frame({"kind": "invalidate"})


@dataclass(eq=False)
class _Subscriber:
    writer: asyncio.StreamWriter
    builds: dict[tuple[str, bool], tuple[Rendered, float, bool]] = field(default_factory=dict)
    changed: float | None = None
    """Until when the bytes it holds as current may still be answered, once the store changed."""
    invalidate: bool = False
    holds_current: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Feed:
    """Pushes the exposition's builds to the serving process and tells it when the store moved
    on; takes its notes of what it answered. Pending builds are coalesced per content type and
    encoding: a slow reader gets the newest, never a queue."""

    def __init__(self, exposition: Exposition, store: Store) -> None:
        self._exposition = exposition
        self._store = store
        self._state = (store.epoch, store.layout)
        self._subscribers: set[_Subscriber] = set()
        self._server: asyncio.Server | None = None
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

    async def start(self, sock: socket.socket) -> None:
        """Serve the feed on the listening Unix socket ``sock``."""
        self._server = await asyncio.start_unix_server(self._connected, sock=sock)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subscriber = _Subscriber(writer)
        self._subscribers.add(subscriber)
        sender = asyncio.create_task(self._send(subscriber))
        try:
            while True:
                meta, _ = await read_frame(reader)
                self._note(meta)
        except (asyncio.IncompleteReadError, OSError):
            pass  # the serving process went away
        except ValueError as exc:
            log.warning("the serving process broke the feed's framing", error=str(exc))
        finally:
            self._subscribers.discard(subscriber)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            writer.close()

    def _note(self, meta: dict[str, Any]) -> None:
        accept, accept_encoding = meta.get("accept"), meta.get("accept_encoding")
        if meta.get("kind") != "note" or not (
            isinstance(accept, str) and isinstance(accept_encoding, str)
        ):
            log.warning("ignored a malformed note from the serving process", kind=meta.get("kind"))
            return
        self._exposition.scraped(accept, accept_encoding)

    async def _send(self, subscriber: _Subscriber) -> None:
        writer = subscriber.writer
        try:
            while True:
                await subscriber.wake.wait()
                subscriber.wake.clear()
                if subscriber.invalidate:
                    subscriber.invalidate, subscriber.changed = False, None
                    writer.writelines(_INVALIDATE)
                if subscriber.changed is not None:
                    until, subscriber.changed = subscriber.changed, None
                    writer.writelines(frame({"kind": "changed", "fresh_until": until}))
                builds, subscriber.builds = subscriber.builds, {}
                for rendered, fresh_until, current in builds.values():
                    # Set before the send: a change while it is on its way sends "changed" after.
                    subscriber.holds_current |= current
                    meta = {
                        "kind": "build",
                        "content_type": rendered.content_type,
                        "gzip": rendered.gzipped,
                        "fresh_until": fresh_until if math.isfinite(fresh_until) else None,
                        "current": current,
                    }
                    writer.writelines(frame(meta, rendered.body))
                    await writer.drain()
                await writer.drain()
        except OSError as exc:  # the serving process went away
            log.debug("feed closed", error=type(exc).__name__)

    async def close(self, app: web.Application | None = None) -> None:
        if self._server is not None:
            self._server.close()
        for subscriber in list(self._subscribers):
            subscriber.writer.close()

    @classmethod
    def attach(
        cls, app: web.Application, exposition: Exposition, store: Store, sock: socket.socket
    ) -> Feed:
        """A feed of ``exposition`` on the listening Unix socket ``sock``, started and closed
        with ``app`` (the collecting process's app)."""
        feed = cls(exposition, store)

        async def start(app: web.Application) -> None:
            await feed.start(sock)

        app.on_startup.append(start)
        app.on_shutdown.append(feed.close)
        return feed


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
    """The serving process, as the collecting process sees it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        directory: str,
        collector: socket.socket,
        feed: socket.socket,
        short_slice: bool = False,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.directory = directory
        self.collector = collector
        """The listening Unix socket the collecting process serves forwarded requests on."""
        self.feed = feed
        """The listening Unix socket of the feed."""
        self.returncode: int | None = None
        self.short_slice = short_slice
        """Whether the kernel gave it a short time slice (:mod:`exporter.timeslice`)."""
        self._exited = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._lock = threading.Lock()
        # A daemon thread reaps it: it never holds up the interpreter's exit.
        threading.Thread(target=self._reap, name="serving-process", daemon=True).start()

    def _reap(self) -> None:
        code = self.process.wait()
        with self._lock:
            self.returncode = code
            waiters, self._waiters = self._waiters, []
            self._exited.set()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_resolve, future, code)

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
        self.feed.close()
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


def _unix_listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _private_sockets() -> tuple[str, socket.socket, socket.socket] | None:
    """A new private directory (mode 0700) of ``$TMPDIR`` with the listening Unix sockets of the
    forwarded requests and of the feed, or None (logged) when there is none to be had."""
    try:
        directory = tempfile.mkdtemp(prefix="mse-")
    except OSError as exc:
        error = exc.strerror or str(exc)
    else:
        try:
            collector = _unix_listener(os.path.join(directory, "c.sock"))
            try:
                feed = _unix_listener(os.path.join(directory, "f.sock"))
            except OSError:
                collector.close()
                raise
        except OSError as exc:  # e.g. a $TMPDIR too long for a socket's path (~100 bytes)
            shutil.rmtree(directory, ignore_errors=True)
            error = exc.strerror or str(exc)
        else:
            return directory, collector, feed
    log.warning(
        "no private socket for the serving process; serving from the collecting process",
        error=error,
        hint="a writable $TMPDIR with a short path (the socket's must stay under ~100 bytes)",
    )
    return None


def spawn_front(
    sockets: list[socket.socket],
    telemetry_path: str,
    web_config: WebConfigFile | None,
    log_level: str,
    log_format: str,
    backlog: int = 128,
) -> ServingProcess | None:
    """Start the serving process with ``sockets`` (then closed here). None when it cannot be
    started (logged): the caller serves the sockets itself."""
    private = _private_sockets()
    if private is None:
        return None
    directory, collector, feed = private
    tls = web_config.tls_server_config if web_config else None
    settings = {
        "fds": [sock.fileno() for sock in sockets],
        "backlog": backlog,
        "backend": collector.getsockname(),
        "feed": feed.getsockname(),
        "telemetry_path": telemetry_path,
        "tls": tls_settings(tls) if tls else None,
        "users": dict(web_config.basic_auth_users) if web_config else {},
        "headers": dict(web_config.http_server_config.headers) if web_config else {},
        "log_level": log_level,
        "log_format": log_format,
        "parent": os.getpid(),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    process: subprocess.Popen[bytes] | None = None
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter.serving"],
            stdin=subprocess.PIPE,
            pass_fds=settings["fds"],
        )
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(json.dumps(settings).encode())
    except OSError as exc:
        if process is not None:  # it died before it read its settings
            process.kill()
            process.wait()
        collector.close()
        feed.close()
        shutil.rmtree(directory, ignore_errors=True)
        log.warning(
            "the serving process cannot be started; serving from the collecting process",
            error=exc.strerror or str(exc),
        )
        return None
    for sock in sockets:
        sock.close()
    # Latency-sensitive, a tenth of a millisecond of work per scrape: it asks for a short slice
    # so that a scrape does not wait out the collections' (see exporter.timeslice).
    short_slice = timeslice.request(process.pid)
    return ServingProcess(process, directory, collector, feed, short_slice)
