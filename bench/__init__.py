"""Benchmarks (``python -m bench``, ``python -m bench.load``); see docs/performance.md. CI does
not run them."""
