"""messaging-stats-exporter: Prometheus metrics from messaging platforms' statistics APIs."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Looked up on first use: importlib.metadata costs the serving process (which imports this
    # package and never asks for the version) ~2.5 MiB.
    if name != "__version__":
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("messaging-stats-exporter")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
