"""The aiohttp app: ``/metrics`` from the cached exposition, health, readiness, the landing page and
reload. The collection loop lives in the app's ``cleanup_ctx``: it starts and stops with the app."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import prometheus_client
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.clock import Clock, SystemClock
from exporter.collect.http import new_session, request_duration_histogram
from exporter.collect.scheduler import Scheduler
from exporter.collect.sharding import Sharding, split
from exporter.config import Config, ConfigError, load_config
from exporter.histogram import RequestHistogram
from exporter.logs import redactor
from exporter.metrics.exposition import Exposition
from exporter.metrics.store import Store, StoreCollector
from exporter.providers.base import TargetConfig
from exporter.web.webconfig import WebConfigFile, web_middlewares

log = structlog.get_logger("exporter.web.app")

USER_AGENT = f"messaging-stats-exporter/{__version__}"


@dataclass
class Exporter:
    """Everything the routes and the lifecycle share."""

    config: Config
    clock: Clock
    store: Store
    registry: CollectorRegistry
    histogram: RequestHistogram
    exposition: Exposition
    config_path: Path | None = None
    environ: Mapping[str, str] | None = None
    autostart: bool = True
    shard_override: Sharding | None = None
    assigned: list[TargetConfig] = field(default_factory=list)
    scheduler: Scheduler | None = None
    session: aiohttp.ClientSession | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def sharding(self) -> Sharding:
        return self.shard_override or self.config.sharding

    def apply(self, config: Config) -> None:
        """Run the targets of ``config`` that this shard owns: unchanged ones keep their state
        and schedule, removed ones leave, new ones start."""
        self.config = config
        redactor.set_secrets(config.secret_values())
        sharding = self.sharding
        self.assigned, skipped = split(
            config.targets, [target.name for target in config.targets], sharding
        )
        self.store.shard = (sharding.index, sharding.count)
        self.store.skipped_targets = skipped
        if self.scheduler is not None:
            self.scheduler.set_targets(self.assigned)
            if self.autostart:
                self.scheduler.start()
        else:
            self.store.set_targets(self.assigned)

    async def reload(self) -> str | None:
        """Load the config file again; on an error keep the running config and return the error."""
        if self.config_path is None:
            return "this exporter was started without a config file"
        async with self.reload_lock:
            try:
                # Off the loop: the file and its *_file secrets are read from disk.
                config = await asyncio.to_thread(load_config, self.config_path, self.environ)
            except ConfigError as exc:
                self.store.reloaded(ok=False)
                log.error("config reload failed; the previous config stays", error=str(exc))
                return str(exc)
            self.apply(config)
            self.store.reloaded(ok=True)
            log.info("config reloaded", targets=len(config.targets))
            return None


EXPORTER = web.AppKey("exporter", Exporter)


def make_exporter(
    config: Config,
    *,
    clock: Clock | None = None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    autostart: bool = True,
    shard: Sharding | None = None,
) -> Exporter:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    clock = clock or SystemClock()
    store = Store(clock)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    histogram = request_duration_histogram(registry)
    exporter = Exporter(
        config=config,
        clock=clock,
        store=store,
        registry=registry,
        histogram=histogram,
        exposition=Exposition(registry, store),
        config_path=config_path,
        environ=environ,
        autostart=autostart,
        shard_override=shard,
    )
    exporter.apply(config)
    return exporter


async def _collection(app: web.Application) -> AsyncIterator[None]:
    exporter = app[EXPORTER]
    exporter.session = new_session(USER_AGENT)
    exporter.scheduler = Scheduler(
        exporter.store,
        exporter.session,
        exporter.histogram,
        exporter.clock,
        exporter.config.max_concurrent_collections,
    )
    exporter.apply(exporter.config)
    try:
        yield
    finally:
        await exporter.scheduler.stop()
        await exporter.exposition.aclose()
        await exporter.session.close()


async def metrics(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    headers = request.headers
    rendered = await exporter.exposition.get_async(
        headers.get("Accept", ""), headers.get("Accept-Encoding", "")
    )
    return web.Response(body=rendered.body, headers=rendered.headers)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[EXPORTER].store.ready():
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: some targets have not been collected yet\n")


async def reload(request: web.Request) -> web.Response:
    error = await request.app[EXPORTER].reload()
    if error is None:
        return web.Response(text="reloaded\n")
    return web.Response(status=500, text=f"reload failed; the previous config stays.\n{error}\n")


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    stamp = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({max(0.0, now - timestamp):.0f}s ago)"


async def landing(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    now = exporter.clock.time()
    path = html.escape(exporter.config.web.telemetry_path)
    rows = []
    for state in exporter.store.targets:
        latest = state.latest
        if latest is None:
            status = "pending"
        elif latest.ok:
            status = "up"
        else:
            status = "down"
        error = f"{latest.reason}: {latest.error}" if latest and not latest.ok else ""
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(cell)}</td>"
                for cell in (
                    state.config.provider,
                    state.config.name,
                    status,
                    _when(state.last_success, now),
                    redactor.redact(error),
                )
            )
            + "</tr>"
        )
    sharding = exporter.sharding
    shard_note = ""
    if sharding.count > 1:
        shard_note = (
            f"<p>Shard {sharding.index} of {sharding.count} (0-based): this replica collects the "
            f"{len(exporter.assigned)} targets below and leaves {exporter.store.skipped_targets} "
            "to the other shards.</p>"
        )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>messaging-stats-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:left}}table{{border-collapse:collapse}}</style></head>
<body><h1>messaging-stats-exporter</h1>
<p>Version {html.escape(__version__)}. Prometheus exporter for messaging platforms' statistics.</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="/healthz">Health</a></li>
<li><a href="/readyz">Readiness</a></li></ul>
<h2>Targets</h2>{shard_note}
<table><tr><th>Provider</th><th>Account</th><th>State</th><th>Last success</th>
<th>Last error</th></tr>
{"".join(rows) or '<tr><td colspan="5">no targets configured</td></tr>'}
</table></body></html>
"""
    return web.Response(text=body, content_type="text/html")


def build_app(exporter: Exporter, web_config: WebConfigFile | None = None) -> web.Application:
    """The exporter's app; ``web_config`` (TLS aside) applies when it faces clients itself."""
    app = web.Application(middlewares=web_middlewares(web_config))
    app[EXPORTER] = exporter
    app.cleanup_ctx.append(_collection)
    app.router.add_get(exporter.config.web.telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/", landing)
    return app
