"""What the process's own families (``process_*``, ``python_gc_*``) cost a scrape, at 1,000
targets and 10,000 provider series: ``python -m bench.live``.

In process, no network: a store filled with :mod:`bench.synthetic`'s targets, its bodies built
once, then ``Exposition.get`` timed for every format and encoding (the same store generation
throughout, as between two collections), three ways:

* without the live families (the exposition's cached bytes alone);
* with them, within ``LIVE_MAX_AGE`` of their last render (they and the answer are reused);
* with them, more than ``LIVE_MAX_AGE`` after their last render, as every scrape of a Prometheus
  scraping every few seconds finds them: rendered again, and the answer made again.

It prints the median and the fastest of many runs, in microseconds.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import generate_latest

from bench import synthetic
from bench.servers import exporter_config
from exporter.metrics.exposition import LIVE_MAX_AGE, LiveFamilies
from exporter.service import make_exporter, process_collectors

TARGETS = 1_000
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SCRAPES = {
    "text": ("", ""),
    "text gzip": ("", "gzip"),
    "OpenMetrics": (OPENMETRICS, ""),
    "OpenMetrics gzip": (OPENMETRICS, "gzip"),
}


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


async def timed(run: Callable[[], Awaitable[object]], rounds: int) -> tuple[float, float]:
    """Median and fastest of ``rounds`` runs, in microseconds."""
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        took.append((time.perf_counter() - started) * 1e6)
    return statistics.median(took), min(took)


async def main() -> int:
    exporter = make_exporter(exporter_config("http://127.0.0.1:9", TARGETS), autostart=False)
    synthetic.fill(exporter.store, TARGETS, random.Random(1), time.time())
    exposition = exporter.exposition
    clock = ManualClock()
    live = LiveFamilies(process_collectors(), clock)
    sizes = {}
    for name, (accept, encoding) in SCRAPES.items():
        exposition.live = None
        sizes[name] = len((await exposition.get(accept, encoding)).body)
        exposition.live = live
        await exposition.get(accept, encoding)  # the bodies without # EOF, for OpenMetrics gzip
    print(
        f"{TARGETS} targets, {sizes['text'] / 1e6:.2f} MB text, {sizes['text gzip'] / 1e3:.0f} kB "
        f"gzipped; live families: {len(live.text(False))} B text, "
        f"{len(live.text(True))} B OpenMetrics"
    )

    render = process_collectors()
    took = []
    for _ in range(2000):
        started = time.perf_counter()
        generate_latest(render)
        took.append((time.perf_counter() - started) * 1e6)
    print(
        f"render the live families (text): median {statistics.median(took):.0f} us, "
        f"fastest {min(took):.0f} us"
    )

    print(f"{'scrape':<18} {'without':>16} {'reused':>16} {'rendered again':>16}")
    for name, (accept, encoding) in SCRAPES.items():
        scrape = functools.partial(exposition.get, accept, encoding)
        exposition.live = None
        without = await timed(scrape, 5000)
        exposition.live = live
        reused = await timed(scrape, 5000)

        async def again(scrape: Callable[[], Awaitable[object]] = scrape) -> object:
            clock.now += LIVE_MAX_AGE
            return await scrape()

        rendered = await timed(again, 2000)
        print(
            f"{name:<18} "
            + " ".join(f"{m:>7.1f} ({f:>5.1f})" for m, f in (without, reused, rendered))
        )
    print("microseconds a scrape spends in Exposition.get: median (fastest)")
    await exposition.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
