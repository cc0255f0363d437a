"""The collection loop: spread first runs, a fixed interval, lifecycle with the app."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from exporter import simulator
from exporter.collect.scheduler import FIRST_RUN_SPREAD, first_delay
from exporter.logs import setup_logging
from exporter.service import make_exporter
from exporter.web.app import build_app
from tests.conftest import eventually


def collection_tasks() -> int:
    """The targets' collection tasks alive now: the scheduler names each ``collect:<target>``."""
    names = [task.get_name() for task in asyncio.all_tasks()]
    return sum(1 for name in names if name.startswith("collect:") and name != "collect:start")


@given(st.text(min_size=1), st.floats(min_value=0.001, max_value=86400))
def test_first_runs_are_spread_within_the_window_and_stable(name: str, interval: float) -> None:
    delay = first_delay(name, interval)
    assert 0 <= delay < min(FIRST_RUN_SPREAD, interval)
    assert first_delay(name, interval) == delay


def test_first_runs_of_many_targets_do_not_bunch_up() -> None:
    delays = sorted(first_delay(f"target-{i}", 60) for i in range(100))
    assert delays[-1] - delays[0] > FIRST_RUN_SPREAD * 0.8
    # No second of the window holds more than a third of the targets.
    buckets = [sum(1 for d in delays if s <= d < s + 1) for s in range(int(FIRST_RUN_SPREAD))]
    assert max(buckets) < 34


async def test_the_loop_collects_every_interval_and_stops_with_the_app(
    sim, sim_url, aiohttp_client, make_config
):
    targets = [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"]
    exporter = make_exporter(make_config(targets, defaults={"interval": "1s", "timeout": "1s"}))
    client = await aiohttp_client(build_app(exporter))
    await eventually(lambda: len(sim.received("thulium", "acme")) >= 3)
    assert exporter.store.ready()
    assert (await client.get("/readyz")).status == 200
    await client.close()
    seen = len(sim.requests)
    # After cleanup no task is left to collect: the count stays where it was.
    assert collection_tasks() == 0
    assert len(sim.requests) == seen


async def test_collections_in_flight_are_bounded_exporter_wide(
    aiohttp_server, harness, make_config
):
    from aiohttp import web

    in_flight = 0
    most = 0
    most_tasks = 0

    async def stats(request: web.Request) -> web.Response:
        nonlocal in_flight, most, most_tasks
        in_flight += 1
        most = max(most, in_flight)
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0.02)  # the provider taking its time
        in_flight -= 1
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/api/outbounds/stats", stats)
    server = await aiohttp_server(app)
    base = str(server.make_url("/api"))
    targets = [
        {"name": f"t{i}", "provider": "thulium", "base_url": base, "username": "u", "password": "p"}
        for i in range(12)
    ]
    h = await harness(make_config(targets, max_concurrent_collections=3))
    assert h.exporter.scheduler is not None
    snapshots = await h.exporter.scheduler.run_all_once()
    assert most == 3
    assert [s.target for s in snapshots] == [t["name"] for t in targets]  # in config order
    # Three workers take the next target, not twelve tasks queued on the limit (the server's
    # three handlers and the test's own task besides).
    assert most_tasks < 12
    scraped = await h.scrape()
    assert sum(1 for name, _ in scraped if name == "thulium_outbound_active_campaigns") == 12


@pytest.mark.parametrize("level", ["debug", "info"])
async def test_failures_warn_a_recovery_is_info_and_routine_successes_are_debug(
    sim, sim_url, harness, make_config, level
):
    targets = [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"][:1]
    account = targets[0]["base_url"].rstrip("/").split("/")[-2]
    h = await harness(make_config(targets))
    written = io.StringIO()
    root = logging.getLogger()
    level_before = root.level
    setup_logging(level, "json", stream=written)
    try:
        sim.set_fault("thulium", account, "http_503")
        await h.collect()
        sim.set_fault("thulium", account, None)
        await h.collect()
        await h.collect()
    finally:
        root.handlers.clear()
        root.setLevel(level_before)
        structlog.reset_defaults()
    events = [json.loads(line) for line in written.getvalue().splitlines()]
    lines = [
        (e["level"], e["outcome"], e.get("recovered")) for e in events if e["event"] == "collection"
    ]
    expected = [("warning", "failure", None), ("info", "success", True)]
    # The routine success is written at debug level only (and not built at all above it).
    assert lines == expected + ([("debug", "success", None)] if level == "debug" else [])


async def test_start_begins_the_tasks_a_batch_per_loop_iteration(make_config, monkeypatch):
    from exporter.collect import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "START_BATCH", 10)
    targets = [
        {
            "name": f"t{i}",
            "provider": "thulium",
            "base_url": "http://127.0.0.1:9/api",
            "username": "u",
            "password": "p",
            "interval": "1h",
        }
        for i in range(35)
    ]
    exporter = make_exporter(make_config(targets), autostart=False)
    app = build_app(exporter)
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()  # the session and the scheduler, no collection yet
    scheduler = exporter.scheduler
    assert scheduler is not None
    scheduler.start()
    exporter.set_targets(exporter.config.targets[:30])  # a reload meanwhile drops five
    counts = [collection_tasks()]
    while counts[-1] < 30:
        await asyncio.sleep(0)
        counts.append(collection_tasks())
        assert len(counts) < 100, counts
    assert counts[:4] == [0, 10, 20, 30]  # ten more per loop iteration, not all in one
    scheduler.start()  # again: every target has its task, nothing more starts
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert collection_tasks() == 30
    # Stopped, the tasks are gone and every target can still be collected, or started again.
    await scheduler.stop()
    assert collection_tasks() == 0
    assert len(await scheduler.run_all_once()) == 30
    scheduler.start()
    while collection_tasks() < 30:
        await asyncio.sleep(0)
    await runner.cleanup()
    assert collection_tasks() == 0
