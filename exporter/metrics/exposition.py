"""The ``/metrics`` bytes: Prometheus text or OpenMetrics, identity or gzip, built at most once per
change and reused until the next change.

The exposition follows the store: when a target's collection is recorded, it re-renders that
target's blocks (:mod:`exporter.metrics.blocks`), and nothing else; when a failing target's samples
go stale, it re-renders that target at the next scrape. Both count a *generation*.

A body is, for each family rendered per target (the providers' in their declared order, then the
exporter's own per-target ones), its HELP/TYPE header and every target's block of that family, then
the rest of the registry (the exporter's global families and the provider request histogram) as
prometheus_client renders it, and ``# EOF`` for OpenMetrics.

The identity body is joined on the event loop. The gzip body is compressed from it in a worker
thread (zlib releases the GIL): a scrape waits for at most one build, the one in flight if there is
one, else its own. A scrape never waits for a provider.
"""

from __future__ import annotations

import asyncio
import functools
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from exporter.clock import Clock
from exporter.collect.targets import Target
from exporter.metrics.blocks import NOTHING, TargetBlocks, TargetRenderer
from exporter.metrics.store import Store
from exporter.providers.base import MetricSpec

GZIP_LEVEL = 3
"""zlib's level for the gzip body: about half the time of its default level 6, for a body a tenth
larger (docs/performance.md has the figures)."""
EOF = b"# EOF\n"
FINAL_EMPTY_BLOCK = b"\x03\x00"
"""A final deflate block with nothing in it (fixed codes, end of block alone), byte-aligned."""
LIVE_MAX_AGE = 1.0
"""Seconds for which later scrapes reuse the live families that a scrape rendered."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """One answer's body and the headers that describe it."""

    content_type: str
    body: bytes
    gzipped: bool
    generation: int
    """The exposition's generation the body shows."""
    headers: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Content-Type": self.content_type, "Vary": "Accept, Accept-Encoding"}
        if self.gzipped:
            headers["Content-Encoding"] = "gzip"
        object.__setattr__(self, "headers", headers)


@functools.lru_cache(maxsize=256)
def wants_openmetrics(accept: str) -> bool:
    """Whether prometheus_client's negotiation picks OpenMetrics for this ``Accept`` header. Only
    the format is taken from it: every name here is a legacy one, which every escaping scheme the
    header may ask for leaves as it is, so OpenMetrics is served as 1.0.0 with underscores.
    Remembered for the most recent headers (a scraper sends the same one every time; junk
    headers only push each other out)."""
    return choose_encoder(accept)[1].startswith("application/openmetrics-text")


def accepts_gzip(accept_encoding: str) -> bool:
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


def gzip_body(body: bytes | memoryview, level: int = GZIP_LEVEL) -> bytes:
    """``body`` as one gzip member with no name and no time (the same bytes every time), made so
    that :func:`gzip_append` can add to it: the deflate stream is flushed to a byte boundary and
    ended with :data:`FINAL_EMPTY_BLOCK`, then the trailer."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = packer.compress(body) + packer.flush(zlib.Z_SYNC_FLUSH)
    trailer = packer.flush()[-8:]  # CRC-32 and size of body, after zlib's own final block
    return head + FINAL_EMPTY_BLOCK + trailer


def gzip_append(member: bytes, tail: bytes, level: int = GZIP_LEVEL) -> bytes:
    """A gzip member of ``member``'s content (made by :func:`gzip_body`) followed by ``tail``,
    without compressing that content again: the empty final block and the trailer are replaced
    by ``tail``'s own deflate blocks (which refer to nothing before them) and the trailer of the
    whole."""
    crc, size = struct.unpack("<II", member[-8:])
    packer = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(tail) + packer.flush()
    trailer = struct.pack("<II", zlib.crc32(tail, crc), (size + len(tail)) & 0xFFFFFFFF)
    return b"".join((memoryview(member)[: -len(FINAL_EMPTY_BLOCK) - 8], deflated, trailer))


@dataclass(frozen=True, slots=True)
class Answer:
    """What a scrape is sent: ``parts``, one after the other, make its body."""

    rendered: Rendered
    """The cached body it is made from (its format, encoding, headers and generation)."""
    parts: tuple[bytes | memoryview, ...]

    @property
    def headers(self) -> Mapping[str, str]:
        return self.rendered.headers

    @property
    def content_type(self) -> str:
        return self.rendered.content_type

    @property
    def gzipped(self) -> bool:
        return self.rendered.gzipped

    @property
    def generation(self) -> int:
        return self.rendered.generation

    @property
    def body(self) -> bytes:
        """The body in one piece (joined, when it has several parts)."""
        first = self.parts[0]
        if len(self.parts) == 1 and isinstance(first, bytes):
            return first
        return b"".join(self.parts)


class LiveFamilies:
    """Families rendered at scrape time, not once per change of the store: the process's own
    (``process_*``, ``python_gc_*``), whose values move by the second. A scrape renders them and
    the scrapes of the next ``max_age`` seconds reuse them, and the answers made with them: the
    cached body, then these families (before ``# EOF``; for gzip, :func:`gzip_append`)."""

    def __init__(
        self, registry: CollectorRegistry, clock: Clock, max_age: float = LIVE_MAX_AGE
    ) -> None:
        self._registry = registry
        self._clock = clock
        self.max_age = max_age
        self._rendered_at = -math.inf
        self._texts: dict[bool, bytes] = {}
        self._answers: dict[tuple[bool, bool], Answer] = {}

    def _expire(self) -> None:
        """Forget the families' texts and the answers made with them once ``max_age`` old."""
        now = self._clock.time()
        if not 0 <= now - self._rendered_at < self.max_age:
            self._texts.clear()
            self._answers.clear()
            self._rendered_at = now

    def text(self, openmetrics: bool) -> bytes:
        """The families in this format, as rendered in the last ``max_age`` seconds (now, if
        they were not); OpenMetrics's with ``# EOF``."""
        self._expire()
        return self._text(openmetrics)

    def _text(self, openmetrics: bool) -> bytes:
        text = self._texts.get(openmetrics)
        if text is None:
            if openmetrics:
                text = openmetrics_latest(self._registry)  # type: ignore[no-untyped-call]
            else:
                text = text_latest(self._registry)
            self._texts[openmetrics] = text
        return text

    def answer(self, rendered: Rendered, openmetrics: bool) -> Answer:
        """``rendered`` followed by the families (before ``# EOF``). An OpenMetrics gzip body
        comes without its ``# EOF``: the families' text brings it."""
        self._expire()
        key = (openmetrics, rendered.gzipped)
        answer = self._answers.get(key)
        if answer is not None and answer.rendered is rendered:
            return answer
        tail = self._text(openmetrics)
        parts: tuple[bytes | memoryview, ...]
        if rendered.gzipped:
            parts = (gzip_append(rendered.body, tail),)
        elif openmetrics:
            parts = (memoryview(rendered.body)[: -len(EOF)], tail)
        else:
            parts = (rendered.body, tail)
        answer = Answer(rendered, parts)
        self._answers[key] = answer
        return answer


class Exposition:
    """The bytes of the store's targets (and of the rest of ``registry``) per format and
    encoding. ``metrics`` are the providers' metric descriptions, by provider name."""

    live: LiveFamilies | None = None
    """Families added to every answer at scrape time (see :class:`LiveFamilies`)."""

    def __init__(
        self,
        store: Store,
        registry: CollectorRegistry,
        metrics: Mapping[str, Sequence[MetricSpec]],
        clock: Clock,
    ) -> None:
        self._targets = store.targets
        self._registry = registry
        self._clock = clock
        self._renderer = TargetRenderer(metrics)
        families = self._renderer.families
        self._headers = {om: [family.header(om) for family in families] for om in (False, True)}
        self._rendered: dict[Target, TargetBlocks] = {}
        self._expiring: dict[Target, float] = {}
        """Targets whose served series go stale later, and when the first of them does."""
        self._generation = 0
        self._identity: dict[bool, Rendered] = {}
        self._gzipped: dict[bool, Rendered] = {}
        self._building: dict[bool, asyncio.Future[Rendered]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._follow_table(clock.time())
        store.subscribe(self._store_changed)

    def _store_changed(self, target: Target | None) -> None:
        """A new generation: the recorded target re-rendered, or the table followed."""
        self._generation += 1
        if target is None:
            self._follow_table(self._clock.time())
        else:
            self._render(target, self._clock.time())

    def _render(self, target: Target, now: float) -> TargetBlocks:
        rendered = self._renderer.render(target, now, self._rendered.get(target, NOTHING))
        self._rendered[target] = rendered
        if rendered.expires == math.inf:
            self._expiring.pop(target, None)
        else:
            self._expiring[target] = rendered.expires
        return rendered

    def _follow_table(self, now: float) -> None:
        """Render the table's targets that have no blocks yet; forget those it no longer holds."""
        known = self._rendered
        self._rendered = {
            target: known.get(target) or self._render(target, now) for target in self._targets
        }
        self._expiring = {t: at for t, at in self._expiring.items() if t in self._rendered}

    def _expire(self) -> None:
        """Re-render the targets whose served series have gone stale since the last look: one
        generation for all of them."""
        if not self._expiring:
            return
        now = self._clock.time()
        due = [target for target, expires in self._expiring.items() if expires <= now]
        if not due:
            return
        for target in due:
            self._render(target, now)
        self._generation += 1

    def body(self, openmetrics: bool) -> Rendered:
        """The identity body as of now (built if anything changed since the last one)."""
        self._expire()
        cached = self._identity.get(openmetrics)
        if cached is not None and cached.generation == self._generation:
            return cached
        content_type = OPENMETRICS_TYPE if openmetrics else CONTENT_TYPE_PLAIN_0_0_4
        rendered = Rendered(content_type, self._join(openmetrics), False, self._generation)
        self._identity[openmetrics] = rendered
        return rendered

    async def get(self, accept: str, accept_encoding: str) -> Answer:
        """The answer for a scrape with these request headers."""
        openmetrics = wants_openmetrics(accept)
        rendered = self.body(openmetrics)
        if accepts_gzip(accept_encoding):
            cached = self._gzipped.get(openmetrics)
            if cached is not None and cached.generation == rendered.generation:
                rendered = cached
            else:
                rendered = await self._gzip(rendered, openmetrics)
        if self.live is None:
            return Answer(rendered, (rendered.body,))
        return self.live.answer(rendered, openmetrics)

    async def _gzip(self, identity: Rendered, openmetrics: bool) -> Rendered:
        """The gzip body of ``identity``, not cached yet: in the making, or made now. With live
        families, an OpenMetrics one leaves out ``# EOF``, which comes after them."""
        building = self._building.get(openmetrics)
        if building is None:
            building = asyncio.ensure_future(self._compress(identity, openmetrics))
            self._building[openmetrics] = building
        # Shielded: a scrape that goes away does not cancel the build others wait for.
        return await asyncio.shield(building)

    async def _compress(self, identity: Rendered, openmetrics: bool) -> Rendered:
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="exposition-gzip")
            source: bytes | memoryview = identity.body
            if openmetrics and self.live is not None:
                source = memoryview(source)[: -len(EOF)]
            body = await asyncio.get_running_loop().run_in_executor(self._pool, gzip_body, source)
            packed = Rendered(identity.content_type, body, True, identity.generation)
            cached = self._gzipped.get(openmetrics)
            if cached is None or cached.generation < packed.generation:
                self._gzipped[openmetrics] = packed
            return packed
        finally:
            del self._building[openmetrics]

    def _join(self, openmetrics: bool) -> bytes:
        now = self._clock.time()
        rendered = self._rendered
        shown = [rendered.get(target) or self._render(target, now) for target in self._targets]
        provider_families = self._renderer.provider_family_count
        parts: list[bytes] = []
        for slot, header in enumerate(self._headers[openmetrics]):
            blocks = [one.blocks[slot] for one in shown]
            if slot < provider_families and not any(blocks):
                continue  # a provider family with no samples is not shown
            parts.append(header)
            parts += blocks
        if openmetrics:
            tail = openmetrics_latest(self._registry)  # type: ignore[no-untyped-call]
            parts.append(tail[: -len(EOF)] if tail.endswith(EOF) else tail)
            parts.append(EOF)
        else:
            parts.append(text_latest(self._registry))
        return b"".join(parts)

    async def aclose(self) -> None:
        """Wait for the builds in flight and stop the worker thread (the app's shutdown)."""
        if self._building:
            await asyncio.gather(*self._building.values(), return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
