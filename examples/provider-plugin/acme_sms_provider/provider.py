"""Acme SMS message counts: ``GET {base_url}/v1/stats`` with the account's key in ``X-Api-Key``.

Acme SMS is a fictional platform, an example of a provider kept in a package of its own. Its one
endpoint answers, for the account the key belongs to::

    {"messages": [{"direction": "OUTBOUND", "status": "DELIVERED", "count": 1520}, ...]}

``count`` is the number of messages of that direction and status in Acme's retention window;
each (direction, status) appears at most once, and an account with no traffic answers an empty
list. A refused key is HTTP 401, other errors come as ``{"error": {"code", "message"}}``, with
HTTP 200 too while Acme's counters are being rebuilt (``code`` ``COUNTERS_UNAVAILABLE``).
"""

from __future__ import annotations

from typing import Literal

from exporter.plugin import (
    CollectError,
    MetricSpec,
    NonEmptySecret,
    ParseError,
    Provider,
    Reason,
    Run,
    Sample,
    SecretFile,
    TargetConfig,
    json_error_text,
    label_value,
)
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

NAME = "acme"
MESSAGES = "acme_sms_messages"


class AcmeTarget(TargetConfig):
    """A target: ``base_url`` (``https://api.acme-sms.example/``) and the account's API key, inline
    (``api_key``) or, better, from a file (``api_key_file``, a mounted Secret)."""

    provider: Literal["acme"]
    api_key: NonEmptySecret | None = None
    api_key_file: SecretFile | None = None

    SECRETS = ("api_key",)


class _Count(BaseModel):
    model_config = ConfigDict(extra="ignore")

    direction: StrictStr
    status: StrictStr
    count: StrictInt


class _Stats(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[_Count]


def parse_stats(body: object) -> list[Sample]:
    """The decoded answer of ``GET v1/stats`` → samples. Pure; raises only :class:`ParseError`.

    Directions and statuses become lowercase snake_case label values (``OUTBOUND`` →
    ``outbound``); values Acme adds pass through the same way, never dropped.
    """
    try:
        stats = _Stats.model_validate(body)
    except ValidationError as exc:
        raise ParseError.from_validation(exc) from None
    samples: list[Sample] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(stats.messages):
        labels = (label_value(item.direction), label_value(item.status))
        if labels in seen:
            raise ParseError(f"messages[{index}]: {labels[0]}/{labels[1]} appears twice")
        if item.count < 0:
            raise ParseError(f"messages[{index}]: negative count {item.count}")
        seen.add(labels)
        samples.append(Sample(MESSAGES, labels, float(item.count)))
    return samples


def error_message(body: object) -> str | None:
    """The message of Acme's decoded ``{"error": {"code", "message"}}`` body, or None."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    code = error.get("code")
    return f"{error['message']} ({code})" if isinstance(code, str) else error["message"]


error_text = json_error_text(error_message)
"""The same for a raw error answer (HTTP 4xx/5xx): what the collect error quotes."""


class Acme(Provider[AcmeTarget]):
    name = NAME
    config_model = AcmeTarget
    requires_api = (1, 0)
    metrics = (
        MetricSpec(
            MESSAGES,
            "Acme SMS messages by direction and status (count of GET v1/stats), refreshed every "
            "interval.",
            ("direction", "status"),
        ),
    )

    async def collect(self, run: Run) -> list[Sample]:
        body = await run.client.get_json(
            f"{self.config.base_url}/v1/stats",
            endpoint="v1/stats",
            headers={
                "Accept": "application/json",
                "X-Api-Key": self.config.secret("api_key") or "",
            },
            error_text=error_text,
        )
        # An error envelope in a 200 answer is the provider's own error, not a shape problem.
        if isinstance(body, dict) and "error" in body:
            detail = error_message(body) or "an error without a message"
            raise CollectError(Reason.PROVIDER_ERROR, f"GET v1/stats: {detail}")
        return parse_stats(body)


PROVIDER = Acme
