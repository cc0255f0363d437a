"""Short load test: 200 concurrent scrapers while collections run and faults come and go, with
zero failed scrapes. The long version (60 s, memory) is in bench/."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp

from exporter import simulator
from exporter.web.app import build_app, make_exporter
from tests.conftest import parse_exposition

SCRAPERS = 200
SCRAPES_EACH = 5
FAULTS = ["http_500_html", "malformed_json", "reset", "hang", None]


async def test_200_concurrent_scrapers_never_fail_while_faults_come_and_go(
    sim, sim_url, aiohttp_server, make_config
):
    targets = simulator.demo_targets(sim_url, sim)
    exporter = make_exporter(make_config(targets, defaults={"interval": "0.5s", "timeout": "0.4s"}))
    server = await aiohttp_server(build_app(exporter))
    url = str(server.make_url("/metrics"))
    stop = asyncio.Event()

    async def chaos() -> None:
        victims = itertools.cycle(targets)
        for fault in itertools.cycle(FAULTS):
            victim = next(victims)
            account = victim["base_url"].split("://", 1)[1].split("/")[2]
            sim.set_fault(victim["provider"], account, fault)
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
                return
            except TimeoutError:
                continue

    failures: list[str] = []
    bodies = 0

    async def scraper(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal bodies
        for _ in range(SCRAPES_EACH):
            headers = {"Accept-Encoding": "gzip"} if n % 2 else {}
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

    chaos_task = asyncio.create_task(chaos())
    connector = aiohttp.TCPConnector(limit=SCRAPERS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(scraper(session, n) for n in range(SCRAPERS)))
        stop.set()
        await chaos_task
        async with session.get(url) as response:
            scraped = parse_exposition(await response.text())
    assert failures == []
    assert bodies == SCRAPERS * SCRAPES_EACH
    # Collections went on meanwhile, faults and all, and the process is still serving.
    assert any(
        name == "messaging_exporter_collect_errors_total" and value > 0
        for (name, _), value in scraped.items()
    )
