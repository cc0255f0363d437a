"""The three processes the bench drives, each started as ``python -m bench.servers <role> ...``.

* ``sim``: the provider simulator with ``--targets`` Thulium tenants (4 or 5 campaigns each) and
  ``POST /_bench/latency?seconds=`` to change its injected latency between phases.
* ``exporter``: the real exporter app (``make_exporter`` + ``build_app``, JSON logs at info to a
  file, no background loop) pointed at the simulator, behind its serving process started as
  ``serve`` starts it, plus bench-only routes (on a port of the collecting process's own) to run a
  collection cycle and report its duration, both processes' CPU time and memory and the event
  loop's lag. It prints ``READY <serving port> <bench port>``.
* ``reference``: a plain aiohttp server answering pre-rendered bytes (fetched from the exporter's
  ``/metrics`` once) under ``/identity``, ``/gzip``, ``/om`` and ``/om-gzip``.

Each prints ``READY <port>`` on stdout when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import resource
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

from exporter import front
from exporter.front import ServingProcess

TENANT_USER, TENANT_PASSWORD = "bench", "bench-password"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def tenant(index: int) -> str:
    return f"t{index:04d}"


SERVING: ServingProcess | None = None
"""The exporter's serving process (the exporter role), as ``serve`` starts it."""
SERVING_PORT = 0
EXPORTER_ROLE = False


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pss_bytes(pid: int | str = "self") -> int:
    """Proportional set size: each page shared by n processes counts 1/n."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss in smaps_rollup")


def memory() -> dict[str, int]:
    """The exporter's memory: each process's RSS, and ``pair``, the sum of their PSS (every
    page once, as a cgroup's memory limit counts them: the pages both map, such as the
    interpreter's library, are not counted twice)."""
    result = {"collecting": rss_bytes(), "pair": pss_bytes()}
    if SERVING is not None:
        result["serving"] = rss_bytes(SERVING.pid)
        result["pair"] += pss_bytes(SERVING.pid)
    return result


def cpu_seconds() -> float:
    """CPU time of the process, and of the exporter's serving process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    if SERVING is not None:
        with open(f"/proc/{SERVING.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def serve(app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    if SERVING is None:
        print(f"READY {port} {port}" if EXPORTER_ROLE else f"READY {port}", flush=True)
    else:
        # Scrapes go to the serving process; the bench's own routes come here directly.
        await web.SockSite(runner, SERVING.collector).start()
        print(f"READY {SERVING_PORT} {port}", flush=True)
    await asyncio.Event().wait()


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
    """How late a 5 ms timer fires: the longest stall of the event loop in a window; and the
    longest pause of the garbage collector in it, to tell the two apart."""

    PERIOD = 0.005

    def __init__(self) -> None:
        self.max_lag = 0.0
        self.max_busy = 0.0
        self.lags: list[float] = []
        self.max_gc = 0.0
        self.gc_runs = 0
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.max_gc = max(self.max_gc, time.perf_counter() - self._gc_started)
            self.gc_runs += info["generation"] == 2

    def reset(self) -> None:
        self.max_busy = 0.0
        self.max_lag = 0.0
        self.lags = []
        self.max_gc = 0.0
        self.gc_runs = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, cpu_before = loop.time(), time.thread_time()
            await asyncio.sleep(self.PERIOD)
            lag = loop.time() - before - self.PERIOD
            self.lags.append(lag)
            self.max_lag = max(self.max_lag, lag)
            # The loop's own CPU time in the interval: a stall our code caused, as opposed to
            # the process waiting for a core (two cores shared with wrk and the simulator).
            if lag > 0.002:
                self.max_busy = max(self.max_busy, time.thread_time() - cpu_before - self.PERIOD)


def exporter_app(sim_url: str, targets: int) -> web.Application:
    from bench import synthetic
    from exporter.collect.scheduler import FIRST_RUN_SPREAD
    from exporter.config import validate_config
    from exporter.logs import setup_logging
    from exporter.metrics.store import Snapshot
    from exporter.web.app import EXPORTER, build_app, make_exporter

    setup_logging("info", "json", stream=sys.stderr)
    config = validate_config(
        {
            "defaults": {"interval": "10m", "timeout": "30s"},
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
    exporter = make_exporter(config, autostart=False)
    app = build_app(exporter)
    if SERVING is not None:
        front.Feed.attach(app, exporter.exposition, exporter.store, SERVING.feed)
    monitor = LagMonitor()
    background: set[asyncio.Task[Any]] = set()

    async def start_monitor(app: web.Application) -> None:
        task = asyncio.create_task(monitor.run())
        background.add(task)

    app.on_startup.append(start_monitor)

    def report(started: float, cpu: float, requests: int) -> dict[str, Any]:
        lags = sorted(monitor.lags) or [0.0]
        return {
            "duration": time.perf_counter() - started,
            "cpu": cpu_seconds() - cpu,
            "requests": requests,
            "max_lag": monitor.max_lag,
            "max_busy": max(0.0, monitor.max_busy),
            "max_gc_pause": monitor.max_gc,
            "full_gcs": monitor.gc_runs,
            "p99_lag": lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)],
            "rss": memory(),
            "series": sum(len(state.series) for state in exporter.store.targets),
            "failed": sum(
                1 for s in exporter.store.targets if s.latest is not None and not s.latest.ok
            ),
        }

    async def cycle(request: web.Request) -> web.Response:
        """One collection of every target: ``mode=burst`` all at once (``run_all_once``, bounded
        by the scheduler's ``max_concurrent_collections`` and the connector's limit),
        ``mode=scheduled`` as ``serve`` runs them (the
        scheduler's tasks, first runs spread over the first seconds)."""
        scheduler = exporter.scheduler
        assert scheduler is not None
        mode = request.query.get("mode", "burst")
        concurrency = int(request.query.get("concurrency", "0"))
        monitor.reset()
        cpu, started = cpu_seconds(), time.perf_counter()
        if mode == "burst" and not concurrency:
            await scheduler.run_all_once()
        elif mode == "burst":
            # What a global limit on concurrent collections in the scheduler would do: that
            # many workers, each collecting the next target when done with one.
            queue = list(scheduler.runners.values())
            queue.reverse()

            async def worker() -> None:
                while queue:
                    await queue.pop().run_once()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            begun = exporter.clock.time()
            scheduler.start()
            while any(  # noqa: ASYNC110  (polling keeps the exporter's code untouched)
                s.latest is None or s.latest.started_at < begun for s in exporter.store.targets
            ):
                await asyncio.sleep(0.01)
            # The tasks stay until /_bench/stop, after the scrapes: in ``serve`` they sleep until
            # the next interval; cancelling a thousand (~5-10 ms in one loop iteration) is the
            # bench's teardown, not a cycle's work.
        result = report(started, cpu, len(exporter.store.targets))
        connector = exporter.session.connector if exporter.session else None
        result["connector_limit"] = connector.limit if connector else 0
        result["collection_limit"] = exporter.config.max_concurrent_collections
        result["spread"] = FIRST_RUN_SPREAD
        return web.json_response(result)

    async def stop(request: web.Request) -> web.Response:
        """Stop the scheduler's tasks a ``mode=scheduled`` cycle left running."""
        assert exporter.scheduler is not None
        await exporter.scheduler.stop()
        return web.json_response({"stopped": True})

    async def synthetic_cycles(request: web.Request) -> web.Response:
        """Cycles without a network: every target records a new snapshot (new values, one series
        in ten replaced by a new one), then a gzip scrape; RSS after the cycles in ``at``."""
        count = int(request.query["cycles"])
        marks = {int(mark) for mark in request.query.get("at", "").split(",") if mark}
        rng = random.Random(11)
        store = exporter.store
        rss: dict[int, int] = {}
        started = time.perf_counter()
        for number in range(1, count + 1):
            now = exporter.clock.time()
            for index, state in enumerate(store.targets):
                snap = synthetic.snapshot(state.config.name, index, rng, now)
                if number % 10 == index % 10:  # churn: a campaign ends, another starts
                    snap = Snapshot(
                        **{
                            **{f: getattr(snap, f) for f in Snapshot.__slots__},
                            "samples": tuple(
                                s
                                if s.labels != ("00001",)
                                else type(s)(s.metric, (f"9{number:04d}",), s.value)
                                for s in snap.samples
                            ),
                        }
                    )
                store.record(snap)
            await exporter.exposition.get_async("", "gzip")
            await asyncio.sleep(0)
            if number in marks:
                gc.collect()
                rss[number] = memory()["pair"]
        return web.json_response(
            {"rss": rss, "duration": time.perf_counter() - started, "cycles": count}
        )

    async def freeze(request: web.Request) -> web.Response:
        """``gc.freeze()``: what ``serve`` could do once started (objects of the imports and the
        config are not scanned by every full collection)."""
        gc.collect()
        gc.freeze()
        return web.json_response({"frozen": gc.get_freeze_count()})

    async def stats(request: web.Request) -> web.Response:
        gc.collect()
        now = memory()
        return web.json_response({"rss": now["pair"], "memory": now, "cpu": cpu_seconds()})

    app.router.add_post("/_bench/cycle", cycle)
    app.router.add_post("/_bench/stop", stop)
    app.router.add_post("/_bench/synthetic", synthetic_cycles)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/freeze", freeze)
    app[EXPORTER]
    return app


# -- reference ------------------------------------------------------------------------------------


async def reference_app(exporter_url: str) -> web.Application:
    bodies: dict[str, tuple[bytes, dict[str, str]]] = {}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for route, accept, encoding in (
            ("identity", "", "identity"),
            ("gzip", "", "gzip"),
            ("om", OPENMETRICS, "identity"),
            ("om-gzip", OPENMETRICS, "gzip"),
        ):
            async with session.get(
                f"{exporter_url}/metrics",
                headers={"Accept": accept, "Accept-Encoding": encoding},
            ) as response:
                body = await response.read()
                headers = {"Content-Type": response.headers["Content-Type"]}
                if "Content-Encoding" in response.headers:
                    headers["Content-Encoding"] = response.headers["Content-Encoding"]
                bodies[route] = (body, headers)

    def answer(route: str) -> Any:
        body, headers = bodies[route]

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, headers=headers)

        return handler

    app = web.Application()
    for route in bodies:
        app.router.add_get(f"/{route}", answer(route))
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("sim", "exporter", "reference"))
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--url", default="")
    parser.add_argument(
        "--single-process",
        action="store_true",
        help="exporter: one process, as --single-process runs it (to compare its memory)",
    )
    args = parser.parse_args()

    global SERVING, SERVING_PORT, EXPORTER_ROLE
    EXPORTER_ROLE = args.role == "exporter"
    if args.role == "exporter" and not args.single_process:
        # As ``serve`` does: the listening socket goes to the serving process.
        sockets = front.bind("127.0.0.1", 0, backlog=1024)
        SERVING_PORT = sockets[0].getsockname()[1]
        SERVING = front.spawn_front(sockets, "/metrics", None, "info", "json", backlog=1024)
        assert SERVING is not None

    async def run() -> None:
        if args.role == "sim":
            app = sim_app(args.targets)
        elif args.role == "exporter":
            app = exporter_app(args.url, args.targets)
        else:
            app = await reference_app(args.url)
        await serve(app)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
