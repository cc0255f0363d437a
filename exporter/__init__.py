"""messaging-stats-exporter: Prometheus metrics from messaging platforms' statistics APIs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("messaging-stats-exporter")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
