"""One asyncio task per target: first run soon after start (spread over a few seconds), then every
``interval`` on a fixed grid; each run bounded by the target's deadline and turned into a
:class:`~exporter.collect.snapshot.Snapshot`, handed to the ``record`` callable the scheduler was
given (the store's: the scheduler knows nothing of what is downstream)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog
from prometheus_client import Histogram

from exporter.clock import Clock
from exporter.collect.snapshot import Snapshot
from exporter.collect.targets import TableChange, Target, TargetState, TargetTable
from exporter.providers.base import Provider, Run
from exporter.providers.errors import HOPELESS, CollectError, ParseError, Reason
from exporter.providers.http import ProviderClient, ResponseBudget
from exporter.redaction import Redactor
from exporter.schema.target import TargetConfig
from exporter.turnstile import Turnstile

log = structlog.get_logger("exporter.collect.scheduler")
_stdlib_log = logging.getLogger("exporter.collect.scheduler")
"""The stdlib logger behind ``log``, asked whether a debug line would be written before one is
built (``structlog.stdlib.filter_by_level`` asks the same)."""

Record = Callable[[Snapshot], None]
"""Where a finished collection's snapshot goes."""
ProviderTable = Mapping[str, type[Provider[Any]]]
"""Provider name → provider class."""

START_BATCH = 64
"""Collection tasks started per loop iteration: the loop polls its sockets between batches, so
starting thousands of targets never stalls scrapes for longer than one batch's starts (the cost
per task is in docs/performance.md)."""
FIRST_RUN_SPREAD = 5.0
"""The first runs of all targets are spread over this many seconds (or the interval, if shorter)."""
BACKOFF_AFTER = 3
"""Consecutive failures for a reason no retry can fix after which a target backs off."""
BACKOFF_CAP = 1800.0
"""The longest wait between two attempts of a target that backs off (or its interval, if
longer)."""
REMINDER_EVERY = 900.0
"""While a target keeps failing for the same reason, its warning is repeated at most this often."""


def first_delay(name: str, interval: float, spread: float = FIRST_RUN_SPREAD) -> float:
    """A stable offset in [0, min(spread, interval)) from the target's name, so targets do not all
    start at once and a restart keeps their order."""
    digest = hashlib.sha256(name.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * min(spread, interval)


def next_delay(interval: float, hopeless_failures: int) -> float:
    """From one attempt's scheduled start to the next: ``interval``; after
    :data:`BACKOFF_AFTER` or more consecutive failures for a reason no retry can fix, 2, 4, 8, ...
    times ``interval``, at most the larger of ``interval`` and :data:`BACKOFF_CAP`."""
    if hopeless_failures < BACKOFF_AFTER:
        return interval
    cap = max(interval, BACKOFF_CAP)
    doublings = hopeless_failures - BACKOFF_AFTER + 1
    if doublings >= 64:  # past any cap; keeps the power finite
        return cap
    return min(math.ldexp(interval, doublings), cap)


class TargetRunner:
    """Collects one target; keeps its provider instance (and any state it holds) between runs, and
    what its failures in a row were (for its back-off and its log lines). With ``state`` (the
    target's), it keeps the time of its next attempt there."""

    def __init__(
        self,
        config: TargetConfig,
        provider_cls: type[Provider[Any]],
        session: aiohttp.ClientSession,
        record: Record,
        histogram: Histogram,
        clock: Clock,
        turnstile: Turnstile,
        limit: asyncio.Semaphore | None = None,
        *,
        redactor: Redactor | None = None,
        budget: ResponseBudget | None = None,
        state: TargetState | None = None,
    ) -> None:
        self.config = config
        self._record = record
        self._turnstile = turnstile
        self._clock = clock
        self._limit = limit
        self._state = state
        self._failures = 0
        """Failed collections in a row."""
        self._hopeless = 0
        """Of those, the last ones in a row whose reason no retry can fix."""
        self._reason: Reason | None = None
        self._warned_at = -math.inf
        """When (wall clock) the last warning of the current run of failures was logged."""
        self.next_run: float | None = None
        """Event-loop time of the next attempt, while :meth:`run_forever` runs."""
        self.client = ProviderClient(
            session,
            provider=config.provider,
            account=config.name,
            histogram=histogram,
            max_concurrency=config.max_concurrency,
            max_response_bytes=config.max_response_bytes,
            turnstile=turnstile,
            redactor=redactor,
            budget=budget,
        )
        self.provider = provider_cls(config)

    async def run_once(self) -> Snapshot:
        """Collect once, when the exporter-wide limit on collections in flight allows; the
        target's deadline starts then."""
        if self._limit is None:
            return await self._run()
        async with self._limit:
            return await self._run()

    async def _run(self) -> Snapshot:
        # Starting a collection (building and sending its first request) takes its own loop turn
        # too: many starting together (a cycle's beginning, --once) do not stall the loop.
        await self._turnstile.turn()
        config = self.config
        loop = asyncio.get_running_loop()
        started_at = self._clock.time()
        started = time.perf_counter()
        deadline = loop.time() + config.deadline
        run = Run(deadline, self._clock, self.client.bound(deadline, self._clock))
        reason: Reason | None = None
        error: str | None = None
        excerpt: str | None = None
        samples: tuple[Any, ...] = ()
        try:
            async with asyncio.timeout(config.deadline):
                samples = tuple(await self.provider.collect(run))
        except TimeoutError:
            reason, error = (
                Reason.TIMEOUT,
                f"the collection passed its deadline of {config.deadline:g}s",
            )
        except CollectError as exc:
            reason, error, samples = exc.reason, exc.message, exc.partial
            excerpt = exc.excerpt
        except ParseError as exc:
            reason, error = Reason.PARSE, f"unexpected answer: {exc}"
        except Exception:
            # A bug, or an answer our parser did not foresee: fail this run, keep the process up.
            log.exception("collection crashed", provider=config.provider, account=config.name)
            reason, error = Reason.PARSE, "internal error while handling the answer (see log)"
        duration = time.perf_counter() - started
        snapshot = Snapshot(
            target=config.name,
            provider=config.provider,
            ok=reason is None,
            samples=samples,
            started_at=started_at,
            duration=duration,
            reason=reason,
            error=error,
        )
        self._record(snapshot)
        self._log(snapshot, excerpt)
        return snapshot

    def _log(self, snapshot: Snapshot, excerpt: str | None = None) -> None:
        """Log a finished collection, and keep the counts the logging and the back-off go by.

        A failure is a warning when it is news: the first of a run of failures, another reason
        than the last one's, the start of a back-off, or a reminder after REMINDER_EVERY; else
        debug. A success is news (info) only when it ends a run of failures, else debug: a line
        per target per interval is noise at 1,000 targets, and each line written costs the event
        loop time. A failure's line carries ``excerpt``, the start of the answer it failed on
        (scrubbed of secrets), when it has one."""
        config, reason = self.config, snapshot.reason
        if snapshot.ok and not self._failures:
            # The routine success, once per collection: not even built below debug level.
            if _stdlib_log.isEnabledFor(logging.DEBUG):
                log.debug("collection", **self._fields(snapshot))
            return
        fields = self._fields(snapshot)
        if snapshot.ok:
            log.info("collection", recovered=True, **fields)
            self._failures = self._hopeless = 0
            self._reason, self._warned_at = None, -math.inf
            return
        self._failures += 1
        # Hopeless: no retry can fix the answer, and the run delivered nothing (a run that still
        # brought partial samples keeps its interval, so they do not go stale).
        hopeless = reason in HOPELESS and not snapshot.samples
        self._hopeless = self._hopeless + 1 if hopeless else 0
        delay = next_delay(config.interval, self._hopeless)
        if delay > config.interval:
            fields["backoff_seconds"] = delay
        now = self._clock.time()
        news = (
            reason is not self._reason
            or self._hopeless == BACKOFF_AFTER
            or now - self._warned_at >= REMINDER_EVERY
        )
        if news:
            self._warned_at = now
        self._reason = reason
        if excerpt:
            fields["excerpt"] = excerpt  # the start of the answer it failed on, scrubbed
        (log.warning if news else log.debug)(
            "collection",
            reason=str(reason),
            error=snapshot.error,
            consecutive_failures=self._failures,
            **fields,
        )

    def _fields(self, snapshot: Snapshot) -> dict[str, Any]:
        """What every ``collection`` line says."""
        return {
            "provider": self.config.provider,
            "account": self.config.name,
            "outcome": "success" if snapshot.ok else "failure",
            "duration_seconds": round(snapshot.duration, 4),
            "samples": len(snapshot.samples),
        }

    def next_delay(self) -> float:
        """From the last attempt's scheduled start to the next one's (see :func:`next_delay`)."""
        return next_delay(self.config.interval, self._hopeless)

    def _announce(self, wait: float) -> None:
        """The next attempt starts in ``wait`` seconds."""
        if self._state is not None:
            self._state.next_attempt = self._clock.time() + max(0.0, wait)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        next_run = loop.time() + first_delay(self.config.name, interval)
        while True:
            self.next_run = next_run
            wait = max(0.0, next_run - loop.time())
            self._announce(wait)
            await asyncio.sleep(wait)
            await self.run_once()
            # A fixed grid (stretched while the target backs off): a run that overran skips the
            # ticks it missed instead of bunching up.
            next_run += self.next_delay()
            now = loop.time()
            if next_run <= now:
                next_run += ((now - next_run) // interval + 1) * interval


class Scheduler:
    """Collects the targets of ``targets`` (the service's table): gives each its runner, runs each
    on its interval grid once started, and follows the table's changes."""

    def __init__(
        self,
        targets: TargetTable,
        providers: ProviderTable,
        record: Record,
        session: aiohttp.ClientSession,
        histogram: Histogram,
        clock: Clock,
        max_concurrent_collections: int | None = None,
        turnstile: Turnstile | None = None,
        *,
        redactor: Redactor | None = None,
        max_response_bytes_in_flight: int | None = None,
    ) -> None:
        self._targets = targets
        self._providers = providers
        self._redactor = redactor
        self._record = record
        self._session = session
        self._turnstile = turnstile or Turnstile()
        self._histogram = histogram
        self._clock = clock
        # Bounds how many collections finish in the same loop iteration (the follow-up work of
        # hundreds at once stalls the loop; see docs/performance.md). Fixed for the process.
        self._max_concurrent = max_concurrent_collections or None
        self._limit = (
            asyncio.Semaphore(max_concurrent_collections) if max_concurrent_collections else None
        )
        # What the answers in flight may hold, all targets together. Fixed for the process.
        self._budget = (
            ResponseBudget(max_response_bytes_in_flight) if max_response_bytes_in_flight else None
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._starters: set[asyncio.Task[None]] = set()

    def follow(self, change: TableChange | None = None) -> None:
        """Follow a change of the table: the collections of removed and replaced targets stop,
        and every enabled target without a runner gets one (a replaced target's provider takes
        over its predecessor's state). Unchanged targets keep their schedule and provider
        state; a disabled target has no runner."""
        previous: dict[str, Provider[Any]] = {}
        change = change or TableChange()
        for target in change.removed:
            self._stop(target)
        for old, _ in change.replaced:
            if old.runner is not None:
                previous[old.name] = old.runner.provider
            self._stop(old)
        for target in self._targets:
            if target.runner is None and target.config.enabled:
                target.runner = self._runner(target, previous.get(target.name))

    def _runner(self, target: Target, previous: Provider[Any] | None) -> TargetRunner:
        config = target.config
        runner = TargetRunner(
            config,
            self._providers[config.provider],
            self._session,
            self._record,
            self._histogram,
            self._clock,
            self._turnstile,
            self._limit,
            redactor=self._redactor,
            budget=self._budget,
            state=target.state,
        )
        if previous is not None and previous.name == runner.provider.name:
            runner.provider.inherit(previous)
        return runner

    def start(self) -> None:
        """Start the collection task of every target that has none, :data:`START_BATCH` per loop
        iteration (in the background)."""
        starter = asyncio.create_task(self._start_all(list(self._targets)), name="collect:start")
        self._starters.add(starter)
        starter.add_done_callback(self._starters.discard)

    async def _start_all(self, targets: list[Target]) -> None:
        started = 0
        for target in targets:
            name = target.name
            runner = target.runner
            # A reload meanwhile may have removed or replaced it.
            if runner is None or self._targets.get(name) is not target or name in self._tasks:
                continue
            self._tasks[name] = asyncio.create_task(runner.run_forever(), name=f"collect:{name}")
            started += 1
            if started % START_BATCH == 0:
                await asyncio.sleep(0)

    def _stop(self, target: Target) -> None:
        task = self._tasks.pop(target.name, None)
        if task is not None:
            task.cancel()
        target.runner = None

    async def stop(self) -> None:
        """Cancel every collection task (:meth:`start` starts them again)."""
        tasks = [*self._starters, *self._tasks.values()]
        for task in tasks:
            task.cancel()
        self._tasks.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    def release(self) -> None:
        """The targets give back their runners: this scheduler's session is closing."""
        for target in self._targets:
            target.runner = None

    async def run_all_once(self) -> list[Snapshot]:
        """Collect every target once, concurrently (``--once`` and tests), in config order. With
        the exporter-wide limit, that many workers each take the next target: not a task per
        target queued on the limit (a thousand tasks starting in one loop iteration stall it)."""
        runners = [target.runner for target in self._targets if target.runner is not None]
        if self._max_concurrent is None:
            return list(await asyncio.gather(*(r.run_once() for r in runners)))
        results: list[Snapshot | None] = [None] * len(runners)
        todo = iter(enumerate(runners))

        async def worker() -> None:
            for index, runner in todo:
                results[index] = await runner.run_once()

        await asyncio.gather(*(worker() for _ in range(min(self._max_concurrent, len(runners)))))
        return [snapshot for snapshot in results if snapshot is not None]
