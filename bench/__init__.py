"""Benchmarks of issue 9 (``python -m bench``); see docs/performance.md. CI does not run them."""
