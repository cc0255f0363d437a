"""The exporter's own metric families (``messaging_exporter_*``), besides the provider request
histogram that the provider client records.

Those with a series per target are rendered with each target's blocks (see
:mod:`exporter.metrics.blocks`); the global ones, a few series in all, are a prometheus_client
collector rendered with the rest of the registry.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.metrics.render import FamilyFormat
from exporter.metrics.store import Store

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
INTERVAL = FamilyFormat(
    "messaging_exporter_collect_interval_seconds",
    "gauge",
    "How often this target is collected (its configured interval), for alerts on stale data.",
    ("provider", "account"),
)
ERRORS = FamilyFormat(
    "messaging_exporter_collect_errors",
    "counter",
    "Failed collections of this target, by reason.",
    ("provider", "account", "reason"),
)
PER_TARGET = (SUCCESS, DURATION, LAST_SUCCESS, INTERVAL, ERRORS)
"""The exporter's own families with a series per target, in the order they are served (after the
provider families)."""


class ExporterInfo(Collector):
    """The exporter's own families that have no series per target: build, config reload, shard
    and target counts, from the store's facts."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not trigger a collection

    def collect(self) -> Iterable[Metric]:
        store = self._store
        build = GaugeMetricFamily(
            "messaging_exporter_build_info",
            "Always 1; the exporter's version and Python version.",
            labels=("version", "python_version"),
        )
        build.add_metric((__version__, platform.python_version()), 1.0)
        reload_ok = GaugeMetricFamily(
            "messaging_exporter_config_last_reload_successful",
            "1 if the last config (re)load worked, else 0.",
            value=1.0 if store.config_reload_successful else 0.0,
        )
        shard = GaugeMetricFamily(
            "messaging_exporter_shard_info",
            "Always 1; which share of the targets this replica collects.",
            labels=("index", "count"),
        )
        shard.add_metric((str(store.shard[0]), str(store.shard[1])), 1.0)
        assigned = GaugeMetricFamily(
            "messaging_exporter_targets",
            "Targets this replica collects (assigned), holds but does not collect (disabled), "
            "and leaves to other shards (skipped).",
            labels=("state",),
        )
        disabled = sum(1 for target in store.targets if not target.config.enabled)
        assigned.add_metric(("assigned",), float(len(store.targets) - disabled))
        assigned.add_metric(("disabled",), float(disabled))
        assigned.add_metric(("skipped",), float(store.skipped_targets))
        yield from (build, reload_ok, shard, assigned)
