"""Why a collection failed: the one table of reasons every provider and the HTTP client share.

The reasons are part of the metrics contract (``messaging_exporter_collect_errors_total{reason}``);
see ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from exporter.providers.samples import Sample


class Reason(StrEnum):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    PROVIDER_ERROR = "provider_error"
    PARSE = "parse"


def reason_for_status(status: int) -> Reason | None:
    """The reason an HTTP status means, or None for a success (2xx/3xx)."""
    if status in (401, 403):
        return Reason.AUTH
    if status == 429:
        return Reason.RATE_LIMITED
    if 400 <= status < 500:
        return Reason.HTTP_4XX
    if status >= 500:
        return Reason.HTTP_5XX
    return None


class ParseError(ValueError):
    """A provider answer that is not what its API page promises.

    Parsers raise only this; its message describes the problem and never quotes secrets.
    """


class CollectError(Exception):
    """A collection that failed for a reason from the table.

    ``partial`` carries the samples of the parts of the target that did work (e.g. the Altcraft
    resources that answered while one segment failed): they are served as fresh.
    """

    def __init__(self, reason: Reason, message: str, partial: Sequence[Sample] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.partial = tuple(partial)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"
