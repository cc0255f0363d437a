"""Trust.lat: the pure parts (statistics and token answers, envelope, config) on the API page's
examples and on arbitrary JSON."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError, validate_config
from exporter.providers.base import Sample
from exporter.providers.errors import ParseError, Reason
from exporter.providers.trustlat import (
    ACTIONS,
    CAMPAIGNS,
    NOTIFICATIONS,
    REFUSED_GRANT_ERRORS,
    SCHEDULED,
    TrustlatTarget,
    envelope_error,
    oauth_error,
    parse_statistics,
    parse_token,
    token_failure_reason,
)

# The two answers of the API page, as printed there.
PAGE_EMPTY: dict[str, Any] = {
    "code": 200,
    "resource": "Statistics",
    "data": {
        "total": 0,
        "sended": 0,
        "pending": 0,
        "fails": 0,
        "actions": {"RECEIVED": 0, "PRESS_ACTION": 0, "UNKNOWN": 0},
        "campaign": 0,
    },
    "message": "Ok",
}
PAGE_FOUND: dict[str, Any] = {
    "code": 200,
    "resource": "Statistics",
    "data": {
        "total": 6,
        "sended": 0,
        "pending": 0,
        "fails": 6,
        "actions": {"RECEIVED": 0, "PRESS_ACTION": 4, "UNKNOWN": 0},
        "campaign": 5,
    },
    "message": "Ok",
}


def test_page_example_found_gives_exact_samples():
    assert parse_statistics(PAGE_FOUND, "1") == [
        Sample(NOTIFICATIONS, ("1", "sent"), 0.0),
        Sample(NOTIFICATIONS, ("1", "pending"), 0.0),
        Sample(NOTIFICATIONS, ("1", "failed"), 6.0),
        Sample(SCHEDULED, ("1",), 6.0),
        Sample(ACTIONS, ("1", "received"), 0.0),
        Sample(ACTIONS, ("1", "press_action"), 4.0),
        Sample(ACTIONS, ("1", "unknown"), 0.0),
        Sample(CAMPAIGNS, ("1",), 5.0),
    ]


def test_page_example_empty_gives_zeros_not_nothing():
    samples = parse_statistics(PAGE_EMPTY, "1")
    assert len(samples) == 8
    assert {sample.value for sample in samples} == {0.0}


def test_closed_and_unlisted_actions_pass_through_snake_cased():
    body = {
        "code": 200,
        "data": {
            **PAGE_FOUND["data"],
            "actions": {"CLOSED": 2, "pressAction": 1, "SWIPED_AWAY": 3},
        },
    }
    actions = {s.labels[1]: s.value for s in parse_statistics(body, "9") if s.metric == ACTIONS}
    assert actions == {"closed": 2.0, "press_action": 1.0, "swiped_away": 3.0}


def test_no_actions_at_all_is_valid():
    body = {"data": {**PAGE_FOUND["data"], "actions": {}}}
    assert [s for s in parse_statistics(body, "1") if s.metric == ACTIONS] == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({**PAGE_FOUND["data"], "fails": "6"}, "fails"),
        ({**PAGE_FOUND["data"], "total": -1}, "total"),
        ({**PAGE_FOUND["data"], "campaign": 1.5}, "campaign"),
        ({k: v for k, v in PAGE_FOUND["data"].items() if k != "sended"}, "sended"),
        ({**PAGE_FOUND["data"], "actions": [1]}, "actions"),
        ({**PAGE_FOUND["data"], "actions": {"RECEIVED": True}}, "RECEIVED"),
    ],
)
def test_wrong_types_name_the_field(data: Any, fragment: str):
    with pytest.raises(ParseError, match=fragment):
        parse_statistics({"code": 200, "data": data}, "1")


def test_actions_that_collide_after_snake_casing_are_refused():
    body = {"data": {**PAGE_FOUND["data"], "actions": {"PRESS_ACTION": 1, "pressAction": 2}}}
    with pytest.raises(ParseError, match="same action"):
        parse_statistics(body, "1")


def test_envelope_codes():
    assert envelope_error(PAGE_FOUND) is None
    assert envelope_error({**PAGE_FOUND, "code": "200"}) is None
    assert envelope_error([1]) is None
    assert envelope_error({"code": 500, "message": "Internal"}) == (
        Reason.PROVIDER_ERROR,
        "code 500 (Internal)",
    )
    assert envelope_error({"code": 401, "message": "jwt expired"}) == (
        Reason.AUTH,
        "code 401 (jwt expired)",
    )


def test_token_answer_expiry_is_created_at_plus_expires_in():
    token = parse_token(
        {
            "access_token": "abc",
            "token_type": "Bearer",
            "expires_in": 7200,
            "created_at": 1_700_000_000,
        },
        requested_at=1_700_000_005.0,
    )
    assert token.value == "abc"
    assert token.expires_at == 1_700_007_200.0
    # Renewal goes by the earlier of the two clocks.
    assert token.renew_at == 1_700_007_200.0


def test_token_renewal_uses_our_clock_when_the_server_runs_ahead():
    token = parse_token(
        {"access_token": "abc", "expires_in": 60, "created_at": 1_700_000_600},
        requested_at=1_700_000_000.0,
    )
    assert token.expires_at == 1_700_000_660.0
    assert token.renew_at == 1_700_000_060.0


def test_token_without_expiry_or_creation_time():
    assert parse_token({"access_token": "abc"}, 5.0).expires_at is None
    token = parse_token({"access_token": "abc", "expires_in": 10}, 5.0)
    assert (token.expires_at, token.renew_at) == (15.0, 15.0)
    iso = parse_token(
        {"access_token": "a", "expires_in": 10, "created_at": "2023-11-14T22:13:20Z"}, 0
    )
    assert iso.expires_at == 1_700_000_010.0


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 10},
        {"access_token": "", "expires_in": 10},
        {"access_token": "x", "token_type": "MAC"},
        {"access_token": "x", "expires_in": "7200"},
        {"access_token": "x", "expires_in": 0},
        {"access_token": "x", "expires_in": 10, "created_at": "yesterday"},
        {"access_token": "x", "expires_in": 10, "created_at": "2023-11-14T22:13:20"},
        ["access_token"],
    ],
)
def test_bad_token_answers(body: Any):
    with pytest.raises(ParseError):
        parse_token(body, 0.0)


def test_a_bad_token_answer_never_quotes_the_token():
    with pytest.raises(ParseError) as caught:
        parse_token({"access_token": "s3cr3t-token-value", "token_type": "MAC"}, 0.0)
    assert "s3cr3t" not in str(caught.value)


# -- arbitrary JSON ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
data_keys = st.sampled_from(["total", "sended", "pending", "fails", "actions", "campaign", "x"])
near_statistics = st.fixed_dictionaries(
    {
        "code": json_values,
        "data": st.dictionaries(
            data_keys,
            json_values | st.integers(min_value=0) | st.dictionaries(st.text(), json_values),
        )
        | json_values,
    }
)
near_token = st.dictionaries(
    st.sampled_from(["access_token", "token_type", "expires_in", "created_at", "scope"]),
    json_values
    | st.sampled_from(
        ["Bearer", "bearer", "2023-01-01T00:00:00+00:00", "9999-12-31T23:59:59+14:00"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(json_values | near_statistics)
def test_statistics_parser_raises_only_parse_error(body: Any):
    try:
        samples = parse_statistics(body, "1")
    except ParseError:
        return
    assert all(sample.value >= 0 for sample in samples)
    assert len({(s.metric, s.labels) for s in samples}) == len(samples)


@settings(max_examples=300, deadline=None)
@given(json_values | near_token, st.floats(min_value=0, max_value=4e9))
def test_token_parser_raises_only_parse_error(body: Any, now: float):
    try:
        token = parse_token(body, now)
    except ParseError:
        return
    assert token.value


@settings(max_examples=200, deadline=None)
@given(json_values | near_statistics)
def test_envelope_check_never_raises(body: Any):
    envelope_error(body)


# -- config ------------------------------------------------------------------------------------


def target(**keys: Any) -> dict[str, Any]:
    return {"name": "trust", "provider": "trustlat", "base_url": "https://api.trust.lat", **keys}


def test_client_credentials_config_with_default_token_url():
    config = validate_config(
        {"targets": [target(company_id=1, client_id="id", client_secret="secret-value")]}
    )
    trust = config.targets[0]
    assert isinstance(trust, TrustlatTarget)
    assert trust.company_id == "1"
    assert trust.uses_oauth
    assert trust.effective_token_url == "https://atenea.trust.lat/oauth/token/"
    assert config.secret_values() == ["secret-value"]
    assert "secret-value" not in trust.summary()


def test_fixed_token_config(tmp_path):
    path = tmp_path / "token"
    path.write_text("fixed-token-value\n")
    config = validate_config(
        {"targets": [target(company_id="acme-1", access_token_file=str(path))]}
    )
    trust = config.targets[0]
    assert isinstance(trust, TrustlatTarget)
    assert not trust.uses_oauth
    assert trust.secret("access_token") == "fixed-token-value"
    assert "auth=access_token" in trust.summary()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"company_id": 1}, "targets[0].client_id: give either client_id and client_secret"),
        (
            {"company_id": 1, "access_token": "t", "client_id": "i"},
            "targets[0].access_token: give either access_token",
        ),
        (
            {"company_id": 1, "access_token": "t", "token_url": "https://a.example/"},
            "targets[0].access_token: give either access_token",
        ),
        (
            {"company_id": 1, "access_token_file": "/etc/hostname", "client_id": "i"},
            "targets[0].access_token_file: give either access_token",
        ),
        (
            {"company_id": 1, "client_id": "i"},
            "targets[0].client_secret: client_secret or client_secret_file is required",
        ),
        (
            {"company_id": 1, "client_secret": "s"},
            "targets[0].client_id: client_id is required with client_secret",
        ),
        (
            {"company_id": 1, "client_id": "i", "client_secret": "s", "client_secret_file": "/x"},
            "client_secret_file",
        ),
        (
            {
                "company_id": 1,
                "client_id": "i",
                "client_secret": "s",
                "client_secret_file": "/etc/hostname",
            },
            "targets[0].client_secret: give either client_secret or client_secret_file, not both",
        ),
        (
            {"company_id": 1, "access_token": "t", "access_token_file": "/etc/hostname"},
            "targets[0].access_token: give either access_token or access_token_file, not both",
        ),
        ({"company_id": "1/../2", "access_token": "t"}, "targets[0].company_id"),
        ({"company_id": -1, "access_token": "t"}, "targets[0].company_id"),
        ({"access_token": "t"}, "targets[0].company_id: required key is missing"),
        (
            {"company_id": 1, "client_id": "i", "client_secret": "s", "token_url": "ftp://x/"},
            "targets[0].token_url",
        ),
        (
            {"company_id": 1, "client_id": "i", "client_secret": "s", "token_url": "https:///t/"},
            "targets[0].token_url: the URL has no host",
        ),
        (
            {
                "company_id": 1,
                "client_id": "i",
                "client_secret": "s",
                "token_url": "https://u:p@a.example/t/",
            },
            "targets[0].token_url: must not carry credentials; use client_id and client_secret",
        ),
        (
            {"company_id": 1, "client_id": "i", "client_secret": "s", "token_url": "https://a/#f"},
            "targets[0].token_url: must not have a fragment",
        ),
        ({"company_id": 1, "access_token": "t", "window": "1h"}, "targets[0].window: unknown key"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, Any], message: str):
    with pytest.raises(ConfigError) as caught:
        validate_config({"targets": [target(**keys)]})
    assert message in str(caught.value)


def test_error_texts_from_trust():
    from exporter.providers.trustlat import _error_text

    body = b'{"error": "invalid_client", "error_description": "bad secret"}'
    assert _error_text(body) == "invalid_client: bad secret"
    assert _error_text(b'{"code": 404, "message": "Company not found"}') == "Company not found"


# -- why a token request failed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status", "code", "expected"),
    [
        # The endpoint refused the credentials.
        (Reason.AUTH, 401, "invalid_client", Reason.AUTH),
        (Reason.AUTH, 403, None, Reason.AUTH),
        (Reason.HTTP_4XX, 400, "invalid_client", Reason.AUTH),
        (Reason.HTTP_4XX, 400, "invalid_grant", Reason.AUTH),
        (Reason.HTTP_4XX, 400, "unauthorized_client", Reason.AUTH),
        # Anything else keeps the reason of the failure itself.
        (Reason.HTTP_4XX, 400, "unsupported_grant_type", Reason.HTTP_4XX),
        (Reason.HTTP_4XX, 400, "invalid_request", Reason.HTTP_4XX),
        (Reason.HTTP_4XX, 404, None, Reason.HTTP_4XX),
        (Reason.HTTP_5XX, 500, None, Reason.HTTP_5XX),
        (Reason.HTTP_5XX, 503, None, Reason.HTTP_5XX),
        (Reason.RATE_LIMITED, 429, None, Reason.RATE_LIMITED),
        (Reason.CONNECTION, None, None, Reason.CONNECTION),
        (Reason.TIMEOUT, None, None, Reason.TIMEOUT),
        (Reason.PARSE, None, None, Reason.PARSE),
    ],
)
def test_token_failure_reason(
    reason: Reason, status: int | None, code: str | None, expected: Reason
) -> None:
    assert token_failure_reason(reason, status, code) is expected


def test_the_refusing_oauth_errors() -> None:
    assert {"invalid_client", "invalid_grant"} <= REFUSED_GRANT_ERRORS
    assert "unsupported_grant_type" not in REFUSED_GRANT_ERRORS


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            "invalid_client",
        ),
        ({"error": " invalid_grant "}, "invalid_grant"),
        ({"error": ""}, None),
        ({"error": 401}, None),
        ({"access_token": "abc"}, None),
        (["invalid_client"], None),
        (None, None),
    ],
)
def test_oauth_error(body: object, code: str | None) -> None:
    assert oauth_error(body) == code


# -- the expiry as Atenea wrote it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "expires_in", "expires_at"),
    [
        ("2024-04-19T13:31:08.927Z", 7200, "1713540668.927"),
        (1700251078.531, 1.3, "1700251079.831"),  # the float sum is 1700251079.8309999
        (1713533468.1, 7200.2, "1713540668.3"),
        (1713533468, 7200, "1713540668.0"),
    ],
)
def test_the_expiry_is_the_sum_of_the_decimals_given(
    created_at: object, expires_in: float, expires_at: str
) -> None:
    body = {"access_token": "abc", "expires_in": expires_in, "created_at": created_at}
    token = parse_token(body, 1713533400.0)
    assert repr(token.expires_at) == expires_at
