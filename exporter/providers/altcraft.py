"""Altcraft: subscription counters of resources and segments, recounted by a server-side task.

API pages: ``shared/reference/providers/altcraft-resources-refresh-counters.txt`` and
``altcraft-segments-refresh-counters.txt`` (Altcraft Platform v72, API v1.1); discovery uses
``resources/list`` and ``resources/get`` of the same API. What the pages say, and how it is treated:

* Every call is ``POST {base_url}/<method>`` with a JSON body that carries ``token``; every answer
  is an envelope ``{data, error, error_text}``. ``error`` other than 0 is a failure even with
  HTTP 200: a token error is reason ``auth``, any other ``provider_error``.
* ``resources/refresh_counters`` ``{token, id, list_id}`` and ``segments/refresh_counters``
  ``{token, db_id, resource_id, id}`` start a recount and return ``data.task_id`` at once.
* ``tasks/status`` ``{token, task_id}`` returns ``data.status`` and ``data.progress``; only
  ``completed`` is documented as final, with ``data.result``: records with ``channels`` (in any
  order), ``list_id``, ``resource_id`` (segments only), ``updated`` (RFC 3339 with milliseconds)
  and, for resources, ``last_count_time`` ("counted at ... in 231.374251ms", a Go duration).
* A resource record carries no resource id (it is kept from the request). The segment page's own
  example asks for resource 24 and answers ``resource_id: 27``; records are matched by
  ``list_id`` and, when the record has one, ``resource_id``: a record of another resource is not
  taken for the one asked about.
* A missing counter is "not reported": no sample, never a 0. ``all`` is the profiles figure;
  ``*_sendable`` counters are a metric of their own, never mixed with the plain statuses.

A recount costs the provider work: an object whose task is still running is not refreshed again
(its task id is kept and polled at the next run), and an object is refreshed at most once per
``interval``. A task still unfinished ``task_max_age`` after it was started is abandoned (logged,
that run fails with reason ``timeout``) and the next run starts a new recount, so a task Altcraft
lost or stuck is not polled for ever. One failing object fails the run (``collect_success`` 0,
with its reason) while the objects that worked are delivered as fresh samples.

Each run's clock tells a run off the grid from one an interval later, and the scheduler calls
``inherit`` on a reload that changes the target, so running tasks are carried over.
User docs: ``docs/providers/altcraft.md``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.clock import Clock
from exporter.goduration import parse_go_duration_ns
from exporter.providers.base import MetricSpec, Provider, Run, Sample, label_value
from exporter.providers.errors import CollectError, ParseError, Reason
from exporter.providers.http import ERROR_TEXT_LIMIT, ProviderClient, json_error_text
from exporter.schema.target import TargetConfig, max_response_bytes_field
from exporter.schema.types import (
    Duration,
    NonEmptySecret,
    SecretFile,
    StrictModel,
    format_duration,
    key_problem,
)

log = structlog.get_logger("exporter.providers.altcraft")

RESOURCE_SUBSCRIPTIONS = "altcraft_resource_subscriptions"
RESOURCE_SENDABLE = "altcraft_resource_sendable_subscriptions"
RESOURCE_PROFILES = "altcraft_resource_profiles"
RESOURCE_UPDATED = "altcraft_resource_counters_updated_timestamp_seconds"
RESOURCE_COUNT_DURATION = "altcraft_resource_count_duration_seconds"
SEGMENT_SENDABLE = "altcraft_segment_sendable_subscriptions"
SEGMENT_UPDATED = "altcraft_segment_counters_updated_timestamp_seconds"
# Not in the page's segment example (which reports only the sendable counters), but passed through
# when a segment record reports them, as the metrics contract asks of unlisted values.
SEGMENT_SUBSCRIPTIONS = "altcraft_segment_subscriptions"
SEGMENT_PROFILES = "altcraft_segment_profiles"

DEFAULT_TASK_POLL_INTERVAL = 2.0
DEFAULT_DISCOVERY_INTERVAL = 3600.0
MIN_TASK_MAX_AGE = 3600.0
TASK_MAX_AGE_INTERVALS = 3
"""``task_max_age`` defaults to the larger of ``MIN_TASK_MAX_AGE`` and this many intervals."""
REFRESH_SLACK = 0.05
"""An object is refreshed again once ``interval * (1 - REFRESH_SLACK)`` has passed: the runs come
on a fixed grid ``interval`` apart, and a few milliseconds of jitter must not skip a refresh."""
LIST_PAGE_LIMIT = 1000
MAX_LIST_PAGES = 1000
MAX_COUNTER = 2**63
HARD_STOP_MARGIN = 0.025
MAX_FAILURES_LOGGED = 10
_TOKEN_ERROR = re.compile(
    r"(invalid|wrong|bad|expired|missing|empty|unknown|incorrect)\s+(api\s+)?token"
    r"|token\s+(is\s+)?(invalid|expired|not valid|not found|required|missing)"
    r"|unauthori[sz]ed|forbidden|access denied|permission denied",
    re.IGNORECASE,
)
_FAILED_STATUS = re.compile(r"error|fail|cancel|abort", re.IGNORECASE)


# -- configuration -------------------------------------------------------------------------------


class ResourceRef(StrictModel):
    """A resource and one of its databases: ``{id: 24, list_id: 1}``."""

    id: StrictInt = Field(ge=1)
    list_id: StrictInt = Field(ge=1)


class SegmentRef(StrictModel):
    """A segment of a resource's database: ``{id: 7, resource_id: 24, db_id: 1}``."""

    id: StrictInt = Field(ge=1)
    resource_id: StrictInt = Field(ge=1)
    db_id: StrictInt = Field(ge=1)


_RESOURCE_LIST: TypeAdapter[tuple[ResourceRef, ...]] = TypeAdapter(tuple[ResourceRef, ...])
_SEGMENT_LIST: TypeAdapter[tuple[SegmentRef, ...]] = TypeAdapter(tuple[SegmentRef, ...])


def _no_repeats(items: Sequence[BaseModel], what: str) -> None:
    seen: dict[BaseModel, int] = {}
    for index, item in enumerate(items):
        if item in seen:
            raise PydanticCustomError(
                "repeated",
                "{what} [{index}] repeats [{first}]",
                {"what": what, "index": index, "first": seen[item]},
            )
        seen[item] = index


def _resources(value: Any, handler: Any) -> Any:
    """``auto``, or a list of ``{id, list_id}``; errors keep their plain path
    (``resources[0].list_id``), without the union's branch names."""
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise PydanticCustomError(
            "resources", "must be auto or a list of {id, list_id}, got {value!r}", {"value": value}
        )
    refs = _RESOURCE_LIST.validate_python(value)
    _no_repeats(refs, "resources")
    return refs


def _segments(value: Any, handler: Any) -> Any:
    refs = _SEGMENT_LIST.validate_python(value)
    _no_repeats(refs, "segments")
    return refs


class AltcraftTarget(TargetConfig):
    provider: Literal["altcraft"]
    token: NonEmptySecret | None = None
    token_file: SecretFile | None = None
    task_poll_interval: Duration = DEFAULT_TASK_POLL_INTERVAL
    task_max_age: Duration = MIN_TASK_MAX_AGE
    """A recount task still unfinished this long after it was started is abandoned; the next run
    starts a new one. Defaults to :func:`default_task_max_age` of ``interval``."""
    resources: Annotated[tuple[ResourceRef, ...] | Literal["auto"], WrapValidator(_resources)] = ()
    segments: Annotated[tuple[SegmentRef, ...], WrapValidator(_segments)] = ()
    discovery_interval: Duration = DEFAULT_DISCOVERY_INTERVAL
    # The largest answer is a resources/list page of up to 1,000 resources; a task's result or a
    # resource is a few KB.
    max_response_bytes: int = max_response_bytes_field(512 * 1024)

    SECRETS = ("token",)

    @classmethod
    def interval_defaults(cls, interval: float) -> dict[str, float]:
        return {
            **super().interval_defaults(interval),
            "task_max_age": default_task_max_age(interval),
        }

    @model_validator(mode="after")
    def _something_to_collect(self) -> AltcraftTarget:
        if not self.resources and not self.segments:
            raise key_problem(
                "resources", "nothing to collect: give resources (a list, or auto) or segments"
            )
        return self

    def summary(self) -> str:
        resources = "auto" if self.resources == "auto" else str(len(self.resources))
        extra = f" discovery_interval={format_duration(self.discovery_interval)}"
        return (
            f"{super().summary()} resources={resources} segments={len(self.segments)} "
            f"task_poll_interval={format_duration(self.task_poll_interval)} "
            f"task_max_age={format_duration(self.task_max_age)}"
            + (extra if self.resources == "auto" else "")
        )


def default_task_max_age(interval: float) -> float:
    """The larger of 1h and 3 x ``interval``: a recount is given a few runs to finish."""
    return max(MIN_TASK_MAX_AGE, TASK_MAX_AGE_INTERVALS * interval)


# -- Go durations ----------------------------------------------------------------------------------


class GoDurationError(ParseError):
    """A string that is not a Go duration (``time.ParseDuration``)."""


def parse_go_duration(text: object) -> float:
    """A Go duration (``231.374251ms``, ``2m3.5s``, ``850µs``, ``-1.5h``, ``0``) in seconds, as
    :func:`exporter.goduration.parse_go_duration_ns` reads it. Raises only
    :class:`GoDurationError`.
    """
    if not isinstance(text, str):
        raise GoDurationError(f"a duration is a string, got {type(text).__name__}")
    try:
        return parse_go_duration_ns(text) / 1e9
    except ValueError as exc:
        raise GoDurationError(str(exc)) from None


def parse_count_duration(last_count_time: str) -> float | None:
    """The duration at the end of ``counted at 2024-04-19T13:31:08Z in 231.374251ms`` in seconds,
    or None when there is none that parses (or it is negative)."""
    _, sep, duration = last_count_time.rpartition(" in ")
    if not sep:
        return None
    try:
        seconds = parse_go_duration(duration.strip())
    except GoDurationError:
        return None
    return seconds if seconds >= 0 else None


def parse_rfc3339(text: str) -> float | None:
    """``2024-04-19T13:31:08.927Z`` as Unix seconds; None if it does not parse, has no offset or
    is Go's zero time (year 1: "never")."""
    try:
        when = datetime.fromisoformat(text.strip())
    except (ValueError, OverflowError):
        return None
    if when.tzinfo is None or when.year < 1971:
        return None
    return when.timestamp()


# -- answers ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """Every Altcraft answer: ``{data, error, error_text}``; lists add ``next_from_id`` and
    ``total_count``."""

    data: object
    error: int
    error_text: str
    next_from_id: int | None = None
    total_count: int | None = None


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(f"{key} is {type(value).__name__}, expected an integer")
    return value


def parse_envelope(body: object) -> Envelope:
    """The decoded answer of any Altcraft method → :class:`Envelope`. Raises only ParseError."""
    if not isinstance(body, dict):
        raise ParseError(
            f"expected the {{data, error, error_text}} envelope, got {type(body).__name__}"
        )
    error = body.get("error")
    if isinstance(error, bool) or not isinstance(error, int):
        raise ParseError(
            "the envelope has no integer error code"
            if error is None
            else f"error is {type(error).__name__}, expected an integer"
        )
    error_text = body.get("error_text")
    if error_text is not None and not isinstance(error_text, str):
        raise ParseError(f"error_text is {type(error_text).__name__}, expected a string")
    return Envelope(
        data=body.get("data"),
        error=error,
        error_text=error_text or "",
        next_from_id=_optional_int(body, "next_from_id"),
        total_count=_optional_int(body, "total_count"),
    )


@json_error_text
def envelope_error_text(body: Any) -> str:
    """``error_text`` (and the code) of an envelope that came with an HTTP error status."""
    envelope = parse_envelope(body)
    text = envelope.error_text.strip()
    return f"error {envelope.error}: {text}" if text else f"error {envelope.error}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class ChannelCounts(_Strict):
    channel: str
    status: dict[str, int]


class CountRecord(_Strict):
    """One record of a completed task's ``result``."""

    channels: list[ChannelCounts]
    list_id: int
    resource_id: int | None = None
    updated: str | None = None
    last_count_time: str | None = None
    in_progress: bool | None = None
    refresh_task_id: str | None = None


class _TaskData(_Strict):
    status: str
    result: list[CountRecord] | None = None


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """The ``data`` of a ``tasks/status`` answer."""

    status: str
    progress: float | None
    records: tuple[CountRecord, ...]

    @property
    def completed(self) -> bool:
        return self.status.strip().lower() == "completed"

    @property
    def failed(self) -> bool:
        """A status that says error or failure: the task is over without a result."""
        return not self.completed and _FAILED_STATUS.search(self.status) is not None


def parse_task_status(data: object) -> TaskStatus:
    """``data`` of ``tasks/status`` → :class:`TaskStatus`. A ``completed`` task must carry its
    ``result`` (a list of records); ``progress`` is advisory and never fails the parse. Raises
    only :class:`ParseError`."""
    if not isinstance(data, dict):
        raise ParseError(f"tasks/status: data is {type(data).__name__}, expected an object")
    try:
        task = _TaskData.model_validate(data)
    except ValidationError as exc:
        raise ParseError.from_validation(exc, at="tasks/status: data") from None
    progress = data.get("progress")
    percent = (
        float(progress)
        if isinstance(progress, int | float)
        and not isinstance(progress, bool)
        and 0 <= progress <= 100
        else None
    )
    status = TaskStatus(task.status, percent, tuple(task.result or ()))
    if status.completed and task.result is None:
        raise ParseError("tasks/status: a completed task without a result list")
    return status


def _counter_samples(
    record: CountRecord,
    labels: tuple[str, ...],
    plain: str,
    sendable: str,
    profiles: str,
) -> list[Sample]:
    samples: dict[tuple[str, tuple[str, ...]], float] = {}

    def add(metric: str, key: tuple[str, ...], value: int) -> None:
        if (metric, key) in samples:
            raise ParseError(f"the record repeats {metric}{{{','.join(key[len(labels) :])}}}")
        if not 0 <= value < MAX_COUNTER:
            raise ParseError(f"counter {key[-1]!r} is {value}, not a count")
        samples[(metric, key)] = float(value)

    for channel in record.channels:
        name = label_value(channel.channel)
        for counter, value in channel.status.items():
            status = label_value(counter)
            if status == "all":
                add(profiles, (*labels, name), value)
            elif status.endswith("_sendable"):
                add(sendable, (*labels, name, status.removesuffix("_sendable")), value)
            else:
                add(plain, (*labels, name, status), value)
    return [Sample(metric, key, value) for (metric, key), value in samples.items()]


def _the_record(
    records: Sequence[CountRecord], list_id: int, resource_id: int, what: str
) -> CountRecord:
    matching = [
        record
        for record in records
        if record.list_id == list_id and record.resource_id in (None, resource_id)
    ]
    if not matching:
        found = ", ".join(
            f"list_id {r.list_id}" + (f"/resource_id {r.resource_id}" if r.resource_id else "")
            for r in records[:5]
        )
        raise ParseError(
            f"{what}: the completed task's result has no record for list_id {list_id}"
            + (f" (it has {found})" if found else " (the result is empty)")
        )
    if len(matching) > 1:
        raise ParseError(f"{what}: the result has {len(matching)} records for list_id {list_id}")
    return matching[0]


def resource_samples(
    records: Sequence[CountRecord], resource_id: int, list_id: int
) -> list[Sample]:
    """Samples of one resource database from a completed task's records."""
    record = _the_record(records, list_id, resource_id, f"resource {resource_id}")
    labels = (str(resource_id), str(list_id))
    samples = _counter_samples(
        record, labels, RESOURCE_SUBSCRIPTIONS, RESOURCE_SENDABLE, RESOURCE_PROFILES
    )
    updated = parse_rfc3339(record.updated) if record.updated is not None else None
    if updated is not None:
        samples.append(Sample(RESOURCE_UPDATED, labels, updated))
    if record.last_count_time is not None:
        duration = parse_count_duration(record.last_count_time)
        if duration is not None:
            samples.append(Sample(RESOURCE_COUNT_DURATION, labels, duration))
    return samples


def segment_samples(
    records: Sequence[CountRecord], segment_id: int, resource_id: int, list_id: int
) -> list[Sample]:
    """Samples of one segment from a completed task's records."""
    record = _the_record(records, list_id, resource_id, f"segment {segment_id}")
    labels = (str(segment_id), str(resource_id), str(list_id))
    samples = _counter_samples(
        record, labels, SEGMENT_SUBSCRIPTIONS, SEGMENT_SENDABLE, SEGMENT_PROFILES
    )
    updated = parse_rfc3339(record.updated) if record.updated is not None else None
    if updated is not None:
        samples.append(Sample(SEGMENT_UPDATED, labels, updated))
    return samples


def parse_task_id(data: object) -> str:
    """``data.task_id`` of a ``*/refresh_counters`` answer."""
    task_id = data.get("task_id") if isinstance(data, dict) else None
    if not isinstance(task_id, str) or not task_id.strip():
        raise ParseError("refresh_counters: the answer has no task_id")
    return task_id


def parse_resource_ids(data: object) -> list[int]:
    """``data`` of ``resources/list``: the resources' ids."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ParseError(f"resources/list: data is {type(data).__name__}, expected a list")
    ids = []
    for index, item in enumerate(data):
        value = item.get("id") if isinstance(item, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParseError(f"resources/list: data[{index}] has no resource id")
        ids.append(value)
    return ids


def parse_database_ids(data: object) -> list[int]:
    """``data.dbs_ids`` of ``resources/get``: the resource's databases."""
    dbs = data.get("dbs_ids") if isinstance(data, dict) else None
    if dbs is None and isinstance(data, dict) and "dbs_ids" in data:
        return []
    if not isinstance(dbs, list) or not all(
        isinstance(db, int) and not isinstance(db, bool) and db >= 1 for db in dbs
    ):
        raise ParseError("resources/get: data.dbs_ids is not a list of database ids")
    return sorted(set(dbs))


# -- the task flow ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountedObject:
    """What one refresh task recounts: a resource's database, or a segment."""

    kind: Literal["resource", "segment"]
    id: int
    resource_id: int
    list_id: int

    @classmethod
    def resource(cls, ref: ResourceRef) -> CountedObject:
        return cls("resource", ref.id, ref.id, ref.list_id)

    @classmethod
    def segment(cls, ref: SegmentRef) -> CountedObject:
        return cls("segment", ref.id, ref.resource_id, ref.db_id)

    def __str__(self) -> str:
        if self.kind == "resource":
            return f"resource {self.id} list_id {self.list_id}"
        return f"segment {self.id} (resource {self.resource_id} db_id {self.list_id})"

    @property
    def refresh_method(self) -> str:
        return f"{self.kind}s/refresh_counters"

    def refresh_body(self) -> dict[str, int]:
        if self.kind == "resource":
            return {"id": self.id, "list_id": self.list_id}
        return {"db_id": self.list_id, "resource_id": self.resource_id, "id": self.id}

    def samples(self, records: Sequence[CountRecord]) -> list[Sample]:
        if self.kind == "resource":
            return resource_samples(records, self.id, self.list_id)
        return segment_samples(records, self.id, self.resource_id, self.list_id)


@dataclass
class ObjectState:
    """What the provider remembers of one object between runs."""

    task_id: str | None = None
    last_refresh: float | None = None
    """Clock time the last refresh task was started: while ``task_id`` is set, that task's."""
    last_outcome: tuple[Sample, ...] | CollectError | None = None
    last_status: str = ""
    last_progress: float | None = None


@dataclass
class Discovery:
    resources: tuple[ResourceRef, ...] = ()
    at: float | None = None


@dataclass(frozen=True, slots=True)
class RunWindow:
    """Loop times within one run: ``poll_until``, after which a task still running is left for
    the next run (so a task that never completes fails alone, with reason timeout, and the other
    objects are delivered); ``hard_stop``, just before the scheduler's deadline, when whatever
    still waits (a hanging answer) is given up the same way."""

    poll_until: float
    hard_stop: float


class EnvelopeError(CollectError):
    """An answer whose envelope carries an ``error`` other than 0."""

    def __init__(self, reason: Reason, message: str, code: int) -> None:
        super().__init__(reason, message)
        self.code = code


class Altcraft(Provider[AltcraftTarget]):
    name = "altcraft"
    config_model = AltcraftTarget
    metrics = (
        MetricSpec(
            RESOURCE_SUBSCRIPTIONS,
            "Subscriptions of the resource's database by channel and status (the plain counters "
            "of the channels' status in the result of resources/refresh_counters + tasks/status); "
            "recounted every interval.",
            ("resource_id", "list_id", "channel", "status"),
        ),
        MetricSpec(
            RESOURCE_SENDABLE,
            "Sendable subscriptions of the resource's database by channel and status (the "
            "<status>_sendable counters of resources/refresh_counters + tasks/status); recounted "
            "every interval.",
            ("resource_id", "list_id", "channel", "status"),
        ),
        MetricSpec(
            RESOURCE_PROFILES,
            "Profiles in the resource's database by channel (the all counter of "
            "resources/refresh_counters + tasks/status); recounted every interval.",
            ("resource_id", "list_id", "channel"),
        ),
        MetricSpec(
            RESOURCE_UPDATED,
            "When Altcraft last counted the resource's subscriptions, Unix seconds (updated of "
            "the tasks/status result); recounted every interval.",
            ("resource_id", "list_id"),
        ),
        MetricSpec(
            RESOURCE_COUNT_DURATION,
            "How long Altcraft's count of the resource's subscriptions took (the duration in "
            "last_count_time of the tasks/status result); recounted every interval.",
            ("resource_id", "list_id"),
        ),
        MetricSpec(
            SEGMENT_SENDABLE,
            "Sendable subscriptions of the segment's profiles by channel and status (the "
            "<status>_sendable counters of segments/refresh_counters + tasks/status); recounted "
            "every interval.",
            ("segment_id", "resource_id", "list_id", "channel", "status"),
        ),
        MetricSpec(
            SEGMENT_UPDATED,
            "When Altcraft last counted the segment's subscriptions, Unix seconds (updated of the "
            "tasks/status result); recounted every interval.",
            ("segment_id", "resource_id", "list_id"),
        ),
        MetricSpec(
            SEGMENT_SUBSCRIPTIONS,
            "Subscriptions of the segment's profiles by channel and status, when Altcraft reports "
            "plain status counters for a segment (segments/refresh_counters + tasks/status); "
            "recounted every interval.",
            ("segment_id", "resource_id", "list_id", "channel", "status"),
        ),
        MetricSpec(
            SEGMENT_PROFILES,
            "Profiles of the segment by channel, when Altcraft reports the all counter for a "
            "segment (segments/refresh_counters + tasks/status); recounted every interval.",
            ("segment_id", "resource_id", "list_id", "channel"),
        ),
    )

    def __init__(self, config: AltcraftTarget) -> None:
        super().__init__(config)
        self.objects: dict[CountedObject, ObjectState] = {}
        self.discovery = Discovery()

    def inherit(self, previous: Provider[Any]) -> None:
        """Take over the state of the provider this one replaces after a config change of the same
        target (tasks still running, last refresh times, the discovery cache), so a reload never
        starts a second recount of an object. Only meaningful for the same Altcraft account."""
        if isinstance(previous, Altcraft) and previous.config.base_url == self.config.base_url:
            self.objects = previous.objects
            if self.config.resources == "auto":
                self.discovery = previous.discovery

    # -- the run -----------------------------------------------------------------------------

    async def collect(self, run: Run) -> list[Sample]:
        now = run.clock.time()
        window = self._window(run.deadline)
        failures: list[tuple[str, CollectError]] = []
        resources: Sequence[ResourceRef]
        listed = True
        if self.config.resources == "auto":
            try:
                async with asyncio.timeout_at(window.hard_stop):
                    resources = await self._discovered_resources(run.client, now)
            except (CollectError, ParseError, TimeoutError) as exc:
                error = _as_collect_error(exc, "resource discovery")
                failures.append(("resource discovery", error))
                resources = self.discovery.resources  # the last good list, if any
                listed = False
        else:
            resources = self.config.resources
        objects = [CountedObject.resource(ref) for ref in resources]
        objects += [CountedObject.segment(ref) for ref in self.config.segments]
        if listed:  # forget objects that are gone (a resource no longer discovered)
            wanted = set(objects)
            self.objects = {o: s for o, s in self.objects.items() if o in wanted}
        async with asyncio.TaskGroup() as group:
            counts = [group.create_task(self._collect_object(run, o, now, window)) for o in objects]
        samples: list[Sample] = []
        for obj, count in zip(objects, counts, strict=True):
            outcome = count.result()
            if isinstance(outcome, CollectError):
                failures.append((str(obj), outcome))
            else:
                samples.extend(outcome)
        for what, error in failures[:MAX_FAILURES_LOGGED]:
            log.warning(
                "altcraft object failed",
                provider=self.name,
                account=self.config.name,
                object=what,
                reason=str(error.reason),
                error=error.message,
            )
        if len(failures) > MAX_FAILURES_LOGGED:
            log.warning(
                "altcraft objects failed",
                provider=self.name,
                account=self.config.name,
                not_logged_one_by_one=len(failures) - MAX_FAILURES_LOGGED,
                reasons=sorted({str(error.reason) for _, error in failures}),
            )
        if failures:
            first = failures[0][1]
            more = len(failures) - 1
            delivered = sum(not isinstance(count.result(), CollectError) for count in counts)
            message = first.message + (
                f" (and {more} more failures; {delivered} of {len(objects)} objects delivered)"
                if more
                else ""
            )
            raise CollectError(first.reason, message, partial=samples)
        return samples

    def _window(self, deadline: float) -> RunWindow:
        """The run's time limits, from its deadline."""
        margin = min(1.0, max(0.05, 0.1 * self.config.deadline))
        return RunWindow(poll_until=deadline - margin, hard_stop=deadline - HARD_STOP_MARGIN)

    async def _collect_object(
        self, run: Run, obj: CountedObject, now: float, window: RunWindow
    ) -> tuple[Sample, ...] | CollectError:
        state = self.objects.setdefault(obj, ObjectState())
        outcome: tuple[Sample, ...] | CollectError
        try:
            async with asyncio.timeout_at(window.hard_stop):
                outcome = await self._count(run, obj, state, now, window.poll_until)
        except TimeoutError:
            if state.task_id is None:
                message = f"{obj}: no answer to {obj.refresh_method} before the deadline"
            else:
                progress = (
                    f" at {state.last_progress:g}%" if state.last_progress is not None else ""
                )
                message = (
                    f"{obj}: task {state.task_id} still {state.last_status or 'not answered'}"
                    f"{progress} at the deadline; it is polled again at the next run"
                )
            outcome = CollectError(Reason.TIMEOUT, message)
        except (CollectError, ParseError) as exc:
            outcome = _as_collect_error(exc, str(obj))
        state.last_outcome = outcome
        return outcome

    async def _count(
        self, run: Run, obj: CountedObject, state: ObjectState, now: float, poll_until: float
    ) -> tuple[Sample, ...]:
        if state.task_id is None:
            earliest = self.config.interval * (1 - REFRESH_SLACK)
            if (
                state.last_refresh is not None
                and now - state.last_refresh < earliest
                and state.last_outcome is not None
            ):
                # Refreshed less than an interval ago (a run off the grid, e.g. after a reload):
                # the last count stands.
                if isinstance(state.last_outcome, CollectError):
                    raise state.last_outcome
                return state.last_outcome
            envelope = await self._call(
                run.client, obj.refresh_method, obj.refresh_body(), idempotent=False
            )
            state.task_id = parse_task_id(envelope.data)
            del envelope  # an answer is not kept across a wait
            state.last_refresh = now
            state.last_status, state.last_progress = "", None
            log.debug(
                "altcraft refresh task started",
                account=self.config.name,
                object=str(obj),
                task_id=state.task_id,
            )
        task_id = state.task_id
        while True:
            try:
                envelope = await self._call(run.client, "tasks/status", {"task_id": task_id})
            except EnvelopeError as exc:
                if exc.reason is not Reason.AUTH:
                    # Altcraft does not know the task (or refuses it): the next run starts anew.
                    state.task_id = None
                raise
            status = parse_task_status(envelope.data)
            del envelope
            state.last_status, state.last_progress = status.status, status.progress
            if status.completed:
                state.task_id = None
                return tuple(obj.samples(status.records))
            if status.failed:
                state.task_id = None
                raise CollectError(
                    Reason.PROVIDER_ERROR,
                    f"{obj}: task {task_id} ended with status {status.status[:60]!r}",
                )
            self._abandon_if_too_old(run.clock, obj, state)
            wait = self.config.task_poll_interval
            if asyncio.get_running_loop().time() + wait > poll_until:
                # The next answer would come too late for this run: stop here, so the objects that
                # worked are delivered. The task is kept and polled again at the next run.
                raise TimeoutError
            await asyncio.sleep(wait)

    def _abandon_if_too_old(self, clock: Clock, obj: CountedObject, state: ObjectState) -> None:
        """A task still unfinished ``task_max_age`` after it was started is not polled again: it
        is forgotten, this run fails with reason ``timeout`` (the metrics contract's reason for a
        task that never completes), and the next run starts a new recount."""
        if state.last_refresh is None or state.task_id is None:
            return
        age = clock.time() - state.last_refresh
        if age < self.config.task_max_age:
            return
        task_id = state.task_id
        state.task_id = None
        progress = f" at {state.last_progress:g}%" if state.last_progress is not None else ""
        log.warning(
            "altcraft task abandoned",
            provider=self.name,
            account=self.config.name,
            object=str(obj),
            task_id=task_id,
            status=state.last_status[:60],
            progress=state.last_progress,
            age_seconds=round(age, 3),
            task_max_age_seconds=self.config.task_max_age,
        )
        raise CollectError(
            Reason.TIMEOUT,
            f"{obj}: task {task_id} still {state.last_status[:60] or 'unfinished'}{progress} "
            f"{format_duration(round(age, 3))} after it was started (task_max_age "
            f"{format_duration(self.config.task_max_age)}); abandoned, the next run starts a "
            "new recount",
        )

    # -- discovery ---------------------------------------------------------------------------

    async def _discovered_resources(
        self, client: ProviderClient, now: float
    ) -> tuple[ResourceRef, ...]:
        """Every (resource, database) pair of the account, listed again at most every
        ``discovery_interval`` (and at the next run after a failed listing)."""
        cache = self.discovery
        if cache.at is not None and now - cache.at < self.config.discovery_interval:
            return cache.resources
        resource_ids = await self._list_resources(client)
        try:
            async with asyncio.TaskGroup() as group:
                lookups = [
                    group.create_task(self._database_ids(client, rid)) for rid in resource_ids
                ]
        except BaseExceptionGroup as failed:  # the first failed lookup fails the discovery
            raise failed.exceptions[0] from None
        pairs = tuple(
            ResourceRef(id=rid, list_id=db)
            for rid, lookup in zip(resource_ids, lookups, strict=True)
            for db in lookup.result()
        )
        self.discovery = Discovery(pairs, now)
        log.info(
            "altcraft resources discovered",
            provider=self.name,
            account=self.config.name,
            resources=len(resource_ids),
            pairs=len(pairs),
        )
        return pairs

    async def _database_ids(self, client: ProviderClient, resource_id: int) -> list[int]:
        """A resource's databases; its answer is parsed as it comes, not kept until every
        lookup is done."""
        answer = await self._call(client, "resources/get", {"id": resource_id})
        return parse_database_ids(answer.data)

    async def _list_resources(self, client: ProviderClient) -> list[int]:
        """``resources/list`` page by page: ``from_id`` is the first id of a page, the answer's
        ``next_from_id`` the first of the next; the listing ends with an empty page, without a
        ``next_from_id``, or when ``total_count`` resources have come."""
        ids: dict[int, None] = {}
        from_id = 1
        for _ in range(MAX_LIST_PAGES):
            envelope = await self._call(
                client, "resources/list", {"from_id": from_id, "limit": LIST_PAGE_LIMIT}
            )
            page = parse_resource_ids(envelope.data)
            ids.update(dict.fromkeys(page))
            next_from_id, total_count = envelope.next_from_id, envelope.total_count
            del envelope  # not kept while the next page is asked for
            if (
                not page
                or next_from_id is None
                or (total_count is not None and len(ids) >= total_count)
            ):
                return sorted(ids)
            if next_from_id <= from_id:
                raise ParseError(
                    f"resources/list: next_from_id {next_from_id} does not move past {from_id}"
                )
            from_id = next_from_id
        raise ParseError(f"resources/list: more than {MAX_LIST_PAGES} pages")

    # -- HTTP --------------------------------------------------------------------------------

    async def _call(
        self,
        client: ProviderClient,
        method: str,
        payload: dict[str, Any],
        *,
        idempotent: bool = True,
    ) -> Envelope:
        """``POST {base_url}/<method>`` with the token in the body; the envelope, or an
        :class:`EnvelopeError` when it carries an error. Bodies are never logged."""
        token = self.config.secret("token") or ""
        body = await client.post_json(
            f"{self.config.base_url}/{method}",
            endpoint=method,
            json_body={"token": token, **payload},
            headers={"Accept": "application/json"},
            idempotent=idempotent,
            error_text=envelope_error_text,
        )
        envelope = parse_envelope(body)
        if envelope.error != 0:
            text = envelope.error_text.strip()
            reason = (
                Reason.AUTH
                if envelope.error in (401, 403) or _TOKEN_ERROR.search(text)
                else Reason.PROVIDER_ERROR
            )
            text = client.redact(text, ERROR_TEXT_LIMIT)
            error = EnvelopeError(
                reason,
                f"{method}: Altcraft error {envelope.error}" + (f": {text}" if text else ""),
                envelope.error,
            )
            if envelope.error == 401:
                # The token is refused: no other call of this run can work. A 403 denies one
                # method or object; the others may still answer.
                client.stop_run(error)
            raise error
        return envelope


def _as_collect_error(exc: BaseException, what: str) -> CollectError:
    if isinstance(exc, CollectError):
        message = exc.message if exc.message.startswith(what) else f"{what}: {exc.message}"
        return CollectError(exc.reason, message)
    if isinstance(exc, ParseError):
        return CollectError(Reason.PARSE, f"{what}: unexpected answer: {exc}")
    return CollectError(Reason.TIMEOUT, f"{what}: no answer before the deadline")


PROVIDER = Altcraft
