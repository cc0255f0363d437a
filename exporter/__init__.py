"""messaging-stats-exporter: Prometheus metrics from messaging platforms' statistics APIs."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("messaging-stats-exporter")
except PackageNotFoundError:  # pragma: no cover - a source tree without an install
    __version__ = "0.0.0+unknown"
