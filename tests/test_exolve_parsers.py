"""Exolve: the pure parts (the count, the request plan, dates, config) on the API page's examples
and on arbitrary JSON."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError, validate_config
from exporter.providers.errors import ParseError
from exporter.providers.exolve import (
    BY_BILLING_STATUS,
    BY_DELIVERY_STATUS,
    MESSAGES,
    ExolveTarget,
    count_requests,
    parse_count,
    rfc3339_millis,
)


@pytest.mark.parametrize(
    ("body", "count"),
    [
        ({"count": "1"}, 1),  # the page's example: an int64 as a string
        ({"count": "9223372036854775807"}, 2**63 - 1),
        ({"count": 12}, 12),  # a number is accepted too
        ({"count": 12.0}, 12),
        ({}, 0),  # proto3 leaves a zero count out
        ({"count": "0"}, 0),
        ({"count": "3", "next": "ignored"}, 3),
    ],
)
def test_counts(body: Any, count: int):
    assert parse_count(body) == count


@pytest.mark.parametrize(
    "body",
    [
        {"count": "-1"},
        {"count": "1.5"},
        {"count": " 1"},
        {"count": "1\n"},
        {"count": "١٢"},  # Arabic-Indic digits are not protobuf's
        {"count": "9223372036854775808"},
        {"count": -1},
        {"count": 1.5},
        {"count": float("nan")},
        {"count": True},
        {"count": None},
        {"count": ["1"]},
        {"code": 16, "message": "authorization token is invalid"},  # an error is not a zero
        [],
        "1",
        None,
    ],
)
def test_bad_counts(body: Any):
    with pytest.raises(ParseError):
        parse_count(body)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=25)
    | st.from_regex(r"-?[0-9]{1,25}", fullmatch=True)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(json_values | st.dictionaries(st.sampled_from(["count", "x"]), json_values))
def test_count_parser_raises_only_parse_error(body: Any):
    try:
        count = parse_count(body)
    except ParseError:
        return
    assert 0 <= count <= 2**63 - 1


def test_rfc3339_with_milliseconds_and_z():
    assert rfc3339_millis(1674214201.335) == "2023-01-20T11:30:01.335Z"
    assert rfc3339_millis(0) == "1970-01-01T00:00:00.000Z"


def exolve(**keys: Any) -> ExolveTarget:
    config = validate_config(
        {
            "targets": [
                {
                    "name": "sms",
                    "provider": "exolve",
                    "base_url": "https://api.exolve.ru/messaging/v1",
                    "api_key": "key-value",
                    **keys,
                }
            ]
        }
    )
    target = config.targets[0]
    assert isinstance(target, ExolveTarget)
    return target


def test_default_plan_is_every_direction_times_every_status_and_nothing_else():
    requests = count_requests(exolve(), now=1674214201.335)
    assert [r.body for r in requests] == [
        {"direction": direction, "status": status}
        for direction in ("DIRECTION_INCOMING", "DIRECTION_OUTGOING")
        for status in (
            "STATUS_QUEUED",
            "STATUS_TRANSMITTED",
            "STATUS_DELIVERED",
            "STATUS_FAILED",
            "STATUS_UNDERFUNDED",
            "STATUS_PROHIBITED",
        )
    ]
    assert {r.metric for r in requests} == {MESSAGES}
    assert requests[0].labels == ("incoming", "queued")
    assert requests[-1].labels == ("outgoing", "prohibited")


def test_breakdowns_window_and_number_apply_to_every_request():
    target = exolve(
        breakdowns=["delivery_status", "billing_status"], window="24h", number="79678880033"
    )
    requests = count_requests(target, now=1674300601.335)
    assert len(requests) == 2 * 4 + 2 * 7
    assert {r.metric for r in requests} == {BY_DELIVERY_STATUS, BY_BILLING_STATUS}
    for request in requests:
        assert request.body["date_gte"] == "2023-01-20T11:30:01.335Z"
        assert request.body["number"] == "79678880033"
        assert "limit" not in request.body
        assert "offset" not in request.body
        assert set(request.body) == {
            "direction",
            "number",
            "date_gte",
            "delivery_status" if request.metric == BY_DELIVERY_STATUS else "billing_status",
        }
    labels = {r.labels for r in requests if r.metric == BY_BILLING_STATUS}
    assert ("outgoing", "underfunded") in labels
    assert ("incoming", "authorized") in labels


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=86400 * 2, max_value=4e9), st.floats(min_value=0.001, max_value=86400))
def test_date_gte_is_now_minus_window_to_the_millisecond(now: float, window: float):
    text = count_requests(exolve(window=window), now)[0].body["date_gte"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    assert abs(parsed - (now - window)) < 0.0011


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"breakdowns": []}, "targets[0].breakdowns"),
        ({"breakdowns": ["status", "status"]}, "each breakdown may be given once"),
        ({"breakdowns": ["direction"]}, "targets[0].breakdowns[0]"),
        ({"window": "soon"}, "targets[0].window"),
        ({"number": ""}, "targets[0].number"),
        ({"number": 79678880033}, 'targets[0].number: write the sender in quotes, e.g. number: "7'),
        ({"limit": 10}, "targets[0].limit: unknown key"),
        ({"api_key_file": "/nonexistent/key"}, "targets[0]"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, Any], message: str):
    with pytest.raises(ConfigError) as caught:
        exolve(**keys)
    assert message in str(caught.value)


def test_summary_shows_filters_but_not_the_key():
    summary = exolve(
        window="24h", number="ALERTS", breakdowns=["status", "billing_status"]
    ).summary()
    assert "breakdowns=status,billing_status" in summary
    assert "window=24h" in summary
    assert "number=ALERTS" in summary
    assert "key-value" not in summary


def test_error_texts_from_exolve():
    from exporter.providers.exolve import _error_text

    body = b'{"code": 16, "message": "token is invalid", "details": []}'
    assert _error_text(body) == "token is invalid"
    assert _error_text(b"404 page not found\n") == "404 page not found"
    assert _error_text(b"\x00\x01binary") is None
