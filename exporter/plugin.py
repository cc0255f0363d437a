"""The plugin API: everything a provider plugin and its simulator part import from the exporter.

A plugin imports from this module only; the modules these names come from are the exporter's own
and may move or change in any release. What may change here, and in which releases, is said in
``docs/providers/writing-a-provider.md`` ("Stability"); :data:`API_VERSION` is the version of
this API, and a part that needs a newer one declares it in ``requires_api``.

The simulator's names (:class:`SimulatorPart`, :class:`Simulator`, ...) are imported on first
use, so that a provider plugin does not bring the simulator into an exporter that serves no demo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.clock import Clock
from exporter.providers.base import (
    API_VERSION,
    MetricSpec,
    Provider,
    Run,
    Sample,
    as_written,
    label_value,
)
from exporter.providers.errors import CollectError, ParseError, Reason
from exporter.providers.http import (
    ERROR_TEXT_LIMIT,
    ProviderClient,
    basic_auth,
    decode_json,
    json_error_text,
)
from exporter.schema.target import TargetConfig, max_response_bytes_field
from exporter.schema.types import Duration, NonEmptySecret, SecretFile, key_problem

if TYPE_CHECKING:
    from exporter.simulator import (
        SIMULATOR,
        Fault,
        Simulator,
        SimulatorPart,
        demo_targets,
        request_fault,
    )
    from exporter.simulator import start as start_simulator

__all__ = [
    "API_VERSION",
    "ERROR_TEXT_LIMIT",
    "SIMULATOR",
    "Clock",
    "CollectError",
    "Duration",
    "Fault",
    "MetricSpec",
    "NonEmptySecret",
    "ParseError",
    "Provider",
    "ProviderClient",
    "Reason",
    "Run",
    "Sample",
    "SecretFile",
    "Simulator",
    "SimulatorPart",
    "TargetConfig",
    "as_written",
    "basic_auth",
    "decode_json",
    "demo_targets",
    "json_error_text",
    "key_problem",
    "label_value",
    "max_response_bytes_field",
    "request_fault",
    "start_simulator",
]

# Name here -> name in exporter.simulator.
_SIMULATOR_NAMES = {
    "SIMULATOR": "SIMULATOR",
    "Fault": "Fault",
    "Simulator": "Simulator",
    "SimulatorPart": "SimulatorPart",
    "demo_targets": "demo_targets",
    "request_fault": "request_fault",
    "start_simulator": "start",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name in _SIMULATOR_NAMES:
            from exporter import simulator

            return getattr(simulator, _SIMULATOR_NAMES[name])
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
