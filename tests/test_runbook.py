"""What the operator docs quote is what the exporter emits: every metric name in README.md and
docs/*.md exists in the code, every provider metric and every ``reason`` is in the metrics
reference, and every log event the docs name (event `...`) is logged by the exporter."""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

import exporter.providers
from exporter.providers.errors import Reason

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "docs" / "runbook.md",
    ROOT / "docs" / "metrics.md",
    ROOT / "docs" / "configuration.md",
    ROOT / "docs" / "scaling.md",
    ROOT / "docs" / "development.md",
]
METRIC = re.compile(
    r"(?<![\w/.-])((?:messaging_exporter|altcraft|thulium|trustlat|exolve)_[a-z0-9_]*[a-z0-9])\b"
)
SUFFIXES = ("_total", "_bucket", "_count", "_sum")
EVENT = re.compile(r"\bevent\s+`([^`]+)`")


@cache
def source_strings() -> frozenset[str]:
    """Every string literal (single or double quoted, on one line) in exporter/**/*.py."""
    found: set[str] = set()
    for path in (ROOT / "exporter").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found.update(re.findall(r'"((?:[^"\\\n]|\\.)*)"', text))
        found.update(re.findall(r"'((?:[^'\\\n]|\\.)*)'", text))
    return frozenset(found)


@cache
def provider_metrics() -> dict[str, str]:
    """Every provider MetricSpec name → its provider, from the provider modules themselves."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(exporter.providers.__path__):
        module = importlib.import_module(f"exporter.providers.{info.name}")
        provider = getattr(module, "PROVIDER", None)
        if provider is None:
            continue
        for spec in provider.metrics:
            found[spec.name] = provider.name
    return found


def quoted_metrics(path: Path) -> set[str]:
    return set(METRIC.findall(path.read_text(encoding="utf-8")))


def test_every_provider_has_metric_specs() -> None:
    providers = set(provider_metrics().values())
    assert providers >= {"altcraft", "thulium", "trustlat", "exolve"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_metric_a_doc_quotes_exists(doc: Path) -> None:
    known = set(provider_metrics()) | {s for s in source_strings() if METRIC.fullmatch(s)}
    unknown = []
    for name in sorted(quoted_metrics(doc)):
        base = name
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in known:
                base = name.removesuffix(suffix)
        if base not in known:
            unknown.append(name)
    assert not unknown, f"{doc.name} quotes metrics the exporter does not have: {unknown}"


def test_the_docs_quote_metrics_at_all() -> None:
    """The extraction works: the runbook and the reference quote the exporter's own metrics."""
    for doc in (ROOT / "docs" / "runbook.md", ROOT / "docs" / "metrics.md", ROOT / "README.md"):
        assert "messaging_exporter_collect_success" in quoted_metrics(doc), doc.name


def test_the_metrics_reference_lists_every_metric_and_reason() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = quoted_metrics(ROOT / "docs" / "metrics.md")
    missing = sorted(set(provider_metrics()) - documented)
    assert not missing, f"docs/metrics.md does not describe {missing}"
    own = {
        "messaging_exporter_collect_success",
        "messaging_exporter_collect_duration_seconds",
        "messaging_exporter_last_success_timestamp_seconds",
        "messaging_exporter_collect_interval_seconds",
        "messaging_exporter_collect_errors_total",
        "messaging_exporter_provider_request_duration_seconds",
        "messaging_exporter_build_info",
        "messaging_exporter_config_last_reload_successful",
        "messaging_exporter_shard_info",
        "messaging_exporter_targets",
    }
    assert own <= documented
    for reason in Reason:
        assert f"| `{reason.value}` |" in text, f"reason {reason.value} is not in the table"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_log_event_a_doc_quotes_is_logged(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    events = {" ".join(event.split()) for event in EVENT.findall(text)}
    unknown = sorted(event for event in events if event not in source_strings())
    assert not unknown, f"{doc.name} quotes log events the exporter never logs: {unknown}"


def test_the_docs_quote_log_events() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "collection" in EVENT.findall(runbook)
    assert "collection" in EVENT.findall(readme)


def test_the_docs_do_not_say_a_quiet_log_means_a_stuck_loop() -> None:
    """At info a successful collection logs nothing, so missing lines prove nothing."""
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    assert "no `collection` lines" not in runbook
    assert "one `collection` line per run" not in runbook
    assert "a successful collection logs nothing" in " ".join(runbook.split())
