"""structlog set-up: JSON lines (or logfmt, or console), stdlib loggers (aiohttp, asyncio) routed
through the same processors, and the service's redactor applied to every event, tracebacks
included."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from exporter.redaction import Redactor


def redacting(redactor: Redactor) -> Processor:
    """The processor that passes every value of an event through ``redactor``."""

    def redact(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        return {key: redactor.scrub(value) for key, value in event_dict.items()}

    return redact


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


def setup_logging(
    level: str = "info",
    fmt: str = "json",
    stream: Any = None,
    *,
    redactor: Redactor | None = None,
) -> None:
    """Configure structlog and the stdlib root logger; may be called again (after a reload).
    ``redactor`` removes secrets from every event (the service's; without it, none are known)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
    ]
    renderer = _renderer(fmt)
    # Tracebacks become a string field first, so the redactor sees them too (the console
    # renderer prints that field as it is).
    final: list[Processor] = [
        structlog.processors.format_exc_info,
        redacting(redactor or Redactor()),
        renderer,
    ]
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
