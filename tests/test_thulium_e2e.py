"""Thulium end to end: simulator and exporter on loopback sockets, scraped over HTTP."""

from __future__ import annotations

from typing import Any

from exporter import simulator
from exporter.simulator.thulium import Campaign, ThuliumState
from tests.conftest import labels, series

RECORDS = "thulium_outbound_campaign_records"
COMPLETION = "thulium_outbound_campaign_completion_ratio"
ACTIVE = "thulium_outbound_active_campaigns"
SUCCESS = "messaging_exporter_collect_success"
ERRORS = "messaging_exporter_collect_errors_total"


def targets(sim_url: str, sim: simulator.Simulator, **extra: Any) -> list[dict[str, Any]]:
    return [
        dict(target, **extra)
        for target in simulator.demo_targets(sim_url, sim)
        if target["provider"] == "thulium"
    ]


def thulium(sim: simulator.Simulator) -> ThuliumState:
    state: ThuliumState = sim.state["thulium"]
    return state


async def test_scrape_has_exactly_the_simulated_samples(sim, sim_url, harness, make_config):
    h = await harness(make_config(targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    thulium_samples = {
        key: value for key, value in scraped.items() if key[0].startswith("thulium_")
    }
    assert thulium_samples == {
        (RECORDS, labels(account="thulium-acme", campaign_id="00001")): 1324,
        (RECORDS, labels(account="thulium-acme", campaign_id="00002")): 20,
        (RECORDS, labels(account="thulium-acme", campaign_id="00015")): 5000,
        (RECORDS, labels(account="thulium-globex", campaign_id="00003")): 250,
        (COMPLETION, labels(account="thulium-acme", campaign_id="00001")): 0.1487,
        (COMPLETION, labels(account="thulium-acme", campaign_id="00002")): 0.23,
        (COMPLETION, labels(account="thulium-acme", campaign_id="00015")): 0.0,
        (COMPLETION, labels(account="thulium-globex", campaign_id="00003")): 0.995,
        (ACTIVE, labels(account="thulium-acme")): 3,
        (ACTIVE, labels(account="thulium-globex")): 1,
    }
    assert series(scraped, SUCCESS) == {
        labels(provider="thulium", account="thulium-acme"): 1,
        labels(provider="thulium", account="thulium-globex"): 1,
    }
    assert not any(name.endswith("_created") for name, _ in scraped)
    # Each target's configured interval, for the data-stale alert (60 s is the default).
    assert set(series(scraped, "messaging_exporter_collect_interval_seconds").values()) == {60}
    # Every reason is there from the start, at 0, so rate() and increase() work at once.
    assert len(series(scraped, ERRORS)) == 16
    assert set(series(scraped, ERRORS).values()) == {0}
    histogram = series(scraped, "messaging_exporter_provider_request_duration_seconds_count")
    assert histogram == {labels(provider="thulium", endpoint="outbounds/stats", code="200"): 2}
    # The simulator saw Basic auth and no id parameter.
    received = sim.received("thulium", "acme")
    assert len(received) == 1
    assert received[0].query == {}
    assert received[0].headers["Authorization"].startswith("Basic ")


async def test_failing_account_keeps_last_good_values_and_the_other_keeps_working(
    sim, sim_url, harness, make_config, clock
):
    h = await harness(make_config(targets(sim_url, sim)))
    await h.collect()
    sim.set_fault("thulium", "acme", "http_500_html")
    thulium(sim).tenants["globex"].campaigns[0].records_count = 251
    clock.advance(60)
    await h.collect()
    scraped = await h.scrape()
    assert series(scraped, SUCCESS) == {
        labels(provider="thulium", account="thulium-acme"): 0,
        labels(provider="thulium", account="thulium-globex"): 1,
    }
    assert (
        scraped[(ERRORS, labels(provider="thulium", account="thulium-acme", reason="http_5xx"))]
        == 1
    )
    assert scraped[(RECORDS, labels(account="thulium-acme", campaign_id="00001"))] == 1324
    assert scraped[(RECORDS, labels(account="thulium-globex", campaign_id="00003"))] == 251
    last_success = series(scraped, "messaging_exporter_last_success_timestamp_seconds")
    assert last_success[labels(provider="thulium", account="thulium-acme")] < clock.now - 59


async def test_stale_samples_are_dropped_after_stale_after(
    sim, sim_url, harness, make_config, clock
):
    h = await harness(make_config(targets(sim_url, sim), defaults={"stale_after": "5m"}))
    await h.collect()
    sim.set_fault("thulium", "acme", "malformed_json")
    clock.advance(240)
    await h.collect()
    scraped = await h.scrape()
    assert (RECORDS, labels(account="thulium-acme", campaign_id="00001")) in scraped
    clock.advance(61)  # 301 s after the last success
    scraped = await h.scrape()
    assert not [
        key
        for key in scraped
        if key[0].startswith("thulium_") and ("account", "thulium-acme") in key[1]
    ]
    # The target's own health stays, with its error counted.
    assert scraped[(SUCCESS, labels(provider="thulium", account="thulium-acme"))] == 0
    assert (
        scraped[(ERRORS, labels(provider="thulium", account="thulium-acme", reason="parse"))] == 1
    )
    assert scraped[(RECORDS, labels(account="thulium-globex", campaign_id="00003"))] == 250


async def test_a_campaign_that_ends_vanishes_from_the_next_scrape(
    sim, sim_url, harness, make_config
):
    h = await harness(make_config(targets(sim_url, sim)))
    await h.collect()
    thulium(sim).tenants["acme"].campaigns = [Campaign("00002", 20, 23)]
    await h.collect()
    scraped = await h.scrape()
    assert series(scraped, RECORDS) == {
        labels(account="thulium-acme", campaign_id="00002"): 20,
        labels(account="thulium-globex", campaign_id="00003"): 250,
    }
    assert scraped[(ACTIVE, labels(account="thulium-acme"))] == 1


async def test_no_campaigns_is_a_valid_answer(sim, sim_url, harness, make_config):
    thulium(sim).tenants["acme"].campaigns = []
    h = await harness(make_config(targets(sim_url, sim)))
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(ACTIVE, labels(account="thulium-acme"))] == 0
    assert scraped[(SUCCESS, labels(provider="thulium", account="thulium-acme"))] == 1


async def test_a_wrong_password_is_reason_auth(sim, sim_url, harness, make_config):
    config_targets = targets(sim_url, sim)
    config_targets[0]["password"] = "not-the-password"
    h = await harness(make_config(config_targets))
    await h.collect()
    scraped = await h.scrape()
    key = (ERRORS, labels(provider="thulium", account="thulium-acme", reason="auth"))
    assert scraped[key] == 1


async def test_the_ratio_is_served_as_written(sim, sim_url, harness, make_config):
    """24.48 % is served as 0.2448, not as the binary quotient 0.24480000000000002."""
    thulium(sim).tenants["acme"].campaigns = [Campaign("00001", 1324, 24.48)]
    h = await harness(make_config(targets(sim_url, sim)))
    await h.collect()
    text = await h.scrape_text()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith(COMPLETION) and 'account="thulium-acme"' in line
    )
    assert line.endswith(" 0.2448"), line
    assert "0.24480000000000002" not in text
