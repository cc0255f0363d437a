"""Reusable pieces of the configuration models: the strict base model, durations, URLs, secrets."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError
from yarl import URL

from exporter.bounded import SECRET_FILE_MAX_BYTES, FileProblem, read_text

KEY_PROBLEM = "key_problem"
"""The error type of :func:`key_problem`; its context carries ``key`` and ``message``."""


def key_problem(key: str, message: str) -> PydanticCustomError:
    """A problem a model validator finds with one of the model's own keys.

    Raised from a model validator, the error would be located at the model
    (``targets[0]``); the config loader reads ``key`` from the error's context and reports it at
    the key itself (``targets[0].token: give either token or token_file, not both``).
    """
    return PydanticCustomError(KEY_PROBLEM, "{key}: {message}", {"key": key, "message": message})


class StrictModel(BaseModel):
    """Unknown keys are an error: a typo must not silently disable a target."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``500ms``, ``30s``, ``5m``, ``1h``, ``1h30m`` or a bare number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 30s, 5m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"invalid duration {value!r}: use a number of seconds or a string such as "
                    "500ms, 30s, 5m, 1h, 1h30m"
                ) from None
    else:
        raise ValueError("a duration is a number of seconds or a string such as 30s, 5m, 1h")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


MIN_DURATION = 0.001
"""No duration is shorter: a loop paced by a shorter one spins a core."""
MIN_INTERVAL = 1.0
"""The shortest ``interval``: the providers' statistics change more slowly, and each run costs
the provider and the exporter requests."""
MIN_TIMEOUT = 0.1
"""The shortest ``timeout``: a collection over a network can hardly finish sooner."""


def at_least(minimum: float) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds < minimum:
            raise ValueError(
                f"must be at least {format_duration(minimum)}; it is {format_duration(seconds)}"
            )
        return seconds

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration), at_least(MIN_DURATION)]
"""Seconds, written in the config as ``30s``, ``5m``, ... or a bare number; at least
:data:`MIN_DURATION`."""
IntervalDuration = Annotated[float, BeforeValidator(parse_duration), at_least(MIN_INTERVAL)]
"""A target's ``interval``: a :data:`Duration` of at least :data:`MIN_INTERVAL`."""
TimeoutDuration = Annotated[float, BeforeValidator(parse_duration), at_least(MIN_TIMEOUT)]
"""A target's ``timeout``: a :data:`Duration` of at least :data:`MIN_TIMEOUT`."""


def format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < MIN_DURATION:
        return f"{seconds:g}s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def http_url(value: str, credentials: str = "the target's secret keys") -> URL:
    """``value`` as an http(s) URL with a host and without credentials, or ValueError saying
    what is wrong; ``credentials`` names the keys that carry them instead."""
    try:
        url = URL(value)
    except (ValueError, TypeError):
        raise ValueError("not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"must be an http or https URL, got scheme {url.scheme!r}")
    if not url.host:
        raise ValueError("the URL has no host")
    if url.user is not None or url.password is not None:
        # Credentials in a URL end up in logs and error texts: they have keys of their own.
        raise ValueError(f"must not carry credentials; use {credentials} instead")
    return url


def _check_base_url(value: str) -> str:
    url = http_url(value)
    if url.query_string or url.fragment:
        raise ValueError("must not have a query string or fragment")
    return value.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_check_base_url)]
"""An http(s) URL without credentials, stored without a trailing slash."""


def read_secret_file(value: object) -> SecretStr:
    """Read a ``*_file`` secret: the file's text without its trailing newline (a Secret mount).
    Only a regular file of at most :data:`~exporter.bounded.SECRET_FILE_MAX_BYTES` is read."""
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("must be the path of a file that holds the secret")
    path = str(value)
    try:
        text = read_text(path, SECRET_FILE_MAX_BYTES)
    except FileProblem as exc:
        raise ValueError(f"secret file {path!r} {exc}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"secret file {path!r} is empty")
    return SecretStr(secret)


SecretFile = Annotated[SecretStr, BeforeValidator(read_secret_file)]
"""A ``*_file`` key: the path is read at load time and the field holds the secret itself."""

NonEmptySecret = Annotated[SecretStr, Field(min_length=1)]


class SecretsModel(StrictModel):
    """A model whose secrets come either inline (``password``) or from a file (``password_file``).

    Subclasses list their secret keys in ``SECRETS`` and declare both fields; exactly one of each
    pair must be set, except for the keys listed in ``OPTIONAL_SECRETS``.
    """

    SECRETS: ClassVar[tuple[str, ...]] = ()
    OPTIONAL_SECRETS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_of_each_secret(self) -> Any:
        for key in self.SECRETS:
            inline = getattr(self, key, None)
            from_file = getattr(self, f"{key}_file", None)
            if inline is not None and from_file is not None:
                raise key_problem(key, f"give either {key} or {key}_file, not both")
            if inline is None and from_file is None and key not in self.OPTIONAL_SECRETS:
                raise key_problem(key, f"{key} or {key}_file is required")
        return self

    def secret(self, key: str) -> str | None:
        """The value of secret ``key``, from whichever of the two keys gave it."""
        value = getattr(self, key, None) or getattr(self, f"{key}_file", None)
        return value.get_secret_value() if isinstance(value, SecretStr) else None

    def secret_values(self) -> list[str]:
        """Every secret this model holds, for the log redactor."""
        values = []
        for key in self.SECRETS:
            value = self.secret(key)
            if value:
                values.append(value)
        return values


METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
"""A Prometheus metric name (the classic character set); whole names only (``fullmatch``)."""
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""A Prometheus label name (the classic character set, which every Prometheus version reads);
whole names only (``fullmatch``)."""


def is_metric_name(name: str) -> bool:
    """A metric name of the Prometheus text format (the legacy character set)."""
    return METRIC_NAME.fullmatch(name) is not None


def is_label_name(name: str) -> bool:
    """A label name of the Prometheus text format; ``__`` names are reserved for Prometheus."""
    return LABEL_NAME.fullmatch(name) is not None and not name.startswith("__")


MAX_LABELS = 32
"""Constant labels on one target: each is written into every one of its series."""
MAX_LABEL_VALUE_CHARS = 1024


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Constant labels: Prometheus label names that are not reserved (``__`` starts the names
    Prometheus keeps for itself), values of a bounded length. A problem is reported at the
    label's own key (``labels.team``)."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"must have at most {MAX_LABELS} labels; it has {len(labels)}")
    for name, value in labels.items():
        if not LABEL_NAME.fullmatch(name):
            raise key_problem(
                name,
                "is not a valid label name: letters, digits and _, not starting with a digit",
            )
        if name.startswith("__"):
            raise key_problem(name, "label names starting with __ are reserved for Prometheus")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise key_problem(
                name, f"must have at most {MAX_LABEL_VALUE_CHARS} characters; it has {len(value)}"
            )
    return labels


Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
"""``labels`` of a target or of ``defaults``: constant labels added to every series of a target."""
