"""The garbage collector tuned for a long-running exporter: what lives as long as the process is
kept out of its scans."""

from __future__ import annotations

import asyncio
import gc

from exporter.metrics.store import Store


async def keep_long_lived_objects_out_of_gc(store: Store) -> None:
    """Freeze what exists now, and again once the first round of collections has ended.
    Everything made so far lives as long as the process, and so do the series' keys and label
    texts of the first round: kept out of the garbage collector's scans, a full collection's pause
    does not grow with the number of series."""
    gc.collect()
    gc.freeze()
    first_round = asyncio.Event()

    def first_round_done(_: object) -> None:
        if store.ready():
            first_round.set()

    unsubscribe = store.subscribe(first_round_done)
    try:
        await first_round.wait()
    finally:
        unsubscribe()
    gc.collect()
    gc.freeze()
