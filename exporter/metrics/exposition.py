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


def gzip_body(body: bytes, level: int = GZIP_LEVEL) -> bytes:
    """``body`` as one gzip member with no name and no time (the same bytes every time)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


class Exposition:
    """The bytes of the store's targets (and of the rest of ``registry``) per format and
    encoding. ``metrics`` are the providers' metric descriptions, by provider name."""

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

    async def get(self, accept: str, accept_encoding: str) -> Rendered:
        """The answer for a scrape with these request headers."""
        openmetrics = wants_openmetrics(accept)
        identity = self.body(openmetrics)
        if not accepts_gzip(accept_encoding):
            return identity
        cached = self._gzipped.get(openmetrics)
        if cached is not None and cached.generation == identity.generation:
            return cached
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
            body = await asyncio.get_running_loop().run_in_executor(
                self._pool, gzip_body, identity.body
            )
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
