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
from exporter.collect.errors import Reason
from exporter.metrics.render import FamilyFormat, format_value
from exporter.providers import registry
from exporter.providers.base import MetricSpec, Sample, TargetConfig

log = structlog.get_logger("exporter.metrics.store")

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


@dataclass(slots=True)
class TargetState:
    config: TargetConfig
    latest: Snapshot | None = None
    """The last collection's outcome, without its samples (they live on in ``series``)."""
    last_success: float | None = None
    # Each series' value, and when a collection last delivered it: after a success, ``seen`` is
    # empty (every series was delivered at ``last_success``); after a failure it has every key of
    # ``series``. Floats and keys that live as long as the series (see ``line_keys``): a
    # collection adds no object for the garbage collector to scan again and again.
    series: dict[SeriesKey, float] = field(default_factory=dict)
    seen: dict[SeriesKey, float] = field(default_factory=dict)
    # Failed collections by reason, only those that happened (a missing reason counts 0).
    errors: dict[Reason, int] = field(default_factory=dict)
    # The rendered samples of this target, one block per family of ``Store.families``. A block
    # that renders to the same bytes again is the same object (the exposition compares blocks by
    # identity).
    blocks: tuple[bytes, ...] = ()
    # When the visible series next change by time alone (a failing target's samples go stale).
    expires: float = math.inf
    # The key of each line of the provider families' blocks, in block order: with the blocks, a
    # series' line prefix (``name{labels} ``), kept only there (the one key object kept while the
    # series lives).
    line_keys: tuple[SeriesKey, ...] = ()
    # The sum of ``errors`` when they were last rendered.
    error_count: int = 0

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


def _prefix(block: bytes, family: FamilyFormat, values: Sequence[str]) -> bytes:
    """The line prefix of the one line of ``block``, or ``family``'s for ``values`` when empty."""
    return block[: block.rindex(b" ") + 1] if block else family.prefix(values).encode()


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
        # The key objects kept already (so that a series keeps its first one).
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
        if snapshot.ok:
            state.series = delivered
            state.seen = {}
            state.last_success = finished
        else:
            seen = state.seen
            if state.latest is None or state.latest.ok:
                seen = dict.fromkeys(state.series, state.last_success or 0.0)
            state.series = {**state.series, **delivered}
            state.seen = {**seen, **dict.fromkeys(delivered, finished)}
            if snapshot.reason is not None:
                state.errors[snapshot.reason] = state.errors.get(snapshot.reason, 0) + 1
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
        :meth:`self_families` would show of it at ``now``).

        A series' line prefix (``name{labels} ``) is made once, when the series first shows;
        afterwards it is taken from the series' line in the previous blocks (a line is its prefix,
        then the value, which has no space), so that its label text is kept once, in the blocks.
        A block that renders to the same bytes again stays the same object."""
        families = self.families
        base = self.provider_family_count
        slots = self._slots
        account = state.config.name
        old = state.blocks
        known: dict[SeriesKey, bytes] = {}
        if state.line_keys:
            old_lines = b"".join(old[:base]).split(b"\n")
            known = {
                key: line[: line.rindex(b" ") + 1]
                for key, line in zip(state.line_keys, old_lines, strict=False)
            }
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
        # Per provider family slot: its lines and their series' keys.
        shown: dict[int, tuple[list[bytes], list[SeriesKey]]] = {}
        for key, value in visible:
            slot = slots[key[0]]
            prefix = known.get(key)
            if prefix is None:
                prefix = families[slot].prefix((account, *key[1])).encode()
            entry = shown.get(slot)
            if entry is None:
                entry = shown[slot] = ([], [])
            entry[0].append(prefix + format_value(value).encode())
            entry[1].append(key)
        blocks = [b""] * len(families)
        line_keys: list[SeriesKey] = []
        for slot in sorted(shown):
            slot_lines, slot_keys = shown[slot]
            block = b"\n".join(slot_lines) + b"\n"
            blocks[slot] = old[slot] if old and old[slot] == block else block
            line_keys += slot_keys
        state.line_keys = tuple(line_keys)
        pair = (state.config.provider, account)
        if old:
            success, duration, last_success, interval, errors = old[base:]
        else:
            success = duration = last_success = interval = errors = b""
        if latest is not None:
            line = _prefix(success, SUCCESS, pair) + (b"1.0\n" if latest.ok else b"0.0\n")
            blocks[base] = success if line == success else line
            line = b"%s%s\n" % (
                _prefix(duration, DURATION, pair),
                format_value(latest.duration).encode(),
            )
            blocks[base + 1] = duration if line == duration else line
        if state.last_success is not None:
            line = b"%s%s\n" % (
                _prefix(last_success, LAST_SUCCESS, pair),
                format_value(state.last_success).encode(),
            )
            blocks[base + 2] = last_success if line == last_success else line
        # A target's interval never changes (another config is another state); its error counts
        # only grow, so their sum tells whether one did.
        blocks[base + 3] = interval or b"%s%s\n" % (
            INTERVAL.prefix(pair).encode(),
            format_value(state.config.interval).encode(),
        )
        error_count = sum(state.errors.values())
        if errors and error_count == state.error_count:
            blocks[base + 4] = errors
        else:
            prefixes = (
                [line[: line.rindex(b" ") + 1] for line in errors.split(b"\n")[:-1]]
                if errors
                else [ERRORS.prefix((*pair, str(reason))).encode() for reason in Reason]
            )
            counts = [state.errors.get(reason, 0) for reason in Reason]
            blocks[base + 4] = b"".join(
                [
                    b"%s%s\n" % (prefix, format_value(count).encode())
                    for prefix, count in zip(prefixes, counts, strict=True)
                ]
            )
            state.error_count = error_count
        state.blocks = tuple(blocks)
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
            for reason in Reason:
                errors.add_metric((*key, str(reason)), float(state.errors.get(reason, 0)))
        yield from (success, duration, last_success, interval, errors)
        yield from self.global_families()

    def global_families(self) -> Iterator[Metric]:
        """The exporter's own families that have no series per target (small: rendered by
        prometheus_client). The exposition caches their rendering by every value read here
        (``exporter.metrics.exposition._Tail``): a new one must join that key."""
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
