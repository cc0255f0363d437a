"""A renderer of the Prometheus text format (and of OpenMetrics' identical sample lines) for the
store's gauges and counters, byte for byte what prometheus_client writes for the same families.

prometheus_client formats every sample's labels again at every scrape. Here a series' line prefix
(``name{labels}``, labels sorted by name and escaped) is made once and kept while the series lives;
a sample costs a float formatting and a concatenation, and only when its target's snapshot changes.

``tests/test_render.py`` proves the equality: a property test compares both renderings of arbitrary
families and samples, and promtool checks a large exposition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.schema.types import is_label_name, is_metric_name

_INF = math.inf


def format_value(value: float) -> str:
    """prometheus_client's ``floatToGoString``, the same characters for every float."""
    d = float(value)
    if d == _INF:
        return "+Inf"
    if d == -_INF:
        return "-Inf"
    if d != d:  # NaN
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    # Go switches to exponents sooner than Python (prometheus_client's rule, kept as it is).
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@dataclass(frozen=True)
class FamilyFormat:
    """A family's fixed parts: its name, type, HELP, label names, and the header lines in both
    formats. ``name`` is the family's name as prometheus_client's ``Metric`` holds it (a counter's
    without ``_total``)."""

    name: str
    type: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...]
    sample_name: str = field(init=False)
    order: tuple[int, ...] = field(init=False)
    text_header: bytes = field(init=False)
    openmetrics_header: bytes = field(init=False)

    def __post_init__(self) -> None:
        if self.type not in ("gauge", "counter"):
            raise ValueError(f"unsupported metric type {self.type!r}")
        if not is_metric_name(self.name) or not all(is_label_name(label) for label in self.labels):
            raise ValueError(f"{self.name}: only legacy metric and label names are rendered here")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{self.name}: duplicate label names")
        sample_name = self.name + "_total" if self.type == "counter" else self.name
        set_ = object.__setattr__
        set_(self, "sample_name", sample_name)
        # prometheus_client sorts a sample's labels by name.
        set_(self, "order", tuple(sorted(range(len(self.labels)), key=lambda i: self.labels[i])))
        text_help = self.help.replace("\\", r"\\").replace("\n", r"\n")
        set_(
            self,
            "text_header",
            f"# HELP {sample_name} {text_help}\n# TYPE {sample_name} {self.type}\n".encode(),
        )
        om_help = escape_label_value(self.help)
        set_(
            self,
            "openmetrics_header",
            f"# HELP {self.name} {om_help}\n# TYPE {self.name} {self.type}\n".encode(),
        )

    def prefix(self, values: Sequence[str], constant: Sequence[tuple[str, str]] = ()) -> str:
        """``sample_name{label="value",...} `` for these label values (in ``labels`` order) and
        the ``constant`` labels (name, value) of the series' target, all sorted by name."""
        if constant:
            pairs = sorted([*zip(self.labels, values, strict=True), *constant])
            inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
            return f"{self.sample_name}{{{inner}}} "
        if not self.labels:
            return self.sample_name + " "
        names = self.labels
        inner = ",".join(f'{names[i]}="{escape_label_value(values[i])}"' for i in self.order)
        return f"{self.sample_name}{{{inner}}} "

    def header(self, openmetrics: bool) -> bytes:
        return self.openmetrics_header if openmetrics else self.text_header
