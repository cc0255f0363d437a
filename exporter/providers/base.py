"""The seam every provider plugs into.

A provider is one module (here for the built-in ones, or in a package of its own) that defines:

* a config model (a subclass of :class:`TargetConfig` with ``provider: Literal["<name>"]``),
* its metric descriptions (:class:`MetricSpec`: name, HELP, labels besides ``account``),
* pure ``parse_*`` functions from a decoded response body to :class:`Sample` objects, raising only
  :class:`~exporter.providers.errors.ParseError`,
* a :class:`Provider` subclass whose ``collect(run)`` does the HTTP through the run's client and
  calls the parsers,
* a module-level ``PROVIDER = <the Provider subclass>``,

and is registered under its name in the entry-point group ``messaging_stats_exporter.providers``
(see ``docs/providers/writing-a-provider.md``).

The provider knows nothing of the store, the scheduler or the web server.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from exporter.providers.samples import MetricSpec as MetricSpec
from exporter.providers.samples import Sample as Sample
from exporter.schema.target import TargetConfig

if TYPE_CHECKING:
    from exporter.clock import Clock
    from exporter.providers.http import ProviderClient


def as_written(value: float) -> Decimal:
    """A float as the decimal a person reads in it (``14.87``, not the binary value nearest to
    it), for arithmetic whose result must print the same way: ``float(as_written(24.48) / 100)``
    is ``0.2448``, where ``24.48 / 100`` is ``0.24480000000000002``."""
    return Decimal(repr(value))


@dataclass(frozen=True, slots=True)
class Run:
    """One collection of one target: what the scheduler hands to :meth:`Provider.collect`."""

    deadline: float
    """Event-loop time (``asyncio.get_running_loop().time()``) by which the run must end. The
    client's requests and retries stay within it; a provider that waits on its own (polling a
    task) stops in time by it."""
    clock: Clock
    """The wall clock, Unix seconds: a provider reads the time here, so tests can move it."""
    client: ProviderClient
    """The target's HTTP client, bound to ``deadline``."""


C = TypeVar("C", bound=TargetConfig)


class Provider(ABC, Generic[C]):
    """One target's collector. The scheduler keeps one instance per target for its lifetime, so a
    provider may keep state between runs (a cached OAuth token, a task still running)."""

    name: ClassVar[str]
    config_model: ClassVar[type[TargetConfig]]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    requires_api: ClassVar[tuple[int, int]] = (1, 0)
    """The plugin API version the provider is written for: see :func:`api_problem`."""

    def __init__(self, config: C) -> None:
        self.config = config

    def inherit(self, previous: Provider[Any]) -> None:
        """Take over state from the instance this one replaces after a config change of the same
        target (a task still running, a cached token). The default keeps nothing."""

    @abstractmethod
    async def collect(self, run: Run) -> list[Sample]:
        """Fetch through ``run.client`` and parse; raise
        :class:`~exporter.providers.errors.CollectError` on failure."""


API_VERSION = (1, 0)
"""The version of the plugin API (``exporter.plugin``) this exporter has: (major, minor)."""


def api_problem(requires: object) -> str | None:
    """Why a plugin part that declares ``requires_api = requires`` cannot run on this exporter, or
    None when it can: the same major version, and a minor version no newer than this one's."""
    have = f"{API_VERSION[0]}.{API_VERSION[1]}"
    if not (
        isinstance(requires, tuple)
        and len(requires) == 2
        and all(type(part) is int and part >= 0 for part in requires)
    ):
        return f"requires_api is {requires!r}, not a (major, minor) pair of ints"
    major, minor = requires
    if major == API_VERSION[0] and minor <= API_VERSION[1]:
        return None
    if requires > API_VERSION:
        return f"needs plugin API {major}.{minor}, this exporter has {have}"
    return f"was written for plugin API {major}.{minor}, this exporter has {have}"


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
