"""Plugins found through entry points: each entry point of a group with the object it names.

The provider registry (:mod:`exporter.providers`) and the simulator's (:mod:`exporter.simulator`)
read their groups through :func:`load_plugins`. A plugin that fails to load, or that its group's
reader refuses, is logged with :func:`skip_plugin` and left out; the others keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog

DISTRIBUTION = "messaging-stats-exporter"
LOGGER = "exporter.entrypoints"


def early_logger(name: str) -> Any:
    """structlog's logger once logging is set up. Before that (the registry is first read while
    the config loads) a JSON line on stderr: stdout carries the answer of ``--once`` and
    ``--check-config``, and structlog's unconfigured default would print there."""
    if structlog.is_configured():
        return structlog.get_logger(name)
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    ).bind(logger=name)


def _distribution(entry: EntryPoint) -> str:
    """The name of the package that registered the entry point; "?" when its metadata does not
    say (a package being reinstalled meanwhile has metadata without a name for a moment)."""
    name = entry.dist.name if entry.dist is not None else None
    return name if isinstance(name, str) and name else "?"


def _own(entry: EntryPoint) -> bool:
    """Registered by the exporter itself (a built-in)."""
    return _distribution(entry).replace("_", "-").lower() == DISTRIBUTION


def skip_plugin(
    group: str, entry: EntryPoint, reason: str, exc: BaseException | None = None
) -> None:
    """Log a plugin that is left out: its name, module, distribution and why."""
    early_logger(LOGGER).error(
        "plugin left out",
        group=group,
        plugin=entry.name,
        module=entry.value,
        distribution=_distribution(entry),
        error=reason,
        exc_info=exc,
    )


def load_plugins(group: str) -> Iterator[tuple[EntryPoint, Any]]:
    """Each entry point of ``group`` with the object it names, the exporter's own first, then by
    name. One that fails to load is logged (with its traceback) and skipped, never raised: one
    broken plugin must not take the others down."""
    found = sorted(entry_points(group=group), key=lambda e: (not _own(e), e.name, e.value))
    for entry in found:
        try:
            loaded = entry.load()
        except Exception as exc:
            skip_plugin(group, entry, f"import failed: {type(exc).__name__}: {exc}", exc)
            continue
        yield entry, loaded
