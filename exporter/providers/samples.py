"""What a provider produces: its metric descriptions and the samples of one collection."""

from __future__ import annotations

import re
from dataclasses import dataclass

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def is_metric_name(name: str) -> bool:
    """A metric name of the Prometheus text format (the legacy character set)."""
    return _METRIC_NAME.fullmatch(name) is not None


def is_label_name(name: str) -> bool:
    """A label name of the Prometheus text format; ``__`` names are reserved for Prometheus."""
    return _LABEL_NAME.fullmatch(name) is not None and not name.startswith("__")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A provider metric: every sample of it carries ``account`` first, then ``labels``."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One gauge value. ``labels`` are the values of the metric's labels, in the spec's order,
    without ``account`` (the store adds it from the target's name)."""

    metric: str
    labels: tuple[str, ...]
    value: float
