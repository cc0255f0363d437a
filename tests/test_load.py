"""Short load test: the exporter, started as ``serve`` starts it, keeps answering 200 concurrent
scrapers while its collection loop runs and faults come and go, with zero failed scrapes. The
long version is ``python -m bench.load``; the performance targets are ``python -m bench``."""

from __future__ import annotations

import asyncio
import itertools
import logging

import aiohttp
from aiohttp import web

from exporter import simulator
from exporter.cli import SHUTDOWN_TIMEOUT
from exporter.service import make_exporter
from exporter.web.app import build_app
from tests.conftest import parse_exposition

SCRAPERS = 200
COLLECTION_ROUNDS = 3
"""Scrapes go on until the store has recorded this many collections of every target."""
FAULTS = ["http_500_html", "malformed_json", "reset", "hang", None]


async def test_200_concurrent_scrapers_never_fail_while_collections_run_and_faults_come_and_go(
    sim, sim_url, make_config
):
    targets = simulator.demo_targets(sim_url, sim)
    config = make_config(targets, defaults={"interval": "1s", "timeout": "0.9s"})
    exporter = make_exporter(config)
    # As ``exporter.cli._serve`` starts it: the collection loop starts with the app.
    runner = web.AppRunner(
        build_app(exporter),
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=config.web.keepalive_timeout,
        access_log=logging.getLogger("aiohttp.access"),
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"

    # Every recorded collection moves a fault to the next target (chaos paced by the exporter's
    # own work, not by a clock); the scrapes stop once the store has seen enough of them.
    store = exporter.store
    victims = zip(itertools.cycle(targets), itertools.cycle(FAULTS), strict=False)
    changes = 0
    enough = asyncio.Event()

    def on_change(_target: object) -> None:
        nonlocal changes
        changes += 1
        victim, fault = next(victims)
        account = victim["base_url"].split("://", 1)[1].split("/")[2]
        sim.set_fault(victim["provider"], account, fault)
        failed = any(t.state.latest is not None and not t.state.latest.ok for t in exporter.targets)
        if changes >= COLLECTION_ROUNDS * len(targets) and failed:
            enough.set()

    unsubscribe = store.subscribe(on_change)
    failures: list[str] = []
    bodies = 0

    async def scraper(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal bodies
        headers = {"Accept-Encoding": "gzip"} if n % 2 else {}
        while True:
            try:
                async with session.get(url, headers=headers) as response:
                    text = await response.text()
                    if response.status != 200:
                        failures.append(f"HTTP {response.status}")
                    elif "messaging_exporter_build_info" not in text:
                        failures.append("incomplete body")
                    else:
                        bodies += 1
            except aiohttp.ClientError as exc:
                failures.append(type(exc).__name__)
            if enough.is_set():
                return

    try:
        connector = aiohttp.TCPConnector(limit=SCRAPERS)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with asyncio.timeout(15):  # a bound, not a pace: the event ends the scrapes
                await asyncio.gather(*(scraper(session, n) for n in range(SCRAPERS)))
            unsubscribe()
            async with session.get(url) as response:
                scraped = parse_exposition(await response.text())
    finally:
        await runner.cleanup()
    assert failures == []
    assert bodies >= SCRAPERS
    # Collections went on meanwhile, failures and all, and the process kept serving.
    assert changes >= COLLECTION_ROUNDS * len(targets)
    assert any(
        name == "messaging_exporter_collect_errors_total" and value > 0
        for (name, _), value in scraped.items()
    )
