"""Command line: ``--check-config``, ``--once``, ``--demo`` and serving (the default)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import socket
import sys
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client.exposition import generate_latest
from pydantic import ValidationError

from exporter import __version__, front, simulator
from exporter.collect.http import new_session
from exporter.collect.scheduler import Scheduler
from exporter.collect.sharding import Sharding, ordinal_from_hostname
from exporter.config import (
    DEFAULT_LISTEN_ADDRESS,
    Config,
    ConfigError,
    WebConfig,
    load_config,
    parse_listen_address,
    validate_config,
)
from exporter.fields import format_duration
from exporter.front import ServingProcess
from exporter.logs import setup_logging
from exporter.web.app import USER_AGENT, Exporter, build_app, make_exporter
from exporter.web.webconfig import WebConfigFile, load_web_config, ssl_context

log = structlog.get_logger("exporter.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEMO_INTERVAL = "10s"
DEMO_LOG = ("info", "console")
SHUTDOWN_TIMEOUT = front.SHUTDOWN_TIMEOUT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="messaging-stats-exporter",
        description="Prometheus exporter for messaging platforms' delivery and subscription "
        "statistics (Altcraft, Thulium, Trust.lat, Exolve).",
    )
    p.add_argument("--config", default="config.yaml", help="config file (default: %(default)s)")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print one line per target, exit 0 (or 2 with the errors)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="collect every target once, print the exposition, exit 0 if all succeeded, else 1",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in provider simulator and a config that points at it",
    )
    p.add_argument("--listen", metavar="ADDR", help="override web.listen_address (host:port)")
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth for the exporter's endpoints, in the exporter-toolkit format",
    )
    p.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="collect only the targets that rendezvous hashing assigns to shard INDEX of COUNT "
        "(overrides sharding in the config)",
    )
    p.add_argument(
        "--shard-from-hostname",
        action="store_true",
        help="take the shard index from the hostname's StatefulSet ordinal (name-N); the count "
        "from --shard-count or sharding.count",
    )
    p.add_argument("--shard-count", type=int, metavar="COUNT", help="shards in all")
    p.add_argument(
        "--single-process",
        action="store_true",
        help="serve /metrics from the collecting process instead of a separate serving process: "
        "~12 MiB less memory; scrapes then share the event loop with the collections",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.listen is not None:
        try:
            parse_listen_address(args.listen)
        except ValueError as exc:
            print(f"--listen: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        shard = _shard(args)
    except ValueError as exc:
        print(f"--shard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    web_config: WebConfigFile | None = None
    if args.web_config_file:
        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
    if args.demo:
        listening = None
        if not (args.check_config or args.once):
            setup_logging(*DEMO_LOG)
            listening = _listen(
                args.listen or DEFAULT_LISTEN_ADDRESS,
                WebConfig().telemetry_path,
                web_config,
                DEMO_LOG,
                spawn=not args.single_process,
            )
            if listening is None:
                return EXIT_FAILED
        try:
            return asyncio.run(_demo(args, web_config, shard, listening))
        finally:
            if listening is not None:
                listening.close()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        return _check_config(config, args.config)
    setup_logging(config.log.level, config.log.format)
    if args.once:
        return asyncio.run(_once(config, shard))
    listening = _listen(
        args.listen or config.web.listen_address,
        config.web.telemetry_path,
        web_config,
        (config.log.level, config.log.format),
        spawn=not args.single_process,
    )
    if listening is None:
        return EXIT_FAILED
    try:
        return asyncio.run(_serve(config, listening, Path(args.config), web_config, shard))
    finally:
        listening.close()


@dataclass
class Listening:
    """The bound listening sockets, and the serving process they were handed to (None: this
    process serves them, see :func:`exporter.front.spawn_front`)."""

    host: str
    port: int
    sockets: list[socket.socket]
    front: ServingProcess | None

    def close(self) -> None:
        if self.front is not None:
            self.front.stop()
        for sock in self.sockets:
            sock.close()


def _listen(
    address: str,
    telemetry_path: str,
    web_config: WebConfigFile | None,
    log_: tuple[str, str],
    spawn: bool = True,
) -> Listening | None:
    """Bind ``address`` and start the serving process with the sockets, unless ``spawn`` is
    false."""
    host, port = parse_listen_address(address)
    try:
        sockets = front.bind(host, port)
    except OSError as exc:
        log.error("cannot listen", address=f"{host}:{port}", error=exc.strerror or str(exc))
        return None
    port = sockets[0].getsockname()[1]
    process = front.spawn_front(sockets, telemetry_path, web_config, *log_) if spawn else None
    return Listening(host, port, [] if process else sockets, process)


def _shard(args: argparse.Namespace) -> Sharding | None:
    """The shard the flags ask for, or None to use the config's ``sharding``."""
    if args.shard:
        index_text, sep, count_text = args.shard.partition("/")
        if not sep or not index_text.isdigit() or not count_text.isdigit():
            raise ValueError(f"{args.shard!r} is not INDEX/COUNT, e.g. 0/3")
        index, count = int(index_text), int(count_text)
    elif args.shard_from_hostname:
        index, count = ordinal_from_hostname(socket.gethostname()), args.shard_count or 0
        if not count:
            raise ValueError("--shard-from-hostname needs --shard-count")
    else:
        return None
    try:
        return Sharding(index=index, count=count)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def _check_config(config: Config, path: str) -> int:
    print(f"{path}: OK, {len(config.targets)} target(s)")
    for target in config.targets:
        print(
            f"  {target.summary()} interval={format_duration(target.interval)} "
            f"timeout={format_duration(target.deadline)} "
            f"stale_after={format_duration(target.stale_after)}"
        )
    return EXIT_OK


async def _once(config: Config, shard: Sharding | None = None) -> int:
    """Collect every target once and print the exposition: the targets that worked, and the
    exporter's own metrics saying which did not."""
    exporter = make_exporter(config, autostart=False, shard=shard)
    async with new_session(USER_AGENT) as session:
        scheduler = Scheduler(
            exporter.store,
            session,
            exporter.histogram,
            exporter.clock,
            config.max_concurrent_collections,
        )
        scheduler.set_targets(exporter.assigned)
        snapshots = await scheduler.run_all_once()
    sys.stdout.buffer.write(generate_latest(exporter.registry))
    sys.stdout.flush()
    return EXIT_OK if all(snapshot.ok for snapshot in snapshots) else EXIT_FAILED


@contextlib.asynccontextmanager
async def _demo_simulator() -> AsyncIterator[tuple[Config, str]]:
    sim = simulator.Simulator(dynamic=True)
    runner, url = await simulator.start(sim)
    try:
        config = validate_config(
            {
                "log": {"level": DEMO_LOG[0], "format": DEMO_LOG[1]},
                "defaults": {"interval": DEMO_INTERVAL, "timeout": "5s"},
                "targets": simulator.demo_targets(url, sim),
            },
            source="(built-in demo config)",
        )
        yield config, url
    finally:
        await runner.cleanup()


async def _demo(
    args: argparse.Namespace,
    web_config: WebConfigFile | None,
    shard: Sharding | None,
    listening: Listening | None,
) -> int:
    async with _demo_simulator() as (config, url):
        if args.check_config:
            return _check_config(config, "(built-in demo config)")
        setup_logging(config.log.level, config.log.format)
        if args.once or listening is None:
            return await _once(config, shard)
        log.info("demo: built-in provider simulator started", simulator=url)
        return await _serve(config, listening, None, web_config, shard, demo=True)


async def _serve(
    config: Config,
    listening: Listening,
    path: Path | None,
    web_config: WebConfigFile | None = None,
    shard: Sharding | None = None,
    demo: bool = False,
) -> int:
    exporter = make_exporter(config, config_path=path, shard=shard)
    serving = listening.front
    tls = web_config.tls_server_config if web_config else None
    if serving is None:
        app = build_app(exporter, web_config)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    else:
        # The serving process faces the clients (web config, access log); this app is its
        # collecting end, on a Unix socket in a private directory.
        app = build_app(exporter)
        front.Feed.attach(app, exporter.exposition, exporter.store, serving.feed)
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None
        )
    await runner.setup()
    try:
        if serving is None:
            context = ssl_context(tls) if tls else None
            for sock in listening.sockets:
                await web.SockSite(runner, sock, ssl_context=context).start()
        else:
            await web.SockSite(runner, serving.collector).start()
    except OSError as exc:
        log.error("cannot serve", error=exc.strerror or str(exc))
        await runner.cleanup()
        return EXIT_FAILED
    host, port = listening.host, listening.port
    shown_host = host if host not in ("", "0.0.0.0", "::") else "localhost"  # noqa: S104
    scheme = "https" if tls else "http"
    metrics_url = f"{scheme}://{shown_host}:{port}{config.web.telemetry_path}"
    log.info(
        "serving",
        metrics=metrics_url,
        landing_page=f"{scheme}://{shown_host}:{port}/",
        targets=len(config.targets),
        version=__version__,
        serving_process=serving.pid if serving else None,
        short_slice=serving.short_slice if serving else None,
    )
    if demo:
        print(
            f"\n  Demo running: open {metrics_url}  (targets: {scheme}://{shown_host}:{port}/)\n"
            "  Stop with Ctrl+C.\n",
            flush=True,
        )
    # Everything made so far lives as long as the process: keep it out of the collector's scans
    # (a full collection over it stalls the loop for tens of milliseconds).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload_soon(exporter))
    stopped = asyncio.ensure_future(stop.wait())
    exited = serving.exited() if serving else None
    await asyncio.wait([stopped] + ([exited] if exited else []), return_when=FIRST_COMPLETED)
    code = EXIT_OK
    if exited is not None and exited.done():
        log.error("the serving process exited; stopping", exit_code=exited.result())
        code = EXIT_FAILED
    else:
        log.info("shutting down")
        if serving is not None and exited is not None:
            # The serving process first: it finishes its requests while this still answers.
            serving.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(exited), SHUTDOWN_TIMEOUT + 2)
            except TimeoutError:
                serving.kill()
                await exited
    stopped.cancel()
    await runner.cleanup()
    return code


_background: set[asyncio.Task[Any]] = set()


def _reload_soon(exporter: Exporter) -> None:
    task = asyncio.get_running_loop().create_task(exporter.reload())
    _background.add(task)
    task.add_done_callback(_background.discard)
