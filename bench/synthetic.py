"""A store filled without a network: many Thulium-shaped targets with changing values, for the
memory phase of the bench and for tests."""

from __future__ import annotations

import random
from typing import Any

from exporter.collect.snapshot import Snapshot
from exporter.metrics.store import Store
from exporter.providers.base import Sample
from exporter.providers.errors import Reason

RECORDS = "thulium_outbound_campaign_records"
COMPLETION = "thulium_outbound_campaign_completion_ratio"
ACTIVE = "thulium_outbound_active_campaigns"


def campaigns(index: int) -> int:
    """4 or 5 campaigns a target: 1,000 targets make 10,000 provider series."""
    return 4 + index % 2


def thulium_configs(count: int, base_url: str = "http://127.0.0.1:9/thulium") -> list[Any]:
    from exporter.config import validate_config

    config = validate_config(
        {
            "targets": [
                {
                    "name": f"thulium-t{i:04d}",
                    "provider": "thulium",
                    "base_url": f"{base_url}/t{i:04d}/api",
                    "username": "u",
                    "password": "p",
                }
                for i in range(count)
            ]
        }
    )
    return list(config.targets)


def snapshot(name: str, index: int, rng: random.Random, at: float, ok: bool = True) -> Snapshot:
    n = campaigns(index)
    samples = []
    for c in range(n):
        samples.append(Sample(RECORDS, (f"{c + 1:05d}",), float(rng.randint(0, 100_000))))
        samples.append(Sample(COMPLETION, (f"{c + 1:05d}",), round(rng.random(), 4)))
    samples.append(Sample(ACTIVE, (), float(n)))
    return Snapshot(
        target=name,
        provider="thulium",
        ok=ok,
        samples=tuple(samples) if ok else (),
        started_at=at,
        duration=rng.random() / 5,
        reason=None if ok else Reason.HTTP_5XX,
        error=None if ok else "HTTP 500",
    )


def fill(store: Store, count: int, rng: random.Random, at: float) -> None:
    for i in range(count):
        store.record(snapshot(f"thulium-t{i:04d}", i, rng, at))
