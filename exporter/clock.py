"""Wall-clock time, injectable so staleness can be tested without sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Unix seconds."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()
