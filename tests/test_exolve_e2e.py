"""Exolve end to end: the simulator and the exporter on loopback sockets, scraped over HTTP."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from exporter import simulator
from exporter.simulator.exolve import ExolveState, MessageGroup
from tests.conftest import labels, series

MESSAGES = "exolve_sms_messages"
BY_DELIVERY = "exolve_sms_messages_by_delivery_status"
BY_BILLING = "exolve_sms_messages_by_billing_status"
SUCCESS = "messaging_exporter_collect_success"
ERRORS = "messaging_exporter_collect_errors_total"
REQUESTS = "messaging_exporter_provider_request_duration_seconds_count"

SHOP = labels(provider="exolve", account="exolve-shop")
ALERTS = labels(provider="exolve", account="exolve-alerts")
DIRECTIONS = ("DIRECTION_INCOMING", "DIRECTION_OUTGOING")
STATUSES = ("QUEUED", "TRANSMITTED", "DELIVERED", "FAILED", "UNDERFUNDED", "PROHIBITED")
DELIVERY = ("QUEUED", "TRANSMITTED", "DELIVERED", "FAILED")
BILLING = ("PREBILLED", "BILLED", "REFUNDING", "UNDERFUNDED", "REFUNDED", "FAILED", "AUTHORIZED")


def exolve_targets(sim_url: str, sim: simulator.Simulator, **extra: Any) -> list[dict[str, Any]]:
    return [
        dict(target, **extra)
        for target in simulator.demo_targets(sim_url, sim)
        if target["provider"] == "exolve"
    ]


def exolve(sim: simulator.Simulator) -> ExolveState:
    state: ExolveState = sim.state["exolve"]
    return state


def expected(
    metric: str,
    account: str,
    label: str,
    values: tuple[str, ...],
    counts: dict[tuple[str, str], int],
) -> dict[Any, float]:
    """Every direction x value, zeros for those not in ``counts``."""
    return {
        (
            metric,
            labels(account=account, direction=direction, **{label: value.lower()}),
        ): counts.get((direction, value.lower()), 0)
        for direction in ("incoming", "outgoing")
        for value in values
    }


SHOP_SAMPLES = {
    **expected(
        MESSAGES,
        "exolve-shop",
        "status",
        STATUSES,
        {
            ("incoming", "delivered"): 106,
            ("outgoing", "queued"): 7,
            ("outgoing", "transmitted"): 42,
            ("outgoing", "delivered"): 6630,
            ("outgoing", "failed"): 15,
            ("outgoing", "underfunded"): 3,
        },
    ),
    **expected(
        BY_DELIVERY,
        "exolve-shop",
        "delivery_status",
        DELIVERY,
        {
            ("incoming", "delivered"): 106,
            ("outgoing", "queued"): 10,
            ("outgoing", "transmitted"): 42,
            ("outgoing", "delivered"): 6630,
            ("outgoing", "failed"): 15,
        },
    ),
    **expected(
        BY_BILLING,
        "exolve-shop",
        "billing_status",
        BILLING,
        {
            ("incoming", "billed"): 95,
            ("incoming", "authorized"): 11,
            ("outgoing", "prebilled"): 7,
            ("outgoing", "billed"): 6672,
            ("outgoing", "refunding"): 2,
            ("outgoing", "underfunded"): 3,
            ("outgoing", "refunded"): 13,
        },
    ),
}
# window 24h and number ALERTS: the 200-hour-old messages are out.
ALERTS_SAMPLES = expected(
    MESSAGES,
    "exolve-alerts",
    "status",
    STATUSES,
    {("outgoing", "delivered"): 64, ("outgoing", "failed"): 1},
)


def exolve_samples(scraped: dict[Any, float]) -> dict[Any, float]:
    return {key: value for key, value in scraped.items() if key[0].startswith("exolve_")}


def errors_of(scraped: dict[Any, float], account: str) -> dict[str, float]:
    return {
        dict(key)["reason"]: value
        for key, value in series(scraped, ERRORS).items()
        if ("account", account) in key and value
    }


def bodies(sim: simulator.Simulator, account: str) -> list[dict[str, Any]]:
    return [request.body for request in sim.received("exolve", account)]


def plan(field: str, prefix: str, values: tuple[str, ...], **common: str) -> Counter[str]:
    return Counter(
        json.dumps({"direction": d, field: f"{prefix}{v}", **common}, sort_keys=True)
        for d in DIRECTIONS
        for v in values
    )


async def test_scrape_has_exactly_the_simulated_samples(sim, sim_url, harness, make_config):
    h = await harness(make_config(exolve_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    assert exolve_samples(scraped) == {**SHOP_SAMPLES, **ALERTS_SAMPLES}
    assert len(SHOP_SAMPLES) == 34
    assert series(scraped, SUCCESS) == {SHOP: 1, ALERTS: 1}
    assert series(scraped, REQUESTS) == {
        labels(provider="exolve", endpoint="GetCount", code="200"): 34 + 12
    }
    for request in sim.received("exolve"):
        assert request.method == "POST"
        assert request.path == f"/exolve/{request.account}/messaging/v1/GetCount"
        key = exolve(sim).applications[request.account].api_key
        assert request.headers["Authorization"] == f"Bearer {key}"


async def test_every_combination_is_requested_exactly_once_per_run(
    sim, sim_url, harness, make_config
):
    h = await harness(make_config(exolve_targets(sim_url, sim)))
    await h.collect()
    shop_plan = (
        plan("status", "STATUS_", STATUSES)
        + plan("delivery_status", "DELIVERY_STATUS_", DELIVERY)
        + plan("billing_status", "BILLING_STATUS_", BILLING)
    )
    assert Counter(json.dumps(b, sort_keys=True) for b in bodies(sim, "shop")) == shop_plan
    await h.collect()
    assert Counter(json.dumps(b, sort_keys=True) for b in bodies(sim, "shop")) == (
        shop_plan + shop_plan
    )
    for body in bodies(sim, "shop") + bodies(sim, "alerts"):
        assert "limit" not in body
        assert "offset" not in body


async def test_window_and_number_filter_every_request(sim, sim_url, harness, make_config, clock):
    h = await harness(make_config(exolve_targets(sim_url, sim)))
    clock.now = float(round(clock.now))  # a whole second: its date needs no rounding
    await h.collect()
    alerts = bodies(sim, "alerts")
    dates = {body.pop("date_gte") for body in alerts}
    assert Counter(json.dumps(b, sort_keys=True) for b in alerts) == plan(
        "status", "STATUS_", STATUSES, number="ALERTS"
    )
    # One date_gte for the whole run: now minus 24 h, RFC 3339 UTC with milliseconds and Z.
    (date_gte,) = dates
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", date_gte)
    # By the run's clock (the test's fake one), to the millisecond.
    sent = datetime.fromisoformat(date_gte.replace("Z", "+00:00")).timestamp()
    assert sent == clock.time() - 86400
    # No window, no date filter.
    assert all("date_gte" not in body and "number" not in body for body in bodies(sim, "shop"))


async def test_a_number_answer_is_read_like_a_string(sim, sim_url, harness, make_config):
    sim.set_fault("exolve", "shop", "counts_as_numbers")
    h = await harness(make_config(exolve_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    assert exolve_samples(scraped) == {**SHOP_SAMPLES, **ALERTS_SAMPLES}


async def test_one_failed_combination_fails_the_run_but_keeps_the_fresh_counts(
    sim, sim_url, harness, make_config
):
    h = await harness(make_config(exolve_targets(sim_url, sim)))
    await h.collect()
    groups = exolve(sim).applications["shop"].groups
    groups.append(
        MessageGroup(
            "DIRECTION_OUTGOING",
            "STATUS_QUEUED",
            "DELIVERY_STATUS_QUEUED",
            "BILLING_STATUS_PREBILLED",
            "MYSHOP",
            0.0,
            5,
        )
    )
    groups.append(
        MessageGroup(
            "DIRECTION_INCOMING",
            "STATUS_QUEUED",
            "DELIVERY_STATUS_QUEUED",
            "BILLING_STATUS_PREBILLED",
            "MYSHOP",
            0.0,
            9,
        )
    )
    sim.set_fault("exolve", "shop", "incoming_500")
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, SHOP)] == 0
    assert errors_of(scraped, "exolve-shop") == {"http_5xx": 1}
    shop = "exolve-shop"
    # Outgoing counts are fresh, incoming ones the last good values.
    assert scraped[(MESSAGES, labels(account=shop, direction="outgoing", status="queued"))] == 12
    assert scraped[(MESSAGES, labels(account=shop, direction="incoming", status="queued"))] == 0
    out_queued = labels(account=shop, direction="outgoing", delivery_status="queued")
    assert scraped[(BY_DELIVERY, out_queued)] == 15
    assert len([k for k in exolve_samples(scraped) if ("account", shop) in k[1]]) == 34
    state = h.exporter.targets.get(shop).state
    assert state.latest is not None
    fresh = max(state.seen.values())
    assert sum(1 for at in state.seen.values() if at == fresh) == 17  # the outgoing combinations
    assert (state.latest.error or "").startswith("17 of 34 GetCount requests failed")
    assert "direction=DIRECTION_INCOMING" in (state.latest.error or "")
    assert scraped[(SUCCESS, ALERTS)] == 1


async def test_strings_for_numbers_is_what_exolve_sends_anyway(sim, sim_url, harness, make_config):
    sim.set_fault("exolve", "alerts", "strings_for_numbers")
    h = await harness(make_config(exolve_targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, ALERTS)] == 1
    assert exolve_samples(scraped) == {**SHOP_SAMPLES, **ALERTS_SAMPLES}


async def test_a_wrong_key_is_auth_and_the_key_is_in_no_error_text(
    sim, sim_url, harness, make_config
):
    config_targets = exolve_targets(sim_url, sim)
    config_targets[1]["api_key"] = "wrong-key-12345"
    h = await harness(make_config(config_targets))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "exolve-alerts") == {"auth": 1}
    state = h.exporter.targets.get("exolve-alerts").state
    assert state.latest is not None
    error = state.latest.error or ""
    assert "authorization token is invalid" in error
    assert error.startswith("1 of 12 GetCount requests failed (11 not sent: the run stopped)")
    assert "wrong-key-12345" not in error
    assert "wrong-key-12345" not in await (await h.client.get("/")).text()


async def test_a_wrong_path_is_http_4xx(sim, sim_url, harness, make_config):
    config_targets = exolve_targets(sim_url, sim)
    config_targets[1]["base_url"] = f"{sim_url}/exolve/nobody/messaging/v1"
    h = await harness(make_config(config_targets))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, "exolve-alerts") == {"http_4xx": 1}
    state = h.exporter.targets.get("exolve-alerts").state
    assert "page not found" in (state.latest.error or "")


@pytest.mark.parametrize("limit", [1, 3])
async def test_requests_in_flight_stay_within_max_concurrency(
    sim, sim_url, harness, make_config, limit
):
    exolve(sim).answer_delay = 0.01
    targets = [t for t in exolve_targets(sim_url, sim) if t["name"] == "exolve-alerts"]
    h = await harness(make_config(targets, defaults={"max_concurrency": limit}))
    await h.collect()
    assert exolve(sim).max_in_flight == limit
    assert len(sim.received("exolve", "alerts")) == 12


async def test_the_simulator_checks_what_the_page_says(sim, sim_url, aiohttp_client):
    import aiohttp

    url = f"{sim_url}/exolve/shop/messaging/v1/GetCount"
    key = {"Authorization": "Bearer demo-exolve-shop-api-key"}
    async with aiohttp.ClientSession() as session:

        async def call(body: Any, headers: dict[str, str] = key, raw: str | None = None):
            kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
            async with session.post(url, headers=headers, **kwargs) as response:
                return response.status, await response.text()

        assert await call({}) == (200, '{"count": "6803"}')
        assert await call({"direction": "DIRECTION_INCOMING", "status": "STATUS_FAILED"}) == (
            200,
            "{}",
        )
        assert await call({"direction": 2, "status": 3, "number": "MYSHOP"}) == (
            200,
            '{"count": "310"}',
        )
        assert (await call({"limit": "10"}))[1] == '{"count": "10"}'
        status, text = await call({"direction": "DIRECTION_SIDEWAYS"})
        assert (status, json.loads(text)["message"].startswith("invalid value")) == (400, True)
        status, text = await call({"dierction": "DIRECTION_INCOMING"})
        assert (status, json.loads(text)["message"]) == (400, 'unknown field "dierction"')
        status, text = await call(None, raw="{not json")
        assert (status, json.loads(text)["message"]) == (400, "syntax error")
        status, text = await call({}, headers={"Authorization": "Bearer nope"})
        assert (status, json.loads(text)["message"]) == (401, "authorization token is invalid")
