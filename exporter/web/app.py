"""The aiohttp app: ``/metrics`` from the exposition, the status page and the targets API,
health, readiness and reload. The collection loop lives in the app's ``cleanup_ctx``: it starts
and stops with the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import payload, web
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from exporter import __version__
from exporter.service import Exporter
from exporter.web.api import TARGETS_PATH, targets_document
from exporter.web.status import StatusView, TargetRow, render_status_page
from exporter.web.webconfig import WebSettings

log = structlog.get_logger("exporter.web.app")

EXPORTER = web.AppKey("exporter", Exporter)
WEB_SETTINGS = web.AppKey("web_settings", WebSettings)


class Parts(payload.Payload):
    """A body sent as the buffers it is made of, one after the other, without joining them."""

    _value: tuple[bytes | memoryview, ...]

    def __init__(self, parts: tuple[bytes | memoryview, ...]) -> None:
        super().__init__(parts)
        self._size = sum(len(part) for part in parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for part in self._value:
            await writer.write(part)


async def metrics(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    headers = request.headers
    answer = await exporter.exposition.get(
        headers.get("Accept", ""), headers.get("Accept-Encoding", "")
    )
    parts = answer.parts
    body = parts[0] if len(parts) == 1 else Parts(parts)
    return web.Response(body=body, headers=answer.headers)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[EXPORTER].store.ready():
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: some targets have not been collected yet\n")


async def reload(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    error = await exporter.reload()
    if error is None:
        return web.Response(text="reloaded\n")
    # As on the status page: a config error may quote a value.
    error = exporter.redactor.redact(error)
    return web.Response(status=500, text=f"reload failed; the previous config stays.\n{error}\n")


LIFECYCLE_FLAG = "--web.enable-lifecycle"


async def reload_refused(request: web.Request) -> web.Response:
    return web.Response(
        status=403,
        text=f"the lifecycle API is not enabled: start the exporter with {LIFECYCLE_FLAG} to "
        "reload the config over HTTP (SIGHUP reloads it in any case)\n",
    )


def url_host(url: str) -> str:
    """The host of ``url``, with its port when the URL gives one: never its path or credentials."""
    parsed = URL(url)
    host = parsed.host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parsed.explicit_port}" if parsed.explicit_port is not None else host


def status_view(exporter: Exporter) -> StatusView:
    """The facts the status page and the targets API show, in config order, every text that came
    from a provider or a config file passed through the service's redactor."""
    store = exporter.store
    redact = exporter.redactor.redact
    now = exporter.clock.time()
    rows = []
    for target in exporter.targets:
        config, state = target.config, target.state
        latest = state.latest
        failed = latest is not None and not latest.ok
        condition, served = target.status(now)
        rows.append(
            TargetRow(
                provider=config.provider,
                account=config.name,
                state=condition,
                last_success=state.last_success,
                consecutive_failures=state.consecutive_failures,
                interval=config.interval,
                series=served,
                reason=str(latest.reason) if failed and latest and latest.reason else None,
                last_error=redact(latest.error or "") if failed and latest else None,
                labels=config.labels,
                host=url_host(config.base_url),
                last_attempt=latest.started_at if latest else None,
                last_duration=latest.duration if latest else None,
                next_attempt=state.next_attempt,
            )
        )
    sharding = exporter.sharding
    return StatusView(
        version=__version__,
        now=now,
        telemetry_path=exporter.config.web.telemetry_path,
        shard_index=sharding.index,
        shard_count=sharding.count,
        skipped_targets=store.skipped_targets,
        config_file=str(exporter.config_path) if exporter.config_path else None,
        last_reload=store.last_reload,
        last_reload_ok=store.config_reload_successful,
        last_reload_error=(
            redact(store.last_reload_error) if store.last_reload_error is not None else None
        ),
        targets=rows,
    )


async def status_page(request: web.Request) -> web.Response:
    page = render_status_page(status_view(request.app[EXPORTER]))
    return web.Response(text=page, content_type="text/html")


async def targets_api(request: web.Request) -> web.Response:
    return web.json_response(targets_document(status_view(request.app[EXPORTER])))


async def _watch_web_config(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[WEB_SETTINGS].watch())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _collection(app: web.Application) -> AsyncIterator[None]:
    async for _ in app[EXPORTER].collecting():
        yield


def build_app(
    exporter: Exporter, settings: WebSettings | None = None, *, lifecycle: bool = False
) -> web.Application:
    """The exporter's app; ``settings`` (the web config) adds response headers, the client
    certificate names let in, the rate limit and basic auth, and is watched for changes while the
    app runs (TLS is the server's, see ``exporter.cli``). Without ``lifecycle``
    (``--web.enable-lifecycle``), ``POST /-/reload`` answers 403."""
    app = web.Application(middlewares=settings.middlewares() if settings else [])
    app[EXPORTER] = exporter
    if settings is not None:
        app[WEB_SETTINGS] = settings
        app.cleanup_ctx.append(_watch_web_config)
    app.cleanup_ctx.append(_collection)
    app.router.add_get(exporter.config.web.telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/-/reload", reload if lifecycle else reload_refused)
    app.router.add_get("/", status_page)
    app.router.add_get(TARGETS_PATH, targets_api)
    return app
