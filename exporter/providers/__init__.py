"""The table of providers, found through entry points.

A provider is a module that defines ``PROVIDER = <a Provider subclass>`` and is registered in the
entry-point group ``messaging_stats_exporter.providers`` of its distribution's metadata: the
entry point's name is the provider's name, its value the module. The built-in providers register
there too (the exporter's ``pyproject.toml``), so a package installed next to the exporter adds a
provider the same way, without changing the exporter. ``docs/providers/writing-a-provider.md``
says how to write one.

A plugin that cannot be used (its module fails to import, has no ``PROVIDER``, claims another name,
or would clash with a provider already registered) is logged with its name and the reason and left
out; the other providers keep working, and a config that names the missing one gets the usual
"unknown provider" error.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

from exporter.entrypoints import DISTRIBUTION, early_logger, load_plugins, skip_plugin
from exporter.providers.base import MetricSpec, Provider, api_problem
from exporter.schema.target import TargetConfig
from exporter.schema.types import is_label_name, is_metric_name

PROVIDERS_GROUP = "messaging_stats_exporter.providers"
LOGGER = "exporter.providers"

# The exporter's own metric families: a provider's metric may not take one of these names.
RESERVED_METRIC_PREFIX = "messaging_exporter_"


def _is_literal_of(annotation: Any, name: str) -> bool:
    return typing.get_origin(annotation) is typing.Literal and typing.get_args(annotation) == (
        name,
    )


def _problem(
    name: str, module: Any, taken: dict[str, type[Provider[Any]]], metrics: dict[str, str]
) -> str | None:
    """Why this module cannot be the provider ``name``, or None when it can. Checked here, not
    found later: a wrong config model would break every target's config, a metric family shared
    with another provider (or the exporter) would break the exposition."""
    provider = getattr(module, "PROVIDER", None)
    if provider is None:
        return "the module defines no PROVIDER"
    if not (isinstance(provider, type) and issubclass(provider, Provider)):
        return f"PROVIDER is {provider!r}, not a subclass of exporter.plugin.Provider"
    if (mismatch := api_problem(getattr(provider, "requires_api", None))) is not None:
        return mismatch
    claimed = getattr(provider, "name", None)
    if claimed != name:
        return f"PROVIDER.name is {claimed!r}, not the entry point's name {name!r}"
    if name in taken:
        return f"the provider name {name!r} is already taken by {taken[name].__module__}"
    model = getattr(provider, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, TargetConfig)):
        return "config_model is not a subclass of exporter.plugin.TargetConfig"
    field = model.model_fields.get("provider")
    if field is None or not _is_literal_of(field.annotation, name):
        return f'config_model.provider must be Literal["{name}"]'
    specs = getattr(provider, "metrics", None)
    if not isinstance(specs, tuple) or not all(isinstance(s, MetricSpec) for s in specs):
        return "metrics is not a tuple of MetricSpec"
    own: set[str] = set()
    for spec in specs:
        if not is_metric_name(spec.name) or spec.name.startswith(RESERVED_METRIC_PREFIX):
            return f"metric name {spec.name!r} is not valid or is reserved for the exporter"
        if spec.name in metrics or spec.name in own:
            return f"metric {spec.name!r} is already declared by {metrics.get(spec.name, name)!r}"
        own.add(spec.name)
        if not spec.help.strip():
            return f"metric {spec.name!r} has no HELP text"
        labels = ("account", *spec.labels)
        bad = [label for label in labels if not is_label_name(label)]
        if bad or len(set(labels)) != len(labels):
            return f"metric {spec.name!r}: invalid or repeated labels {spec.labels!r}"
    return None


@cache
def registry() -> dict[str, type[Provider[Any]]]:
    """Provider name → provider class, sorted by name: every usable provider registered in the
    entry-point group (the built-ins and the installed plugins)."""
    found: dict[str, type[Provider[Any]]] = {}
    metrics: dict[str, str] = {}
    for entry, module in load_plugins(PROVIDERS_GROUP):
        problem = _problem(entry.name, module, found, metrics)
        if problem is not None:
            skip_plugin(PROVIDERS_GROUP, entry, problem)
            continue
        provider: type[Provider[Any]] = module.PROVIDER
        found[entry.name] = provider
        metrics.update((spec.name, entry.name) for spec in provider.metrics)
    if not found:
        early_logger(LOGGER).error(
            "no providers registered",
            group=PROVIDERS_GROUP,
            hint=f"is {DISTRIBUTION} installed (pip install .)? "
            "Providers are found through its entry points, not from the source tree alone",
        )
    return dict(sorted(found.items()))
