"""The seam every provider plugs into.

A provider is one module in ``exporter/providers/`` that defines:

* a config model (a subclass of :class:`TargetConfig` with ``provider: Literal["<name>"]``),
* its metric descriptions (:class:`MetricSpec`: name, HELP, labels besides ``account``),
* pure ``parse_*`` functions from a decoded response body to :class:`Sample` objects, raising only
  :class:`~exporter.collect.errors.ParseError`,
* a :class:`Provider` subclass whose ``collect`` does the HTTP through the shared client and calls
  the parsers,
* a module-level ``PROVIDER = <the Provider subclass>``, which is how the registry finds it.

The provider knows nothing of the store, the scheduler or the web server.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import Field

from exporter.fields import BaseUrl, Duration, SecretsModel

if TYPE_CHECKING:
    from exporter.clock import Clock
    from exporter.collect.http import ProviderClient

DEFAULT_INTERVAL = 60.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_STALE_AFTER = 300.0
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024


class TargetConfig(SecretsModel):
    """What every target has; the keys of ``defaults`` are inherited into these fields."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    provider: str
    base_url: BaseUrl
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT
    stale_after: Duration = DEFAULT_STALE_AFTER
    max_concurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=256)
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024)

    @property
    def deadline(self) -> float:
        """How long one collection may take: ``timeout``, but never longer than ``interval``."""
        return min(self.timeout, self.interval)

    def summary(self) -> str:
        """One line for ``--check-config``; providers add what identifies their objects."""
        return f"{self.name}: provider={self.provider} base_url={self.base_url}"


C = TypeVar("C", bound=TargetConfig)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A provider metric: every sample of it carries ``account`` first, then ``labels``."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One gauge value. ``labels`` are the values of the metric's labels, in the spec's order,
    without ``account`` (the store adds it from the target's name)."""

    metric: str
    labels: tuple[str, ...]
    value: float


class Provider(ABC, Generic[C]):
    """One target's collector. The scheduler keeps one instance per target for its lifetime, so a
    provider may keep state between runs (a cached OAuth token, a task still running)."""

    name: ClassVar[str]
    config_model: ClassVar[type[TargetConfig]]
    metrics: ClassVar[tuple[MetricSpec, ...]]

    def __init__(self, config: C, client: ProviderClient, clock: Clock | None = None) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        """The scheduler's wall clock (injectable in tests); None when run standalone."""

    def inherit(self, previous: Provider[Any]) -> None:
        """Take over state from the instance this one replaces after a config change of the same
        target (a task still running, a cached token). The default keeps nothing."""

    @abstractmethod
    async def collect(self) -> list[Sample]:
        """Fetch and parse; raise :class:`~exporter.collect.errors.CollectError` on failure."""


_NOT_LABEL_CHARS = re.compile(r"[^0-9a-z]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def label_value(raw: str, strip_prefix: str = "") -> str:
    """A provider's enum or key as a lowercase snake_case label value.

    ``DIRECTION_OUTGOING`` with prefix ``DIRECTION_`` → ``outgoing``; ``PRESS_ACTION`` →
    ``press_action``; ``pressAction`` → ``press_action``. Unknown values pass through the same way;
    a value with nothing left becomes ``unknown``.
    """
    if strip_prefix and raw.upper().startswith(strip_prefix.upper()):
        raw = raw[len(strip_prefix) :]
    snake = _NOT_LABEL_CHARS.sub("_", _CAMEL.sub("_", raw).lower()).strip("_")
    return snake or "unknown"
