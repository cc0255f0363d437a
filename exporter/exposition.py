"""The ``/metrics`` bytes, per negotiated content type, identity and gzip, rebuilt only from what
changed in the store.

The body is assembled from pieces: for each family (the providers' in their declared order, then
the exporter's per-target ones) its HELP/TYPE header and one *page* per group of
:data:`GROUP_SIZE` consecutive targets (the concatenation of those targets' rendered blocks for
the family, see :meth:`Store._render <exporter.store.Store._render>`), then a small *tail*: the
exporter's global families and every other collector of the registry (the request-duration
histogram), rendered by prometheus_client, and ``# EOF`` for OpenMetrics.

A collection that ends re-renders its target's blocks (in the store); the next scrape re-joins the
pages of that target's group and re-renders the tail, so one new snapshot costs a few pages, not
10,000 samples. Each page is deflated on its own (a sync-flushed piece of deflate stream, see
:func:`exporter.render.deflate_piece`) and kept until the page changes: the gzip body is a gzip
header, the kept deflated pieces, the new ones, a final block and the CRC of the identity body.
When much is to be deflated at once (the first scrape, a reload, a whole cycle's changes) it is done
in a thread (zlib releases the GIL), never on the event loop.

A scrape is served bytes of the store's current generation: built at most once per generation and
content type, or awaited while being built; a generation that moves on during a build makes a new
build for the scrapes that came after it. OpenMetrics escaping schemes that rewrite metric names
(``dots``, ``values``) are rare and take the slow road: prometheus_client renders the registry.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.render import GZIP_LEVEL, deflate_piece, gzip_member
from exporter.store import Store, StoreCollector, TargetState

GROUP_SIZE = 32
"""Targets per page: a page of a family is a few KB to a few tens of KB, about a deflate window."""
THREAD_THRESHOLD = 64 * 1024
"""Bytes to deflate beyond which a gzip build leaves the event loop (the first scrape, a reload,
a scrape after many targets changed); less (a few pages, ~1 ms) is done in place."""

Encoder = Callable[[Collector], bytes]


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
    """One thread for deflating: one build at a time needs no more, and one malloc arena."""
    global _deflater
    if _deflater is None:
        _deflater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exposition-deflate")
    return _deflater


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


class _Tail(Collector):
    """What follows the per-target families: the store's global families, then every collector of
    the registry but the store's (the request histogram), in registration order."""

    def __init__(self, registry: CollectorRegistry, store: Store) -> None:
        self._registry = registry
        self._store = store

    def collect(self) -> Iterator[Metric]:
        yield from self._store.global_families()
        registry = self._registry
        with registry._lock:
            collectors = list(registry._collector_to_names)
        for collector in collectors:
            if not isinstance(collector, StoreCollector):
                yield from collector.collect()


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
        self._builds: dict[str, asyncio.Future[None]] = {}
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
        """As :meth:`get`, but big deflating runs in a thread, and concurrent scrapes of one
        generation share one build."""
        encoder, content_type, want_gzip = self._negotiate(accept, accept_encoding)
        while True:
            self._refresh()
            cached = self._cache.get((content_type, want_gzip))
            if cached is not None:
                return cached
            if not want_gzip:
                return self._plain(encoder, content_type)
            build = self._builds.get(content_type)
            if build is None:
                return await self._build_gzip(encoder, content_type)
            # One is in flight: when it is done, its result is cached if it is still current;
            # if the store moved on meanwhile (or it failed), the loop builds anew.
            await asyncio.wait([build])

    async def _build_gzip(self, encoder: Encoder, content_type: str) -> Rendered:
        loop = asyncio.get_running_loop()
        generation = self._generation
        done: asyncio.Future[None] = loop.create_future()
        self._builds[content_type] = done
        try:
            job = self._gzip_job(encoder, content_type)
            if job.weight > THREAD_THRESHOLD:
                result = await loop.run_in_executor(_deflate_thread(), job.run)
            else:
                result = job.run()
            return self._finish_gzip(content_type, job, result, generation)
        finally:
            done.set_result(None)
            if self._builds.get(content_type) is done:
                del self._builds[content_type]

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

    def _tail_bytes(self, encoder: Encoder, content_type: str) -> bytes:
        tail = self._tails.get(content_type)
        if tail is None:
            tail = self._tails[content_type] = encoder(self._tail)
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
                [piece for piece, _, _ in pieces] + [self._tail_bytes(encoder, content_type)]
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
        tail = self._tail_bytes(encoder, content_type)
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
        size = len(whole) if whole is not None else sum(len(piece) for piece in pieces)
        # Deflating runs at some 100 MB/s here, a CRC at 4 GB/s: what a build weighs is what it
        # deflates (a thread hop costs more than a CRC, and delays the scrapes waiting on it).
        self.weight = size if whole is not None else sum(len(p) for _, p, _, _ in todo)

    def run(self) -> bytes:
        if self.whole is not None:
            return gzip.compress(self.whole, compresslevel=GZIP_LEVEL, mtime=0)
        parts = self.parts
        for index, piece, _, _ in self.todo:
            parts[index] = deflate_piece(piece)
        crc, size = 0, 0
        for piece in self.pieces:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
        return gzip_member([part for part in parts if part], crc, size)


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
