"""The ``/metrics`` bytes, per negotiated content type, identity and gzip, rebuilt only from what
changed in the store.

The body is assembled from pieces: for each family (the providers' in their declared order, then
the exporter's per-target ones) its HELP/TYPE header and one *page* per group of
:data:`GROUP_SIZE` consecutive targets (the concatenation of those targets' rendered blocks for
the family, see :meth:`Store._render <exporter.store.Store._render>`), then a small *tail* (see
:class:`_Tail`): the exporter's global families, every other collector of the registry (the
request-duration histogram, which renders itself) and ``# EOF`` for OpenMetrics.

A collection that ends re-renders its target's blocks (in the store); the next build re-joins the
pages of that target's group and the tail, so one new snapshot costs a few pages, not 10,000
samples. Each page is deflated on its own (a sync-flushed piece of deflate stream, see
:func:`exporter.render.deflate_piece`) and kept until the page changes: the gzip body is a gzip
header, the kept deflated pieces, the new ones, a final block and the CRC of the identity body.
A gzip build runs on the event loop in slices (:data:`SLICE_WEIGHT`): between two slices the loop
serves other scrapes, so no build ever stalls it for long.

Which bytes a gzip scrape gets (per content type, see :class:`_Builder`):

* bytes of the store's current generation when they are built already;
* when no build is in flight or scheduled, a build of the current generation, awaited: a lone
  scraper (Prometheus, a test, a human with curl) sees every change made before it asked;
* while a build is in flight or scheduled, the newest complete build, at once. A build that ends
  while the store has moved on schedules the next one, at most every :data:`REBUILD_INTERVAL`: under
  constant change (a collection cycle of many targets) scrapes never wait for a build, the bytes are
  at most one interval and one build old, and builds cost at most a few per second.

Identity bodies are joined from the pages in place, per generation. OpenMetrics escaping schemes
that rewrite metric names (``dots``, ``values``) are rare and take the slow road: prometheus_client
renders the registry, and the whole body is compressed in a thread.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.histogram import RequestHistogram
from exporter.render import GZIP_LEVEL, deflate_piece, gzip_member
from exporter.store import Store, StoreCollector, TargetState

GROUP_SIZE = 32
"""Targets per page: a page of a family is a few KB to a few tens of KB, about a deflate window."""
REBUILD_INTERVAL = 0.1
"""Seconds between the starts of two gzip builds of one content type while the store keeps
changing and scrapes keep coming: the staleness a scrape can see then (Prometheus scrapes every
15 s or so)."""
SLICE_WEIGHT = 16 * 1024
"""Work a build does between two yields to the event loop: bytes deflated (~0.15 ms for 16 KB at
level 6), with a CRC counting 1/:data:`CRC_DISCOUNT` of its bytes (zlib's CRC-32 is that much
faster)."""
CRC_DISCOUNT = 32

Encoder = Callable[[Collector], bytes]
log = structlog.get_logger("exporter.exposition")


@dataclass(frozen=True, slots=True)
class Rendered:
    content_type: str
    body: bytes
    gzipped: bool
    headers: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Content-Type": self.content_type, "Vary": "Accept, Accept-Encoding"}
        if self.gzipped:
            headers["Content-Encoding"] = "gzip"
        object.__setattr__(self, "headers", headers)


_deflater: ThreadPoolExecutor | None = None


def _deflate_thread() -> ThreadPoolExecutor:
    """One thread for the slow road's whole-body compression (zlib releases the GIL)."""
    global _deflater
    if _deflater is None:
        _deflater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exposition-deflate")
    return _deflater


class _Builder:
    """The gzip builds of one content type: the newest complete one (of the current layout), the
    one in flight, the next one scheduled, and whether a scrape asked since the last one began."""

    __slots__ = ("encoder", "latest", "running", "started", "timer", "wanted")

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.latest: Rendered | None = None
        self.running: asyncio.Future[bool] | None = None
        """The build in flight; its result says whether it worked."""
        self.timer: asyncio.TimerHandle | None = None
        self.started = -math.inf
        self.wanted = False


class _Group:
    """Consecutive targets and, per family, their blocks joined (a page) and its deflated piece."""

    __slots__ = ("deflated", "pages", "targets")

    def __init__(self, targets: Sequence[TargetState], width: int) -> None:
        self.targets = targets
        self.pages: list[bytes] = [b""] * width
        self.deflated: list[bytes | None] = [b""] * width
        self.refresh()

    def refresh(self) -> None:
        for slot in range(len(self.pages)):
            page = b"".join([target.blocks[slot] for target in self.targets])
            if page != self.pages[slot]:
                self.pages[slot] = page
                self.deflated[slot] = None if page else b""


class _One(Collector):
    """One collector as a registry for an encoder."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        yield from self._collector.collect()


class _Globals(Collector):
    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        yield from self._store.global_families()


class _Tail:
    """What follows the per-target families: the store's global families, then every collector of
    the registry but the store's, in registration order. The request histogram renders itself
    (:meth:`RequestHistogram.render`, only its changed series); the global families are rendered
    by prometheus_client when their values change; any other collector at every call."""

    def __init__(self, registry: CollectorRegistry, store: Store) -> None:
        self._registry = registry
        self._store = store
        self._globals: dict[tuple[object, ...], bytes] = {}

    def render(self, encoder: Encoder, openmetrics_: bool) -> bytes:
        store = self._store
        key = (
            openmetrics_,
            encoder,
            store.config_reload_successful,
            store.shard,
            len(store.targets),
            store.skipped_targets,
        )
        globals_ = self._globals.get(key)
        if globals_ is None:
            if len(self._globals) > 16:
                self._globals.clear()
            globals_ = self._globals[key] = _strip_eof(encoder(_Globals(store)), openmetrics_)
        parts = [globals_]
        registry = self._registry
        with registry._lock:
            collectors = list(registry._collector_to_names)
        for collector in collectors:
            if isinstance(collector, RequestHistogram):
                parts.append(collector.render(openmetrics_))
            elif not isinstance(collector, StoreCollector):
                parts.append(_strip_eof(encoder(_One(collector)), openmetrics_))
        if openmetrics_:
            parts.append(_EOF)
        return b"".join(parts)


_EOF = b"# EOF\n"


def _strip_eof(rendered: bytes, openmetrics_: bool) -> bytes:
    if openmetrics_ and rendered.endswith(_EOF):
        return rendered[: -len(_EOF)]
    return rendered


class Exposition:
    def __init__(self, registry: CollectorRegistry, store: Store) -> None:
        self._registry = registry
        self._store = store
        self._tail = _Tail(registry, store)
        self._generation = -1
        self._layout = -1
        self._groups: list[_Group] = []
        self._group_of: dict[str, _Group] = {}
        self._cache: dict[tuple[str, bool], Rendered] = {}
        self._tails: dict[str, bytes] = {}
        self._builders: dict[str, _Builder] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rebuild_interval = REBUILD_INTERVAL
        self._rendered: set[str] = set()
        self._negotiated: dict[tuple[str, str], tuple[Encoder, str, bool]] = {}
        families = store.families
        self._headers = {om: [family.header(om) for family in families] for om in (False, True)}
        self._deflated_headers = {
            om: [deflate_piece(header) for header in headers]
            for om, headers in self._headers.items()
        }
        self.renders = 0
        """Expositions assembled: one per generation and content type served."""

    # -- the request side ------------------------------------------------------------------------

    def get(self, accept: str, accept_encoding: str) -> Rendered:
        """The exposition for these request headers, all work done here (tests, tools)."""
        self._refresh()
        encoder, content_type, want_gzip = self._negotiate(accept, accept_encoding)
        cached = self._cache.get((content_type, want_gzip))
        if cached is not None:
            return cached
        if not want_gzip:
            return self._plain(encoder, content_type)
        job = self._gzip_job(encoder, content_type)
        return self._finish_gzip(content_type, job, job.run(), self._generation)

    def _negotiate(self, accept: str, accept_encoding: str) -> tuple[Encoder, str, bool]:
        key = (accept, accept_encoding)
        negotiated = self._negotiated.get(key)
        if negotiated is None:
            encoder, content_type = choose_encoder(accept)
            negotiated = (encoder, content_type, _accepts_gzip(accept_encoding))
            if len(self._negotiated) < 64:  # the few header sets scrapers send
                self._negotiated[key] = negotiated
        return negotiated

    async def get_async(self, accept: str, accept_encoding: str) -> Rendered:
        """As :meth:`get`, for the event loop: gzip builds run in slices and are shared, and
        scrapes during one get the newest complete build (see the module's docstring)."""
        encoder, content_type, want_gzip = self._negotiate(accept, accept_encoding)
        while True:
            self._refresh()
            cached = self._cache.get((content_type, want_gzip))
            if cached is not None:
                return cached
            if not want_gzip:
                return self._plain(encoder, content_type)
            if _openmetrics_fast(content_type) is None:
                generation = self._generation
                job = _GzipJob([], [], [], whole=self._plain(encoder, content_type).body)
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(_deflate_thread(), job.run)
                return self._finish_gzip(content_type, job, result, generation)
            builder = self._builders.get(content_type)
            if builder is None:
                builder = self._builders[content_type] = _Builder(encoder)
            builder.wanted = True
            if builder.latest is not None and (builder.running or builder.timer):
                return builder.latest
            if builder.running is None:
                self._start_build(content_type, builder)
            running = builder.running
            assert running is not None
            # The first build (at start, after a reload), or this scrape's own: awaited. A failed
            # one fails the scrapes that waited for it (logged once); the next scrape tries again.
            await asyncio.wait([running])
            if not running.result():
                raise RuntimeError("building the exposition failed; see the log")

    async def aclose(self) -> None:
        """Cancel the scheduled and running background builds (the app's shutdown)."""
        for builder in self._builders.values():
            if builder.timer is not None:
                builder.timer.cancel()
                builder.timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def _start_build(self, content_type: str, builder: _Builder) -> None:
        loop = asyncio.get_running_loop()
        done = builder.running = loop.create_future()
        builder.started = loop.time()
        builder.wanted = False
        task = loop.create_task(self._build(content_type, builder, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(
        self, content_type: str, builder: _Builder, done: asyncio.Future[bool]
    ) -> None:
        generation, layout = self._generation, self._layout
        ok = False
        try:
            job = self._gzip_job(builder.encoder, content_type)
            result = await job.run_sliced()
            packed = self._finish_gzip(content_type, job, result, generation)
            if layout == self._layout:
                builder.latest = packed
            ok = True
        except Exception:
            log.exception("exposition build failed", content_type=content_type)
        finally:
            builder.running = None
            done.set_result(ok)
        if self._store.generation != generation or self._layout != layout:
            # The store moved on during the build: the next one, no sooner than the interval.
            loop = asyncio.get_running_loop()
            delay = max(0.0, builder.started + self.rebuild_interval - loop.time())
            builder.timer = loop.call_later(delay, self._rebuild, content_type, builder)

    def _rebuild(self, content_type: str, builder: _Builder) -> None:
        builder.timer = None
        if builder.wanted and builder.running is None:
            self._refresh()
            if (content_type, True) not in self._cache:
                self._start_build(content_type, builder)

    # -- building ----------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Take the store's changes: stale samples, re-rendered targets, a new target list."""
        store = self._store
        store.expire()
        if store.generation == self._generation:
            return
        self._generation = store.generation
        self._cache.clear()
        self._tails.clear()
        self._rendered.clear()
        if store.layout != self._layout:
            self._layout = store.layout
            for builder in self._builders.values():
                builder.latest = None  # another target list: no scrape gets the old one's bytes
            store.take_dirty()
            targets = store.targets
            width = len(store.families)
            self._groups = [
                _Group(targets[start : start + GROUP_SIZE], width)
                for start in range(0, len(targets), GROUP_SIZE)
            ]
            self._group_of = {
                target.config.name: group for group in self._groups for target in group.targets
            }
            return
        dirty = {
            id(group): group for name in store.take_dirty() if (group := self._group_of.get(name))
        }
        for group in dirty.values():
            group.refresh()

    def _tail_bytes(self, encoder: Encoder, content_type: str, openmetrics_: bool) -> bytes:
        tail = self._tails.get(content_type)
        if tail is None:
            tail = self._tails[content_type] = self._tail.render(encoder, openmetrics_)
        return tail

    def _pieces(self, openmetrics_: bool) -> list[tuple[bytes, _Group | None, int]]:
        """The body's pieces before the tail: (bytes, the group holding it or None for a header,
        the family's slot)."""
        headers = self._headers[openmetrics_]
        provider_families = self._store.provider_family_count
        pieces: list[tuple[bytes, _Group | None, int]] = []
        for slot, header in enumerate(headers):
            pages = [(group.pages[slot], group) for group in self._groups if group.pages[slot]]
            if not pages and slot < provider_families:
                continue  # a provider family with no samples is not shown
            pieces.append((header, None, slot))
            pieces.extend((page, group, slot) for page, group in pages)
        return pieces

    def _plain(self, encoder: Encoder, content_type: str) -> Rendered:
        cached = self._cache.get((content_type, False))
        if cached is not None:
            return cached
        openmetrics_ = _openmetrics_fast(content_type)
        if openmetrics_ is None:
            body = encoder(self._registry)
        else:
            pieces = self._pieces(openmetrics_)
            body = b"".join(
                [piece for piece, _, _ in pieces]
                + [self._tail_bytes(encoder, content_type, openmetrics_)]
            )
        self._count_render(content_type)
        plain = self._cache[(content_type, False)] = Rendered(content_type, body, gzipped=False)
        return plain

    def _gzip_job(self, encoder: Encoder, content_type: str) -> _GzipJob:
        openmetrics_ = _openmetrics_fast(content_type)
        if openmetrics_ is None:
            return _GzipJob([], [], [], whole=self._plain(encoder, content_type).body)
        self._count_render(content_type)
        deflated_headers = self._deflated_headers[openmetrics_]
        pieces: list[bytes] = []
        parts: list[bytes | None] = []
        todo: list[tuple[int, bytes, _Group, int]] = []
        for piece, group, slot in self._pieces(openmetrics_):
            pieces.append(piece)
            if group is None:
                parts.append(deflated_headers[slot])
                continue
            known = group.deflated[slot]
            if known is None:
                todo.append((len(parts), piece, group, slot))
            parts.append(known)
        tail = self._tail_bytes(encoder, content_type, openmetrics_)
        pieces.append(tail)
        todo.append((len(parts), tail, _NO_GROUP, -1))
        parts.append(None)
        return _GzipJob(pieces, parts, todo)

    def _count_render(self, content_type: str) -> None:
        if content_type not in self._rendered:
            self._rendered.add(content_type)
            self.renders += 1

    def _finish_gzip(
        self, content_type: str, job: _GzipJob, result: bytes, generation: int
    ) -> Rendered:
        for index, piece, group, slot in job.todo:
            if group is not _NO_GROUP and group.pages[slot] is piece:
                group.deflated[slot] = job.parts[index]
        packed = Rendered(content_type, result, gzipped=True)
        if generation == self._generation == self._store.generation:
            self._cache[(content_type, True)] = packed
        return packed


_NO_GROUP = _Group((), 0)


class _GzipJob:
    """Deflating what is not deflated yet, the CRC of the body, one gzip member: pure bytes
    work on immutable inputs, safe in a thread. ``whole`` is a body deflated at once (the slow
    road)."""

    def __init__(
        self,
        pieces: list[bytes],
        parts: list[bytes | None],
        todo: list[tuple[int, bytes, _Group, int]],
        whole: bytes | None = None,
    ) -> None:
        self.pieces = pieces
        self.parts = parts
        self.todo = todo
        self.whole = whole
        self._crc, self._size = 0, 0

    def run(self) -> bytes:
        if self.whole is not None:
            return gzip.compress(self.whole, compresslevel=GZIP_LEVEL, mtime=0)
        for _ in self._steps():
            pass
        return self._member()

    async def run_sliced(self) -> bytes:
        """:meth:`run` on the event loop, yielding to it after every :data:`SLICE_WEIGHT` of
        work."""
        for _ in self._steps():
            await asyncio.sleep(0)
        return self._member()

    def _steps(self) -> Iterator[None]:
        """Deflates the new pieces and sums the CRC, pausing (yielding) after each slice."""
        weight = 0
        parts = self.parts
        for index, piece, _, _ in self.todo:
            parts[index] = deflate_piece(piece)
            weight += len(piece)
            if weight >= SLICE_WEIGHT:
                weight = 0
                yield
        crc, size = 0, 0
        for piece in self.pieces:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
            weight += len(piece) // CRC_DISCOUNT
            if weight >= SLICE_WEIGHT:
                weight = 0
                yield
        self._crc, self._size = crc, size

    def _member(self) -> bytes:
        return gzip_member([part for part in self.parts if part], self._crc, self._size)


def _openmetrics_fast(content_type: str) -> bool | None:
    """Whether the negotiated format is OpenMetrics (else the text format), or None when its
    escaping scheme rewrites metric names (the slow road)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name == "escaping" and value not in (openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8):
            return None
    return content_type.startswith("application/openmetrics-text")


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return True
            return True
    return False
