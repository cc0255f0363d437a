"""The targets this replica collects, in one table: for each, its config, its runner (what collects
it, while a collection loop runs) and its state (what its collections produced).

The service owns the table and sets it to each config's targets (:meth:`TargetTable.set`, the one
place that decides whether a target changed); the scheduler gives each target its runner, the store
records each collection into its state, and the exposition and the status page read it."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from exporter.collect.snapshot import Snapshot
from exporter.providers.base import Provider
from exporter.providers.errors import Reason
from exporter.schema.target import TargetConfig

SeriesKey = tuple[str, tuple[str, ...]]
"""A provider series of one target: its metric name and its label values besides ``account``."""
TargetStateName = Literal["up", "down", "stale", "pending", "disabled"]
"""``up``: the last collection succeeded. ``down``: it failed, and some of the target's series are
still served (younger than ``stale_after``). ``stale``: it failed, and none of its series are served
any more. ``pending``: not collected yet. ``disabled``: ``enabled: false`` in the config, never
collected."""


class Runner(Protocol):
    """What collects one target (the scheduler's ``TargetRunner``)."""

    @property
    def provider(self) -> Provider[Any]: ...

    async def run_once(self) -> Snapshot: ...

    async def run_forever(self) -> None: ...


@dataclass(slots=True)
class TargetState:
    """What the target's collections produced, as the store records it."""

    latest: Snapshot | None = None
    """The last collection's outcome, without its samples (they live on in ``series``)."""
    last_success: float | None = None
    # Each series' value, and when a collection last delivered it: after a success, ``seen`` is
    # empty (every series was delivered at ``last_success``); after a failure it has every key of
    # ``series``. Floats and keys that live as long as the series: a collection adds no object
    # for the garbage collector to scan again and again.
    series: dict[SeriesKey, float] = field(default_factory=dict)
    seen: dict[SeriesKey, float] = field(default_factory=dict)
    errors: dict[Reason, int] = field(default_factory=dict)
    """Failed collections by reason, only those that happened (a missing reason counts 0)."""
    consecutive_failures: int = 0
    next_attempt: float | None = None
    """When the next collection is due, Unix seconds (wall clock); None when not known."""

    def visible(
        self, now: float, stale_after: float
    ) -> tuple[Collection[tuple[SeriesKey, float]], float]:
        """The staleness rule: the series to serve at ``now`` (all of them after a success; after a
        failure, those delivered less than ``stale_after`` ago), and when the next of those goes
        stale (``inf`` if none will)."""
        if self.latest is None or self.latest.ok:
            return self.series.items(), math.inf
        horizon = now - stale_after
        seen = self.seen
        fresh = [(key, value) for key, value in self.series.items() if seen[key] > horizon]
        if not fresh:
            return fresh, math.inf
        expires = min(seen[key] for key, _ in fresh) + stale_after
        # Never "due" already: a boundary rounding the other way must not re-render forever.
        return fresh, max(expires, math.nextafter(now, math.inf))

    def status(self, now: float, stale_after: float) -> tuple[TargetStateName, int]:
        """The target's state at ``now`` and how many of its provider series are served then:
        ``pending`` before the first collection, ``up`` after a success; after a failure
        ``stale`` when none of its series are served any more, else ``down``."""
        if self.latest is None:
            return "pending", 0
        served = len(self.visible(now, stale_after)[0])
        if self.latest.ok:
            return "up", served
        return ("stale" if self.series and not served else "down"), served


@dataclass(eq=False, slots=True)
class Target:
    """One target: a record lives as long as its config is unchanged (another config of the same
    name is another record, with a fresh state)."""

    config: TargetConfig
    state: TargetState = field(default_factory=TargetState)
    runner: Runner | None = None
    """Given by the scheduler of the collection loop (or of ``--once``), for as long as its
    session is open; None otherwise."""

    @property
    def name(self) -> str:
        return self.config.name

    def status(self, now: float) -> tuple[TargetStateName, int]:
        """The target's state at ``now`` and how many of its provider series are served then:
        ``disabled`` (and none) when its config says ``enabled: false``, else
        :meth:`TargetState.status`."""
        if not self.config.enabled:
            return "disabled", 0
        return self.state.status(now, self.config.stale_after)


@dataclass(frozen=True, slots=True)
class TableChange:
    """What :meth:`TargetTable.set` changed."""

    added: tuple[Target, ...] = ()
    removed: tuple[Target, ...] = ()
    replaced: tuple[tuple[Target, Target], ...] = ()
    """(old, new) records of the targets whose config changed."""


class TargetTable:
    """The targets by name, in config order."""

    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}

    def set(self, configs: Sequence[TargetConfig]) -> TableChange:
        """Hold exactly these targets, in this order. A target whose config is unchanged keeps its
        record (its state and its runner); one whose config changed gets a new record."""
        old = self._targets
        fresh: dict[str, Target] = {}
        added: list[Target] = []
        replaced: list[tuple[Target, Target]] = []
        for config in configs:
            kept = old.get(config.name)
            if kept is not None and kept.config == config:
                fresh[config.name] = kept
                continue
            target = fresh[config.name] = Target(config)
            if kept is None:
                added.append(target)
            else:
                replaced.append((kept, target))
        removed = tuple(target for name, target in old.items() if name not in fresh)
        self._targets = fresh
        return TableChange(tuple(added), removed, tuple(replaced))

    def get(self, name: str) -> Target | None:
        return self._targets.get(name)

    def __iter__(self) -> Iterator[Target]:
        return iter(self._targets.values())

    def __len__(self) -> int:
        return len(self._targets)
