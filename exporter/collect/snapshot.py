"""What one collection of one target produced: the scheduler's output, the store's input."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.providers.base import Sample
from exporter.providers.errors import Reason


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The outcome of one collection of one target. ``samples`` are fresh: every sample of the
    target when ``ok``, the parts that worked when not."""

    target: str
    provider: str
    ok: bool
    samples: tuple[Sample, ...]
    started_at: float
    duration: float
    reason: Reason | None = None
    error: str | None = None
