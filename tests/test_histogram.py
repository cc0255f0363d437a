"""The request histogram against prometheus_client's ``Histogram``: the same bytes in both formats
and the same collected samples, after every step of arbitrary observations and label values."""

from __future__ import annotations

import math
from typing import Any

import prometheus_client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.collect.http import REQUEST_DURATION_BUCKETS, request_duration_histogram
from exporter.histogram import RequestHistogram
from tests.strategies import legacy_names, texts

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # as the exporter

EOF = b"# EOF\n"
NAME = "messaging_exporter_provider_request_duration_seconds"

label_names = legacy_names.filter(lambda n: not n.startswith("__") and n != "le")
strings = texts(20)
amounts = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [
            *(0.0, -0.0, -1.0, 1e7, 1.7976931348623157e308, -math.inf, math.inf, math.nan),
            *REQUEST_DURATION_BUCKETS,  # a bound itself lands in its own bucket
        ]
    )
    | st.integers(-(10**6), 10**6).map(float)
)
bounds = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)


@st.composite
def specs(draw: Any) -> tuple[str, str, tuple[str, ...], tuple[float, ...]]:
    """A histogram: the exporter's own, or any name, help, label names and buckets (sorted,
    perhaps negative, perhaps ending in +Inf)."""
    if draw(st.booleans()):
        return NAME, "help", ("provider", "endpoint", "code"), REQUEST_DURATION_BUCKETS
    labels = tuple(draw(st.lists(label_names, min_size=1, max_size=4, unique=True)))
    buckets = sorted(draw(st.lists(bounds, min_size=1, max_size=6)))
    if draw(st.booleans()):
        buckets.append(math.inf)
    return draw(legacy_names), draw(strings), labels, tuple(buckets)


@st.composite
def histories(draw: Any) -> tuple[Any, list[tuple[tuple[str, ...], float | None]]]:
    """A spec and steps: a label set (from a small pool, so series repeat) and an amount to
    observe, or None to make the child only."""
    spec = draw(specs())
    label_sets = st.tuples(*(strings for _ in spec[2]))
    pool = draw(st.lists(label_sets, min_size=1, max_size=4))
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from(pool), st.none() | amounts),
            max_size=25,
        )
    )
    return spec, steps


def collected(registry: CollectorRegistry) -> list[Any]:
    """The collected families, NaN made comparable."""
    return [
        (
            m.name,
            m.documentation,
            m.type,
            m.unit,
            [
                (s.name, s.labels, repr(s.value), s.timestamp, s.exemplar, s.native_histogram)
                for s in m.samples
            ],
        )
        for m in registry.collect()
    ]


def assert_same(
    theirs: CollectorRegistry, ours: CollectorRegistry, histogram: RequestHistogram
) -> None:
    text, openmetrics = generate_latest(theirs), generate_openmetrics(theirs)
    assert generate_latest(ours) == text
    assert generate_openmetrics(ours) == openmetrics
    assert histogram.render(False) == text
    assert histogram.render(True) + EOF == openmetrics
    assert collected(ours) == collected(theirs)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(histories(), st.integers(1, 4))
def test_any_history_renders_as_prometheus_client_does(history, every):
    (name, help_, labels, buckets), steps = history
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(name, help_, labels, registry=theirs, buckets=buckets)
    histogram = RequestHistogram(name, help_, labels, buckets, registry=ours)
    assert_same(theirs, ours, histogram)  # no children: HELP and TYPE only
    for step, (values, amount) in enumerate(steps, 1):
        before = histogram.version
        child = histogram.labels(*values)
        reference_child = reference.labels(*values)
        if amount is not None:
            child.observe(amount)
            reference_child.observe(amount)
            assert histogram.version > before
        if step % every == 0:  # renders between some steps only: several dirty children at once
            assert_same(theirs, ours, histogram)
    assert_same(theirs, ours, histogram)


def test_an_unchanged_histogram_renders_from_its_cache():
    histogram = request_duration_histogram(None)
    histogram.labels("p", "e", "200").observe(0.2)
    first = histogram.render(False)
    version = histogram.version
    histogram.labels("p", "e", "200")  # an existing child: nothing changes
    assert histogram.version == version
    assert histogram.render(False) is first
    histogram.labels("p", "e", "200").observe(0.2)
    assert histogram.version == version + 1
    assert histogram.render(False) != first


def test_a_clashing_name_is_refused_as_prometheus_client_refuses_it():
    registry = CollectorRegistry()
    request_duration_histogram(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        request_duration_histogram(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram(NAME, "h", registry=registry)


@pytest.mark.parametrize(
    ("labels", "buckets"),
    [
        (("le",), (1.0,)),
        (("__x",), (1.0,)),
        (("a", "a"), (1.0,)),
        (("a",), (2.0, 1.0)),
        (("a",), (math.inf,)),
    ],
)
def test_what_prometheus_client_refuses_is_refused(labels, buckets):
    with pytest.raises(ValueError):  # noqa: PT011
        RequestHistogram("h", "h", labels, buckets)


def test_a_histogram_without_labels_is_refused():
    with pytest.raises(ValueError, match="without labels"):
        RequestHistogram("h", "h", (), (1.0,))


def test_label_values_are_counted_and_checked_as_prometheus_client_does():
    histogram = RequestHistogram("h", "h", ("a", "b"), (1.0,))
    assert histogram.labels(1, None) is histogram.labels("1", "None")
    with pytest.raises(ValueError, match="Incorrect label count"):
        histogram.labels("only one")
