"""Which targets this replica collects: rendezvous (highest-random-weight) hashing of the target
name over ``count`` shards. Growing from N to N+1 shards moves only the targets the new shard wins,
about 1/(N+1) of them; every target has exactly one shard."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

from exporter.config import Sharding


def _weight(name: str, shard: int) -> int:
    digest = hashlib.sha256(f"{shard}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(name: str, count: int) -> int:
    """The shard that owns target ``name`` among ``count``."""
    return max(range(count), key=lambda shard: _weight(name, shard))


T = TypeVar("T")


def split(items: Sequence[T], names: Sequence[str], sharding: Sharding) -> tuple[list[T], int]:
    """The items whose name this shard owns, and how many it leaves to others."""
    if sharding.count == 1:
        return list(items), 0
    mine = [
        item
        for item, name in zip(items, names, strict=True)
        if shard_of(name, sharding.count) == sharding.index
    ]
    return mine, len(items) - len(mine)


_ORDINAL = re.compile(r"-(\d+)$")


def ordinal_from_hostname(hostname: str) -> int:
    """A StatefulSet pod's ordinal: ``exporter-2`` → 2."""
    match = _ORDINAL.search(hostname)
    if match is None:
        raise ValueError(f"hostname {hostname!r} does not end in -<ordinal>")
    return int(match.group(1))
