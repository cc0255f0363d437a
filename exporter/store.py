"""Snapshots of collections, what each target currently shows, and the metrics built from them.

Only the scheduler writes here (``record``); only the exposition reads (``collect``). A scrape never
reaches a provider: it renders what the store holds.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.clock import Clock
from exporter.errors import Reason
from exporter.providers import registry
from exporter.providers.base import MetricSpec, Sample, TargetConfig

log = structlog.get_logger("exporter.store")

SeriesKey = tuple[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The outcome of one collection of one target. ``samples`` are fresh: every sample of the
    target when ``ok``, the parts that worked when not."""

    target: str
    provider: str
    ok: bool
    samples: tuple[Sample, ...]
    started_at: float
    duration: float
    reason: Reason | None = None
    error: str | None = None


@dataclass
class TargetState:
    config: TargetConfig
    latest: Snapshot | None = None
    last_success: float | None = None
    # Each series with its value and when a collection last delivered it.
    series: dict[SeriesKey, tuple[float, float]] = field(default_factory=dict)
    errors: dict[Reason, int] = field(default_factory=lambda: dict.fromkeys(Reason, 0))

    def visible(self, now: float) -> Iterator[tuple[SeriesKey, float]]:
        """The series to serve: all of them after a success; after a failure, those delivered
        less than ``stale_after`` ago."""
        if self.latest is None or self.latest.ok:
            for key, (value, _) in self.series.items():
                yield key, value
            return
        horizon = now - self.config.stale_after
        for key, (value, seen_at) in self.series.items():
            if seen_at > horizon:
                yield key, value

    def expiry(self) -> float:
        """When the next served series goes stale (``inf`` if none will)."""
        if self.latest is None or self.latest.ok or not self.series:
            return math.inf
        return min(seen for _, seen in self.series.values()) + self.config.stale_after


class Store:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._targets: dict[str, TargetState] = {}
        self.generation = 0
        self._next_expiry = math.inf
        self.config_reload_successful = True
        self.shard = (0, 1)
        self.skipped_targets = 0
        self._specs: dict[str, dict[str, MetricSpec]] = {
            name: {spec.name: spec for spec in provider.metrics}
            for name, provider in registry().items()
        }

    def set_targets(self, configs: Sequence[TargetConfig]) -> None:
        """Track exactly these targets; kept ones keep their state unless their config changed."""
        fresh: dict[str, TargetState] = {}
        for config in configs:
            state = self._targets.get(config.name)
            fresh[config.name] = (
                state if state is not None and state.config == config else TargetState(config)
            )
        self._targets = fresh
        self._changed()

    @property
    def targets(self) -> Sequence[TargetState]:
        return list(self._targets.values())

    def ready(self) -> bool:
        """Every target has finished its first collection attempt."""
        return all(state.latest is not None for state in self._targets.values())

    def record(self, snapshot: Snapshot) -> None:
        state = self._targets.get(snapshot.target)
        if state is None:  # removed by a reload while it was being collected
            return
        specs = self._specs.get(snapshot.provider, {})
        finished = snapshot.started_at + snapshot.duration
        delivered: dict[SeriesKey, tuple[float, float]] = {}
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
            delivered[(sample.metric, sample.labels)] = (sample.value, finished)
        if snapshot.ok:
            state.series = delivered
            state.last_success = finished
        else:
            state.series = {**state.series, **delivered}
            if snapshot.reason is not None:
                state.errors[snapshot.reason] += 1
        state.latest = snapshot
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._next_expiry = min(
            (state.expiry() for state in self._targets.values()), default=math.inf
        )

    def expire(self) -> None:
        """Count a generation when a failing target's samples have gone stale since the last one."""
        if self._clock.time() >= self._next_expiry:
            self._changed()

    # -- metrics -------------------------------------------------------------------------------

    def provider_families(self) -> Iterator[Metric]:
        now = self._clock.time()
        families: dict[str, GaugeMetricFamily] = {}
        for provider_name in registry():
            for spec in self._specs[provider_name].values():
                families[spec.name] = GaugeMetricFamily(
                    spec.name, spec.help, labels=("account", *spec.labels)
                )
        used: dict[str, GaugeMetricFamily] = {}
        for state in self._targets.values():
            account = state.config.name
            for (metric, labels), value in state.visible(now):
                family = families[metric]
                family.add_metric((account, *labels), value)
                used[metric] = family
        # Families in the providers' declared order, only those with samples.
        return (family for name, family in families.items() if name in used)

    def self_families(self) -> Iterator[Metric]:
        targets = list(self._targets.values())
        success = GaugeMetricFamily(
            "messaging_exporter_collect_success",
            "1 if the last collection of this target succeeded, else 0.",
            labels=("provider", "account"),
        )
        duration = GaugeMetricFamily(
            "messaging_exporter_collect_duration_seconds",
            "Wall time of the last collection of this target.",
            labels=("provider", "account"),
        )
        last_success = GaugeMetricFamily(
            "messaging_exporter_last_success_timestamp_seconds",
            "When this target last succeeded (Unix seconds); absent until its first success.",
            labels=("provider", "account"),
        )
        errors = CounterMetricFamily(
            "messaging_exporter_collect_errors",
            "Failed collections of this target, by reason.",
            labels=("provider", "account", "reason"),
        )
        for state in targets:
            key = (state.config.provider, state.config.name)
            if state.latest is not None:
                success.add_metric(key, 1.0 if state.latest.ok else 0.0)
                duration.add_metric(key, state.latest.duration)
            if state.last_success is not None:
                last_success.add_metric(key, state.last_success)
            for reason, count in state.errors.items():
                errors.add_metric((*key, str(reason)), float(count))
        build = GaugeMetricFamily(
            "messaging_exporter_build_info",
            "Always 1; the exporter's version and Python version.",
            labels=("version", "python_version"),
        )
        build.add_metric((__version__, platform.python_version()), 1.0)
        reload_ok = GaugeMetricFamily(
            "messaging_exporter_config_last_reload_successful",
            "1 if the last config (re)load worked, else 0.",
            value=1.0 if self.config_reload_successful else 0.0,
        )
        shard = GaugeMetricFamily(
            "messaging_exporter_shard_info",
            "Always 1; which share of the targets this replica collects.",
            labels=("index", "count"),
        )
        shard.add_metric((str(self.shard[0]), str(self.shard[1])), 1.0)
        assigned = GaugeMetricFamily(
            "messaging_exporter_targets",
            "Targets this replica collects (assigned) and leaves to other shards (skipped).",
            labels=("state",),
        )
        assigned.add_metric(("assigned",), float(len(targets)))
        assigned.add_metric(("skipped",), float(self.skipped_targets))
        yield from (success, duration, last_success, errors, build, reload_ok, shard, assigned)


class StoreCollector(Collector):
    """prometheus_client's view of the store: fresh families from the current snapshots on every
    render, so series that are gone are gone."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not trigger a collection

    def collect(self) -> Iterable[Metric]:
        yield from self._store.provider_families()
        yield from self._store.self_families()
