"""The ``/metrics`` bytes, per negotiated content type, identity and gzip, rebuilt only from what
changed in the store.

The body is assembled from pieces: for each family (the providers' in their declared order, then
the exporter's per-target ones) its HELP/TYPE header and one *page* per group of
:data:`GROUP_SIZE` consecutive targets (the concatenation of those targets' rendered blocks for
the family, see :meth:`Store._render <exporter.metrics.store.Store._render>`), then a small *tail* (see
:class:`_Tail`): the exporter's global families, every other collector of the registry (the
request-duration histogram, which renders itself) and ``# EOF`` for OpenMetrics.

A collection that ends re-renders its target's blocks (in the store; a block whose bytes did not
change stays the same object); the store's change notice marks the pages of that target's group
whose blocks changed, so one new snapshot costs a few pages, not 10,000 samples. Each page is
deflated on its own (a sync-flushed piece of deflate stream, see
:func:`exporter.metrics.render.deflate_piece`) and the piece kept until the page changes: the gzip body is
a gzip header, the kept deflated pieces, the new ones, a final block and the CRC of the identity
body. The pages' bytes are not kept (the blocks hold that text already): a gzip build joins each
page from its blocks for the CRC, and to deflate it when new, one page at a time. A gzip build
runs on the event loop in slices (:data:`SLICE_WEIGHT`): between two slices the loop serves other
scrapes, so no build ever stalls it for long.

Which bytes a gzip scrape gets (per content type, see :class:`_Builder`):

* bytes of the store's current generation when they are built already;
* the newest complete build when it began less than :attr:`Exposition.reuse_window` (1 s) before
  the scrape arrived: under constant change (a collection cycle) and constant scraping, scrapes
  never wait for a build, and every change older than the window is in what they get;
* else it waits for a build that began within that window: the one in flight, or its own. With a
  window of 0 that is one that began after it arrived: a scrape then sees every change made before
  it asked. Its own build is done at once when small (a few collections since the last one), else
  in slices of about a millisecond (:data:`AWAITED_SLICE_WEIGHT`).

A content type scraped in the last :data:`ACTIVE_FOR` seconds is also rebuilt in the background
after the store changes: at most every :data:`REBUILD_INTERVAL` while scrapes keep coming (so they
never wait), else when the store has been quiet for :data:`QUIET` and at least every
:data:`IDLE_REBUILD_INTERVAL`. Its pages are deflated as the collections come in, not when a scrape
finds them all changed, and a scrape after a cycle finds its bytes ready. With a window of 0
(tests that scrape right after a collection) there are no background builds. The outcome of a
config reload, and a new target list, are never served from bytes built before them.

Identity bodies are joined from the blocks in place, per generation. OpenMetrics escaping schemes
that rewrite metric names (``dots``, ``values``) are rare and take the slow road: prometheus_client
renders the registry, and the whole body is compressed in a thread.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import compress, count
from operator import is_not

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.histogram import RequestHistogram
from exporter.metrics.render import GZIP_LEVEL, deflate_piece, gzip_member
from exporter.metrics.store import Store, StoreCollector, TargetState

GROUP_SIZE = 32
"""Targets per page: a page of a family is a few KB to a few tens of KB, about a deflate window."""
REUSE_WINDOW = 1.0
"""Seconds: a scrape gets the newest complete build when that build began less than this before
the scrape arrived (Prometheus scrapes every 15 s or so; a target is collected every minute or
so). Four times :data:`REBUILD_INTERVAL`: the newest build stays young enough to be reused even
when one comes late behind a busy event loop."""
REBUILD_INTERVAL = 0.25
"""Seconds between the starts of two background builds of one content type while the store keeps
changing and scrapes keep coming (one in the last :data:`STREAM_GAP`): well within
:data:`REUSE_WINDOW`, so that the newest build is always young enough to be reused."""
STREAM_GAP = 1.0
"""Seconds: scrapes closer together than this are a stream, which the fast interval serves."""
IDLE_REBUILD_INTERVAL = 0.5
"""Seconds between two background builds for a content type scraped now and then (Prometheus every
15 s): its pages stay deflated at a few builds per cycle, and a scrape builds only the last
second's changes."""
QUIET = 0.1
"""Seconds without a change after which such a content type is rebuilt (the end of a cycle):
a scrape after a cycle finds its bytes ready."""
ACTIVE_FOR = 600.0
"""Seconds since its last scrape during which a content type is rebuilt in the background."""
SLICE_WEIGHT = 16 * 1024
"""Work a background build does between two yields to the event loop: bytes deflated (~0.15 ms for
16 KB at level 6), with a CRC counting 1/:data:`CRC_DISCOUNT` of its bytes (zlib's CRC-32 is that
much faster)."""
CRC_DISCOUNT = 32
AWAITED_SLICE_WEIGHT = 128 * 1024
"""The slice of a build a scrape waits for (~1 ms of work): a build after a few collections (a few
pages and the CRC) is done at once instead of in a dozen loop turns, each shared with the
collections' work; a build after a whole cycle still yields every millisecond or so."""

Encoder = Callable[[Collector], bytes]
log = structlog.get_logger("exporter.metrics.exposition")


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
    """The gzip builds of one content type: the newest complete one (of the current layout) and
    when it began, the one in flight, the next one scheduled, and when a scrape last asked."""

    __slots__ = (
        "broken",
        "due",
        "encoder",
        "job",
        "latest",
        "latest_started",
        "running",
        "scraped",
        "started",
        "timer",
    )

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.latest: Rendered | None = None
        self.latest_started = -math.inf
        self.running: asyncio.Future[bool] | None = None
        """The build in flight; its result says whether it worked."""
        self.job: _GzipJob | None = None
        """The build in flight's work."""
        self.started = -math.inf
        """When the build in flight, or the last one, began (:attr:`Exposition.now`)."""
        self.timer: asyncio.TimerHandle | None = None
        self.due = -math.inf
        """When the scheduled build is due (:attr:`Exposition.now`)."""
        self.scraped = -math.inf
        self.broken = False
        """The last build failed: no background builds until one works."""


class _Group:
    """Consecutive targets and, per family, their page: its blocks (one per target), its size,
    version and deflated piece. The page's bytes are not kept: a build joins them from the blocks
    when it needs them. A page changes when one of its blocks does: a target's block is another
    object only when its bytes changed (see ``Store._render``)."""

    __slots__ = ("blocks", "columns", "deflated", "sizes", "targets", "versions")

    def __init__(self, targets: Sequence[TargetState], width: int) -> None:
        self.targets = targets
        self.blocks: list[tuple[bytes, ...]] = [target.blocks for target in targets]
        """Each target's blocks as of the last :meth:`refresh`."""
        self.columns: list[tuple[bytes, ...]] = [()] * width
        """Each family's page, as the blocks to join (empty for an empty page)."""
        self.sizes = [0] * width
        self.deflated: list[bytes | None] = [b""] * width
        """A page's deflated piece, b"" for an empty page, None until deflated."""
        self.versions = [0] * width
        self._update(range(width))

    def refresh(self, index: int) -> None:
        """Take the new blocks of the group's ``index``-th target."""
        new, old = self.targets[index].blocks, self.blocks[index]
        if new is not old:
            self.blocks[index] = new
            self._update(compress(count(), map(is_not, old, new)))

    def _update(self, slots: Iterable[int]) -> None:
        for slot in slots:
            column = tuple([blocks[slot] for blocks in self.blocks])
            size = sum(map(len, column))
            self.columns[slot] = column if size else ()
            self.sizes[slot] = size
            self.versions[slot] += 1
            self.deflated[slot] = None if size else b""


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
        self._epoch = 0
        self._groups: list[_Group] = []
        self._group_of: dict[str, tuple[_Group, int]] = {}
        """Each target's group and place in it."""
        self._cache: dict[tuple[str, bool], Rendered] = {}
        self._tails: dict[str, bytes] = {}
        self._builders: dict[str, _Builder] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rebuild_interval = REBUILD_INTERVAL
        self.reuse_window = REUSE_WINDOW
        self.now: Callable[[], float] = time.monotonic
        """The clock of the window and the interval (the event loop's, by default)."""
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
        self.on_build: Callable[[Rendered, float, bool], None] | None = None
        """Called with each new build: the bytes, until when (:attr:`now`) a scrape may get them
        while the store has moved on (-inf for an identity body: only while current), and whether
        they are current (see :mod:`exporter.front`)."""
        self.on_change: Callable[[], None] | None = None
        """Called at every change of the store."""
        store.on_change = self._store_changed

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
        """As :meth:`get`, for the event loop: gzip builds run in slices and are shared, and a
        scrape may get the newest complete build (see the module's docstring)."""
        encoder, content_type, want_gzip = self._negotiate(accept, accept_encoding)
        loop = asyncio.get_running_loop()
        arrived = self.now()
        while True:
            self._refresh()
            cached = self._cache.get((content_type, want_gzip))
            if cached is not None:
                return cached
            if not want_gzip:
                return self._plain(encoder, content_type)
            if _openmetrics_fast(content_type) is None:
                generation = self._generation
                job = _GzipJob([], [], [], 0, whole=self._plain(encoder, content_type).body)
                result = await loop.run_in_executor(_deflate_thread(), job.run)
                return self._finish_gzip(content_type, job, result, generation)
            builder = self._builders.get(content_type)
            if builder is None:
                builder = self._builders[content_type] = _Builder(encoder)
            builder.scraped = arrived
            if builder.latest is not None and arrived - builder.latest_started < self.reuse_window:
                return builder.latest
            running = builder.running
            if running is None:
                job = self._gzip_job(builder.encoder, content_type)
                if job.weight <= AWAITED_SLICE_WEIGHT:
                    return self._build_inline(content_type, builder, job)
                running = self._start_build(content_type, builder, job)
            assert builder.job is not None
            builder.job.slice_weight = AWAITED_SLICE_WEIGHT  # a scrape waits for it now
            # A failed build fails the scrapes that waited for it (logged once); the next scrape
            # tries again. One that began before this scrape arrived may not hold every change
            # made before: the loop then builds again.
            await asyncio.wait([running])
            if not running.result():
                raise RuntimeError("building the exposition failed; see the log")

    def scraped(self, accept: str, accept_encoding: str) -> None:
        """A scrape with these headers was answered elsewhere, from bytes this built (the serving
        process, see :mod:`exporter.front`): keep its content type rebuilt in the background as
        if it had come here."""
        _, content_type, want_gzip = self._negotiate(accept, accept_encoding)
        builder = self._builders.get(content_type)
        if want_gzip and builder is not None:
            builder.scraped = self.now()
            self._schedule(content_type, builder)

    def _built(self, rendered: Rendered, started: float, generation: int) -> None:
        if self.on_build is not None and _openmetrics_fast(rendered.content_type) is not None:
            fresh_until = started + self.reuse_window if rendered.gzipped else -math.inf
            self.on_build(rendered, fresh_until, generation == self._store.generation)

    async def aclose(self) -> None:
        """Cancel the scheduled and running background builds (the app's shutdown)."""
        self._store.on_change = None
        for builder in self._builders.values():
            if builder.timer is not None:
                builder.timer.cancel()
                builder.timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def _start_build(
        self, content_type: str, builder: _Builder, job: _GzipJob
    ) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        done = builder.running = loop.create_future()
        builder.job = job
        builder.started = self.now()
        task = loop.create_task(
            self._build(content_type, builder, done, (self._generation, self._layout, self._epoch))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return done

    def _build_inline(self, content_type: str, builder: _Builder, job: _GzipJob) -> Rendered:
        builder.started = self.now()
        try:
            packed = self._finish_gzip(content_type, job, job.run(), self._generation)
        except Exception:
            builder.broken = True
            log.exception("exposition build failed", content_type=content_type)
            raise RuntimeError("building the exposition failed; see the log") from None
        builder.latest, builder.latest_started, builder.broken = packed, builder.started, False
        self._built(packed, builder.started, self._generation)
        return packed

    async def _build(
        self,
        content_type: str,
        builder: _Builder,
        done: asyncio.Future[bool],
        state: tuple[int, int, int],
    ) -> None:
        """Run the job in flight; its bytes become the newest build unless the target list or a
        reload's outcome changed meanwhile (``state``: generation, layout, epoch at its start)."""
        generation, layout, epoch = state
        job = builder.job
        assert job is not None
        started = builder.started
        ok = False
        try:
            result = await job.run_sliced()
            packed = self._finish_gzip(content_type, job, result, generation)
            if (layout, epoch) == (self._layout, self._epoch):
                builder.latest, builder.latest_started = packed, started
                self._built(packed, started, generation)
            ok = True
        except Exception:
            log.exception("exposition build failed", content_type=content_type)
        finally:
            builder.running = builder.job = None
            builder.broken = not ok
            done.set_result(ok)
        self._schedule(content_type, builder)

    def _store_changed(self) -> None:
        if self._store.layout == self._layout:
            # Now, not at the next build: the target's previous blocks are then free at once (a
            # cycle that records many targets before a build would otherwise hold both copies of
            # their text until it; measured, 1.2 MiB more at the peak with 1,000 targets).
            self._take_renders()
        if self.on_change is not None:
            self.on_change()
        if not self._builders or self.reuse_window <= 0:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a store changed outside the event loop (tools, tests)
            return
        for content_type, builder in self._builders.items():
            self._schedule(content_type, builder)

    def _schedule(self, content_type: str, builder: _Builder) -> None:
        """A background build when the store has moved on since the newest build, for a content
        type still scraped: for a stream of scrapes, no sooner than the interval after the last
        one began; else once the store has been quiet for :data:`QUIET`, and at the latest
        :data:`IDLE_REBUILD_INTERVAL` after the last one began."""
        if self.reuse_window <= 0 or builder.broken or builder.running:
            return
        now = self.now()
        idle = now - builder.scraped
        if idle > ACTIVE_FOR:
            return
        if self._store.generation == self._generation and (content_type, True) in self._cache:
            return
        if idle < STREAM_GAP:
            if builder.timer is not None:
                return
            due = builder.started + self.rebuild_interval
        else:
            due = min(builder.started + IDLE_REBUILD_INTERVAL, now + QUIET)
            if builder.timer is not None:
                if due - builder.due < QUIET / 10:
                    return  # pushed back by less than 10 ms: not worth a new timer
                builder.timer.cancel()
        builder.due = due
        builder.timer = asyncio.get_running_loop().call_later(
            max(0.0, due - now), self._rebuild, content_type, builder
        )

    def _rebuild(self, content_type: str, builder: _Builder) -> None:
        builder.timer = None
        if builder.running is None:
            self._refresh()
            if (content_type, True) not in self._cache:
                job = self._gzip_job(builder.encoder, content_type)
                self._start_build(content_type, builder, job)

    # -- building ----------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Take the store's changes: stale samples, re-rendered targets, a new target list."""
        store = self._store
        store.expire()
        if store.generation == self._generation:
            return
        self._generation = store.generation
        if store.epoch != self._epoch:
            self._epoch = store.epoch
            for builder in self._builders.values():
                builder.latest = None  # a reload's outcome: no scrape reuses bytes from before
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
                target.config.name: (group, index)
                for group in self._groups
                for index, target in enumerate(group.targets)
            }
            return
        self._take_renders()

    def _take_renders(self) -> None:
        """The pages of the targets the store re-rendered since the last call."""
        for name in self._store.take_dirty():
            place = self._group_of.get(name)
            if place is not None:
                place[0].refresh(place[1])

    def _tail_bytes(self, encoder: Encoder, content_type: str, openmetrics_: bool) -> bytes:
        tail = self._tails.get(content_type)
        if tail is None:
            tail = self._tails[content_type] = self._tail.render(encoder, openmetrics_)
        return tail

    def _pages(self, openmetrics_: bool) -> list[tuple[Sequence[bytes], _Group | None, int]]:
        """The body's pieces before the tail, each a header or a page: (its blocks, the group
        holding it or None for a header, the family's slot)."""
        headers = self._headers[openmetrics_]
        provider_families = self._store.provider_family_count
        groups = self._groups
        pieces: list[tuple[Sequence[bytes], _Group | None, int]] = []
        for slot, header in enumerate(headers):
            shown = [group for group in groups if group.sizes[slot]]
            if not shown and slot < provider_families:
                continue  # a provider family with no samples is not shown
            pieces.append(((header,), None, slot))
            pieces.extend((group.columns[slot], group, slot) for group in shown)
        return pieces

    def _plain(self, encoder: Encoder, content_type: str) -> Rendered:
        cached = self._cache.get((content_type, False))
        if cached is not None:
            return cached
        openmetrics_ = _openmetrics_fast(content_type)
        if openmetrics_ is None:
            body = encoder(self._registry)
        else:
            blocks: list[bytes] = []
            for page, _, _ in self._pages(openmetrics_):
                blocks += page
            blocks.append(self._tail_bytes(encoder, content_type, openmetrics_))
            body = b"".join(blocks)
        self._count_render(content_type)
        plain = self._cache[(content_type, False)] = Rendered(content_type, body, gzipped=False)
        self._built(plain, self.now(), self._generation)
        return plain

    def _gzip_job(self, encoder: Encoder, content_type: str) -> _GzipJob:
        openmetrics_ = _openmetrics_fast(content_type)
        if openmetrics_ is None:
            return _GzipJob([], [], [], 0, whole=self._plain(encoder, content_type).body)
        self._count_render(content_type)
        deflated_headers = self._deflated_headers[openmetrics_]
        pieces: list[Sequence[bytes]] = []
        parts: list[bytes | None] = []
        todo: list[tuple[int, _Group, int, int]] = []
        size = deflate = 0
        for blocks, group, slot in self._pages(openmetrics_):
            if group is None:
                size += len(blocks[0])
                parts.append(deflated_headers[slot])
            else:
                page_size = group.sizes[slot]
                size += page_size
                known = group.deflated[slot]
                if known is None:
                    todo.append((len(parts), group, slot, group.versions[slot]))
                    deflate += page_size
                parts.append(known)
            pieces.append(blocks)
        tail = self._tail_bytes(encoder, content_type, openmetrics_)
        pieces.append((tail,))
        parts.append(None)
        size += len(tail)
        return _GzipJob(pieces, parts, todo, deflate + len(tail) + size // CRC_DISCOUNT)

    def _count_render(self, content_type: str) -> None:
        if content_type not in self._rendered:
            self._rendered.add(content_type)
            self.renders += 1

    def _finish_gzip(
        self, content_type: str, job: _GzipJob, result: bytes, generation: int
    ) -> Rendered:
        for index, group, slot, version in job.todo:
            if group.versions[slot] == version:
                group.deflated[slot] = job.parts[index]
        packed = Rendered(content_type, result, gzipped=True)
        if generation == self._generation == self._store.generation:
            self._cache[(content_type, True)] = packed
        return packed


class _GzipJob:
    """Deflating what is not deflated yet, the CRC of the body, one gzip member: pure bytes
    work on immutable inputs, safe in a thread. ``pieces`` are the body's pieces (each the blocks
    of a header, a page or the tail), ``parts`` their deflated bytes (None: to deflate), ``todo``
    the pages to deflate (part index, group, slot, version: see :meth:`Exposition._finish_gzip`)
    and ``weight`` the work (see :data:`SLICE_WEIGHT`). ``whole`` is a body deflated at once (the
    slow road)."""

    def __init__(
        self,
        pieces: list[Sequence[bytes]],
        parts: list[bytes | None],
        todo: list[tuple[int, _Group, int, int]],
        weight: int,
        whole: bytes | None = None,
    ) -> None:
        self.pieces = pieces
        self.parts = parts
        self.todo = todo
        self.whole = whole
        self._crc, self._size = 0, 0
        self.weight = weight
        """The work of :meth:`run`, in bytes deflated (see :data:`SLICE_WEIGHT`)."""
        self.slice_weight = SLICE_WEIGHT
        """The work :meth:`run_sliced` does between two yields; may change while it runs."""

    def run(self) -> bytes:
        if self.whole is not None:
            return gzip.compress(self.whole, compresslevel=GZIP_LEVEL, mtime=0)
        for _ in self._steps():
            pass
        return self._member()

    async def run_sliced(self) -> bytes:
        """:meth:`run` on the event loop, yielding to it after every :attr:`slice_weight` of
        work."""
        for _ in self._steps():
            await asyncio.sleep(0)
        return self._member()

    def _steps(self) -> Iterator[None]:
        """Joins each piece (the page is not kept), sums its CRC and deflates it when new,
        pausing (yielding) after each slice."""
        weight = 0
        parts = self.parts
        crc, size = 0, 0
        for index, blocks in enumerate(self.pieces):
            piece = blocks[0] if len(blocks) == 1 else b"".join(blocks)
            crc = zlib.crc32(piece, crc)
            size += len(piece)
            weight += len(piece) // CRC_DISCOUNT
            if parts[index] is None:
                parts[index] = deflate_piece(piece)
                weight += len(piece)
            if weight >= self.slice_weight:
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
