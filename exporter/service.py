"""The exporter assembled: config → scheduler → providers → store → exposition, and what changes
them at run time (the collection loop's start and stop, config reloads). The web app serves from
it; nothing here knows of HTTP serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import prometheus_client
import structlog
from prometheus_client import CollectorRegistry, GCCollector, Histogram, ProcessCollector

from exporter import __version__
from exporter.clock import Clock, SystemClock
from exporter.collect.scheduler import Scheduler
from exporter.collect.sharding import split
from exporter.collect.targets import TargetTable
from exporter.config import Config, ConfigError, Sharding, config_warnings, load_config
from exporter.logs import setup_logging
from exporter.metrics.exposition import Exposition, LiveFamilies
from exporter.metrics.self_metrics import ExporterInfo
from exporter.metrics.store import Store
from exporter.providers import registry
from exporter.providers.http import new_session, request_duration_histogram
from exporter.redaction import Redactor
from exporter.schema.target import TargetConfig

log = structlog.get_logger("exporter.service")

USER_AGENT = f"messaging-stats-exporter/{__version__}"


@dataclass
class Exporter:
    """Everything the collection loop, the routes and the lifecycle share."""

    config: Config
    clock: Clock
    targets: TargetTable
    """The one table of the targets this replica collects."""
    store: Store
    registry: CollectorRegistry
    histogram: Histogram
    exposition: Exposition
    redactor: Redactor
    """Every secret of the config and those obtained at run time; handed to the provider clients,
    the logs and the status page."""
    config_path: Path | None = None
    environ: Mapping[str, str] | None = None
    shard_override: Sharding | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)
    """Config keys the command line set: they win over the file's at every reload."""
    autostart: bool = True
    """Start the collection loop with the app (tests drive collections themselves)."""
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
        self.redactor.set_secrets(config.secret_values())
        sharding = self.sharding
        self.assigned, skipped = split(
            config.targets, [target.name for target in config.targets], sharding
        )
        self.store.shard = (sharding.index, sharding.count)
        self.store.skipped_targets = skipped
        self.set_targets(self.assigned)
        if self.scheduler is not None and self.autostart:
            self.scheduler.start()

    def set_targets(self, configs: Sequence[TargetConfig]) -> None:
        """Collect exactly these targets: the table decides which changed, the scheduler follows
        it, the store counts the change."""
        change = self.targets.set(configs)
        if self.scheduler is not None:
            self.scheduler.follow(change)
        self.store.targets_changed()

    def new_scheduler(self, session: aiohttp.ClientSession) -> Scheduler:
        return Scheduler(
            self.targets,
            registry(),
            self.store.record,
            session,
            self.histogram,
            self.clock,
            self.config.max_concurrent_collections,
            redactor=self.redactor,
            max_response_bytes_in_flight=self.config.max_response_bytes_in_flight,
        )

    async def collecting(self) -> AsyncIterator[None]:
        """The collection loop, from the first ``yield`` until the generator is closed (an aiohttp
        ``cleanup_ctx``)."""
        self.session = new_session(USER_AGENT)
        self.scheduler = self.new_scheduler(self.session)
        self.apply(self.config)
        try:
            yield
        finally:
            await self.scheduler.stop()
            self.scheduler.release()
            await self.exposition.aclose()
            await self.session.close()

    async def collect_once(self) -> bool:
        """Collect every assigned target once (``--once``); True if all succeeded."""
        async with new_session(USER_AGENT) as session:
            scheduler = self.new_scheduler(session)
            scheduler.follow()
            try:
                snapshots = await scheduler.run_all_once()
            finally:
                scheduler.release()
        return all(snapshot.ok for snapshot in snapshots)

    async def reload(self) -> str | None:
        """Load the config file again; on an error keep the running config and return the error."""
        if self.config_path is None:
            reason = "this exporter runs the built-in demo config, which has no file to reload"
            log.warning("config reload refused", reason=reason)
            return reason
        async with self.reload_lock:
            try:
                # Off the loop: the file and its *_file secrets are read from disk.
                loaded = await asyncio.to_thread(load_config, self.config_path, self.environ)
                config = loaded.with_overrides(self.overrides)
            except ConfigError as exc:
                self.store.reloaded(ok=False, error=str(exc))
                log.error("config reload failed; the previous config stays", error=str(exc))
                return str(exc)
            old = self.config
            before = {target.name: target for target in old.targets}
            after = {target.name: target for target in config.targets}
            if config.log != old.log:
                setup_logging(config.log.level, config.log.format, redactor=self.redactor)
            self.apply(config)
            self.store.reloaded(ok=True)
            log.info(
                "config reloaded",
                # The file read is the running config, secrets included: an edit that did not
                # reach the exporter (a replaced file under a single-file bind mount) shows here.
                unchanged=config == old,
                targets=len(config.targets),
                added=sorted(after.keys() - before.keys()),
                removed=sorted(before.keys() - after.keys()),
                changed=sorted(
                    name for name in after.keys() & before.keys() if after[name] != before[name]
                ),
            )
            if config.web != old.web:
                log.warning(
                    "web settings changed; they apply after a restart",
                    keys=[
                        f"web.{key}"
                        for key in type(config.web).model_fields
                        if getattr(config.web, key) != getattr(old.web, key)
                    ],
                )
            for warning in config_warnings(config):
                log.warning("config", problem=warning)
            return None


def process_collectors() -> CollectorRegistry:
    """The process's own families, as every exporter serves them: prometheus_client's
    ``ProcessCollector`` (``process_*``: memory, CPU time, file descriptors, start time) and
    ``GCCollector`` (``python_gc_*``: the collections of each generation)."""
    collectors = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=collectors)
    GCCollector(registry=collectors)
    return collectors


def make_exporter(
    config: Config,
    *,
    clock: Clock | None = None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    shard: Sharding | None = None,
    autostart: bool = True,
    overrides: Mapping[str, object] | None = None,
) -> Exporter:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    clock = clock or SystemClock()
    targets = TargetTable()
    metrics = {name: provider.metrics for name, provider in registry().items()}
    store = Store(clock, targets, metrics)
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(ExporterInfo(store))
    histogram = request_duration_histogram(collectors)
    exporter = Exporter(
        config=config,
        clock=clock,
        targets=targets,
        store=store,
        registry=collectors,
        histogram=histogram,
        exposition=Exposition(store, collectors, metrics, clock),
        redactor=Redactor(),  # apply() gives it the config's secrets
        config_path=config_path,
        environ=environ,
        shard_override=shard,
        autostart=autostart,
        overrides=overrides or {},
    )
    exporter.exposition.live = LiveFamilies(process_collectors(), clock)
    exporter.apply(config)
    store.reloaded(ok=True)
    return exporter
