"""Trust.lat end to end: the simulator (statistics API and Atenea token service) and the exporter
on loopback sockets, scraped over HTTP."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from exporter import simulator
from exporter.logs import setup_logging
from exporter.providers.trustlat import RENEW_SLACK
from exporter.simulator.trustlat import SHORT_TOKEN_LIFETIME, TOKEN_SERVICE, TrustlatState
from tests.conftest import free_port, labels, series

NOTIFICATIONS = "trustlat_notifications"
SCHEDULED = "trustlat_notifications_scheduled"
ACTIONS = "trustlat_notification_actions"
CAMPAIGNS = "trustlat_campaigns"
EXPIRY = "trustlat_access_token_expiry_timestamp_seconds"
SUCCESS = "messaging_exporter_collect_success"
ERRORS = "messaging_exporter_collect_errors_total"
REQUESTS = "messaging_exporter_provider_request_duration_seconds_count"

ACME = labels(provider="trustlat", account="trustlat-acme")
INITECH = labels(provider="trustlat", account="trustlat-initech")


def trust_targets(sim_url: str, sim: simulator.Simulator, **extra: Any) -> list[dict[str, Any]]:
    return [
        dict(target, **extra)
        for target in simulator.demo_targets(sim_url, sim)
        if target["provider"] == "trustlat"
    ]


def trust(sim: simulator.Simulator) -> TrustlatState:
    state: TrustlatState = sim.state["trustlat"]
    return state


def token_requests(sim: simulator.Simulator, account: str = "acme") -> list[Any]:
    return sim.received(TOKEN_SERVICE, account)


def statistics_requests(sim: simulator.Simulator, account: str = "acme") -> list[Any]:
    return sim.received("trustlat", account)


def errors_of(scraped: dict[Any, float], account: str) -> dict[str, float]:
    return {
        dict(key)["reason"]: value
        for key, value in series(scraped, ERRORS).items()
        if ("account", account) in key and value
    }


async def test_scrape_has_exactly_the_simulated_samples(sim, sim_url, harness, make_config):
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    ((token_value, issued),) = trust(sim).tokens.items()
    trust_samples = {key: value for key, value in scraped.items() if key[0].startswith("trustlat_")}
    acme = {"account": "trustlat-acme", "company_id": "1"}
    initech = {"account": "trustlat-initech", "company_id": "7"}
    assert trust_samples == {
        (NOTIFICATIONS, labels(**acme, state="sent")): 1180,
        (NOTIFICATIONS, labels(**acme, state="pending")): 45,
        (NOTIFICATIONS, labels(**acme, state="failed")): 23,
        (SCHEDULED, labels(**acme)): 1248,
        (ACTIONS, labels(**acme, action="received")): 1040,
        (ACTIONS, labels(**acme, action="press_action")): 212,
        (ACTIONS, labels(**acme, action="closed")): 97,
        (ACTIONS, labels(**acme, action="unknown")): 6,
        (CAMPAIGNS, labels(**acme)): 3,
        (EXPIRY, labels(account="trustlat-acme")): issued.created_at + 7200,
        # The page's "Found" example, with a fixed token: no CLOSED, no expiry metric.
        (NOTIFICATIONS, labels(**initech, state="sent")): 0,
        (NOTIFICATIONS, labels(**initech, state="pending")): 0,
        (NOTIFICATIONS, labels(**initech, state="failed")): 6,
        (SCHEDULED, labels(**initech)): 6,
        (ACTIONS, labels(**initech, action="received")): 0,
        (ACTIONS, labels(**initech, action="press_action")): 4,
        (ACTIONS, labels(**initech, action="unknown")): 0,
        (CAMPAIGNS, labels(**initech)): 5,
    }
    assert series(scraped, SUCCESS) == {ACME: 1, INITECH: 1}
    # Token requests count under the target's provider.
    assert series(scraped, REQUESTS) == {
        labels(provider="trustlat", endpoint="oauth/token", code="200"): 1,
        labels(provider="trustlat", endpoint="company/statistics", code="200"): 2,
    }
    (token_request,) = token_requests(sim)
    assert token_request.method == "POST"
    assert token_request.path == f"/{TOKEN_SERVICE}/acme/oauth/token/"
    assert token_request.body == {
        "client_id": "demo-trust-acme-client",
        "client_secret": "demo-trust-acme-client-secret",
        "grant_type": "client_credentials",
    }
    (acme_stats,) = statistics_requests(sim)
    assert acme_stats.method == "GET"
    assert acme_stats.path == "/trustlat/acme/campaigns/api/v1/company/1/statistics"
    assert acme_stats.headers["Authorization"] == f"Bearer {token_value}"
    (initech_stats,) = statistics_requests(sim, "initech")
    assert initech_stats.headers["Authorization"] == "Bearer demo-trust-initech-fixed-token"
    assert token_requests(sim, "initech") == []
    assert "last 7 days" in await h.scrape_text()


async def test_the_token_is_kept_between_runs(sim, sim_url, harness, make_config):
    h = await harness(make_config(trust_targets(sim_url, sim)))
    for _ in range(3):
        await h.collect()
    assert len(token_requests(sim)) == 1
    assert len(statistics_requests(sim)) == 3
    assert trust(sim).refused == []


async def test_the_token_is_renewed_before_it_expires(sim, sim_url, harness, make_config):
    # Tokens of 5 s, less than a run's deadline plus slack: each run must take a new one before
    # the old one could expire, so the statistics API never sees an expired token.
    sim.set_fault("trustlat", "acme", "short_expiry")
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    first = next(iter(trust(sim).tokens.values()))
    await h.collect()
    scraped = await h.scrape()
    assert len(token_requests(sim)) == 2
    assert len(statistics_requests(sim)) == 2
    assert trust(sim).refused == []
    assert scraped[(SUCCESS, ACME)] == 1
    newest = list(trust(sim).tokens.values())[-1]
    assert newest.expires_in == SHORT_TOKEN_LIFETIME
    assert scraped[(EXPIRY, labels(account="trustlat-acme"))] == newest.created_at + 5
    assert newest.created_at >= first.created_at
    # The statistics API got the new token the second time.
    tokens = list(trust(sim).tokens)
    assert [r.headers["Authorization"] for r in statistics_requests(sim)] == [
        f"Bearer {tokens[0]}",
        f"Bearer {tokens[1]}",
    ]


async def test_the_token_is_renewed_when_the_runs_clock_says_so(
    sim, sim_url, harness, make_config, clock
):
    # The token's expiry is judged by the clock the exporter is given, not by the machine's: a
    # fake clock moved past it makes the next run take a new token, with no time passing.
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    (token,) = trust(sim).tokens.values()
    target = h.exporter.targets.get("trustlat-acme")
    margin = target.config.deadline + RENEW_SLACK
    # Leeway for the time between the fake clock's start and the token's issue.
    leeway = 30
    clock.advance(token.expires_in - margin - leeway)
    await h.collect()
    assert len(token_requests(sim)) == 1
    clock.advance(2 * leeway)
    await h.collect()
    assert len(token_requests(sim)) == 2
    assert trust(sim).refused == []


async def test_a_401_gets_a_new_token_once_and_the_run_succeeds(sim, sim_url, harness, make_config):
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    trust(sim).expire_tokens("acme")  # the server stops accepting the kept token
    trust(sim).companies["acme"].sended = 1181
    await h.collect()
    scraped = await h.scrape()
    assert trust(sim).refused == [("acme", "token expired")]
    assert len(token_requests(sim)) == 2
    assert len(statistics_requests(sim)) == 3
    assert scraped[(SUCCESS, ACME)] == 1
    assert errors_of(scraped, "trustlat-acme") == {}
    sent = labels(account="trustlat-acme", company_id="1", state="sent")
    assert scraped[(NOTIFICATIONS, sent)] == 1181
    assert (
        series(scraped, REQUESTS)[
            labels(provider="trustlat", endpoint="company/statistics", code="401")
        ]
        == 1
    )


async def test_the_token_expired_fault_is_survived_the_same_way(sim, sim_url, harness, make_config):
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    sim.set_fault("trustlat", "acme", "token_expired")
    await h.collect()
    await h.collect()  # the new token stays good
    scraped = await h.scrape()
    assert trust(sim).refused == [("acme", "token expired")]
    assert len(token_requests(sim)) == 2
    assert scraped[(SUCCESS, ACME)] == 1


async def test_a_second_401_is_not_retried_again(sim, sim_url, harness, make_config):
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    sim.set_fault("trustlat", "acme", "auth")  # credentials and tokens refused from now on
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, ACME)] == 0
    assert errors_of(scraped, "trustlat-acme") == {"auth": 1}
    assert len(token_requests(sim)) == 2  # the first, and one renewal that was refused
    assert len(statistics_requests(sim)) == 2
    # Last good values are kept; the other target is untouched.
    assert scraped[(CAMPAIGNS, labels(account="trustlat-acme", company_id="1"))] == 3
    assert scraped[(SUCCESS, INITECH)] == 1
    runner_state = h.exporter.targets.get("trustlat-acme").state
    assert runner_state.latest is not None
    assert "invalid_client" in (runner_state.latest.error or "")


async def test_a_refused_fixed_token_is_auth_without_token_requests(
    sim, sim_url, harness, make_config
):
    sim.set_fault("trustlat", "initech", "auth")
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "trustlat-initech") == {"auth": 1}
    assert len(statistics_requests(sim, "initech")) == 1
    assert token_requests(sim, "initech") == []
    assert scraped[(SUCCESS, ACME)] == 1


async def test_wrong_client_secret_is_auth_and_no_statistics_request(
    sim, sim_url, harness, make_config
):
    config_targets = trust_targets(sim_url, sim)
    config_targets[0]["client_secret"] = "not-the-secret"
    h = await harness(make_config(config_targets))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "trustlat-acme") == {"auth": 1}
    assert statistics_requests(sim) == []
    assert (EXPIRY, labels(account="trustlat-acme")) not in scraped
    assert (
        series(scraped, REQUESTS)[labels(provider="trustlat", endpoint="oauth/token", code="401")]
        == 1
    )


async def test_token_endpoint_down_is_http_5xx_and_spares_the_others(
    sim, sim_url, harness, make_config
):
    sim.set_fault("trustlat", "acme", "token_endpoint_down")
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    # The token service failed; nothing says the credentials are wrong.
    assert errors_of(scraped, "trustlat-acme") == {"http_5xx": 1}
    assert statistics_requests(sim) == []
    acme_state = h.exporter.targets.get("trustlat-acme").state
    assert acme_state.latest is not None
    assert "token endpoint" in (acme_state.latest.error or "")
    assert "HTTP 503" in (acme_state.latest.error or "")
    assert scraped[(SUCCESS, INITECH)] == 1


# Every common fault against every provider is in tests/test_faults.py; what Trust.lat adds: the
# token's expiry stays fresh when only the statistics call failed.
@pytest.mark.parametrize(
    ("fault", "reason"),
    [("auth", "auth"), ("http_500_html", "http_5xx"), ("malformed_json", "parse")],
)
async def test_each_fault_of_the_statistics_api_gives_its_reason(
    sim, sim_url, harness, make_config, fault, reason
):
    config = make_config(trust_targets(sim_url, sim), defaults={"max_response_bytes": 1_048_576})
    h = await harness(config)
    sim.set_fault("trustlat", "acme", simulator.Fault(fault, retry_after="1"))
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, ACME)] == 0
    assert errors_of(scraped, "trustlat-acme") == {reason: 1}
    assert scraped[(SUCCESS, INITECH)] == 1
    assert scraped[(CAMPAIGNS, labels(account="trustlat-initech", company_id="7"))] == 5
    if fault != "auth":
        # The token was fine: its expiry is served as fresh even though the run failed.
        assert (EXPIRY, labels(account="trustlat-acme")) in scraped


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        # Only a refusal of the credentials is auth; a token service that fails, cannot be
        # reached or answers nonsense gives the reason of that failure.
        ("http_500_html", "http_5xx"),
        ("http_503", "http_5xx"),
        ("malformed_json", "parse"),
        ("wrong_shape", "parse"),
        ("huge_body", "parse"),
        ("reset", "connection"),
        ("rate_limited", "rate_limited"),
        ("auth", "auth"),  # 401 invalid_client
        ("hang", "timeout"),  # the deadline ended the run
    ],
)
async def test_each_fault_of_the_token_service_gives_its_reason(
    sim, sim_url, harness, make_config, fault, reason
):
    config_targets = trust_targets(sim_url, sim)
    if fault == "hang":
        # Only the hang is meant to meet the deadline: the other faults, and the other target,
        # keep the default timeout, which retries and a loaded machine cannot reach.
        next(t for t in config_targets if t["name"] == "trustlat-acme")["timeout"] = "0.4s"
    h = await harness(make_config(config_targets, defaults={"max_response_bytes": 1_048_576}))
    # Retry-After past the deadline: a 429 is not retried.
    sim.set_fault(TOKEN_SERVICE, "acme", simulator.Fault(fault, retry_after="3600"))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "trustlat-acme") == {reason: 1}
    assert statistics_requests(sim) == []
    assert scraped[(SUCCESS, INITECH)] == 1
    acme_state = h.exporter.targets.get("trustlat-acme").state
    assert acme_state.latest is not None
    assert "token endpoint" in (acme_state.latest.error or "")


async def test_a_refused_grant_is_auth(sim, sim_url, harness, make_config):
    """OAuth2's 400 invalid_grant refuses the credentials: auth, not http_4xx."""
    sim.set_fault("trustlat", "acme", "invalid_grant")
    h = await harness(make_config(trust_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "trustlat-acme") == {"auth": 1}
    assert (
        series(scraped, REQUESTS)[labels(provider="trustlat", endpoint="oauth/token", code="400")]
        == 1
    )


async def test_a_token_endpoint_that_cannot_be_reached_is_connection(
    sim, sim_url, harness, make_config
):
    closed = free_port()  # bound and released: nothing listens there
    config_targets = trust_targets(sim_url, sim)
    config_targets[0]["token_url"] = f"http://127.0.0.1:{closed}/oauth/token/"
    h = await harness(make_config(config_targets, defaults={"timeout": "1s"}))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "trustlat-acme") == {"connection": 1}
    assert statistics_requests(sim) == []


async def test_a_wrong_token_url_is_http_4xx(sim, sim_url, harness, make_config):
    """A 404 (or a 400 other than a refusal of the credentials) says the URL or the request is
    wrong, not the credentials."""
    config_targets = trust_targets(sim_url, sim)
    config_targets[0]["token_url"] = f"{sim_url}/{TOKEN_SERVICE}/nobody/oauth/token/"
    h = await harness(make_config(config_targets))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "trustlat-acme") == {"http_4xx": 1}


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("debug", "json", stream=stream)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        structlog.reset_defaults()


async def test_secrets_and_tokens_appear_nowhere(sim, sim_url, harness, make_config, json_logs):
    h = await harness(make_config(trust_targets(sim_url, sim)))
    setup_logging("debug", "json", stream=json_logs, redactor=h.exporter.redactor)
    await h.collect()
    trust(sim).expire_tokens("acme")
    await h.collect()  # a 401, a renewal
    sim.set_fault("trustlat", "acme", "auth")
    sim.set_fault("trustlat", "initech", "http_500_html")
    await h.collect()  # failures logged with their error texts
    text = await h.scrape_text()
    landing = await (await h.client.get("/")).text()
    logs = json_logs.getvalue()
    secrets = [
        "demo-trust-acme-client-secret",
        "demo-trust-initech-fixed-token",
        *trust(sim).tokens,
    ]
    assert len(secrets) == 4
    for secret in secrets:
        assert secret not in logs
        assert secret not in text
        assert secret not in landing
    errors = [t.state.latest.error or "" for t in h.exporter.targets if t.state.latest is not None]
    assert all(secret not in error for secret in secrets for error in errors)
    lines = [json.loads(line) for line in logs.splitlines()]
    failures = [
        line
        for line in lines
        if line.get("event") == "collection" and line.get("outcome") == "failure"
    ]
    assert {(line["account"], line["provider"], line["reason"]) for line in failures} == {
        ("trustlat-acme", "trustlat", "auth"),
        ("trustlat-initech", "trustlat", "http_5xx"),
    }
