"""prometheus_client's view of a store, for the tests: fresh families from every target's visible
series at each collect, rendered by prometheus_client itself. The exposition's bytes must equal
what this renders, with the rest of the exporter's registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.metrics.self_metrics import DURATION, ERRORS, INTERVAL, LAST_SUCCESS, SUCCESS
from exporter.metrics.store import Store
from exporter.providers import registry
from exporter.providers.errors import Reason
from exporter.service import Exporter


def _add(family: Metric, values: Sequence[str], value: float, constant: Mapping[str, str]) -> None:
    """``family.add_metric(values, value)`` with the target's constant labels added."""
    family.add_metric(values, value)  # type: ignore[attr-defined]
    if constant:
        last = family.samples[-1]
        family.samples[-1] = last._replace(labels={**last.labels, **constant})


class StoreReference(Collector):
    def __init__(self, store: Store, clock_time: float) -> None:
        self._store = store
        self._now = clock_time

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        store = self._store
        gauges: dict[str, GaugeMetricFamily] = {}
        for provider in registry().values():
            for spec in provider.metrics:
                labels = ("account", *spec.labels)
                gauges.setdefault(spec.name, GaugeMetricFamily(spec.name, spec.help, labels=labels))
        used: set[str] = set()
        for target in store.targets:
            if not target.config.enabled:
                continue
            visible, _ = target.state.visible(self._now, target.config.stale_after)
            for (metric, labels), value in visible:
                _add(gauges[metric], (target.name, *labels), value, target.config.labels)
                used.add(metric)
        yield from (family for name, family in gauges.items() if name in used)
        success, duration, last_success, interval = (
            GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for family in (SUCCESS, DURATION, LAST_SUCCESS, INTERVAL)
        )
        errors = CounterMetricFamily(ERRORS.name, ERRORS.help, labels=ERRORS.labels)
        for target in store.targets:
            if not target.config.enabled:
                continue
            key, state = (target.config.provider, target.name), target.state
            constant = target.config.labels
            if state.latest is not None:
                _add(success, key, 1.0 if state.latest.ok else 0.0, constant)
                _add(duration, key, state.latest.duration, constant)
            if state.last_success is not None:
                _add(last_success, key, state.last_success, constant)
            _add(interval, key, target.config.interval, constant)
            for reason in Reason:
                _add(errors, (*key, str(reason)), float(state.errors.get(reason, 0)), constant)
        yield from (success, duration, last_success, interval, errors)


class _Others(Collector):
    """The exporter's registry as one collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        yield from self._registry.collect()


def reference_registry(exporter: Exporter) -> CollectorRegistry:
    """A registry that renders what the exporter's ``/metrics`` must show."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreReference(exporter.store, exporter.clock.time()))
    registry.register(_Others(exporter.registry))
    return registry
