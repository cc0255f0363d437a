"""What a provider produces: its metric descriptions and the samples of one collection."""

from __future__ import annotations

from dataclasses import dataclass


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
