"""The rendered ``/metrics`` bytes, made once per change of the store and served from a cache.

prometheus_client renders the registry (the store's collector and the request histogram); the
result is kept per negotiated content type, identity and gzip, until the store's generation moves
(a collection ended, a reload, or a failing target's samples went stale).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.store import Store


@dataclass(frozen=True, slots=True)
class Rendered:
    content_type: str
    body: bytes
    gzipped: bool


class Exposition:
    def __init__(self, registry: CollectorRegistry, store: Store) -> None:
        self._registry = registry
        self._store = store
        self._generation = -1
        self._cache: dict[tuple[str, bool], Rendered] = {}
        self.renders = 0

    def get(self, accept: str, accept_encoding: str) -> Rendered:
        """The exposition for these request headers, rendered only if the store changed."""
        self._store.expire()
        if self._store.generation != self._generation:
            self._cache.clear()
            self._generation = self._store.generation
        encoder, content_type = choose_encoder(accept)
        want_gzip = _accepts_gzip(accept_encoding)
        cached = self._cache.get((content_type, want_gzip))
        if cached is not None:
            return cached
        plain = self._cache.get((content_type, False))
        if plain is None:
            plain = Rendered(content_type, encoder(self._registry), gzipped=False)
            self.renders += 1
            self._cache[(content_type, False)] = plain
        if not want_gzip:
            return plain
        packed = Rendered(content_type, gzip.compress(plain.body, compresslevel=6), gzipped=True)
        self._cache[(content_type, True)] = packed
        return packed


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
