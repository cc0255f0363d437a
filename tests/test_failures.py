"""Failures that retrying cannot fix: a run stops at the first answer that no retry can fix
(``auth``, ``http_4xx``); a target failing with them backs off; a failing target's log says so at
the first failure, at a change of reason and in reminders, not at every run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from exporter import simulator
from exporter.providers import http as http_module
from exporter.providers.errors import Reason
from tests.test_faults import sim_account


def demo_target(sim: simulator.Simulator, url: str, name: str) -> dict[str, Any]:
    return next(t for t in simulator.demo_targets(url, sim) if t["name"] == name)


# -- fail fast ------------------------------------------------------------------------------------


async def test_a_wrong_exolve_key_sends_one_request_a_run(sim, sim_url, harness, make_config):
    target = demo_target(sim, sim_url, "exolve-shop")
    account = sim_account(target)
    healthy = await harness(make_config([target]))
    await healthy.collect()
    asked = len(sim.received("exolve", account))
    assert asked == 34  # every breakdown: what a wrong key used to cost each run

    sim.requests.clear()
    h = await harness(make_config([{**target, "api_key": "not-the-key"}]))
    for run in range(1, 4):
        await h.collect()
        assert len(sim.received("exolve", account)) == run
    state = h.exporter.store.targets.get("exolve-shop").state
    assert state.errors == {Reason.AUTH: 3}
    assert state.latest is not None
    assert (state.latest.error or "").startswith("1 of 34 GetCount requests failed (33 not sent")


def fail_fast_cases() -> list[tuple[str, str]]:
    # auth: each API's own refusal of the credentials; echo: an HTTP 400 (http_4xx).
    return [
        (provider, fault) for provider in simulator.provider_modules() for fault in ("auth", "echo")
    ]


@pytest.mark.parametrize(("provider", "fault"), sorted(fail_fast_cases()))
async def test_every_provider_stops_a_run_at_the_first_hopeless_answer(
    provider, fault, sim, sim_url, harness, make_config
):
    for target in [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == provider]:
        account = sim_account(target)
        sim.set_fault(provider, account, fault)
        h = await harness(make_config([target]))
        sim.requests.clear()
        await h.collect()
        snapshot = h.exporter.store.targets.get(target["name"]).state.latest
        assert snapshot is not None
        assert str(snapshot.reason) == ("auth" if fault == "auth" else "http_4xx")
        # Every answer of the faulted API is hopeless: its first is the last request the run
        # sent (a token service's answer may come before it; a refusing one ends the run alone).
        faulted = [
            index
            for index, request in enumerate(sim.requests)
            if (request.provider, request.account) == (provider, account)
        ]
        assert faulted in ([len(sim.requests) - 1], []), target["name"]
        assert len(sim.requests) <= 2, target["name"]
        sim.set_fault(provider, account, None)


async def test_requests_in_flight_at_a_hopeless_answer_finish_and_no_new_one_is_sent(
    aiohttp_server, harness, make_config, monkeypatch
):
    """After the probe, max_concurrency requests are in flight; one gets an HTTP 400. The others
    are answered (after the run stopped) and delivered as the failed run's partial samples; none
    of the other requests is sent."""
    stopped = asyncio.Event()
    stop = http_module.RunGate.stop

    def observed_stop(self: http_module.RunGate, error: Any) -> None:
        stop(self, error)
        stopped.set()

    monkeypatch.setattr(http_module.RunGate, "stop", observed_stop)
    received = 0

    async def get_count(request: web.Request) -> web.Response:
        nonlocal received
        received += 1
        if received == 3:
            return web.json_response({"code": 3, "message": "bad filter"}, status=400)
        if received > 1:
            await stopped.wait()  # held until the 400 has stopped the run
        return web.json_response({"count": "7"})

    app = web.Application()
    app.router.add_post("/v1/GetCount", get_count)
    server = await aiohttp_server(app)
    target = {
        "name": "shop",
        "provider": "exolve",
        "base_url": str(server.make_url("/v1")),
        "api_key": "k",
        "breakdowns": ["status", "delivery_status", "billing_status"],
        "max_concurrency": 4,
    }
    h = await harness(make_config([target]))
    await h.collect()
    assert received == 5  # the probe, then four in flight
    snapshot = h.exporter.store.targets.get("shop").state.latest
    assert snapshot is not None
    assert str(snapshot.reason) == "http_4xx"
    assert (snapshot.error or "").startswith("1 of 34 GetCount requests failed (29 not sent")
    scraped = await h.scrape()
    counts = [key for key in scraped if key[0].startswith("exolve_") and key[1]]
    assert len(counts) == 4  # the probe's and the three held answers: fresh partial samples
