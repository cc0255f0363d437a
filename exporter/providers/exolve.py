"""Exolve SMS: ``POST {base_url}/GetCount`` with ``Authorization: Bearer <api key>``, once per
label combination.

API page: ``shared/reference/providers/exolve-getcount.txt`` (Russian). What it says, and what this
module does about it:

* The body is a JSON object of filters (an empty one counts every SMS of the application); enum
  filters are sent by name (``"DIRECTION_OUTGOING"``). One request is made for every direction x
  status (and, when configured, every direction x delivery status and direction x billing status),
  so every combination gets a sample, zeros included, from the first scrape.
* ``limit`` and ``offset`` are documented filters of GetCount too; they are never sent, so a count
  can never be cut short by them.
* ``date_gte`` is RFC 3339: ``window`` sends now minus the window, in UTC with milliseconds and
  ``Z`` (as the page's example, ``2023-01-20T11:30:01.335Z``); ``number`` is the sender filter.
* The answer is ``{"count": "1"}``: an int64, which protobuf's JSON mapping sends as a string. A
  number is accepted too, and ``{}`` is 0 (proto3 leaves zero values out).
* Errors: 400 (unknown field, syntax error, invalid value), 401 (invalid token), 404.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from exporter.providers.base import MetricSpec, Provider, Run, Sample, label_value
from exporter.providers.errors import CollectError, ParseError, Reason, detached
from exporter.providers.http import ERROR_TEXT_LIMIT, ProviderClient, json_error_text
from exporter.schema.target import TargetConfig, max_response_bytes_field
from exporter.schema.types import Duration, NonEmptySecret, SecretFile, format_duration

MESSAGES = "exolve_sms_messages"
BY_DELIVERY_STATUS = "exolve_sms_messages_by_delivery_status"
BY_BILLING_STATUS = "exolve_sms_messages_by_billing_status"
ENDPOINT = "GetCount"

DIRECTIONS = ("DIRECTION_INCOMING", "DIRECTION_OUTGOING")
STATUSES = (
    "STATUS_QUEUED",
    "STATUS_TRANSMITTED",
    "STATUS_DELIVERED",
    "STATUS_FAILED",
    "STATUS_UNDERFUNDED",
    "STATUS_PROHIBITED",
)
DELIVERY_STATUSES = (
    "DELIVERY_STATUS_QUEUED",
    "DELIVERY_STATUS_TRANSMITTED",
    "DELIVERY_STATUS_DELIVERED",
    "DELIVERY_STATUS_FAILED",
)
BILLING_STATUSES = (
    "BILLING_STATUS_PREBILLED",
    "BILLING_STATUS_BILLED",
    "BILLING_STATUS_REFUNDING",
    "BILLING_STATUS_UNDERFUNDED",
    "BILLING_STATUS_REFUNDED",
    "BILLING_STATUS_FAILED",
    "BILLING_STATUS_AUTHORIZED",
)

Breakdown = Literal["status", "delivery_status", "billing_status"]

# breakdown → (the GetCount filter, its enum values and their prefix, the metric)
BREAKDOWNS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "status": ("status", STATUSES, "STATUS_", MESSAGES),
    "delivery_status": (
        "delivery_status",
        DELIVERY_STATUSES,
        "DELIVERY_STATUS_",
        BY_DELIVERY_STATUS,
    ),
    "billing_status": ("billing_status", BILLING_STATUSES, "BILLING_STATUS_", BY_BILLING_STATUS),
}

INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


def _sender(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # YAML reads 79678880033 as a number, and 0123 as an octal one: a sender is text.
        raise ValueError('write the sender in quotes, e.g. number: "79678880033"')
    return value


Sender = Annotated[
    str,
    BeforeValidator(_sender),
    Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"),
]


class ExolveTarget(TargetConfig):
    provider: Literal["exolve"]
    api_key: NonEmptySecret | None = None
    api_key_file: SecretFile | None = None
    window: Duration | None = None
    number: Sender | None = None
    breakdowns: tuple[Breakdown, ...] = Field(default=("status",), min_length=1)
    # A GetCount answer is {"count": "<int64>"}, an error a line of text.
    max_response_bytes: int = max_response_bytes_field(16 * 1024)

    SECRETS = ("api_key",)

    @field_validator("breakdowns")
    @classmethod
    def _unique(cls, value: tuple[Breakdown, ...]) -> tuple[Breakdown, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each breakdown may be given once")
        return value

    def summary(self) -> str:
        parts = [super().summary(), f"breakdowns={','.join(self.breakdowns)}"]
        if self.window is not None:
            parts.append(f"window={format_duration(self.window)}")
        if self.number is not None:
            parts.append(f"number={self.number}")
        return " ".join(parts)


def rfc3339_millis(timestamp: float) -> str:
    """Unix seconds → ``2023-01-20T11:30:01.335Z`` (UTC, milliseconds, ``Z``)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class CountRequest:
    """One GetCount call of a run: the filters it sends and the sample its count becomes."""

    metric: str
    labels: tuple[str, ...]
    body: dict[str, Any]

    def filters(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.body.items())


def count_requests(target: ExolveTarget, now: float) -> list[CountRequest]:
    """Every GetCount request of one run, in a stable order."""
    common: dict[str, Any] = {}
    if target.number is not None:
        common["number"] = target.number
    if target.window is not None:
        common["date_gte"] = rfc3339_millis(now - target.window)
    requests = []
    for breakdown in target.breakdowns:
        field, values, prefix, metric = BREAKDOWNS[breakdown]
        for direction in DIRECTIONS:
            for value in values:
                requests.append(
                    CountRequest(
                        metric,
                        (label_value(direction, "DIRECTION_"), label_value(value, prefix)),
                        {"direction": direction, field: value, **common},
                    )
                )
    return requests


def parse_count(body: object) -> int:
    """GetCount's answer → the count. ``{"count": "12"}`` (int64 as a string, the proto3 JSON
    mapping), ``{"count": 12}`` or ``{}`` (zero omitted). Raises only ParseError."""
    if not isinstance(body, dict):
        raise ParseError(f"expected an object with count, got {type(body).__name__}")
    if "count" not in body and body:
        # Only an empty object means zero: an object of other keys (an error envelope, another
        # API behind the URL) must not pass for a count of 0.
        raise ParseError("the answer has no count")
    count = body.get("count", 0)
    if isinstance(count, bool):
        raise ParseError("count is a boolean, expected an integer")
    if isinstance(count, str):
        if not _DIGITS.fullmatch(count):
            raise ParseError("count is a string that is not a non-negative integer")
        value = int(count)
    elif isinstance(count, int):
        value = count
    elif isinstance(count, float) and count.is_integer():
        value = int(count)
    else:
        raise ParseError(f"count is {type(count).__name__}, expected an integer")
    if not 0 <= value <= INT64_MAX:
        raise ParseError("count is outside 0..2^63-1")
    return value


def _first_line(body: bytes) -> str | None:
    """A short plain-text error body ("page not found", "unknown field", ...). The client redacts
    and cuts the text: what is cut here is well past its cut, so no secret is split where the
    client would see a part of it."""
    text = body[: ERROR_TEXT_LIMIT * 8].decode("utf-8", "replace").strip().splitlines()
    return text[0] if text and text[0].isprintable() else None


def _message(decoded: Any) -> str | None:
    """The gRPC-gateway error ``{"code", "message"}``."""
    if isinstance(decoded, dict):
        for key in ("message", "error"):
            if isinstance(decoded.get(key), str) and decoded[key]:
                return str(decoded[key])
    if isinstance(decoded, str) and decoded:
        return decoded
    return None


_error_text = json_error_text(_message, otherwise=_first_line)


class Exolve(Provider[ExolveTarget]):
    name = "exolve"
    config_model = ExolveTarget
    metrics = (
        MetricSpec(
            MESSAGES,
            "SMS messages by direction and status (count of POST GetCount filtered by direction "
            "and status, and by the target's number and window when set), refreshed every "
            "interval.",
            ("direction", "status"),
        ),
        MetricSpec(
            BY_DELIVERY_STATUS,
            "SMS messages by direction and delivery status (count of POST GetCount filtered by "
            "direction and delivery_status, and by the target's number and window when set), "
            "refreshed every interval.",
            ("direction", "delivery_status"),
        ),
        MetricSpec(
            BY_BILLING_STATUS,
            "SMS messages by direction and billing status (count of POST GetCount filtered by "
            "direction and billing_status, and by the target's number and window when set), "
            "refreshed every interval.",
            ("direction", "billing_status"),
        ),
    )

    async def _count(self, client: ProviderClient, request: CountRequest) -> Sample | CollectError:
        """One GetCount. A failure is returned, not raised, and without the frames it passed
        through (they hold the answer): the run keeps every request's failure until it ends."""
        try:
            answer = await client.post_json(
                f"{self.config.base_url}/GetCount",
                endpoint=ENDPOINT,
                json_body=request.body,
                headers={
                    "Accept": "application/json",
                    "Authorization": f"Bearer {self.config.secret('api_key')}",
                },
                # A count is a read: safe to retry.
                idempotent=True,
                error_text=_error_text,
            )
            count = parse_count(answer)
        except CollectError as exc:
            return detached(exc)
        except ParseError as exc:
            return CollectError(Reason.PARSE, f"GetCount: unexpected answer: {exc}")
        return Sample(request.metric, request.labels, float(count))

    async def collect(self, run: Run) -> list[Sample]:
        requests = count_requests(self.config, run.clock.time())
        # All at once: the client keeps at most max_concurrency of them in flight.
        outcomes = await asyncio.gather(
            *(self._count(run.client, request) for request in requests), return_exceptions=True
        )
        samples: list[Sample] = []
        failures: list[tuple[CountRequest, CollectError]] = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, Sample):
                samples.append(outcome)
            elif isinstance(outcome, CollectError):
                failures.append((request, outcome))
            else:
                raise outcome
        if failures:
            # The run fails with the first failure's reason; the counts that came are fresh.
            request, first = failures[0]
            raise CollectError(
                first.reason,
                f"{len(failures)} of {len(requests)} GetCount requests failed; the first "
                f"({request.filters()}): {first.message}",
                partial=samples,
            )
        return samples


PROVIDER = Exolve
