"""The target model: what every target has (:class:`TargetConfig`, which each provider's config
model extends), the config's ``defaults`` section that targets inherit from, and their default
values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from exporter.schema.types import (
    BaseUrl,
    Duration,
    IntervalDuration,
    Labels,
    SecretsModel,
    StrictModel,
    TimeoutDuration,
    format_duration,
    key_problem,
    parse_duration,
)

DEFAULT_INTERVAL = 60.0
DEFAULT_TIMEOUT = 30.0
MIN_STALE_AFTER = 300.0
STALE_AFTER_INTERVALS = 3
"""``stale_after`` defaults to the larger of ``MIN_STALE_AFTER`` and this many intervals: a target
keeps its samples through at least two failed runs after a success."""
DEFAULT_MAX_CONCURRENCY = 4
MIN_RESPONSE_BYTES = 1024
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
"""The body size limit of a provider that does not set its own with
:func:`max_response_bytes_field`."""


TARGET_LABELS = ("account", "provider", "reason")
"""The labels of the exporter's per-target families (``account`` is also on every provider
series): no constant label may take their names."""


def label_clash(name: str, labels: Sequence[str] = TARGET_LABELS) -> str:
    """Why constant label ``name`` is refused: the target's series carry ``labels`` already."""
    return (
        f"clashes with a label the target's series already carry ({', '.join(labels)}); "
        "choose another name"
    )


MaxConcurrency = Annotated[int, Field(ge=1, le=256)]
"""``max_concurrency``: requests one target's provider may have open at once."""
ResponseBytes = Annotated[int, Field(ge=MIN_RESPONSE_BYTES)]
"""``max_response_bytes``: the largest response body a target's collection reads."""


def max_response_bytes_field(default: int) -> Any:
    """The ``max_response_bytes`` field of a provider's config model, with the provider's default:
    the largest answer its API gives, with room to spare. A target (or ``defaults``) may set
    another."""
    return Field(default=default, ge=MIN_RESPONSE_BYTES)


class TargetConfig(SecretsModel):
    """What every target has; the keys of ``defaults`` are inherited into these fields."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    provider: str
    base_url: BaseUrl
    interval: IntervalDuration = DEFAULT_INTERVAL
    timeout: TimeoutDuration = DEFAULT_TIMEOUT
    stale_after: Duration = MIN_STALE_AFTER
    """Given, inherited from ``defaults``, or else :func:`default_stale_after` of ``interval``."""
    max_concurrency: MaxConcurrency = DEFAULT_MAX_CONCURRENCY
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    labels: Labels = Field(default_factory=dict)
    """Constant labels added to every series of the target; ``defaults.labels`` merged under
    them, key by key."""
    enabled: bool = True
    """False: validated like any target, but not collected and without series."""

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        """Fill in the keys whose default depends on ``interval`` (see :meth:`interval_defaults`)
        when the target does not give them. An ``interval`` that does not parse is reported at
        its own key; the keys are then left to their fixed defaults."""
        if not isinstance(data, dict):
            return data
        missing = [key for key in cls.interval_defaults(DEFAULT_INTERVAL) if key not in data]
        if not missing:
            return data
        try:
            interval = parse_duration(data.get("interval", DEFAULT_INTERVAL))
        except ValueError:
            return data
        derived = cls.interval_defaults(interval)
        return {**data, **{key: derived[key] for key in missing}}

    @classmethod
    def interval_defaults(cls, interval: float) -> dict[str, float]:
        """The default of each key that scales with the target's ``interval``; providers add
        theirs."""
        return {"stale_after": default_stale_after(interval)}

    @model_validator(mode="after")
    def _stale_after_covers_an_interval(self) -> Any:
        check_stale_after(self.stale_after, self.interval)
        return self

    @property
    def deadline(self) -> float:
        """How long one collection may take: ``timeout``, but never longer than ``interval``."""
        return min(self.timeout, self.interval)

    def summary(self) -> str:
        """One line for ``--check-config``; providers add what identifies their objects."""
        return f"{self.name}: provider={self.provider} base_url={self.base_url}"


def default_stale_after(interval: float) -> float:
    """The larger of 5m and 3 x ``interval``."""
    return max(MIN_STALE_AFTER, STALE_AFTER_INTERVALS * interval)


def check_stale_after(stale_after: float | None, interval: float) -> None:
    """Refuse a ``stale_after`` shorter than ``interval``: a target's samples would vanish at its
    first failure."""
    if stale_after is not None and stale_after < interval:
        raise key_problem(
            "stale_after",
            f"must be at least interval ({format_duration(interval)}); "
            f"it is {format_duration(stale_after)}",
        )


class Defaults(StrictModel):
    """The config's ``defaults``: each key is a :class:`TargetConfig` key, of the same type, that
    every target takes unless it sets its own."""

    interval: IntervalDuration = DEFAULT_INTERVAL
    timeout: TimeoutDuration = DEFAULT_TIMEOUT
    stale_after: Duration | None = None
    """None: each target's own default, the larger of 5m and 3 x its interval."""
    max_concurrency: MaxConcurrency = DEFAULT_MAX_CONCURRENCY
    max_response_bytes: ResponseBytes | None = None
    """None: each target's provider's own default."""
    labels: Labels = Field(default_factory=dict)
    """Merged under each target's own ``labels``, key by key."""

    @field_validator("labels")
    @classmethod
    def _labels_free(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if name in TARGET_LABELS:
                raise key_problem(name, label_clash(name))
        return labels

    @model_validator(mode="after")
    def _stale_after_covers_an_interval(self) -> Defaults:
        check_stale_after(self.stale_after, self.interval)
        return self
