"""Why a collection failed: the one table of reasons every provider and the HTTP client share.

The reasons are part of the metrics contract (``messaging_exporter_collect_errors_total{reason}``);
see ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from exporter.providers.samples import Sample

if TYPE_CHECKING:
    from pydantic import ValidationError


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

    @classmethod
    def from_validation(cls, exc: ValidationError, at: str = "") -> ParseError:
        """The first problem pydantic found in a part of an answer, at its place: ``at`` (where
        the validated part is, e.g. ``campaign [2]``) and the path below it, as in
        ``campaign [2].records_count: Input should be a valid integer``. The input is never
        quoted: it may be a secret (a token answer). Raise it ``from None``."""
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in (at, *first["loc"]) if part != "")
        return cls(f"{where or 'the answer'}: {first['msg']}")


class CollectError(Exception):
    """A collection that failed for a reason from the table.

    ``partial`` carries the samples of the parts of the target that did work (e.g. the Altcraft
    resources that answered while one segment failed): they are served as fresh. ``excerpt`` is
    the start of the body that failed (about 1 KiB), where there was one; never the body.
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        partial: Sequence[Sample] = (),
        *,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.partial = tuple(partial)
        self.excerpt = excerpt

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def detached(error: CollectError) -> CollectError:
    """``error`` without the frames it was raised through and the exceptions it was raised while
    handling, so that keeping it (a run keeps one per failed request until it ends) keeps its
    reason and message, not the locals of those frames: the body of a response, its decoded
    text."""
    error.__traceback__ = None
    error.__context__ = None
    error.__cause__ = None
    return error
