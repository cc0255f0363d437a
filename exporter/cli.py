"""Command line: ``--check-config``, ``--once``, ``--demo`` and serving (the default)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import structlog
import yaml
from aiohttp import web
from pydantic import ValidationError

from exporter import __version__, autoreload
from exporter.collect.sharding import ordinal_from_hostname, split
from exporter.config import (
    Config,
    ConfigError,
    LogConfig,
    Sharding,
    config_warnings,
    load_config,
    parse_listen_address,
    validate_config,
)
from exporter.gctuning import keep_long_lived_objects_out_of_gc
from exporter.logs import setup_logging
from exporter.schema.types import format_duration, parse_duration
from exporter.service import Exporter, make_exporter
from exporter.web import healthcheck
from exporter.web.app import build_app
from exporter.web.webconfig import WebConfigFile, WebSettings, load_web_config

if TYPE_CHECKING:
    from exporter import simulator

log = structlog.get_logger("exporter.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEMO_INTERVAL = "10s"
DEMO_LOG = ("info", "console")
DEMO_SIMULATOR_ADDRESS = "127.0.0.1:10058"
"""Where the demo's provider simulator listens unless told (any free port when it is taken)."""
SHUTDOWN_TIMEOUT = 5.0
"""Seconds a stopping exporter gives requests in flight to finish."""


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
    _demo_flags(p)
    p.add_argument(
        "--health-check",
        action="store_true",
        help="ask /healthz of the exporter that --config (its web section), "
        "--web.listen-address and --web.config.file describe, over TLS when the web config has "
        "it; exit 0 if it answered 200, else 1 (for a container HEALTHCHECK)",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        metavar="ADDR",
        help="host:port to serve on (overrides web.listen_address)",
    )
    p.add_argument(
        "--listen",
        dest="listen",
        metavar="ADDR",
        action=_Deprecated,
        help="deprecated: use --web.listen-address",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS, basic auth, security headers and a rate limit for the exporter's endpoints, "
        "in the exporter-toolkit format",
    )
    _shard_flags(p)
    _add_conventional_flags(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _demo_flags(p: argparse.ArgumentParser) -> None:
    """``--demo`` and the flags that go with it."""
    p.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in provider simulator and a config that points at it",
    )
    p.add_argument(
        "--demo.simulator-address",
        dest="demo_simulator_address",
        metavar="ADDR",
        help=f"where the demo's provider simulator listens (default {DEMO_SIMULATOR_ADDRESS}, "
        "or any free port when that one is taken; :0 for any free port)",
    )
    p.add_argument(
        "--demo.print-config",
        dest="demo_print_config",
        action="store_true",
        help="print the demo's config as YAML, pointing at the simulator at "
        "--demo.simulator-address, and exit",
    )


def _shard_flags(p: argparse.ArgumentParser) -> None:
    """Which shard of the targets this replica collects."""
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


DEPRECATED_FLAGS = {"--listen": "--web.listen-address"}
CONFIG_FLAGS = {
    "listen": ("--web.listen-address", "web.listen_address"),
    "telemetry_path": ("--web.telemetry-path", "web.telemetry_path"),
    "log_level": ("--log.level", "log.level"),
    "log_format": ("--log.format", "log.format"),
}
"""argparse dest → (flag, config key): the flags that win over a key of the config file."""


class _Deprecated(argparse.Action):
    """A flag kept under its old name: it sets what its new name sets, and is remembered so
    that a warning can say so."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.deprecated = [*getattr(namespace, "deprecated", []), option_string]


def _add_conventional_flags(p: argparse.ArgumentParser) -> None:
    """The flags spelled as the Prometheus exporters spell them, and ``--target``."""
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        help="the path of the metrics (overrides web.telemetry_path)",
    )
    p.add_argument(
        "--web.enable-lifecycle",
        dest="web_enable_lifecycle",
        action="store_true",
        help="answer POST /-/reload (without it, 403); SIGHUP reloads in any case",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        choices=get_args(LogConfig.model_fields["level"].annotation),
        help="overrides log.level",
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        choices=get_args(LogConfig.model_fields["format"].annotation),
        help="overrides log.format",
    )
    p.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        metavar="NAME",
        help="with --once: collect only the target of this name (repeatable); no other "
        "provider is called, whichever shard the target belongs to",
    )
    p.add_argument(
        "--config.auto-reload-interval",
        dest="auto_reload_interval",
        type=_auto_reload_interval,
        metavar="DURATION",
        help="check the config file and its target files every DURATION (e.g. 30s) and reload "
        "when their content changed, as on SIGHUP (default: off)",
    )
    p.set_defaults(deprecated=[])


def _auto_reload_interval(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < autoreload.MIN_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"must be at least {format_duration(autoreload.MIN_INTERVAL)}; it is {text}"
        )
    return seconds


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the flags set, as ``Config.with_overrides`` takes them."""
    return {
        key: getattr(args, dest)
        for dest, (_, key) in CONFIG_FLAGS.items()
        if getattr(args, dest) is not None
    }


def _check_flags(args: argparse.Namespace) -> str | None:
    """The first flag whose value its config key does not accept, as ``--flag: reason``."""
    if args.targets and not args.once:
        return "--target: only with --once"
    for dest, (flag, key) in CONFIG_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest == "listen" and "--listen" in args.deprecated:
            flag = "--listen"
        try:
            Config().with_overrides({key: value})
        except ValueError as exc:
            return f"{flag}: {exc}"
    return None


def _warn_deprecated(deprecated: Sequence[str]) -> None:
    """Log each deprecated flag given, once (logging is set up)."""
    for flag in dict.fromkeys(deprecated):
        log.warning("flag deprecated", flag=flag, instead=DEPRECATED_FLAGS[flag])


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    done = _before_the_config(args)
    if done is not None:
        return done
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
        try:
            return asyncio.run(_demo(args, web_config, shard))
        except DemoSimulatorCannotListen as exc:
            print(f"--demo.simulator-address {exc}", file=sys.stderr)
            return EXIT_FAILED
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        if args.config == "config.yaml" and not Path(args.config).exists():
            print(
                "hint: give a config file with --config PATH, or try the built-in demo with --demo",
                file=sys.stderr,
            )
        return EXIT_CONFIG
    config = config.with_overrides(config_overrides(args))
    if shard is None and args.shard_from_hostname:
        try:
            shard = _shard(args, config)
        except ValueError as exc:
            print(f"--shard: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.check_config:
        return _check_config(config, args.config, shard, args.deprecated)
    if args.once:
        return asyncio.run(_once(config, shard, args.targets, args.deprecated))
    # Taken as soon as the config is read: an edit made while the exporter starts is a change.
    baseline = (
        autoreload.fingerprint(Path(args.config), config.target_files)
        if args.auto_reload_interval
        else None
    )
    return asyncio.run(
        _serve(
            config,
            args.listen,
            Path(args.config),
            web_config,
            args.web_config_file,
            shard,
            lifecycle=args.web_enable_lifecycle,
            overrides=config_overrides(args),
            deprecated=args.deprecated,
            auto_reload=args.auto_reload_interval,
            auto_reload_baseline=baseline,
        )
    )


def _before_the_config(args: argparse.Namespace) -> int | None:
    """What the flags settle alone: the health check, the demo's config printed, or a flag's
    value refused; the exit status then, else None."""
    if args.health_check:
        return healthcheck.main(args.config, args.listen, args.web_config_file)
    if args.demo_simulator_address is not None:
        try:
            parse_listen_address(args.demo_simulator_address)
        except ValueError as exc:
            print(f"--demo.simulator-address: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.demo_print_config:
        return _print_demo_config(args.demo_simulator_address or DEMO_SIMULATOR_ADDRESS)
    problem = _check_flags(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_CONFIG
    return None


def _shard(args: argparse.Namespace, config: Config | None = None) -> Sharding | None:
    """The shard the flags ask for, or None to use the config's ``sharding``.

    --shard-from-hostname without --shard-count takes the count from ``config``'s
    ``sharding.count``. Called before the config is loaded (``config`` None), it checks the flags
    and returns None for that case, to be called again with the config (the demo has no such
    count, so there it is an error at once)."""
    if args.shard:
        index_text, sep, count_text = args.shard.partition("/")
        if not sep or not index_text.isdigit() or not count_text.isdigit():
            raise ValueError(f"{args.shard!r} is not INDEX/COUNT, e.g. 0/3")
        index, count = int(index_text), int(count_text)
    elif args.shard_from_hostname:
        index, count = ordinal_from_hostname(socket.gethostname()), args.shard_count
        if count is None and config is not None and "count" in config.sharding.model_fields_set:
            count = config.sharding.count
        if count is None:
            if config is None and not args.demo:
                return None
            raise ValueError(
                "--shard-from-hostname needs the shard count: --shard-count COUNT, "
                "or sharding.count in the config"
            )
    else:
        return None
    try:
        return Sharding(index=index, count=count)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def _check_config(
    config: Config, path: str, shard: Sharding | None = None, deprecated: Sequence[str] = ()
) -> int:
    """The config's summary and warnings, then one line per target this shard collects."""
    print(f"{path}: OK, {len(config.targets)} target(s)")
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    for flag in dict.fromkeys(deprecated):
        print(f"warning: {flag} is deprecated; use {DEPRECATED_FLAGS[flag]}", file=sys.stderr)
    sharding = shard or config.sharding
    targets, left = split(config.targets, [target.name for target in config.targets], sharding)
    if sharding.count > 1:
        print(
            f"shard {sharding.index}/{sharding.count}: collects {len(targets)} target(s), "
            f"leaves {left} to the other shards"
        )
    if config.target_files:
        sources = Counter(config.source_of(index) for index in range(len(config.targets)))
        for source, count in sources.items():
            print(f"from {source}: {count} target(s)")
    where = {target.name: config.where(index) for index, target in enumerate(config.targets)}
    for target in targets:
        origin = "" if where[target.name].startswith("targets[") else f" from={where[target.name]}"
        print(
            f"  {target.summary()} interval={format_duration(target.interval)} "
            f"timeout={format_duration(target.deadline)} "
            f"stale_after={format_duration(target.stale_after)}"
            + ("" if target.enabled else " (disabled: not collected)")
            + origin
        )
    return EXIT_OK


async def _once(
    config: Config,
    shard: Sharding | None = None,
    only: Sequence[str] = (),
    deprecated: Sequence[str] = (),
) -> int:
    """Collect every target once (or those named ``only``, whichever shard they belong to) and
    print the exposition: the targets that worked, and the exporter's own metrics saying which
    did not."""
    if only:
        try:
            config = only_targets(config, only)
        except ValueError as exc:
            print(f"--target: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        shard = Sharding()
    exporter = make_exporter(config, autostart=False, shard=shard)
    setup_logging(config.log.level, config.log.format, redactor=exporter.redactor)
    _warn_deprecated(deprecated)
    ok = await exporter.collect_once()
    sys.stdout.buffer.write(exporter.exposition.body(openmetrics=False).body)
    sys.stdout.flush()
    return EXIT_OK if ok else EXIT_FAILED


def only_targets(config: Config, names: Sequence[str]) -> Config:
    """``config`` with only the targets named ``names``; ValueError naming any it does not have,
    or has with ``enabled: false``."""
    known = {target.name for target in config.targets}
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if unknown:
        raise ValueError(f"the config has no target named {', '.join(map(repr, unknown))}")
    wanted = set(names)
    disabled = [t.name for t in config.targets if t.name in wanted and not t.enabled]
    if disabled:
        raise ValueError(
            f"{', '.join(map(repr, disabled))} has enabled: false in the config (set it to true "
            "to collect it)"
        )
    return config.model_copy(
        update={"targets": [target for target in config.targets if target.name in wanted]}
    )


def demo_config(url: str, sim: simulator.Simulator) -> dict[str, Any]:
    """The demo's config (as YAML would decode it): every account of ``sim``, served at ``url``."""
    from exporter import simulator

    return {
        "log": {"level": DEMO_LOG[0], "format": DEMO_LOG[1]},
        "defaults": {"interval": DEMO_INTERVAL, "timeout": "5s"},
        "targets": simulator.demo_targets(url, sim),
    }


DEMO_CONFIG_HEADER = """\
# The built-in demo's config: every target is an account of the provider simulator that
# `messaging-stats-exporter --demo` starts at {url}.
# The secrets in it are the simulator's own made-up credentials, printed on purpose. A real
# config keeps its secrets in files (the *_file keys) or ${{VAR}}s: docs/configuration.md.
"""


def _simulator_url(host: str, port: int) -> str:
    """``http://host:port`` of a simulator listening there (a wildcard host: loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _print_demo_config(address: str) -> int:
    host, port = parse_listen_address(address)  # checked in main
    if port == 0:
        print(
            f"--demo.simulator-address: {address!r}: port 0 is chosen when the demo starts; "
            "give the port in its log line (simulator=...)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from exporter import simulator

    url = _simulator_url(host, port)
    config = demo_config(url, simulator.Simulator(dynamic=True))
    sys.stdout.write(DEMO_CONFIG_HEADER.format(url=url))
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    return EXIT_OK


class DemoSimulatorCannotListen(Exception):
    """The demo's simulator could not bind its address (the message names it and why)."""


async def _start_demo_simulator(
    sim: simulator.Simulator, address: str | None
) -> tuple[web.AppRunner, str]:
    """The simulator on ``address``; unless one was given, on the default address, or on any free
    port when that one is taken."""
    from exporter import simulator

    host, port = parse_listen_address(address or DEMO_SIMULATOR_ADDRESS)  # checked in main
    try:
        try:
            runner, _ = await simulator.start(sim, host, port)
        except OSError as exc:
            if address is not None or exc.errno != errno.EADDRINUSE:
                raise
            runner, _ = await simulator.start(sim, host, 0)
    except OSError as exc:
        shown = address or DEMO_SIMULATOR_ADDRESS
        raise DemoSimulatorCannotListen(f"{shown}: {exc.strerror or exc}") from None
    return runner, _simulator_url(host, runner.addresses[0][1])


@contextlib.asynccontextmanager
async def _demo_simulator(address: str | None = None) -> AsyncIterator[tuple[Config, str]]:
    from exporter import simulator  # only the demo serves it: imported when asked for

    sim = simulator.Simulator(dynamic=True)
    runner, url = await _start_demo_simulator(sim, address)
    try:
        config = validate_config(demo_config(url, sim), source="(built-in demo config)")
        yield config, url
    finally:
        await runner.cleanup()


async def _demo(
    args: argparse.Namespace, web_config: WebConfigFile | None, shard: Sharding | None
) -> int:
    async with _demo_simulator(args.demo_simulator_address) as (config, url):
        config = config.with_overrides(config_overrides(args))
        if args.check_config:
            return _check_config(config, "(built-in demo config)", shard, args.deprecated)
        setup_logging(config.log.level, config.log.format)
        if args.auto_reload_interval is not None and not args.once:
            log.warning(
                "flag ignored", flag="--config.auto-reload-interval", reason="the demo has no file"
            )
        if args.once:
            return await _once(config, shard, args.targets, args.deprecated)
        log.info("demo: built-in provider simulator started", simulator=url)
        return await _serve(
            config,
            args.listen,
            None,
            web_config,
            args.web_config_file,
            shard,
            demo=True,
            lifecycle=args.web_enable_lifecycle,
            deprecated=args.deprecated,
        )


async def _serve(
    config: Config,
    listen: str | None,
    path: Path | None,
    web_config: WebConfigFile | None = None,
    web_config_path: str | None = None,
    shard: Sharding | None = None,
    demo: bool = False,
    lifecycle: bool = False,
    overrides: Mapping[str, Any] | None = None,
    deprecated: Sequence[str] = (),
    auto_reload: float | None = None,
    auto_reload_baseline: bytes | None = None,
) -> int:
    """Collect and serve until SIGTERM or SIGINT; SIGHUP reloads the config (and so does
    ``POST /-/reload`` with ``lifecycle``, and a change of the config's files every
    ``auto_reload`` seconds, since ``auto_reload_baseline``, their fingerprint when ``config``
    was read). ``overrides`` are the flags' keys, which win over the reloaded file's too."""
    host, port = parse_listen_address(listen or config.web.listen_address)
    exporter = make_exporter(config, config_path=path, shard=shard, overrides=overrides)
    setup_logging(config.log.level, config.log.format, redactor=exporter.redactor)
    _warn_deprecated(deprecated)
    for warning in config_warnings(config):
        log.warning("config", problem=warning)
    settings = (
        WebSettings(web_config_path, web_config)
        if web_config is not None and web_config_path
        else None
    )
    runner = await _listening(exporter, settings, host, port, lifecycle=lifecycle)
    if runner is None:
        return EXIT_FAILED
    tls = settings is not None and settings.context is not None
    _announce(config, runner, host, port, tls=tls, demo=demo)
    freezing = asyncio.create_task(keep_long_lived_objects_out_of_gc(exporter.store))
    watching = (
        asyncio.create_task(autoreload.watch(exporter, auto_reload, auto_reload_baseline))
        if auto_reload
        else None
    )
    await _until_stopped(exporter)
    log.info("shutting down")
    freezing.cancel()
    if watching is not None:
        watching.cancel()
    await runner.cleanup()
    return EXIT_OK


async def _listening(
    exporter: Exporter, settings: WebSettings | None, host: str, port: int, *, lifecycle: bool
) -> web.AppRunner | None:
    """The app served on ``host:port`` (TLS when the web config has it), or None when it cannot
    listen there (logged)."""
    runner = web.AppRunner(
        build_app(exporter, settings, lifecycle=lifecycle),
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=exporter.config.web.keepalive_timeout,
        access_log=logging.getLogger("aiohttp.access"),
    )
    await runner.setup()
    context = settings.context if settings else None
    site = web.TCPSite(runner, host or None, port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen", address=f"{host}:{port}", error=exc.strerror or str(exc))
        await runner.cleanup()
        return None
    return runner


def _announce(
    config: Config, runner: web.AppRunner, host: str, port: int, *, tls: bool, demo: bool
) -> None:
    """The ``serving`` log line with the URLs, and for the demo a line a person reads."""
    bound = runner.addresses[0][1] if runner.addresses else port
    shown_host = host if host not in ("", "0.0.0.0", "::") else "localhost"  # noqa: S104
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    scheme = "https" if tls else "http"
    metrics_url = f"{scheme}://{shown_host}:{bound}{config.web.telemetry_path}"
    log.info(
        "serving",
        metrics=metrics_url,
        status_page=f"{scheme}://{shown_host}:{bound}/",
        targets=len(config.targets),
        version=__version__,
    )
    if demo:
        print(
            f"\n  Demo running: open {metrics_url}  (targets: {scheme}://{shown_host}:{bound}/)\n"
            "  Stop with Ctrl+C.\n",
            flush=True,
        )


async def _until_stopped(exporter: Exporter) -> None:
    """Wait for SIGTERM or SIGINT; meanwhile each SIGHUP reloads the config."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[str | None]] = set()

    def reload_soon() -> None:
        task = loop.create_task(exporter.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_soon)
    await stop.wait()
