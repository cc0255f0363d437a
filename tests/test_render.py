"""The hand-written renderer against prometheus_client: the same bytes, the same parsed samples,
for arbitrary names, help texts, label values and floats; promtool accepts a large exposition."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.metrics.render import FamilyFormat, format_value
from tests.conftest import run_promtool
from tests.strategies import legacy_names, texts

metric_names = legacy_names.filter(lambda n: not n.endswith(("_total", "_created", "_bucket")))
label_names = legacy_names.filter(lambda n: not n.startswith("__"))
strings = texts(30)
values = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [0.0, -0.0, 1e6, 1e7, 1234567.0, 12345678.0, 1e-7, 5e-324, 1.7976931348623157e308]
    )
    | st.integers(-(10**18), 10**18).map(float)
)


@st.composite
def families(draw: Any) -> tuple[FamilyFormat, list[tuple[tuple[str, ...], float]]]:
    labels = tuple(draw(st.lists(label_names, max_size=4, unique=True)))
    family = FamilyFormat(
        draw(metric_names), draw(st.sampled_from(["gauge", "counter"])), draw(strings), labels
    )
    samples = draw(
        st.lists(
            st.tuples(st.tuples(*(strings for _ in labels)), values),
            max_size=6,
            unique_by=lambda sample: sample[0],
        )
    )
    return family, samples


def reference(family: FamilyFormat, samples: list[tuple[tuple[str, ...], float]]) -> Any:
    cls = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
    metric = cls(family.name, family.help, labels=family.labels)
    for labels, value in samples:
        metric.add_metric(labels, value)

    class One:
        def collect(self) -> Any:
            return [metric]

    return One()


def ours(family: FamilyFormat, samples: list[tuple[tuple[str, ...], float]], om: bool) -> bytes:
    lines = "".join(family.prefix(labels) + format_value(value) + "\n" for labels, value in samples)
    return family.header(om) + lines.encode() + (b"# EOF\n" if om else b"")


def parsed(text: str, om: bool) -> Any:
    """The families as the parser sees them, or the parser's refusal (OpenMetrics refuses, say, a
    negative counter: then both renderings must be refused alike)."""
    parse = parse_openmetrics if om else parse_text
    try:
        return _parsed(parse, text)
    except ValueError as exc:
        return ("refused", str(exc))


def _parsed(parse: Any, text: str) -> list[tuple[str, str, str, list[tuple[str, Any, Any]]]]:
    return [
        (
            family.name,
            family.documentation,
            family.type,
            [
                (s.name, sorted(s.labels.items()), "NaN" if math.isnan(s.value) else s.value)
                for s in family.samples
            ],
        )
        for family in parse(text)
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families())
def test_text_format_equals_prometheus_client(case):
    family, samples = case
    theirs = generate_latest(reference(family, samples))
    mine = ours(family, samples, om=False)
    assert mine == theirs
    assert parsed(mine.decode(), om=False) == parsed(theirs.decode(), om=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families())
def test_openmetrics_equals_prometheus_client(case):
    family, samples = case
    theirs = generate_openmetrics(reference(family, samples))
    mine = ours(family, samples, om=True)
    assert mine == theirs
    assert parsed(mine.decode(), om=True) == parsed(theirs.decode(), om=True)


@given(values)
def test_values_format_as_prometheus_client(value):
    from prometheus_client.utils import floatToGoString

    assert format_value(value) == floatToGoString(value)


def test_names_outside_the_legacy_set_are_refused():
    for name, labels in (("bad-name", ()), ("ok", ("bad-label",)), ("ok", ("__reserved",))):
        try:
            FamilyFormat(name, "gauge", "h", labels)
        except ValueError:
            continue
        raise AssertionError(f"{name} {labels} accepted")


def test_promtool_accepts_a_large_exposition():
    """10,000 series with awkward label values through the renderer, checked by promtool."""
    records = FamilyFormat(
        "bench_records",
        "gauge",
        'Help with \\ and "quotes"\nand lines.',
        ("account", "campaign_id"),
    )
    errors = FamilyFormat("bench_errors", "counter", "Errors by reason.", ("account", "reason"))
    accounts = [f'acc-{i} "q" \\ \n ünïcødé' for i in range(1000)]
    lines = [records.header(False)]
    for i, account in enumerate(accounts):
        lines.append(
            "".join(
                records.prefix((account, f"{c:05d}")) + format_value(i * 1.5 + c) + "\n"
                for c in range(5)
            ).encode()
        )
    lines.append(errors.header(False))
    for account in accounts:
        lines.append(
            "".join(
                errors.prefix((account, reason)) + format_value(n) + "\n"
                for n, reason in enumerate(("auth", "parse", "timeout", "http_4xx", "http_5xx"))
            ).encode()
        )
    text = b"".join(lines)
    assert text.count(b"\n") > 10_000
    checked = run_promtool("check", "metrics", stdin=text.decode())
    assert checked.returncode == 0, checked.stderr + checked.stdout


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("9lives", ()),
        ("dotted.name", ()),
        ("ends_in_a_newline\n", ()),
        ("fine", ("__reserved",)),
        ("fine", ("with-dash",)),
        ("fine", ("newline\n",)),
    ],
)
def test_names_the_text_format_cannot_carry_are_refused(name: str, labels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="only legacy metric and label names"):
        FamilyFormat(name, "gauge", "h", labels)
