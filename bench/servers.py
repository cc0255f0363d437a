"""The processes the bench drives, each started as ``python -m bench.servers <role> ...``; each
prints ``READY <port>`` on stdout when it listens.

* ``sim``: the provider simulator with ``--targets`` Thulium tenants (4 or 5 campaigns each: 10,000
  provider series for 1,000) and ``POST /_bench/latency?seconds=`` to change its injected latency.
* ``exporter``: the exporter in one process, started as ``serve`` starts it (``make_exporter`` and
  ``build_app``, the same ``AppRunner`` settings, ``keep_long_lived_objects_out_of_gc`` once
  listening),
  pointed at the simulator, with the collection loop not started by itself
  (``autostart=False``), plus bench-only routes under ``/_bench/``: run collection cycles and
  report their duration, the process's CPU time, RSS and the event loop's lag (measured inside
  the process by :class:`LagMonitor`), and feed synthetic cycles for the memory phase.
* ``reference``: a plain aiohttp server answering pre-rendered bytes (fetched from the exporter's
  ``/metrics`` once) under ``/identity``, ``/gzip``, ``/om`` and ``/om-gzip``.
* ``peer``: what a typical Python exporter does: prometheus_client's own aiohttp handler
  (``prometheus_client.aiohttp.make_aiohttp_handler``) over a custom collector that builds the
  same families and samples (parsed once from the exporter's ``/metrics``) at every scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import random
import resource
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from exporter.collect.snapshot import Snapshot
    from exporter.service import Exporter

TENANT_USER, TENANT_PASSWORD = "bench", "bench-password"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
INTERVAL = 5.0
"""Every target's interval: a started scheduler collects each target every 5 s on its grid."""
LIMITED_CONCURRENCY = 32
"""Collections at once in the ``limited`` cycles."""


def tenant(index: int) -> str:
    return f"t{index:04d}"


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """CPU time of the process, every thread of it (the gzip worker included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def listen(app: web.Application, backlog: int = 128, **options: Any) -> web.AppRunner:
    runner = web.AppRunner(app, **options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=backlog).start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    return runner


# -- simulator ------------------------------------------------------------------------------------


def sim_app(targets: int) -> web.Application:
    from bench.synthetic import campaigns
    from exporter import simulator
    from exporter.simulator.thulium import Campaign, Tenant

    sim = simulator.Simulator(record_requests=False)
    rng = random.Random(7)
    sim.state["thulium"].tenants = {
        tenant(i): Tenant(
            TENANT_USER,
            TENANT_PASSWORD,
            [
                Campaign(f"{c + 1:05d}", rng.randint(0, 100_000), rng.randint(0, 100))
                for c in range(campaigns(i))
            ],
        )
        for i in range(targets)
    }
    sim.state["thulium"].dynamic = True  # values move at every call: every cycle changes them
    app = simulator.build_app(sim)

    async def latency(request: web.Request) -> web.Response:
        sim.latency = float(request.query["seconds"])
        return web.json_response({"latency": sim.latency})

    app.router.add_post("/_bench/latency", latency)
    return app


# -- exporter -------------------------------------------------------------------------------------


class LagMonitor:
    """How late a 5 ms timer fires: the longest stall of the event loop in a window, the loop's
    own CPU time in the longest stalls (a stall the exporter's code caused, as opposed to the
    process waiting for one of the machine's two cores), and the longest pause of the garbage
    collector. Keeps maxima only (no list that grows with the run)."""

    PERIOD = 0.005

    def __init__(self) -> None:
        self.max_lag = 0.0
        self.max_busy = 0.0
        self.max_gc = 0.0
        self.full_gcs = 0
        self.ticks = 0
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.max_gc = max(self.max_gc, time.perf_counter() - self._gc_started)
            self.full_gcs += info["generation"] == 2

    def reset(self) -> None:
        self.max_lag = self.max_busy = self.max_gc = 0.0
        self.full_gcs = self.ticks = 0

    def report(self) -> dict[str, float]:
        return {
            "max_lag": self.max_lag,
            "max_busy": max(0.0, self.max_busy),
            "max_gc_pause": self.max_gc,
            "full_gcs": self.full_gcs,
            "ticks": self.ticks,
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, cpu_before = loop.time(), time.thread_time()
            await asyncio.sleep(self.PERIOD)
            lag = loop.time() - before - self.PERIOD
            self.ticks += 1
            self.max_lag = max(self.max_lag, lag)
            if lag > 0.002:
                self.max_busy = max(self.max_busy, time.thread_time() - cpu_before - self.PERIOD)


def exporter_config(sim_url: str, targets: int) -> Any:
    from exporter.config import validate_config

    return validate_config(
        {
            "log": {"level": "info", "format": "json"},
            "defaults": {"interval": f"{INTERVAL:g}s", "timeout": "4s"},
            "targets": [
                {
                    "name": f"thulium-{tenant(i)}",
                    "provider": "thulium",
                    "base_url": f"{sim_url}/thulium/{tenant(i)}/api",
                    "username": TENANT_USER,
                    "password": TENANT_PASSWORD,
                }
                for i in range(targets)
            ],
        }
    )


class BenchRoutes:
    """The bench's routes under ``/_bench/`` in the exporter process: collection cycles and what
    they cost (duration, CPU, the event loop's lag), synthetic cycles for the memory phase, and the
    process's figures."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.monitor = LagMonitor()

    def add_to(self, app: web.Application) -> None:
        app.cleanup_ctx.append(self._monitoring)
        app.router.add_post("/_bench/cycle", self.cycle)
        app.router.add_post("/_bench/load", self.load)
        app.router.add_post("/_bench/synthetic", self.synthetic_cycles)
        app.router.add_get("/_bench/stats", self.stats)

    async def _monitoring(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.monitor.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # -- collection cycles ----------------------------------------------------------------------

    async def _collected_since(self, begun: float) -> None:
        """Wait until every target has a collection that started at ``begun`` or later (checked
        every 20 ms, each target until it has one: the bench's own cost stays negligible)."""
        pending = [target.state for target in self.exporter.targets]
        while pending:
            await asyncio.sleep(0.02)
            pending = [s for s in pending if s.latest is None or s.latest.started_at < begun]

    async def _one_cycle(self, mode: str) -> float:
        """One collection of every target; its duration. ``burst``: every target due at once, as
        after a start or a reload (``run_all_once``, bounded by the exporter's own
        ``max_concurrent_collections``, 64 by default); ``limited``: :data:`LIMITED_CONCURRENCY`
        workers, each collecting the next target when done with one (an operator's tighter
        limit); ``scheduled``: the scheduler's tasks as ``serve`` runs them (first runs spread
        over the first seconds), until every target was collected once (the tasks go on: see
        ``load``)."""
        exporter = self.exporter
        scheduler = exporter.scheduler
        assert scheduler is not None
        started = time.perf_counter()
        if mode == "burst":
            await scheduler.run_all_once()
        elif mode == "limited":
            queue = [target.runner for target in exporter.targets if target.runner is not None]
            queue.reverse()

            async def worker() -> None:
                while queue:
                    await queue.pop().run_once()

            await asyncio.gather(*(worker() for _ in range(LIMITED_CONCURRENCY)))
        else:
            begun = exporter.clock.time()
            scheduler.start()
            await self._collected_since(begun)
        return time.perf_counter() - started

    def _figures(self, cpu: float, requests: int, started: float) -> dict[str, Any]:
        exporter = self.exporter
        return {
            "wall": time.perf_counter() - started,
            "cpu": cpu_seconds() - cpu,
            "requests": requests,
            **self.monitor.report(),
            "rss": rss_bytes(),
            "series": sum(len(target.state.series) for target in exporter.targets),
            "failed": sum(
                1
                for target in exporter.targets
                if target.state.latest is not None and not target.state.latest.ok
            ),
            "generation": exporter.store.generation,
        }

    async def cycle(self, request: web.Request) -> web.Response:
        """One cycle (see ``_one_cycle``), nothing else running; a ``scheduled`` one is stopped
        after its pass (the stop is not measured)."""
        from exporter.collect.scheduler import FIRST_RUN_SPREAD

        exporter = self.exporter
        mode = request.query.get("mode", "burst")
        self.monitor.reset()
        cpu, started = cpu_seconds(), time.perf_counter()
        duration = await self._one_cycle(mode)
        result = self._figures(cpu, len(exporter.targets), started)
        result["duration"] = duration
        if mode == "scheduled":
            assert exporter.scheduler is not None
            await exporter.scheduler.stop()
        result["limits"] = {
            "connector": exporter.session.connector.limit if exporter.session else 0,
            "collections": exporter.config.max_concurrent_collections,
            "limited": LIMITED_CONCURRENCY,
            "spread": min(FIRST_RUN_SPREAD, INTERVAL),
        }
        return web.json_response(result)

    async def load(self, request: web.Request) -> web.Response:
        """Collections for ``seconds`` (scraped meanwhile by the bench): ``burst`` and ``limited``
        cycles back to back; ``scheduled``: the scheduler's tasks on their 5 s grid (a first pass
        spread over 5 s, then every target every 5 s). The loop's lag is measured over the whole
        window; the tasks' cancelling afterwards is not."""
        exporter = self.exporter
        mode = request.query["mode"]
        seconds = float(request.query["seconds"])
        self.monitor.reset()
        cpu, started = cpu_seconds(), time.perf_counter()
        durations = []
        requests = 0
        if mode == "scheduled":
            durations.append(await self._one_cycle(mode))
            await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - started)))
            requests = -1  # counted by the histogram, not here
        else:
            while time.perf_counter() - started < seconds:
                durations.append(await self._one_cycle(mode))
                requests += len(exporter.targets)
        result = self._figures(cpu, requests, started)
        result["durations"] = durations
        if mode == "scheduled":
            assert exporter.scheduler is not None
            await exporter.scheduler.stop()
        return web.json_response(result)

    # -- memory ---------------------------------------------------------------------------------

    async def synthetic_cycles(self, request: web.Request) -> web.Response:
        """Cycles without a network: every target records a new snapshot (new values, one series
        in ten replaced by a new one), then a scrape builds each format, identity and gzip; RSS
        after the cycles in ``at`` (after a ``gc.collect()``)."""
        from bench import synthetic

        exporter = self.exporter
        count = int(request.query["cycles"])
        first = int(request.query.get("first", "1"))
        marks = {int(mark) for mark in request.query.get("at", "").split(",") if mark}
        rng = random.Random(11)
        store, exposition = exporter.store, exporter.exposition
        rss: dict[int, int] = {}
        started = time.perf_counter()
        for number in range(first, first + count):
            now = exporter.clock.time()
            for index, target in enumerate(exporter.targets):
                snap = synthetic.snapshot(target.name, index, rng, now)
                if number % 10 == index % 10:  # churn: a campaign ends, another starts
                    snap = _churned(snap, number)
                store.record(snap)
            await exposition.get("", "gzip")
            await exposition.get(OPENMETRICS, "gzip")
            await asyncio.sleep(0)
            if number in marks:
                gc.collect()
                rss[number] = rss_bytes()
        return web.json_response(
            {"rss": rss, "duration": time.perf_counter() - started, "cycles": count}
        )

    async def stats(self, request: web.Request) -> web.Response:
        gc.collect()
        return web.json_response(
            {
                "rss": rss_bytes(),
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "cpu": cpu_seconds(),
                "generation": self.exporter.store.generation,
            }
        )


def _churned(snap: Snapshot, number: int) -> Snapshot:
    """``snap`` with its first campaign replaced by campaign ``9<number>``."""
    from exporter.collect.snapshot import Snapshot

    samples = tuple(
        s if s.labels != ("00001",) else type(s)(s.metric, (f"9{number:04d}",), s.value)
        for s in snap.samples
    )
    return Snapshot(**{**{f: getattr(snap, f) for f in Snapshot.__slots__}, "samples": samples})


async def run_exporter(sim_url: str, targets: int) -> None:
    from exporter.cli import SHUTDOWN_TIMEOUT
    from exporter.gctuning import keep_long_lived_objects_out_of_gc
    from exporter.logs import setup_logging
    from exporter.service import make_exporter
    from exporter.web.app import build_app

    config = exporter_config(sim_url, targets)
    setup_logging(config.log.level, config.log.format, stream=sys.stderr)
    exporter = make_exporter(config, autostart=False)
    app = build_app(exporter)
    BenchRoutes(exporter).add_to(app)
    # As ``exporter.cli._serve`` starts it.
    await listen(
        app,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=config.web.keepalive_timeout,
        access_log=logging.getLogger("aiohttp.access"),
    )
    freezing = asyncio.create_task(keep_long_lived_objects_out_of_gc(exporter.store))
    await asyncio.Event().wait()
    freezing.cancel()


# -- reference and peer ---------------------------------------------------------------------------


async def fetch(url: str, accept: str, encoding: str) -> tuple[bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers={"Accept": accept, "Accept-Encoding": encoding}) as response,
    ):
        body = await response.read()
        headers = {"Content-Type": response.headers["Content-Type"]}
        if "Content-Encoding" in response.headers:
            headers["Content-Encoding"] = response.headers["Content-Encoding"]
        return body, headers


async def reference_app(exporter_url: str) -> web.Application:
    bodies = {
        route: await fetch(f"{exporter_url}/metrics", accept, encoding)
        for route, accept, encoding in (
            ("identity", "", "identity"),
            ("gzip", "", "gzip"),
            ("om", OPENMETRICS, "identity"),
            ("om-gzip", OPENMETRICS, "gzip"),
        )
    }

    def answer(route: str) -> Any:
        body, headers = bodies[route]

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, headers=headers)

        return handler

    app = web.Application()
    for route in bodies:
        app.router.add_get(f"/{route}", answer(route))
    return app


async def peer_app(exporter_url: str) -> web.Application:
    from prometheus_client import CollectorRegistry
    from prometheus_client.aiohttp import make_aiohttp_handler
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.parser import text_string_to_metric_families

    body, _ = await fetch(f"{exporter_url}/metrics", "", "identity")
    parsed = list(text_string_to_metric_families(body.decode()))

    class Collector:
        """The exporter's samples, kept as data and turned into families at every scrape."""

        def __init__(self) -> None:
            self.data = []
            for family in parsed:
                names = tuple(family.samples[0].labels) if family.samples else ()
                rows = [(tuple(s.labels.values()), s.value) for s in family.samples]
                self.data.append((family, names, rows))

        def collect(self) -> Any:
            for family, names, rows in self.data:
                if family.type == "gauge":
                    made = GaugeMetricFamily(family.name, family.documentation, labels=names)
                elif family.type == "counter":
                    made = CounterMetricFamily(family.name, family.documentation, labels=names)
                else:  # the request-duration histogram: as parsed
                    yield family
                    continue
                for values, value in rows:
                    made.add_metric(values, value)
                yield made

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("sim", "exporter", "reference", "peer"))
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--url", default="")
    args = parser.parse_args()

    async def run() -> None:
        if args.role == "exporter":
            await run_exporter(args.url, args.targets)
            return
        if args.role == "sim":
            app = sim_app(args.targets)
        elif args.role == "reference":
            app = await reference_app(args.url)
        else:
            app = await peer_app(args.url)
        # The simulator takes up to 256 connections at once (the exporter's connector limit).
        await listen(app, 1024, access_log=None, handle_signals=True, shutdown_timeout=0.1)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
