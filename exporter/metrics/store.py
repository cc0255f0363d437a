"""What each target currently shows, and its samples rendered for the exposition.

Only the scheduler's snapshots write here (:meth:`Store.record`); the exposition reads. A scrape
never reaches a provider: it serves what the store holds.

Each target keeps its samples rendered per family (:attr:`TargetState.blocks`), re-rendered when a
collection of that target ends or when its failing samples go stale, so a new snapshot of one
target re-renders that target only. The store is handed the providers' metric descriptions; it
calls nothing upstream.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.clock import Clock
from exporter.collect.snapshot import Snapshot
from exporter.collect.targets import SeriesKey, Target, TargetTable
from exporter.metrics.render import FamilyFormat, format_value
from exporter.providers.base import MetricSpec
from exporter.providers.errors import Reason

log = structlog.get_logger("exporter.metrics.store")

Subscriber = Callable[[], None]

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


def _prefix(block: bytes, family: FamilyFormat, values: Sequence[str]) -> bytes:
    """The line prefix of the one line of ``block``, or ``family``'s for ``values`` when empty."""
    return block[: block.rindex(b" ") + 1] if block else family.prefix(values).encode()


class Store:
    """Every target's state and rendered samples. ``metrics`` are the providers' metric
    descriptions, by provider name: the families a provider's samples may belong to."""

    def __init__(
        self, clock: Clock, targets: TargetTable, metrics: Mapping[str, Sequence[MetricSpec]]
    ) -> None:
        self._clock = clock
        self._targets = targets
        self.generation = 0
        """Counts changes of what the exposition shows from the store."""
        self._subscribers: list[Subscriber] = []
        self.config_reload_successful = True
        self.last_reload: float | None = None
        """When the config was last (re)loaded, Unix seconds."""
        self.shard = (0, 1)
        self.skipped_targets = 0
        self._specs: dict[str, dict[str, MetricSpec]] = {
            name: {spec.name: spec for spec in specs} for name, specs in metrics.items()
        }
        provider_families: dict[str, FamilyFormat] = {}
        for specs_of_one in self._specs.values():
            for spec in specs_of_one.values():
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
        self._expiring: dict[str, float] = {}

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` after every change of :attr:`generation`; returns the call that
        ends the subscription."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def targets_changed(self) -> None:
        """The table was set to another config's targets."""
        now = self._clock.time()
        names = set()
        for target in self._targets:
            names.add(target.name)
            if not target.state.blocks:
                self._render(target, now)
        self._expiring = {name: t for name, t in self._expiring.items() if name in names}
        self._changed()

    @property
    def targets(self) -> TargetTable:
        return self._targets

    def ready(self) -> bool:
        """Every target has finished its first collection attempt."""
        return all(target.state.latest is not None for target in self._targets)

    def record(self, snapshot: Snapshot) -> None:
        target = self._targets.get(snapshot.target)
        if target is None:  # removed by a reload while it was being collected
            return
        state = target.state
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
            state.consecutive_failures = 0
        else:
            state.consecutive_failures += 1
            seen = state.seen
            if state.latest is None or state.latest.ok:
                seen = dict.fromkeys(state.series, state.last_success or 0.0)
            state.series = {**state.series, **delivered}
            state.seen = {**seen, **dict.fromkeys(delivered, finished)}
            if snapshot.reason is not None:
                state.errors[snapshot.reason] = state.errors.get(snapshot.reason, 0) + 1
        state.latest = replace(snapshot, samples=()) if snapshot.samples else snapshot
        self._render(target, self._clock.time())
        self._changed()

    def reloaded(self, ok: bool) -> None:
        """A config (re)load ended, well or not."""
        self.config_reload_successful = ok
        self.last_reload = self._clock.time()
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        for subscriber in list(self._subscribers):
            subscriber()

    def expire(self) -> None:
        """Count a generation when a failing target's samples have gone stale since the last one."""
        if not self._expiring:
            return
        now = self._clock.time()
        due = [name for name, expires in self._expiring.items() if expires <= now]
        if not due:
            return
        for name in due:
            target = self._targets.get(name)
            if target is not None:
                self._render(target, now)
        self._changed()

    # -- rendering -----------------------------------------------------------------------------

    def _render(self, target: Target, now: float) -> None:
        """Render the target's blocks: its provider series visible at ``now`` (see
        :meth:`TargetState.visible`) and its lines of the exporter's per-target families.

        A series' line prefix (``name{labels} ``) is made once, when the series first shows;
        afterwards it is taken from the series' line in the previous blocks (a line is its prefix,
        then the value, which has no space), so that its label text is kept once, in the blocks.
        A block that renders to the same bytes again stays the same object."""
        families = self.families
        base = self.provider_family_count
        slots = self._slots
        state = target.state
        config = target.config
        account = config.name
        old = state.blocks
        known: dict[SeriesKey, bytes] = {}
        if state.line_keys:
            old_lines = b"".join(old[:base]).split(b"\n")
            known = {
                key: line[: line.rindex(b" ") + 1]
                for key, line in zip(state.line_keys, old_lines, strict=False)
            }
        latest = state.latest
        visible, expires = state.visible(now, config.stale_after)
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
        pair = (config.provider, account)
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
            format_value(config.interval).encode(),
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
        if expires == math.inf:
            self._expiring.pop(account, None)
        else:
            self._expiring[account] = expires

    def global_families(self) -> Iterator[Metric]:
        """The exporter's own families that have no series per target (small: rendered by
        prometheus_client with the rest of the registry)."""
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


class ExporterInfo(Collector):
    """The exporter's own families that have no series per target, rendered by prometheus_client
    with the rest of the registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not trigger a collection

    def collect(self) -> Iterable[Metric]:
        yield from self._store.global_families()
