"""Memory per series, measured: what the exporter holds for each provider series it serves (its
value, its key, its label text and its rendered line) stays within a stated bound through rounds
of collections, failures and series that come and go."""

from __future__ import annotations

import gc
import tracemalloc

from exporter.collect.snapshot import Snapshot
from exporter.providers.base import Sample
from exporter.providers.errors import Reason
from tests.conftest import FakeClock, parse_exposition
from tests.test_exposition import ACTIVE, COMPLETION, RECORDS, new_exporter

TARGETS = 300
CAMPAIGNS = 5
"""Per target: a records and a completion series per campaign, and the active count (11 series)."""
BYTES_PER_SERIES = 512
"""The bound, for the exporter's own data; the bodies built from it come on top (about the
size of their text: see docs/performance.md)."""


def snapshot(name: str, clock: FakeClock, round_: int, ok: bool) -> Snapshot:
    samples: list[Sample] = []
    for campaign in range(CAMPAIGNS):
        # Every round one campaign of each target ends and another starts.
        campaign_id = f"{round_ * 10 + campaign:05d}" if campaign == 0 else f"{campaign:05d}"
        samples.append(Sample(RECORDS, (campaign_id,), float(round_ * 1000 + campaign)))
        samples.append(Sample(COMPLETION, (campaign_id,), round_ / 100))
    samples.append(Sample(ACTIVE, (), float(CAMPAIGNS)))
    return Snapshot(
        target=name,
        provider="thulium",
        ok=ok,
        samples=tuple(samples) if ok else tuple(samples[:3]),
        started_at=clock.time(),
        duration=0.1,
        reason=None if ok else Reason.HTTP_5XX,
        error=None if ok else "HTTP 500",
    )


def test_memory_per_series_stays_within_its_bound() -> None:
    clock = FakeClock()
    names = [f"thulium-t{i:04d}" for i in range(TARGETS)]
    exporter = new_exporter(clock, names)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for round_ in range(1, 9):
            for index, name in enumerate(names):
                # A third of the targets fail in the fourth round; everyone succeeds at the end.
                ok = not (round_ == 4 and index % 3 == 0)
                exporter.store.record(snapshot(name, clock, round_, ok))
            clock.advance(60)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    scraped = parse_exposition(exporter.exposition.body(openmetrics=False).body.decode())
    series = sum(1 for name, _ in scraped if name.startswith("thulium_"))
    assert series == TARGETS * (2 * CAMPAIGNS + 1)
    assert held / series <= BYTES_PER_SERIES, f"{held / series:.0f} bytes per series"
