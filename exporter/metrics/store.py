"""What each target's collections produced: its series and their values, when each was last
delivered, its last outcome, its errors by reason. Facts only; their bytes are the exposition's.

Only the scheduler's snapshots write here (:meth:`Store.record`), into the states of the service's
target table. Every change counts a :attr:`Store.generation` and is announced to the subscribers,
with the target whose collection was recorded: the exposition re-renders that target then. A scrape
never reaches a provider: it serves what the store holds. The store is handed the providers' metric
descriptions; it calls nothing upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import structlog

from exporter.clock import Clock
from exporter.collect.snapshot import Snapshot
from exporter.collect.targets import SeriesKey, Target, TargetState, TargetTable
from exporter.providers.base import MetricSpec

log = structlog.get_logger("exporter.metrics.store")

Subscriber = Callable[[Target | None], None]
"""Called after every change: with the target whose collection was recorded, or None (the targets
set anew, a config reload)."""


class Store:
    """The facts of every target of ``targets``. ``metrics`` are the providers' metric
    descriptions, by provider name: a sample that matches none of its provider's is dropped."""

    def __init__(
        self, clock: Clock, targets: TargetTable, metrics: Mapping[str, Sequence[MetricSpec]]
    ) -> None:
        self._clock = clock
        self._targets = targets
        self.generation = 0
        """Counts the changes of the store."""
        self._subscribers: list[Subscriber] = []
        self.config_reload_successful = True
        self.last_reload: float | None = None
        """When the config was last (re)loaded, Unix seconds."""
        self.last_reload_error: str | None = None
        """Why the last (re)load failed, as it was logged; None after a success."""
        self.shard = (0, 1)
        self.skipped_targets = 0
        self._specs: dict[str, dict[str, MetricSpec]] = {
            name: {spec.name: spec for spec in specs} for name, specs in metrics.items()
        }

    @property
    def targets(self) -> TargetTable:
        return self._targets

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` after every change of :attr:`generation`; returns the call that
        ends the subscription."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def ready(self) -> bool:
        """Every enabled target has finished its first collection attempt."""
        return all(
            target.state.latest is not None or not target.config.enabled for target in self._targets
        )

    def record(self, snapshot: Snapshot) -> None:
        """A collection ended: its target's series, times and outcome."""
        target = self._targets.get(snapshot.target)
        if target is None or not target.config.enabled:
            return  # removed or disabled by a reload while it was being collected
        state = target.state
        delivered = self._delivered(snapshot, state)
        finished = snapshot.started_at + snapshot.duration
        if snapshot.ok:
            state.series = delivered
            state.seen = {}
            state.last_success = finished
            state.consecutive_failures = 0
        else:
            state.consecutive_failures += 1
            seen = state.seen
            if state.latest is None or state.latest.ok:
                seen = dict.fromkeys(state.series, state.last_success or 0.0)
            series = {**state.series, **delivered}
            seen = {**seen, **dict.fromkeys(delivered, finished)}
            if delivered:
                # Partial samples: a series gone stale is never served again (the next success
                # replaces them all), and new ones each run would pile up over a long outage.
                horizon = finished - target.config.stale_after
                series = {key: value for key, value in series.items() if seen[key] > horizon}
                seen = {key: seen[key] for key in series}
            state.series, state.seen = series, seen
            if snapshot.reason is not None:
                state.errors[snapshot.reason] = state.errors.get(snapshot.reason, 0) + 1
        state.latest = replace(snapshot, samples=()) if snapshot.samples else snapshot
        self._changed(target)

    def _delivered(self, snapshot: Snapshot, state: TargetState) -> dict[SeriesKey, float]:
        """The snapshot's samples by series; a series keeps the key object it was first stored
        with (one key per series for as long as it lives)."""
        specs = self._specs.get(snapshot.provider, {})
        delivered: dict[SeriesKey, float] = {}
        known = {key: key for key in state.series} if snapshot.samples else {}
        for sample in snapshot.samples:
            spec = specs.get(sample.metric)
            if spec is None or len(spec.labels) != len(sample.labels):
                log.error(
                    "provider sample does not match its metric spec; dropped",
                    provider=snapshot.provider,
                    account=snapshot.target,
                    metric=sample.metric,
                )
                continue
            key = (sample.metric, sample.labels)
            delivered[known.get(key, key)] = sample.value
        return delivered

    def targets_changed(self) -> None:
        """The table was set to another config's targets."""
        self._changed(None)

    def reloaded(self, ok: bool, error: str | None = None) -> None:
        """A config (re)load ended, well or not (then ``error`` says why)."""
        self.config_reload_successful = ok
        self.last_reload_error = None if ok else error
        self.last_reload = self._clock.time()
        self._changed(None)

    def _changed(self, target: Target | None) -> None:
        self.generation += 1
        for subscriber in list(self._subscribers):
            subscriber(target)
