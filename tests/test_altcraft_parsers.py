"""Altcraft's pure parts: Go durations, the envelope, task status and result records (on the API
pages' own examples), discovery answers, and the target's config."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError, validate_config
from exporter.providers.altcraft import (
    RESOURCE_COUNT_DURATION,
    RESOURCE_PROFILES,
    RESOURCE_SENDABLE,
    RESOURCE_SUBSCRIPTIONS,
    RESOURCE_UPDATED,
    SEGMENT_PROFILES,
    SEGMENT_SENDABLE,
    SEGMENT_SUBSCRIPTIONS,
    SEGMENT_UPDATED,
    AltcraftTarget,
    CountedObject,
    GoDurationError,
    parse_count_duration,
    parse_database_ids,
    parse_envelope,
    parse_go_duration,
    parse_resource_ids,
    parse_rfc3339,
    parse_task_id,
    parse_task_status,
    resource_samples,
    segment_samples,
)
from exporter.providers.base import Sample
from exporter.providers.errors import ParseError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "providers" / "altcraft"


def page_example(name: str) -> dict[str, Any]:
    """A request or response example of the Altcraft API pages, as printed there."""
    example: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return example


# The "Checking the task status" response examples of the two API pages.
RESOURCE_PAGE_ANSWER = page_example("resources-tasks-status.response.json")
SEGMENT_PAGE_ANSWER = page_example("segments-tasks-status.response.json")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)


def as_set(samples: list[Sample]) -> dict[tuple[str, tuple[str, ...]], float]:
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for sample in samples:
        key = (sample.metric, sample.labels)
        assert key not in out, f"duplicate sample {key}"
        out[key] = sample.value
    return out


# -- Go durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("231.374251ms", 0.231374251),
        ("0", 0.0),
        ("+0", 0.0),
        ("-0", 0.0),
        ("0s", 0.0),
        ("1ns", 1e-9),
        ("1.5ns", 1e-9),  # Go truncates below a nanosecond
        ("850us", 0.00085),
        ("850µs", 0.00085),  # U+00B5 micro sign
        ("850μs", 0.00085),  # U+03BC Greek mu
        ("12.5μs", 0.0000125),
        ("1ms", 0.001),
        ("1s", 1.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("2m3.5s", 123.5),
        ("1h0m0.5s", 3600.5),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        ("3.000001s", 3.000001),
        ("1h1h", 7200.0),  # Go accepts a unit twice
        ("-1.5h", -5400.0),
        ("+2m", 120.0),
        ("2562047h47m16.854775807s", 9223372036.854775807),  # the largest Go duration
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


def test_go_duration_is_exact_for_the_page_example() -> None:
    assert parse_go_duration("231.374251ms") == 0.231374251


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+",
        "-",
        "1",
        "10",
        "s",
        ".s",
        ".",
        "1.5",
        "1d",
        "1 s",
        " 1s",
        "1s ",
        "1S",
        "1sec",
        "1e3s",
        "--1s",
        "1m-1s",
        "\uff11s",  # a full-width digit
        "٣s",  # an Arabic-Indic digit
        "2562047h47m16.854775808s",  # one nanosecond past the largest
        "9" * 30 + "h",
        "1" * 5000 + "s",
    ],
)
def test_go_duration_errors(text: str) -> None:
    with pytest.raises(GoDurationError):
        parse_go_duration(text)


@pytest.mark.parametrize("value", [None, 1, 1.5, b"1s", ["1s"], {"d": "1s"}, True])
def test_go_duration_refuses_what_is_not_a_string(value: object) -> None:
    with pytest.raises(GoDurationError):
        parse_go_duration(value)


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_go_duration_raises_only_its_own_error_on_any_text(text: str) -> None:
    try:
        seconds = parse_go_duration(text)
    except GoDurationError:
        return
    assert math.isfinite(seconds)


@settings(max_examples=300)
@given(st.text(alphabet="0123456789.+-nsuµμmh", max_size=30))
def test_go_duration_raises_only_its_own_error_on_near_misses(text: str) -> None:
    try:
        seconds = parse_go_duration(text)
    except GoDurationError:
        return
    assert math.isfinite(seconds)


@given(json_values)
def test_go_duration_raises_only_its_own_error_on_any_json(value: object) -> None:
    with contextlib.suppress(GoDurationError):
        parse_go_duration(value)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 999),
            st.sampled_from(["", ".5", ".25", ".125"]),
            st.sampled_from(["h", "m", "s", "ms", "us", "µs", "μs", "ns"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_go_duration_sums_its_parts(parts: list[tuple[int, str, str]]) -> None:
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6}
    unit["ns"] = 1e-9
    text = "".join(f"{number}{fraction}{u}" for number, fraction, u in parts)
    expected = 0.0
    for number, fraction, u in parts:
        value = float(f"{number}{fraction}") * unit[u]
        if u == "ns":
            value = float(number) * 1e-9  # below a nanosecond is truncated
        expected += value
    assert parse_go_duration(text) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("counted at 2024-04-19T13:31:08Z in 231.374251ms", 0.231374251),
        ("counted at 2024-04-19T13:31:08Z in 2m3.5s", 123.5),
        ("counted at 2024-04-19T13:31:08Z in 850µs", 0.00085),
        ("counted at 2024-04-19T13:31:08Z in 42", None),
        ("counted at 2024-04-19T13:31:08Z in -1s", None),
        ("counted at 2024-04-19T13:31:08Z", None),
        ("", None),
    ],
)
def test_count_duration_of_last_count_time(text: str, seconds: float | None) -> None:
    assert parse_count_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "timestamp"),
    [
        ("2024-04-19T13:31:08.927Z", 1713533468.927),
        ("2024-04-19T16:31:08.927+03:00", 1713533468.927),
        ("2024-04-19T13:31:08Z", 1713533468.0),
        ("2024-04-19T13:31:08", None),  # no offset: not RFC 3339
        ("0001-01-01T00:00:00Z", None),  # Go's zero time: never counted
        ("yesterday", None),
        ("", None),
    ],
)
def test_rfc3339(text: str, timestamp: float | None) -> None:
    assert parse_rfc3339(text) == timestamp


# -- the pages' examples -------------------------------------------------------------------------


def test_the_page_examples_hold_what_the_tests_rely_on() -> None:
    resource = json.dumps(RESOURCE_PAGE_ANSWER)
    segment = json.dumps(SEGMENT_PAGE_ANSWER)
    assert '"last_count_time": "counted at 2024-04-19T13:31:08Z in 231.374251ms"' in resource
    assert '"hardbounced": 434' in resource
    assert '"subscribed_sendable": 209' in segment
    assert '"resource_id": 27' in segment


@pytest.mark.parametrize(
    ("kind", "task_id"),
    [
        ("resources", "c9c3ec48-1bef-4969-9c1a-df39f0c179bb"),
        ("segments", "55a345c8-3d79-47ef-b03e-b84ce8e0c126"),
    ],
)
def test_refresh_answers_of_the_pages_give_their_task_id(kind: str, task_id: str) -> None:
    envelope = parse_envelope(page_example(f"{kind}-refresh-counters.response.json"))
    assert (envelope.error, envelope.error_text) == (0, "Successful operation")
    assert parse_task_id(envelope.data) == task_id


@pytest.mark.parametrize(
    ("obj", "example"),
    [
        (CountedObject("resource", 24, 24, 1), "resources-refresh-counters.request.json"),
        (CountedObject("segment", 7, 24, 1), "segments-refresh-counters.request.json"),
    ],
)
def test_refresh_requests_send_what_the_pages_send(obj: CountedObject, example: str) -> None:
    """The page's request, less its optional keys (format, feedback) and the token, which every
    call adds."""
    page = page_example(example)
    expected = {
        key: value for key, value in page.items() if key not in ("token", "format", "feedback")
    }
    assert obj.refresh_body() == expected
    assert set(page_example("resources-tasks-status.request.json")) == {"token", "task_id"}


def test_resource_page_example_gives_exactly_these_samples() -> None:
    envelope = parse_envelope(RESOURCE_PAGE_ANSWER)
    assert (envelope.error, envelope.error_text) == (0, "Successful operation")
    status = parse_task_status(envelope.data)
    assert (status.status, status.progress, status.completed, status.failed) == (
        "completed",
        100.0,
        True,
        False,
    )
    samples = as_set(resource_samples(status.records, resource_id=24, list_id=1))
    expected: dict[tuple[str, tuple[str, ...]], float] = {}
    plain = ("complained", "hardbounced", "invalid", "subscribed", "suspended")
    plain += ("unconfirmed", "unsubscribed")
    for channel in ("sms", "push", "email"):
        expected[(RESOURCE_PROFILES, ("24", "1", channel))] = 1336
        for status_name in plain:
            expected[(RESOURCE_SUBSCRIPTIONS, ("24", "1", channel, status_name))] = 0
        for status_name in ("subscribed", "unconfirmed"):
            expected[(RESOURCE_SENDABLE, ("24", "1", channel, status_name))] = 0
    expected[(RESOURCE_SUBSCRIPTIONS, ("24", "1", "email", "hardbounced"))] = 434
    expected[(RESOURCE_SUBSCRIPTIONS, ("24", "1", "email", "subscribed"))] = 842
    expected[(RESOURCE_SUBSCRIPTIONS, ("24", "1", "email", "unsubscribed"))] = 60
    expected[(RESOURCE_SENDABLE, ("24", "1", "email", "subscribed"))] = 842
    expected[(RESOURCE_UPDATED, ("24", "1"))] = 1713533468.927
    expected[(RESOURCE_COUNT_DURATION, ("24", "1"))] = 0.231374251
    assert samples == expected
    assert len(samples) == 3 * (1 + 7 + 2) + 2


def test_segment_page_example_gives_exactly_these_samples() -> None:
    status = parse_task_status(parse_envelope(SEGMENT_PAGE_ANSWER).data)
    samples = as_set(segment_samples(status.records, segment_id=7, resource_id=27, list_id=1))
    assert samples == {
        (SEGMENT_SENDABLE, ("7", "27", "1", "email", "subscribed")): 209,
        (SEGMENT_SENDABLE, ("7", "27", "1", "email", "unconfirmed")): 0,
        (SEGMENT_SENDABLE, ("7", "27", "1", "push", "subscribed")): 0,
        (SEGMENT_SENDABLE, ("7", "27", "1", "push", "unconfirmed")): 0,
        (SEGMENT_SENDABLE, ("7", "27", "1", "sms", "subscribed")): 0,
        (SEGMENT_SENDABLE, ("7", "27", "1", "sms", "unconfirmed")): 0,
        (SEGMENT_UPDATED, ("7", "27", "1")): 1713605401.583,
    }


def test_segment_record_of_another_resource_is_not_taken() -> None:
    # The page asks for resource 24 and its example answers resource_id 27.
    status = parse_task_status(parse_envelope(SEGMENT_PAGE_ANSWER).data)
    with pytest.raises(ParseError, match="no record for list_id 1"):
        segment_samples(status.records, segment_id=7, resource_id=24, list_id=1)


def test_resource_record_of_another_database_is_not_taken() -> None:
    status = parse_task_status(parse_envelope(RESOURCE_PAGE_ANSWER).data)
    with pytest.raises(ParseError, match="no record for list_id 2"):
        resource_samples(status.records, resource_id=24, list_id=2)


def record(channels: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"status": "completed", "progress": 100, "result": [{"channels": channels, **extra}]}


def test_missing_counters_are_not_zero_and_unknown_ones_pass_through() -> None:
    data = record(
        [
            {"channel": "Telegram", "status": {"subscribed": 5, "Blocked": 2}},
            {"channel": "email", "status": {"all": 9, "unconfirmed_sendable": 1}},
            {"channel": "viber", "status": {}},
        ],
        list_id=3,
    )
    samples = as_set(resource_samples(parse_task_status(data).records, 8, 3))
    assert samples == {
        (RESOURCE_SUBSCRIPTIONS, ("8", "3", "telegram", "subscribed")): 5,
        (RESOURCE_SUBSCRIPTIONS, ("8", "3", "telegram", "blocked")): 2,
        (RESOURCE_PROFILES, ("8", "3", "email")): 9,
        (RESOURCE_SENDABLE, ("8", "3", "email", "unconfirmed")): 1,
    }


def test_plain_counters_of_a_segment_are_passed_through_too() -> None:
    data = record(
        [{"channel": "email", "status": {"all": 10, "subscribed": 8, "subscribed_sendable": 7}}],
        list_id=1,
        resource_id=2,
    )
    samples = as_set(segment_samples(parse_task_status(data).records, 5, 2, 1))
    assert samples == {
        (SEGMENT_PROFILES, ("5", "2", "1", "email")): 10,
        (SEGMENT_SUBSCRIPTIONS, ("5", "2", "1", "email", "subscribed")): 8,
        (SEGMENT_SENDABLE, ("5", "2", "1", "email", "subscribed")): 7,
    }


def test_unparseable_updated_and_duration_give_no_sample() -> None:
    data = record(
        [{"channel": "email", "status": {"all": 1}}],
        list_id=1,
        updated="not a time",
        last_count_time="counted at some point in a while",
    )
    samples = as_set(resource_samples(parse_task_status(data).records, 1, 1))
    assert samples == {(RESOURCE_PROFILES, ("1", "1", "email")): 1}


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ([], "the result is empty"),
        ([{"channels": [], "list_id": 9}], "no record for list_id 1"),
        (
            [{"channels": [], "list_id": 1}, {"channels": [], "list_id": 1}],
            "2 records for list_id 1",
        ),
        (
            [
                {
                    "channels": [
                        {"channel": "email", "status": {"all": 1}},
                        {"channel": "EMAIL", "status": {"all": 2}},
                    ],
                    "list_id": 1,
                }
            ],
            "repeats",
        ),
        ([{"channels": [{"channel": "email", "status": {"all": -1}}], "list_id": 1}], "count"),
        (
            [{"channels": [{"channel": "email", "status": {"all": 2**64}}], "list_id": 1}],
            "count",
        ),
    ],
)
def test_records_that_cannot_be_counts(result: list[Any], problem: str) -> None:
    status = parse_task_status({"status": "completed", "progress": 100, "result": result})
    with pytest.raises(ParseError, match=problem):
        resource_samples(status.records, 1, 1)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "completed",
        {},
        {"status": 1},
        {"status": "completed"},  # final without a result
        {"status": "completed", "result": None},
        {"status": "completed", "result": {}},
        {"status": "completed", "result": [{"list_id": 1}]},
        {"status": "completed", "result": [{"channels": [], "list_id": "1"}]},
        {"status": "completed", "result": [{"channels": [], "list_id": True}]},
        {"status": "completed", "result": [{"channels": [{"channel": "e"}], "list_id": 1}]},
        {
            "status": "completed",
            "result": [{"channels": [{"channel": "e", "status": {"all": "1"}}], "list_id": 1}],
        },
        {
            "status": "completed",
            "result": [{"channels": [{"channel": "e", "status": {"all": 1.0}}], "list_id": 1}],
        },
    ],
)
def test_task_status_shapes_that_are_refused(data: object) -> None:
    with pytest.raises(ParseError):
        parse_task_status(data)


@pytest.mark.parametrize(
    ("data", "completed", "failed", "progress"),
    [
        ({"status": "processing", "progress": 33}, False, False, 33.0),
        ({"status": "new"}, False, False, None),
        ({"status": "queued", "progress": "50%"}, False, False, None),  # progress is advisory
        ({"status": "running", "progress": 250}, False, False, None),
        ({"status": "error", "progress": 40}, False, True, 40.0),
        ({"status": "Failed"}, False, True, None),
        ({"status": "canceled"}, False, True, None),
        ({"status": "COMPLETED", "progress": 100, "result": []}, True, False, 100.0),
    ],
)
def test_task_states(data: dict[str, Any], completed: bool, failed: bool, progress: Any) -> None:
    status = parse_task_status(data)
    assert (status.completed, status.failed, status.progress) == (completed, failed, progress)


@settings(max_examples=300)
@given(json_values)
def test_task_status_parser_raises_only_parse_error_on_any_json(value: object) -> None:
    try:
        status = parse_task_status(value)
        resource_samples(status.records, 1, 1)
    except ParseError:
        pass


@settings(max_examples=150)
@given(
    st.fixed_dictionaries(
        {"status": st.sampled_from(["completed", "processing", "error"]) | st.text(max_size=5)},
        optional={
            "progress": json_values,
            "result": st.lists(
                st.fixed_dictionaries(
                    {
                        "channels": st.lists(
                            st.fixed_dictionaries(
                                {
                                    "channel": st.text(max_size=8) | json_values,
                                    "status": st.dictionaries(
                                        st.text(max_size=25),
                                        st.integers(-(2**70), 2**70) | json_values,
                                        max_size=4,
                                    )
                                    | json_values,
                                }
                            ),
                            max_size=4,
                        ),
                        "list_id": st.integers(0, 3) | json_values,
                    },
                    optional={
                        "resource_id": st.integers(0, 3) | json_values,
                        "updated": st.text(max_size=30) | json_values,
                        "last_count_time": st.text(max_size=40) | json_values,
                    },
                ),
                max_size=3,
            )
            | json_values,
        },
    )
)
def test_task_status_parser_raises_only_parse_error_on_near_misses(data: dict[str, Any]) -> None:
    try:
        status = parse_task_status(data)
        resource_samples(status.records, 1, 1)
        segment_samples(status.records, 7, 1, 1)
    except ParseError:
        pass


@given(json_values)
def test_other_parsers_raise_only_parse_error_on_any_json(value: object) -> None:
    for parse in (parse_envelope, parse_task_id, parse_resource_ids, parse_database_ids):
        with contextlib.suppress(ParseError):
            parse(value)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"data": {}},
        {"error": "0"},
        {"error": False},
        {"error": 0, "error_text": 5},
        {"error": 0, "next_from_id": "4"},
    ],
)
def test_envelopes_that_are_refused(body: object) -> None:
    with pytest.raises(ParseError):
        parse_envelope(body)


def test_envelope_of_a_list() -> None:
    envelope = parse_envelope(
        {
            "data": [{"id": 1, "name": "Resource", "groups": [{"id": 1, "name": "subaccount"}]}],
            "error": 0,
            "error_text": "Successful operation",
            "next_from_id": 4,
            "total_count": 1,
        }
    )
    assert (envelope.next_from_id, envelope.total_count) == (4, 1)
    assert parse_resource_ids(envelope.data) == [1]


def test_discovery_answers() -> None:
    assert parse_database_ids({"channels": ["email"], "dbs_ids": [3, 1, 3], "id": 1}) == [1, 3]
    assert parse_database_ids({"dbs_ids": None}) == []
    assert parse_resource_ids(None) == []
    with pytest.raises(ParseError):
        parse_database_ids({"dbs_ids": [1, "2"]})
    with pytest.raises(ParseError):
        parse_resource_ids([{"name": "no id"}])
    assert parse_task_id({"task_id": "c9c3ec48-1bef-4969-9c1a-df39f0c179bb"}) == (
        "c9c3ec48-1bef-4969-9c1a-df39f0c179bb"
    )
    with pytest.raises(ParseError):
        parse_task_id({"task_id": ""})


# -- config --------------------------------------------------------------------------------------


def altcraft_target(**extra: Any) -> dict[str, Any]:
    return {
        "name": "altcraft-prod",
        "provider": "altcraft",
        "base_url": "https://altcraft.example.com/api/v1.1",
        "token": "t0ken-value",
        **extra,
    }


def test_config_with_lists_and_auto() -> None:
    config = validate_config(
        {
            "targets": [
                altcraft_target(
                    resources=[{"id": 24, "list_id": 1}],
                    segments=[{"id": 7, "resource_id": 24, "db_id": 1}],
                    task_poll_interval="500ms",
                ),
                altcraft_target(name="auto", resources="auto", discovery_interval="30m"),
            ]
        }
    )
    first, second = config.targets
    assert isinstance(first, AltcraftTarget)
    assert isinstance(second, AltcraftTarget)
    assert first.resources != "auto"
    assert [(r.id, r.list_id) for r in first.resources] == [(24, 1)]
    assert [(s.id, s.resource_id, s.db_id) for s in first.segments] == [(7, 24, 1)]
    assert first.task_poll_interval == 0.5
    assert first.discovery_interval == 3600
    assert second.resources == "auto"
    assert second.discovery_interval == 1800
    assert first.secret("token") == "t0ken-value"
    assert "resources=1 segments=1" in first.summary()
    assert "resources=auto" in second.summary()
    assert "discovery_interval=30m" in second.summary()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            {"resources": [{"id": 24, "list_id": "one"}]},
            "targets[0].resources[0].list_id: must be a whole number",
        ),
        ({"resources": [{"id": 24}]}, "targets[0].resources[0].list_id: required key is missing"),
        (
            {"resources": [{"id": 24, "list_id": 1, "db": 2}]},
            "targets[0].resources[0].db: unknown key",
        ),
        ({"resources": "all"}, "targets[0].resources: must be auto or a list"),
        (
            {"resources": [{"id": 1, "list_id": 1}, {"id": 1, "list_id": 1}]},
            "targets[0].resources: resources [1] repeats [0]",
        ),
        (
            {"segments": [{"id": 7, "resource_id": 24}]},
            "targets[0].segments[0].db_id: required key is missing",
        ),
        ({}, "targets[0].resources: nothing to collect"),
        ({"resources": [], "segments": []}, "targets[0].resources: nothing to collect"),
        (
            {"resources": "auto", "token_file": "/etc/hostname"},
            "targets[0].token: give either token or token_file, not both",
        ),
        ({"resources": "auto", "token": None}, "targets[0].token: token or token_file is required"),
        (
            {"resources": "auto", "task_max_age": "soon"},
            "targets[0].task_max_age: invalid duration",
        ),
        (
            {"resources": "auto", "task_poll_interval": "soon"},
            "targets[0].task_poll_interval: invalid duration",
        ),
        ({"resources": "auto", "list_id": 1}, "targets[0].list_id: unknown key"),
        (
            {"resources": "auto", "token_file": "/nonexistent/altcraft-token"},
            "does not exist",
        ),
    ],
)
def test_config_errors_name_the_key(extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"targets": [altcraft_target(**extra)]})
    assert problem in str(caught.value)
    assert "t0ken-value" not in str(caught.value)


def test_token_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("file-t0ken\n")
    target = altcraft_target(resources="auto", token_file=str(secret))
    del target["token"]
    config = validate_config({"targets": [target]})
    assert config.targets[0].secret("token") == "file-t0ken"
    assert config.secret_values() == ["file-t0ken"]


def test_the_example_config_file_has_a_valid_altcraft_target() -> None:
    example = Path(__file__).resolve().parents[1] / "config.yaml"
    raw = yaml.safe_load(example.read_text())
    altcraft = [t for t in raw["targets"] if t.get("provider") == "altcraft"]
    assert len(altcraft) == 1
    config = validate_config(
        {"defaults": raw.get("defaults", {}), "targets": altcraft},
        environ={"ALTCRAFT_TOKEN": "example-token"},
    )
    (target,) = config.targets
    assert isinstance(target, AltcraftTarget)
    assert target.secret("token") == "example-token"
    assert target.interval == 600
    assert target.resources != "auto"
    assert [(r.id, r.list_id) for r in target.resources] == [(24, 1)]
    assert [(s.id, s.resource_id, s.db_id) for s in target.segments] == [(7, 24, 1)]
    with pytest.raises(ConfigError, match="environment variable ALTCRAFT_TOKEN is not set"):
        validate_config({"targets": altcraft}, environ={})
