"""The table of providers, found by module: a provider is a module here with ``PROVIDER = ...``.

Adding a provider is adding its module; nothing else in the core changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from exporter.providers.base import Provider


@cache
def registry() -> dict[str, type[Provider[Any]]]:
    """Provider name → provider class, sorted by name."""
    found: dict[str, type[Provider[Any]]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        provider = getattr(module, "PROVIDER", None)
        if provider is None:
            continue
        if provider.name in found:
            raise RuntimeError(f"two provider modules claim the name {provider.name!r}")
        found[provider.name] = provider
    return dict(sorted(found.items()))
