"""The request-duration histogram: prometheus_client's ``Histogram`` for the one use the exporter
has, rendering itself byte for byte as prometheus_client renders it, at a fraction of the cost.

prometheus_client spends ~0.1 ms on every child of a histogram at every render (15 samples, each
label set sorted, escaped and formatted anew). Here a child's line prefixes
(``name_bucket{code="200",endpoint="x",le="0.1",provider="p"} ``) are made once, when the child is
made; its lines are rendered once per change (only the children observed since the last render are
re-rendered) and the whole family once per :attr:`RequestHistogram.version`.

The text format and OpenMetrics differ only in the HELP line here (no ``_created`` samples, which
``prometheus_client.disable_created_metrics()`` turns off, no exemplars, no timestamps): the sample
lines are the same bytes in both, kept once.

``tests/test_histogram.py`` proves the equality against prometheus_client's ``Histogram`` for
arbitrary observations and label values, rendering between observations.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric

from exporter.metrics.render import (
    escape_label_value,
    format_value,
    is_legacy_label_name,
    is_legacy_metric_name,
)


class HistogramChild:
    """One label set's buckets (not cumulative: a count per bucket) and sum."""

    __slots__ = ("_parent", "counts", "index", "lines", "sum", "values")

    def __init__(self, parent: RequestHistogram, index: int, values: tuple[str, ...]) -> None:
        self._parent = parent
        self.index = index
        self.values = values
        self.counts = [0] * len(parent.upper_bounds)
        self.sum = 0.0
        self.lines = b""
        """This child's rendered sample lines, as of the parent's last render."""

    def observe(self, amount: float) -> None:
        """Count ``amount`` in its bucket and add it to the sum, as prometheus_client does: a NaN
        lands in no bucket (so not in ``_count``) but makes the sum NaN."""
        parent = self._parent
        self.sum += amount
        if amount == amount:  # not NaN; +Inf lands in the +Inf bucket
            self.counts[bisect_left(parent.upper_bounds, amount)] += 1
        parent.version += 1
        parent._dirty[self.index] = self


class RequestHistogram:
    """A labelled histogram with prometheus_client's ``Histogram`` API for ``labels(...)`` and
    ``observe``, and a collector of the same samples (``collect``) and bytes (:meth:`render`).

    Children are kept in the order they were made (prometheus_client's order); a child made by
    :meth:`labels` is shown with zero counts until observed, as prometheus_client shows it.
    Everything runs on one thread (the event loop): no locks."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        labelnames = tuple(labelnames)
        if not is_legacy_metric_name(name):
            raise ValueError(f"{name}: only legacy metric names are rendered here")
        if not labelnames:
            raise ValueError(f"{name}: a histogram without labels is not supported")
        for label in labelnames:
            if not is_legacy_label_name(label) or label == "le":
                raise ValueError(f"{name}: invalid label name {label!r}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"{name}: duplicate label names")
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != math.inf:
            bounds.append(math.inf)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.upper_bounds = tuple(bounds)
        self.version = 0
        """Bumped by every observation and every new child: the rendering changes only with it."""
        self._les = tuple(format_value(bound) for bound in bounds)
        # prometheus_client shows no _sum when a bucket bound is negative (but _count still).
        self._with_sum = bounds[0] >= 0
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._ordered: list[HistogramChild] = []
        self._dirty: dict[int, HistogramChild] = {}
        self._prefixes: list[tuple[tuple[str, ...], str, str]] = []
        # Sorted label names: prometheus_client sorts a sample's labels by name, le included.
        self._order = tuple(sorted(range(len(labelnames)), key=lambda i: labelnames[i]))
        self._le_at = sum(1 for label in labelnames if label < "le")
        self._headers = (
            self._header(documentation.replace("\\", r"\\").replace("\n", r"\n")),
            self._header(escape_label_value(documentation)),
        )
        self._body = b""
        self._body_version = 0
        # Per format (text, OpenMetrics): the version it was rendered at, and its bytes.
        self._rendered: list[tuple[int, bytes]] = [(0, header) for header in self._headers]
        if registry is not None:
            registry.register(self)

    def _header(self, help_: str) -> bytes:
        return f"# HELP {self.name} {help_}\n# TYPE {self.name} histogram\n".encode()

    def labels(self, *values: object) -> HistogramChild:
        """The child of these label values (``str()`` of each, in ``labelnames`` order), made on
        first use."""
        if len(values) != len(self.labelnames):
            raise ValueError("Incorrect label count")
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            child = HistogramChild(self, len(self._ordered), key)
            self._children[key] = child
            self._ordered.append(child)
            self._prefixes.append(self._child_prefixes(key))
            self.version += 1
            self._dirty[child.index] = child
        return child

    def _child_prefixes(self, values: tuple[str, ...]) -> tuple[tuple[str, ...], str, str]:
        """A child's line prefixes: one per bucket, then ``_count``'s and ``_sum``'s."""
        names = self.labelnames
        pairs = [f'{names[i]}="{escape_label_value(values[i])}"' for i in self._order]
        before, after = ",".join(pairs[: self._le_at]), ",".join(pairs[self._le_at :])
        start = f"{self.name}_bucket{{{before}," if before else f"{self.name}_bucket{{"
        end = f",{after}}} " if after else "} "
        buckets = tuple(f'{start}le="{le}"{end}' for le in self._les)
        inner = ",".join(pairs)
        return buckets, f"{self.name}_count{{{inner}}} ", f"{self.name}_sum{{{inner}}} "

    def _child_lines(self, child: HistogramChild) -> bytes:
        buckets, count_prefix, sum_prefix = self._prefixes[child.index]
        lines = []
        cumulative = 0
        for prefix, count in zip(buckets, child.counts, strict=True):
            cumulative += count
            lines.append(prefix + format_value(cumulative) + "\n")
        lines.append(count_prefix + format_value(cumulative) + "\n")
        if self._with_sum:
            lines.append(sum_prefix + format_value(child.sum) + "\n")
        return "".join(lines).encode()

    def render(self, openmetrics: bool) -> bytes:
        """The family as prometheus_client's ``generate_latest`` writes it for a registry holding
        only this collector: the text format, or OpenMetrics (without the closing ``# EOF``).
        Re-renders the children observed (or made) since the last render, and only those."""
        version = self.version
        rendered_at, rendered = self._rendered[openmetrics]
        if rendered_at == version:
            return rendered
        if self._body_version != version:
            for child in self._dirty.values():
                child.lines = self._child_lines(child)
            self._dirty.clear()
            self._body = b"".join([child.lines for child in self._ordered])
            self._body_version = version
        rendered = self._headers[openmetrics] + self._body
        self._rendered[openmetrics] = (version, rendered)
        return rendered

    # -- the Collector protocol ------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The family without samples: what a registry needs to refuse a clash of names, with no
        collection."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        """The samples prometheus_client's ``Histogram`` yields with ``_created`` turned off (never
        a ``_created`` here). Samples are added one by one: ``HistogramMetricFamily.add_metric``
        would drop ``_count`` too when a bound is negative, where ``Histogram`` keeps it."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        names = self.labelnames
        bucket_name, count_name, sum_name = (
            self.name + "_bucket",
            self.name + "_count",
            self.name + "_sum",
        )
        for child in self._ordered:
            series = list(zip(names, child.values, strict=True))
            cumulative = 0.0
            for le, count in zip(self._les, child.counts, strict=True):
                cumulative += count
                family.add_sample(bucket_name, dict([*series, ("le", le)]), cumulative)
            family.add_sample(count_name, dict(series), cumulative)
            if self._with_sum:
                family.add_sample(sum_name, dict(series), child.sum)
        return [family]
