"""The Thulium parser: the API page's example, edge cases, and arbitrary JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.providers.base import Sample
from exporter.providers.errors import ParseError
from exporter.providers.thulium import (
    ACTIVE,
    COMPLETION,
    RECORDS,
    error_text,
    parse_outbound_stats,
)

# The example response of the API page, verbatim.
PAGE_EXAMPLE = json.loads("""
[
    {
        "id": "00001",
        "records_count": 1324,
        "completion_percent": 14.87
    },
    {
        "id": "00002",
        "records_count": 20,
        "completion_percent": 23
    }
]
""")


def test_the_page_example_gives_exact_samples() -> None:
    assert parse_outbound_stats(PAGE_EXAMPLE) == [
        Sample(RECORDS, ("00001",), 1324.0),
        Sample(COMPLETION, ("00001",), 0.1487),
        Sample(RECORDS, ("00002",), 20.0),
        Sample(COMPLETION, ("00002",), 0.23),
        Sample(ACTIVE, (), 2.0),
    ]


def test_int_and_float_percents_and_zero_padded_ids_stay_as_given() -> None:
    samples = parse_outbound_stats(
        [
            {"id": "00100", "records_count": 0, "completion_percent": 100},
            {"id": "00007", "records_count": 5, "completion_percent": 0.5},
        ]
    )
    assert Sample(COMPLETION, ("00100",), 1.0) in samples
    assert Sample(COMPLETION, ("00007",), 0.005) in samples


def test_an_empty_list_is_zero_active_campaigns() -> None:
    assert parse_outbound_stats([]) == [Sample(ACTIVE, (), 0.0)]


def test_unknown_fields_are_ignored() -> None:
    samples = parse_outbound_stats(
        [{"id": "00001", "records_count": 1, "completion_percent": 1, "name": "Spring sale"}]
    )
    assert len(samples) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"errors": [{"message": "Unauthorized", "code": 401}]},
        None,
        "00001",
        [None],
        [[]],
        [{"id": "00001", "records_count": 1}],
        [{"id": 1, "records_count": 1, "completion_percent": 1}],
        [{"id": "00001", "records_count": "1324", "completion_percent": 1}],
        [{"id": "00001", "records_count": 1, "completion_percent": "14.87"}],
        [{"id": "00001", "records_count": True, "completion_percent": 1}],
        [{"id": "00001", "records_count": 1.5, "completion_percent": 1}],
        [{"id": "00001", "records_count": -1, "completion_percent": 1}],
        [{"id": "00001", "records_count": 1, "completion_percent": 101}],
        [{"id": "00001", "records_count": 1, "completion_percent": -0.1}],
        [{"id": "", "records_count": 1, "completion_percent": 1}],
        [
            {"id": "00001", "records_count": 1, "completion_percent": 1},
            {"id": "00001", "records_count": 2, "completion_percent": 2},
        ],
    ],
)
def test_wrong_shapes_raise_the_parsers_own_error(body: object) -> None:
    with pytest.raises(ParseError):
        parse_outbound_stats(body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "records_count", "completion_percent", "x"])
            | st.text(max_size=4),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
campaign_like = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=6), st.integers()),
            "records_count": json_values,
            "completion_percent": json_values,
        }
    ),
    max_size=4,
)


@given(st.one_of(json_values, campaign_like))
def test_arbitrary_json_gives_samples_or_parse_error_only(body: object) -> None:
    try:
        samples = parse_outbound_stats(body)
    except ParseError:
        return
    assert samples[-1].metric == ACTIVE
    for sample in samples:
        assert sample.value == sample.value  # never NaN


@given(st.binary(max_size=200))
def test_error_text_never_raises(body: bytes) -> None:
    error_text(body)


def test_error_text_reads_the_documented_error_body() -> None:
    body = json.dumps({"errors": [{"message": "Unauthorized", "code": 401}]}).encode()
    assert error_text(body) == "Unauthorized (code 401)"


# -- the ratio as a person would write it ------------------------------------------------------


def completion(percent: float) -> float:
    body = [{"id": "00001", "records_count": 1, "completion_percent": percent}]
    (ratio,) = [s.value for s in parse_outbound_stats(body) if s.metric == COMPLETION]
    return ratio


@pytest.mark.parametrize(
    ("percent", "written"),
    [
        (24.48, "0.2448"),  # 24.48 / 100 is 0.24480000000000002
        (14.87, "0.1487"),
        (57.1, "0.571"),
        (33.33, "0.3333"),
        (0.07, "0.0007"),
        (99.99, "0.9999"),
        (23, "0.23"),
        (100, "1.0"),
        (0, "0.0"),
    ],
)
def test_completion_ratio_is_the_decimal_a_person_would_write(percent: float, written: str) -> None:
    assert repr(completion(percent)) == written


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from([1, 10, 100, 1000]))
def test_every_decimal_percent_moves_its_point_two_places(digits: int, scale: int) -> None:
    """A percent written with up to three decimals is the same digits as a ratio: the point
    moves, nothing else changes (``24.48`` → ``0.2448``)."""
    percent = digits / scale
    if percent > 100:
        return
    assert completion(percent) == float(f"{percent!r}e-2")
