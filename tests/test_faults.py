"""Fault injection for every provider: each fault the simulator can throw at one account gives the
right reason, keeps that target's last good values, leaves every other target untouched, and never
takes the exporter down; /metrics answers while a hanging target is in flight."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from exporter import simulator
from exporter.config import Config
from exporter.logs import setup_logging
from tests.conftest import eventually, parse_exposition, series

SUCCESS = "messaging_exporter_collect_success"
ERRORS = "messaging_exporter_collect_errors_total"

# fault → the reason it must give; where a provider's API makes a fault harmless, it says so here.
FAULTS = {
    "http_500_html": "http_5xx",
    "http_503": "http_5xx",
    "malformed_json": "parse",
    "wrong_shape": "parse",
    "strings_for_numbers": "parse",
    "huge_body": "parse",
    "reset": "connection",
    "rate_limited": "rate_limited",
    "hang": "timeout",
    "auth": "auth",
    "echo": "http_4xx",
}
HARMLESS = {
    # Exolve sends its int64 counts as strings anyway (proto3 JSON): strings are its normal answer.
    ("exolve", "strings_for_numbers"),
}


def sim_account(target: dict[str, Any]) -> str:
    """The simulator account a demo target points at: /<provider>/<account>/..."""
    path = target["base_url"].split("://", 1)[1].split("/")
    return str(path[2])


def providers() -> list[str]:
    return sorted(simulator.provider_parts())


def cases() -> list[tuple[str, str]]:
    return [(provider, fault) for provider in providers() for fault in FAULTS]


def provider_samples(scraped: dict, account: str) -> dict:
    return {
        key: value
        for key, value in scraped.items()
        if not key[0].startswith("messaging_exporter_") and ("account", account) in key[1]
    }


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the exporter logs, at debug level, as JSON lines."""
    buffer = io.StringIO()
    setup_logging("debug", "json", stream=buffer)
    yield buffer
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


def secrets_of(config: Config, sim: simulator.Simulator) -> list[str]:
    """Every secret in play: the config's, and the access tokens the simulator issued."""
    found = list(config.secret_values())
    for state in sim.state.values():
        found.extend(getattr(state, "tokens", {}))
    return [secret for secret in found if len(secret) >= 4]


@pytest.mark.parametrize(("provider", "fault"), cases())
async def test_fault(sim, sim_url, harness, make_config, clock, captured_logs, provider, fault):
    targets = simulator.demo_targets(sim_url, sim)
    victim = next(t for t in targets if t["provider"] == provider)
    if fault == "hang":
        # Only a hang is meant to meet the deadline, and only the victim's is short. Every other
        # fault, and every other target, has the default timeout: retries with their backoff,
        # or a dozen 1 MiB bodies read at once, on a loaded machine, must not turn into a timeout.
        victim["timeout"] = "1.5s"
    config = make_config(targets, defaults={"max_response_bytes": 1_048_576})
    h = await harness(config)
    setup_logging("debug", "json", stream=captured_logs, redactor=h.exporter.redactor)
    await h.collect()
    before = await h.scrape()
    assert all(value == 1 for value in series(before, SUCCESS).values()), series(before, SUCCESS)
    victim_before = provider_samples(before, victim["name"])
    assert victim_before, "the victim had samples before the fault"

    # Retry-After past the deadline: a 429 is not retried, it ends the run as rate_limited.
    sim.set_fault(provider, sim_account(victim), simulator.Fault(fault, retry_after="3600"))
    clock.advance(60)
    await h.collect()
    after = await h.scrape()

    # No secret in anything the exporter wrote or served, whatever the fault.
    served = await h.scrape_text() + await (await h.client.get("/")).text()
    secrets = secrets_of(config, sim)
    assert secrets
    for secret in secrets:
        assert secret not in served
        assert secret not in captured_logs.getvalue()
    events = [json.loads(line) for line in captured_logs.getvalue().splitlines()]

    key = (SUCCESS, frozenset({("provider", provider), ("account", victim["name"])}))
    if (provider, fault) in HARMLESS:
        assert after[key] == 1
        return
    assert after[key] == 0
    errors = {
        dict(labels)["reason"]: value
        for labels, value in series(after, ERRORS).items()
        if ("account", victim["name"]) in labels
    }
    assert errors[FAULTS[fault]] == 1, errors
    assert sum(errors.values()) == 1, errors
    logged = [
        e for e in events if e.get("event") == "collection" and e["account"] == victim["name"]
    ]
    assert logged[-1]["outcome"] == "failure"
    assert logged[-1]["reason"] == FAULTS[fault]
    assert logged[-1]["provider"] == provider
    assert logged[-1]["level"] == "warning"
    # The victim's last good values stay (stale_after is 5 minutes), and nothing else changed.
    assert provider_samples(after, victim["name"]) == victim_before
    for target in targets:
        if target["name"] != victim["name"]:
            other = (
                SUCCESS,
                frozenset({("provider", target["provider"]), ("account", target["name"])}),
            )
            assert after[other] == 1


async def test_metrics_answer_while_a_target_hangs(sim, sim_url, aiohttp_client, make_config):
    from exporter.service import make_exporter
    from exporter.web.app import build_app

    targets = simulator.demo_targets(sim_url, sim)
    victim = targets[0]
    sim.set_fault(victim["provider"], sim_account(victim), "hang")
    # The hang outlasts the test: its collection stays in flight until the app stops.
    exporter = make_exporter(make_config(targets, defaults={"interval": "60s", "timeout": "50s"}))
    client = await aiohttp_client(build_app(exporter))
    others = {t["name"] for t in targets[1:]}
    await eventually(
        lambda: all(t.state.latest is not None for t in exporter.targets if t.name in others),
        bound=15,
    )
    hanging = exporter.targets.get(victim["name"]).state
    assert hanging.latest is None  # still in flight
    for _ in range(5):
        # Answered while the hanging collection is in flight, not after it: a scrape that waited
        # for it would wait for its timeout, and the bound says so well before.
        async with asyncio.timeout(10):
            response = await client.get("/metrics")
            assert response.status == 200
            text = await response.text()
        assert hanging.latest is None
    scraped = parse_exposition(text)
    assert all(value == 1 for value in series(scraped, SUCCESS).values())


# -- switching faults over HTTP ------------------------------------------------------------------


async def post_fault(sim_url: str, payload: Any) -> tuple[int, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim_url}/_sim/faults", json=payload) as response,
    ):
        return response.status, await response.json()


async def test_a_fault_on_a_known_account_is_switched_and_cleared(sim, sim_url):
    status, answer = await post_fault(
        sim_url, {"provider": "thulium", "account": "acme", "fault": "http_503", "times": 2}
    )
    assert (status, answer) == (200, {"ok": True})
    assert sim.fault("thulium", "acme") == simulator.Fault("http_503", times=2)
    status, _ = await post_fault(sim_url, {"provider": "thulium", "account": "acme", "fault": None})
    assert status == 200
    assert sim.fault("thulium", "acme") is None


async def test_a_target_name_for_an_account_is_a_404_naming_the_accounts(sim, sim_url):
    # "thulium-acme" is the demo target's name; the simulator's account is "acme".
    status, answer = await post_fault(
        sim_url, {"provider": "thulium", "account": "thulium-acme", "fault": "http_503"}
    )
    assert status == 404
    assert answer["ok"] is False
    assert "thulium-acme" in answer["error"]
    assert answer["known_accounts"] == ["acme", "globex"]
    assert sim.faults == {}


@pytest.mark.parametrize(
    ("provider", "accounts"),
    [
        ("altcraft", ["media", "prod"]),
        ("exolve", ["alerts", "shop"]),
        ("trustlat", ["acme", "initech"]),
        # Trust.lat's token service: only the company with client credentials has one.
        ("trustlat-atenea", ["acme"]),
    ],
)
async def test_every_provider_names_its_own_accounts(sim, sim_url, provider, accounts):
    status, answer = await post_fault(
        sim_url, {"provider": provider, "account": "nobody", "fault": "http_503"}
    )
    assert (status, answer["known_accounts"]) == (404, accounts)
    for account in accounts:
        status, _ = await post_fault(
            sim_url, {"provider": provider, "account": account, "fault": "http_503"}
        )
        assert status == 200
        assert sim.fault(provider, account) == simulator.Fault("http_503")


async def test_an_unknown_provider_is_a_404_naming_the_providers(sim, sim_url):
    status, answer = await post_fault(
        sim_url, {"provider": "smsfly", "account": "acme", "fault": "http_503"}
    )
    assert status == 404
    assert "smsfly" in answer["error"]
    assert answer["known_providers"] == sorted(answer["known_providers"])
    assert {"altcraft", "exolve", "thulium", "trustlat", "trustlat-atenea"} <= set(
        answer["known_providers"]
    )
    assert sim.faults == {}


async def test_an_unknown_fault_is_a_400_naming_the_faults(sim, sim_url):
    status, answer = await post_fault(
        sim_url, {"provider": "altcraft", "account": "prod", "fault": "task_never_ends"}
    )
    assert status == 400
    assert "task_never_ends" in answer["error"]
    assert "task_never_completes" in answer["known_faults"]
    assert set(FAULTS) <= set(answer["known_faults"])
    assert sim.faults == {}
    # A provider's own fault is known for its accounts only.
    status, _ = await post_fault(
        sim_url, {"provider": "thulium", "account": "acme", "fault": "task_never_completes"}
    )
    assert status == 400


@pytest.mark.parametrize(
    "payload",
    [
        ["thulium", "acme"],
        {"provider": "thulium"},
        {"provider": "thulium", "account": 1, "fault": "hang"},
        {"provider": "thulium", "account": "acme", "fault": "hang", "delay": "soon"},
    ],
)
async def test_a_malformed_request_is_a_400(sim, sim_url, payload):
    status, answer = await post_fault(sim_url, payload)
    assert status == 400
    assert answer["ok"] is False
    assert sim.faults == {}
