"""``GET /api/v1/targets``: every target of this replica and the config's last reload, as JSON
for tooling. Pure: the status page's view in, a JSON-ready dict out, so that the page and the API
show the same facts (the same states, the same redacted error texts).

The document follows Prometheus's API envelope (``{"status": "success", "data": ...}``); its keys
are a contract, documented in docs/api.md. Times are Unix seconds (floats) or null."""

from __future__ import annotations

from typing import Any

from exporter.web.status import StatusView, TargetRow

TARGETS_PATH = "/api/v1/targets"


def target_entry(row: TargetRow) -> dict[str, Any]:
    """One target: its config's facts, then what its collections produced."""
    error = None
    if row.reason is not None or row.last_error is not None:
        error = {"reason": row.reason, "message": row.last_error}
    return {
        "name": row.account,
        "provider": row.provider,
        "labels": dict(row.labels),
        "host": row.host,
        "state": row.state,
        "interval": row.interval,
        "last_attempt": row.last_attempt,
        "last_success": row.last_success,
        "last_duration": row.last_duration,
        "next_attempt": row.next_attempt,
        "consecutive_failures": row.consecutive_failures,
        "last_error": error,
        "series": row.series,
    }


def targets_document(view: StatusView) -> dict[str, Any]:
    """The whole answer: the targets in config order, and the last config (re)load."""
    return {
        "status": "success",
        "data": {
            "reload": {
                "time": view.last_reload,
                "success": view.last_reload_ok,
                "error": view.last_reload_error,
            },
            "targets": [target_entry(row) for row in view.targets],
        },
    }
