"""Failures that retrying cannot fix: a run stops at the first answer that no retry can fix
(``auth``, ``http_4xx``); a target failing with them backs off; a failing target's log says so at
the first failure, at a change of reason and in reminders, not at every run."""

from __future__ import annotations

import asyncio
import itertools
import logging
import types
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from exporter import simulator
from exporter.collect import scheduler as scheduler_module
from exporter.collect.scheduler import BACKOFF_CAP, next_delay
from exporter.config import load_config
from exporter.providers import http as http_module
from exporter.providers.errors import Reason
from exporter.service import make_exporter
from exporter.web.app import build_app
from tests.conftest import FakeClock
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
        (provider, fault) for provider in simulator.provider_parts() for fault in ("auth", "echo")
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


# -- back-off -------------------------------------------------------------------------------------


def test_the_back_off_doubles_after_three_hopeless_failures_up_to_its_cap() -> None:
    assert [next_delay(60, n) for n in range(9)] == [
        60, 60, 60, 120, 240, 480, 960, 1800, 1800,
    ]  # fmt: skip
    # An interval longer than the cap is the cap: such a target never waits longer than it.
    assert [next_delay(3600, n) for n in (2, 3, 4, 50)] == [3600, 3600, 3600, 3600]
    assert next_delay(1000, 3) == 1800  # 2 x 1000 capped at 30 minutes
    assert next_delay(60, 10**6) == BACKOFF_CAP


@given(st.floats(min_value=0.001, max_value=86400), st.integers(min_value=0, max_value=10**4))
def test_the_back_off_never_shortens_nor_passes_its_cap(interval: float, failures: int) -> None:
    delay = next_delay(interval, failures)
    assert interval <= delay <= max(interval, BACKOFF_CAP)
    assert next_delay(interval, failures + 1) >= delay


def thulium_target(sim: simulator.Simulator, url: str) -> dict[str, Any]:
    return next(t for t in simulator.demo_targets(url, sim) if t["provider"] == "thulium")


class SchedulerSleeps:
    """Stands in for asyncio.sleep as the scheduler module sees it, for one runner: records when
    (event-loop time) each wait was to end and what the target's state announced, moves the
    test's wall clock by the wait and returns at once; at wait number ``stop_at`` it sets ``done``
    and waits for ever (the test then cancels)."""

    def __init__(self, clock: FakeClock, runner: Any, stop_at: int) -> None:
        self.clock = clock
        self.runner = runner
        self.stop_at = stop_at
        self.ends: list[float] = []
        self.announced: list[float | None] = []
        """The state's next attempt, less the wall clock, at each wait."""
        self.waits: list[float] = []
        self.done = asyncio.Event()
        self.before: dict[int, Callable[[], None]] = {}
        """Called before the run that follows wait number N."""

    async def sleep(self, delay: float) -> None:
        if len(self.ends) == self.stop_at:
            self.done.set()
            await asyncio.Future()
        self.ends.append(self.runner.next_run)
        next_attempt = self.runner._state.next_attempt
        self.announced.append(None if next_attempt is None else next_attempt - self.clock.now)
        self.waits.append(delay)
        self.clock.advance(delay)
        if (action := self.before.get(len(self.ends) - 1)) is not None:
            action()
        await asyncio.sleep(0)

    def spacing(self) -> list[float]:
        """The time from each attempt's scheduled start to the next one's."""
        return [later - earlier for earlier, later in itertools.pairwise(self.ends)]


def patch_scheduler_sleep(monkeypatch: pytest.MonkeyPatch, sleeps: SchedulerSleeps) -> None:
    fake = types.SimpleNamespace(
        **{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("_")}
    )
    fake.sleep = sleeps.sleep
    monkeypatch.setattr(scheduler_module, "asyncio", fake)


async def test_a_target_backs_off_and_a_success_resets_it(
    sim, sim_url, harness, make_config, clock, monkeypatch
):
    target = thulium_target(sim, sim_url)
    account = sim_account(target)
    h = await harness(make_config([target], defaults={"interval": "1m"}))
    record = h.exporter.store.targets.get(target["name"])
    assert record is not None
    runner = record.runner
    assert runner is not None
    sleeps = SchedulerSleeps(clock, runner, stop_at=7)
    sleeps.before[0] = lambda: sim.set_fault("thulium", account, "auth")
    sleeps.before[4] = lambda: sim.set_fault("thulium", account, None)
    patch_scheduler_sleep(monkeypatch, sleeps)
    sim.requests.clear()
    task = asyncio.create_task(runner.run_forever())
    await sleeps.done.wait()
    task.cancel()
    # Four runs refused (auth), then three that succeed: 1m, 1m, then 2m and 4m after the third
    # and fourth failure, and 1m again after the success.
    assert sleeps.spacing() == pytest.approx([60, 60, 120, 240, 60, 60])
    assert len(sim.received("thulium", account)) == 7  # one request per attempt, none between
    # Before each wait, the state announced the attempt that ends it (to the float precision of
    # Unix seconds: a unit in the last place is 2.4e-7 s there).
    assert sleeps.announced == pytest.approx(sleeps.waits, abs=1e-6)
    # The failure metrics count the attempts made, no more.
    assert record.state.errors == {Reason.AUTH: 4}
    assert record.state.last_success is not None


async def test_transient_failures_keep_the_interval(
    sim, sim_url, harness, make_config, clock, monkeypatch
):
    target = thulium_target(sim, sim_url)
    account = sim_account(target)
    sim.set_fault("thulium", account, "http_500_html")
    h = await harness(make_config([target], defaults={"interval": "1m"}))
    runner = h.exporter.store.targets.get(target["name"]).runner
    sleeps = SchedulerSleeps(clock, runner, stop_at=6)
    patch_scheduler_sleep(monkeypatch, sleeps)
    task = asyncio.create_task(runner.run_forever())
    await sleeps.done.wait()
    task.cancel()
    assert sleeps.spacing() == pytest.approx([60] * 5)


async def test_a_hopeless_failure_that_still_delivered_samples_keeps_the_interval(
    aiohttp_server, harness, make_config, clock, monkeypatch
):
    """Each run's probe is answered and every later request refused with an HTTP 400: the runs
    fail as http_4xx with partial samples, which a back-off would let go stale."""
    received = 0

    async def get_count(request: web.Request) -> web.Response:
        nonlocal received
        received += 1
        if received % 2 == 1:
            return web.json_response({"count": "7"})
        return web.json_response({"code": 3, "message": "bad filter"}, status=400)

    app = web.Application()
    app.router.add_post("/v1/GetCount", get_count)
    server = await aiohttp_server(app)
    target = {
        "name": "shop",
        "provider": "exolve",
        "base_url": str(server.make_url("/v1")),
        "api_key": "k",
        "breakdowns": ["status"],
        "max_concurrency": 1,
    }
    h = await harness(make_config([target], defaults={"interval": "1m"}))
    record = h.exporter.store.targets.get("shop")
    runner = record.runner
    sleeps = SchedulerSleeps(clock, runner, stop_at=6)
    patch_scheduler_sleep(monkeypatch, sleeps)
    task = asyncio.create_task(runner.run_forever())
    await sleeps.done.wait()
    task.cancel()
    assert str(record.state.latest.reason) == "http_4xx"
    assert sleeps.spacing() == pytest.approx([60] * 5)


async def test_a_reload_that_changes_the_target_resets_its_back_off(
    sim, sim_url, aiohttp_client, tmp_path, clock
):
    target = thulium_target(sim, sim_url)
    account = sim_account(target)
    secret = tmp_path / "password"
    secret.write_text(target.pop("password") + "\n", encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"targets": [{**target, "password_file": str(secret)}]}))
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    await aiohttp_client(build_app(exporter))
    assert exporter.scheduler is not None
    sim.set_fault("thulium", account, "auth")
    for _ in range(4):
        await exporter.scheduler.run_all_once()

    def runner() -> Any:
        record = exporter.targets.get(target["name"])
        assert record is not None
        return record.runner

    backing_off = runner()
    assert backing_off.next_delay() == 240
    # A reload that leaves the target as it is keeps its back-off.
    assert await exporter.reload() is None
    assert runner() is backing_off
    # Only the secret file's content changes: the target changed, its back-off starts over.
    secret.write_text("another-password\n", encoding="utf-8")
    assert await exporter.reload() is None
    assert runner() is not backing_off
    assert runner().next_delay() == 60
    await exporter.scheduler.run_all_once()
    assert runner().next_delay() == 60  # one failure: not yet backing off


# -- logs ------------------------------------------------------------------------------------------


async def test_a_failures_warning_carries_the_start_of_the_answer_scrubbed(
    aiohttp_server, harness, make_config
):
    import structlog.testing

    password = "pass-word-of-acme"

    async def stats(request: web.Request) -> web.Response:
        # An echoing provider: its error quotes the request's credentials.
        quoted = request.headers["Authorization"]
        return web.json_response({"error": f"account locked ({quoted}, {password})"}, status=403)

    app = web.Application()
    app.router.add_get("/api/outbounds/stats", stats)
    server = await aiohttp_server(app)
    target = {
        "name": "acme",
        "provider": "thulium",
        "base_url": str(server.make_url("/api")),
        "username": "user",
        "password": password,
    }
    h = await harness(make_config([target]))
    with structlog.testing.capture_logs() as logs:
        await h.collect()
    (warning,) = [e for e in logs if e["event"] == "collection"]
    assert warning["log_level"] == "warning"
    assert "account locked" in warning["excerpt"]
    assert password not in warning["excerpt"]
    assert http_module.basic_auth("user", password).split()[1] not in warning["excerpt"]


async def test_a_failing_target_warns_at_news_and_reminds_every_15_minutes(
    sim, sim_url, harness, make_config, clock, caplog
):
    import structlog.testing

    # The routine success's debug line is built only when its logger is at debug level.
    caplog.set_level(logging.DEBUG, logger="exporter.collect.scheduler")
    target = thulium_target(sim, sim_url)
    account = sim_account(target)
    h = await harness(make_config([target], defaults={"interval": "1m"}))
    sim.set_fault("thulium", account, "auth")
    with structlog.testing.capture_logs() as logs:
        for _ in range(20):  # 20 runs a minute apart, refused
            await h.collect()
            clock.advance(60)
        sim.set_fault("thulium", account, "http_503")  # another reason
        await h.collect()
        clock.advance(60)
        await h.collect()
        clock.advance(60)
        sim.set_fault("thulium", account, None)
        await h.collect()
        await h.collect()
    lines = [e for e in logs if e["event"] == "collection"]
    warnings = [
        (e["consecutive_failures"], e["reason"]) for e in lines if e["log_level"] == "warning"
    ]
    # The first failure; the third, when the back-off starts; a reminder 15 minutes after that
    # warning (run 18); the new reason.
    assert warnings == [(1, "auth"), (3, "auth"), (18, "auth"), (21, "http_5xx")]
    reminder = next(e for e in lines if e.get("consecutive_failures") == 18)
    assert reminder["backoff_seconds"] == BACKOFF_CAP
    assert [e["log_level"] for e in lines].count("debug") == 22 - len(warnings) + 1
    recovered = [e for e in lines if e["log_level"] == "info"]
    assert len(recovered) == 1
    assert recovered[0]["recovered"] is True
    assert lines[-1]["log_level"] == "debug"  # a routine success again
