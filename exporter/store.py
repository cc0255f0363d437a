"""Snapshots of collections, what each target currently shows, and the metrics built from them.

Only the scheduler writes here (``record``); only the exposition reads. A scrape never reaches a
provider: it serves what the store holds.

Two views of the same metrics: :class:`StoreCollector` gives prometheus_client fresh families on
every collect (``--once`` and the reference the tests compare with); for ``/metrics`` each target
keeps its samples rendered per family (:attr:`TargetState.blocks`), re-rendered when a collection of
that target ends or when its failing samples go stale, so a new snapshot of one target re-renders
that target only (see ``exporter/exposition.py``).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.clock import Clock
from exporter.errors import Reason
from exporter.providers import registry
from exporter.providers.base import MetricSpec, Sample, TargetConfig
from exporter.render import FamilyFormat, format_value

log = structlog.get_logger("exporter.store")

SeriesKey = tuple[str, tuple[str, ...]]

SUCCESS = FamilyFormat(
    "messaging_exporter_collect_success",
    "gauge",
    "1 if the last collection of this target succeeded, else 0.",
    ("provider", "account"),
)
DURATION = FamilyFormat(
    "messaging_exporter_collect_duration_seconds",
    "gauge",
    "Wall time of the last collection of this target.",
    ("provider", "account"),
)
LAST_SUCCESS = FamilyFormat(
    "messaging_exporter_last_success_timestamp_seconds",
    "gauge",
    "When this target last succeeded (Unix seconds); absent until its first success.",
    ("provider", "account"),
)
ERRORS = FamilyFormat(
    "messaging_exporter_collect_errors",
    "counter",
    "Failed collections of this target, by reason.",
    ("provider", "account", "reason"),
)
INTERVAL = FamilyFormat(
    "messaging_exporter_collect_interval_seconds",
    "gauge",
    "How often this target is collected (its configured interval), for alerts on stale data.",
    ("provider", "account"),
)
TARGET_SELF_FAMILIES = (SUCCESS, DURATION, LAST_SUCCESS, INTERVAL, ERRORS)
"""The exporter's own families with a series per target, after the provider families."""


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
    """The last collection's outcome, without its samples (they live on in ``series``)."""
    last_success: float | None = None
    # Each series' value, and when a collection last delivered it. Floats and keys that live as
    # long as the series (see ``prefixes``): a collection adds no object for the garbage
    # collector to scan again and again.
    series: dict[SeriesKey, float] = field(default_factory=dict)
    seen: dict[SeriesKey, float] = field(default_factory=dict)
    errors: dict[Reason, int] = field(default_factory=lambda: dict.fromkeys(Reason, 0))
    # The rendered samples of this target, one block per family of ``Store.families``.
    blocks: tuple[bytes, ...] = ()
    # When the visible series next change by time alone (a failing target's samples go stale).
    expires: float = math.inf
    # Each visible series' family slot, line prefix and key (the one key object kept while the
    # series lives).
    prefixes: dict[SeriesKey, tuple[int, str, SeriesKey]] = field(default_factory=dict)
    # The line prefixes of its success, duration, last success and (per reason) errors series.
    self_prefixes: tuple[str, ...] = ()

    def visible(self, now: float) -> Iterator[tuple[SeriesKey, float]]:
        """The series to serve: all of them after a success; after a failure, those delivered
        less than ``stale_after`` ago."""
        if self.latest is None or self.latest.ok:
            yield from self.series.items()
            return
        horizon = now - self.config.stale_after
        seen = self.seen
        for key, value in self.series.items():
            if seen[key] > horizon:
                yield key, value

    def expiry(self, now: float) -> float:
        """When the next served series goes stale, after ``now`` (``inf`` if none will)."""
        if self.latest is None or self.latest.ok:
            return math.inf
        stale_after = self.config.stale_after
        horizon = now - stale_after
        return min(
            (seen + stale_after for seen in self.seen.values() if seen > horizon),
            default=math.inf,
        )


class Store:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._targets: dict[str, TargetState] = {}
        self.generation = 0
        self.on_change: Callable[[], None] | None = None
        """Called after every change of :attr:`generation` (the exposition schedules a build)."""
        self.config_reload_successful = True
        self.epoch = 0
        """Counts changes no scrape may miss, however recent the bytes it could reuse: the outcome
        of a config reload (an operator waits for it). Each is a generation too."""
        self.shard = (0, 1)
        self.skipped_targets = 0
        self._specs: dict[str, dict[str, MetricSpec]] = {
            name: {spec.name: spec for spec in provider.metrics}
            for name, provider in registry().items()
        }
        provider_families: dict[str, FamilyFormat] = {}
        for specs in self._specs.values():
            for spec in specs.values():
                provider_families[spec.name] = FamilyFormat(
                    spec.name, "gauge", spec.help, ("account", *spec.labels)
                )
        self.families: tuple[FamilyFormat, ...] = (
            *provider_families.values(),
            *TARGET_SELF_FAMILIES,
        )
        """The families rendered per target: the providers' (in their declared order; served
        only when some target has samples in them), then the exporter's own."""
        self.provider_family_count = len(provider_families)
        self._slots = {family.name: slot for slot, family in enumerate(self.families)}
        self.layout = 0
        """Counts changes of the set or order of the targets."""
        self._dirty: set[str] = set()
        self._expiring: dict[str, float] = {}

    def set_targets(self, configs: Sequence[TargetConfig]) -> None:
        """Track exactly these targets; kept ones keep their state unless their config changed."""
        fresh: dict[str, TargetState] = {}
        now = self._clock.time()
        for config in configs:
            state = self._targets.get(config.name)
            if state is None or state.config != config:
                state = TargetState(config)
                self._render(state, now)
            fresh[config.name] = state
        self._targets = fresh
        self._expiring = {name: t for name, t in self._expiring.items() if name in fresh}
        self._dirty.clear()
        self.layout += 1
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
        delivered: dict[SeriesKey, float] = {}
        known = state.prefixes
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
            entry = known.get(key)
            delivered[entry[2] if entry is not None else key] = sample.value
        if snapshot.ok:
            state.series = delivered
            state.seen = dict.fromkeys(delivered, finished)
            state.last_success = finished
        else:
            state.series = {**state.series, **delivered}
            state.seen = {**state.seen, **dict.fromkeys(delivered, finished)}
            if snapshot.reason is not None:
                state.errors[snapshot.reason] += 1
        state.latest = replace(snapshot, samples=()) if snapshot.samples else snapshot
        self._render(state, self._clock.time())
        self._dirty.add(snapshot.target)
        self._changed()

    def reloaded(self, ok: bool) -> None:
        """A config reload ended, well or not."""
        self.config_reload_successful = ok
        self.epoch += 1
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        if self.on_change is not None:
            self.on_change()

    def expire(self) -> None:
        """Count a generation when a failing target's samples have gone stale since the last one."""
        if not self._expiring:
            return
        now = self._clock.time()
        due = [name for name, expires in self._expiring.items() if expires <= now]
        if not due:
            return
        for name in due:
            self._render(self._targets[name], now)
            self._dirty.add(name)
        self._changed()

    def take_dirty(self) -> set[str]:
        """The targets re-rendered since the last call (after a ``layout`` change: all of them)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    # -- rendering -----------------------------------------------------------------------------

    def _render(self, state: TargetState, now: float) -> None:
        """Render the target's blocks (what :meth:`provider_families` and the per-target part of
        :meth:`self_families` would show of it at ``now``)."""
        families = self.families
        lines: list[list[str]] = [[] for _ in families]
        slots = self._slots
        account = state.config.name
        old = state.prefixes
        kept: dict[SeriesKey, tuple[int, str, SeriesKey]] = {}
        expires = math.inf
        latest = state.latest
        if latest is None or latest.ok:
            visible: Iterable[tuple[SeriesKey, float]] = state.series.items()
        else:
            stale_after = state.config.stale_after
            horizon = now - stale_after
            fresh: list[tuple[SeriesKey, float]] = []
            seen = state.seen
            for key, value in state.series.items():
                seen_at = seen[key]
                if seen_at > horizon:
                    fresh.append((key, value))
                    expires = min(expires, seen_at + stale_after)
            visible = fresh
            # Never "due" already: a boundary rounding the other way must not re-render forever.
            expires = max(expires, math.nextafter(now, math.inf))
        for key, value in visible:
            entry = old.get(key)
            if entry is None:
                metric, labels = key
                slot = slots[metric]
                entry = (slot, families[slot].prefix((account, *labels)), key)
            kept[key] = entry
            lines[entry[0]].append(entry[1] + format_value(value))
        state.prefixes = kept
        base = self.provider_family_count
        if not state.self_prefixes:
            pair = (state.config.provider, account)
            state.self_prefixes = (
                SUCCESS.prefix(pair),
                DURATION.prefix(pair),
                LAST_SUCCESS.prefix(pair),
                INTERVAL.prefix(pair),
                *(ERRORS.prefix((*pair, str(reason))) for reason in Reason),
            )
        success, duration, last_success, interval, *errors = state.self_prefixes
        if latest is not None:
            lines[base].append(success + ("1.0" if latest.ok else "0.0"))
            lines[base + 1].append(duration + format_value(latest.duration))
        if state.last_success is not None:
            lines[base + 2].append(last_success + format_value(state.last_success))
        lines[base + 3].append(interval + format_value(state.config.interval))
        error_lines = lines[base + 4]
        for prefix, count in zip(errors, state.errors.values(), strict=True):
            error_lines.append(prefix + format_value(count))
        state.blocks = tuple(
            ("\n".join(block) + "\n").encode() if block else b"" for block in lines
        )
        state.expires = expires
        if expires == math.inf:
            self._expiring.pop(account, None)
        else:
            self._expiring[account] = expires

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
        success, duration, last_success, interval = (
            GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for family in (SUCCESS, DURATION, LAST_SUCCESS, INTERVAL)
        )
        errors = CounterMetricFamily(ERRORS.name, ERRORS.help, labels=ERRORS.labels)
        for state in targets:
            key = (state.config.provider, state.config.name)
            if state.latest is not None:
                success.add_metric(key, 1.0 if state.latest.ok else 0.0)
                duration.add_metric(key, state.latest.duration)
            if state.last_success is not None:
                last_success.add_metric(key, state.last_success)
            interval.add_metric(key, state.config.interval)
            for reason, count in state.errors.items():
                errors.add_metric((*key, str(reason)), float(count))
        yield from (success, duration, last_success, interval, errors)
        yield from self.global_families()

    def global_families(self) -> Iterator[Metric]:
        """The exporter's own families that have no series per target (small: rendered by
        prometheus_client). The exposition caches their rendering by every value read here
        (``exporter.exposition._Tail``): a new one must join that key."""
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
        assigned.add_metric(("assigned",), float(len(self._targets)))
        assigned.add_metric(("skipped",), float(self.skipped_targets))
        yield from (build, reload_ok, shard, assigned)


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
