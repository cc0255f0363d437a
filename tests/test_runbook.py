"""What the operator docs quote is what the exporter emits: every metric name in README.md and
docs/*.md exists in the code, every provider metric and every ``reason`` is in the metrics
reference, every log event the docs name (event `...`) is logged by the exporter, and the error
texts of the failure modes are the exporter's own (a hung provider logs one the docs give).

The providers come from the registry, as the exporter finds them: a new built-in provider is
checked here without a change to this file."""

from __future__ import annotations

import io
import json
import logging
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import structlog

from exporter import simulator
from exporter.logs import setup_logging
from exporter.providers import PROVIDERS_GROUP, registry
from exporter.providers.base import Provider
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


def builtin_providers() -> dict[str, type[Provider[Any]]]:
    """The registered providers that ship with the exporter (an installed plugin documents its
    own metrics; docs/metrics.md documents these)."""
    return {
        name: provider
        for name, provider in registry().items()
        if provider.__module__.startswith("exporter.")
    }


# A metric name: the exporter's own prefix, or the first word of a provider metric's name.
_PREFIXES = sorted(
    {"messaging_exporter"}
    | {spec.name.split("_")[0] for provider in registry().values() for spec in provider.metrics}
)
METRIC = re.compile(r"(?<![\w/.-])((?:" + "|".join(_PREFIXES) + r")_[a-z0-9_]*[a-z0-9])\b")
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


def provider_metrics(providers: dict[str, type[Provider[Any]]] | None = None) -> dict[str, str]:
    """Every provider MetricSpec name → its provider (of ``providers``, default every registered
    one)."""
    providers = registry() if providers is None else providers
    return {spec.name: name for name, provider in providers.items() for spec in provider.metrics}


def quoted_metrics(path: Path) -> set[str]:
    return set(METRIC.findall(path.read_text(encoding="utf-8")))


def test_every_provider_the_exporter_registers_is_found_and_has_metric_specs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    registered = pyproject["project"]["entry-points"][PROVIDERS_GROUP]
    assert set(builtin_providers()) == set(registered)
    for name, provider in registry().items():
        assert provider.metrics, f"provider {name} declares no metric"


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
    missing = sorted(set(provider_metrics(builtin_providers())) - documented)
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


# ------------------------------------------------------------------- error texts of the failures
CODE_SPAN = re.compile(r"`([^`]+)`")
# What a quoted error text stands for rather than spells: a method and URL, <a description>,
# "...", a number (N, M, 42%) and the rest the exporter writes as it is.
PLACEHOLDER = re.compile(
    r"(?:GET|POST) https://host/path|<[^>]*>|\.\.\.|\b[NMK](?=s?\b)|\b\d+(?:\.\d+)?%?"
)
PROVIDER_PAGES = ROOT / "docs" / "providers"


def failure_table(doc: Path) -> list[list[str]]:
    """The rows (cells) of the tables in ``doc`` whose last column is what the log says."""
    rows: list[list[str]] = []
    header: list[str] | None = None
    for line in doc.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if header is None:
            header = cells
        elif not set(line) <= set("|- ") and "log" in header[-1]:
            rows.append(cells)
    return rows


def timeout_texts_of(doc: Path) -> list[str]:
    """The error texts ``doc``'s failure table quotes for reason ``timeout``."""
    return [
        text
        for cells in failure_table(doc)
        if "`timeout`" in cells[1:-1]
        for text in CODE_SPAN.findall(cells[-1])
    ]


def which_timeout_texts() -> list[str]:
    """The texts docs/metrics.md's "Which timeout text" lists, one a bullet."""
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text.split("### Which timeout text", 1)[1].split("\n#", 1)[0]
    return [match.group(1) for match in re.finditer(r"^\* `([^`]+)`", section, re.MULTILINE)]


def fixed_parts(text: str) -> list[str]:
    """The parts of a quoted error text that the exporter writes as they are."""
    parts = (part.strip(" :;,()") for part in PLACEHOLDER.split(text))
    return [part for part in parts if len(re.sub(r"\W", "", part)) > 1]


@cache
def formatted_literals() -> list[re.Pattern[str]]:
    """The f-string literals of the exporter with enough fixed text to tell them apart, as
    patterns whose replacement fields match anything: a text put together from two literals
    (``f"the response body is {kind}"``) is found through the one that frames it."""
    field = re.compile(r"\{[^{}]*\}")
    patterns = []
    for literal in source_strings():
        if field.search(literal) and len(field.sub("", literal).strip()) >= 12:
            fixed = field.split(literal)
            patterns.append(re.compile(".+".join(re.escape(piece) for piece in fixed)))
    return patterns


def as_pattern(text: str) -> re.Pattern[str]:
    """A quoted error text as a pattern over logged errors: its placeholders match anything."""
    pattern, end = "", 0
    for match in PLACEHOLDER.finditer(text):
        pattern += re.escape(text[end : match.start()]) + ".*?"
        end = match.end()
    return re.compile(pattern + re.escape(text[end:]))


def test_the_failure_table_quotes_the_exporters_own_error_texts() -> None:
    metrics = ROOT / "docs" / "metrics.md"
    texts = [text for cells in failure_table(metrics) for text in CODE_SPAN.findall(cells[-1])]
    texts += which_timeout_texts()
    assert {
        "GET https://host/path: no answer in time",
        "the collection passed its deadline of Ns",
    } <= set(timeout_texts_of(metrics))
    assert len(which_timeout_texts()) >= 3
    missing = [
        (text, part)
        for text in texts
        for part in fixed_parts(text)
        if not any(part in literal for literal in source_strings())
        and not any(pattern.fullmatch(part) for pattern in formatted_literals())
    ]
    assert not missing, f"docs/metrics.md quotes error texts the exporter never writes: {missing}"


def test_the_placeholders_of_a_quoted_text() -> None:
    assert fixed_parts("the collection passed its deadline of Ns") == [
        "the collection passed its deadline of"
    ]
    assert as_pattern("GET https://host/path: no answer in time").fullmatch(
        "GET http://127.0.0.1:1/thulium/acme/api/outbounds/stats: no answer in time"
    )
    assert as_pattern("the collection passed its deadline of Ns").fullmatch(
        "the collection passed its deadline of 1.5s"
    )
    assert not as_pattern("the collection passed its deadline of Ns").search("no answer in time")


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Everything the exporter logs, as JSON lines."""
    buffer = io.StringIO()
    setup_logging("info", "json", stream=buffer)
    yield buffer
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


@pytest.mark.parametrize("provider", sorted(set(registry()) & set(simulator.provider_parts())))
async def test_a_hung_provider_logs_a_timeout_text_the_docs_give(
    sim, sim_url, harness, make_config, logged, provider
):
    """The provider answers nothing: the run fails with reason timeout, and the logged error is
    one of the texts docs/metrics.md or the provider's own page gives for a timeout."""
    targets = simulator.demo_targets(sim_url, sim)
    victim = next(target for target in targets if target["provider"] == provider)
    h = await harness(make_config([victim], defaults={"timeout": "1s"}))
    account = victim["base_url"].split("://", 1)[1].split("/")[2]
    sim.set_fault(provider, account, "hang")
    await h.collect()
    (event,) = [
        event
        for event in map(json.loads, logged.getvalue().splitlines())
        if event.get("event") == "collection"
    ]
    assert event["reason"] == "timeout"
    documented = timeout_texts_of(ROOT / "docs" / "metrics.md")
    page = PROVIDER_PAGES / f"{provider}.md"
    if page.exists():
        documented += timeout_texts_of(page)
    assert any(as_pattern(text).search(event["error"]) for text in documented), (
        event["error"],
        documented,
    )
