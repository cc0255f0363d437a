"""structlog set-up: JSON lines (or logfmt, or console), stdlib loggers (aiohttp, asyncio) routed
through the same processors, and a redactor that removes every configured secret from every event,
tracebacks included."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "<redacted>"


class SecretRedactor:
    """Replaces known secret values anywhere in an event's strings. Secrets shorter than four
    characters are not looked for (they would mangle ordinary words)."""

    RUNTIME_LIMIT = 256

    def __init__(self) -> None:
        self._configured: set[str] = set()
        self._runtime: dict[str, None] = {}  # insertion-ordered, oldest dropped first
        self._secrets: tuple[str, ...] = ()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """The secrets of the config (replaced on every load)."""
        self._configured = {secret for secret in secrets if len(secret) >= 4}
        self._rebuild()

    def add_runtime_secret(self, secret: str) -> None:
        """A secret obtained while running, such as an OAuth access token; the newest
        ``RUNTIME_LIMIT`` are kept."""
        if len(secret) < 4 or secret in self._runtime:
            return
        self._runtime[secret] = None
        while len(self._runtime) > self.RUNTIME_LIMIT:
            del self._runtime[next(iter(self._runtime))]
        self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is removed whole.
        found = self._configured | set(self._runtime)
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(item) for item in value)
        if isinstance(value, bytes | bytearray | BaseException):
            return self.redact(repr(value))
        return value

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        if not self._secrets:
            return event_dict
        return {key: self._scrub(value) for key, value in event_dict.items()}


redactor = SecretRedactor()


def _drop_color_message(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def _renderer(fmt: str) -> Processor:
    """``json``: one JSON object a line; ``logfmt``: ``key=value`` pairs, the time, level, logger
    and event first; ``console``: plain text for a terminal."""
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    if fmt == "logfmt":
        return structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "logger", "event"],
            drop_missing=True,
            bool_as_flag=False,
        )
    return structlog.processors.JSONRenderer()


def setup_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger; may be called again (after a reload)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
    ]
    renderer = _renderer(fmt)
    if fmt == "console":
        final: list[Processor] = [redactor, renderer]
    else:
        # Tracebacks become a string field first, so the redactor sees them too.
        final = [structlog.processors.format_exc_info, redactor, renderer]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # below the level: dropped before any work
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log is noise at every scrape; it is on only at debug level.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
