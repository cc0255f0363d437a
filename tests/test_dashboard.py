"""The Grafana dashboard, helm/messaging-stats-exporter/files/dashboard.json.

Static checks (schema, variables, rows, data source and account filters on every query, every
metric of the spec on some panel), then promtool: every query, with Grafana's variables
substituted, must parse (`promtool check rules`) and must return data on series shaped like the
spec's, for every provider (`promtool test rules`). tests/test_prometheus_e2e.py runs the same
queries against a real Prometheus scraping the demo.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.providers import registry
from exporter.providers.base import Provider
from exporter.providers.errors import Reason
from tests.conftest import run_promtool

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "helm" / "messaging-stats-exporter" / "files" / "dashboard.json"


def builtin_providers() -> dict[str, type[Provider[Any]]]:
    """The registered providers that ship with the exporter: the dashboard has a row for each (an
    installed plugin's provider shows in the overview only)."""
    return {
        name: provider
        for name, provider in registry().items()
        if provider.__module__.startswith("exporter.")
    }


# Provider metrics the dashboard does not show, and why.
NOT_ON_THE_DASHBOARD = {
    "altcraft_segment_subscriptions": "only when a segment's record reports plain statuses",
    "altcraft_segment_profiles": "only when a segment's record reports `all`",
}

# The metrics contract (docs/metrics.md) as far as the dashboard shows it: every metric, its
# labels, and the provider it belongs to ("exporter" for the exporter's own). The providers'
# come from their MetricSpecs. A histogram is listed under its base name.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{
        spec.name: (name, ("account", *spec.labels))
        for name, provider in builtin_providers().items()
        for spec in provider.metrics
        if spec.name not in NOT_ON_THE_DASHBOARD
    },
    "messaging_exporter_collect_success": ("exporter", ("provider", "account")),
    "messaging_exporter_collect_duration_seconds": ("exporter", ("provider", "account")),
    "messaging_exporter_last_success_timestamp_seconds": ("exporter", ("provider", "account")),
    "messaging_exporter_collect_errors_total": ("exporter", ("provider", "account", "reason")),
    "messaging_exporter_provider_request_duration_seconds": (
        "exporter",
        ("provider", "endpoint", "code"),
    ),
    "messaging_exporter_build_info": ("exporter", ("version", "python_version")),
    "messaging_exporter_config_last_reload_successful": ("exporter", ()),
    "messaging_exporter_shard_info": ("exporter", ("index", "count")),
    "messaging_exporter_targets": ("exporter", ("state",)),
}

# Metrics of the contract (docs/metrics.md) that the dashboard need not show; alerts may use
# them.
EXTRA_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "messaging_exporter_collect_interval_seconds": ("exporter", ("provider", "account")),
}
KNOWN_METRICS = METRICS | EXTRA_METRICS
"""Every metric a query may use."""
HISTOGRAMS = {"messaging_exporter_provider_request_duration_seconds"}
PROVIDERS = tuple(builtin_providers())
# The rows' titles, in order, and whose metrics each shows.
ROWS = {"Overview": "exporter", "Altcraft": "altcraft", "Thulium": "thulium"}
ROWS |= {"Trust.lat": "trustlat", "Exolve": "exolve"}

# Grafana's variables, as substituted for Prometheus. `$account`/`$provider`/`$instance` set to
# "All" become the variables' allValue (`.*`); `$job` is one job, `.*` here unless a test says.
ALL = ".*"
INSTALL_MATCHERS = ('job=~"$job"', 'instance=~"$instance"')
"""The matchers every selector carries: two installs scraped by one Prometheus do not mix."""


def substitute(expr: str, rate_interval: str = "5m", **values: str) -> str:
    """An expression as Grafana sends it to Prometheus, with its variables filled in."""
    replacements = {
        "__rate_interval": rate_interval,
        "__interval": "1m",
        "__range": "1h",
        "account": values.get("account", ALL),
        "provider": values.get("provider", ALL),
        "job": values.get("job", ALL),
        "instance": values.get("instance", ALL),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in replacements, f"unknown dashboard variable ${name} in {expr!r}"
        return replacements[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


@dataclass(frozen=True)
class Query:
    row: str
    panel: str
    ref_id: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.row} / {self.panel} / {self.ref_id}"

    @property
    def metrics(self) -> set[str]:
        return metrics_in(self.expr)

    @property
    def providers(self) -> set[str]:
        return {KNOWN_METRICS[metric][0] for metric in self.metrics}


_METRIC_RE = re.compile(
    r"\b(" + "|".join(sorted(KNOWN_METRICS, key=len, reverse=True)) + r")(_bucket|_sum|_count)?\b"
)


def metrics_in(expr: str) -> set[str]:
    return {match.group(1) for match in _METRIC_RE.finditer(expr)}


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels_by_row(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every panel that is not a row, with the title of the row it sits in (collapsed rows hold
    their panels inside)."""
    found: list[tuple[str, dict[str, Any]]] = []
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            found.extend((row, inner) for inner in panel.get("panels", []))
        else:
            found.append((row, panel))
    return found


def dashboard_queries() -> list[Query]:
    return [
        Query(row, panel["title"], target["refId"], target["expr"])
        for row, panel in panels_by_row(load_dashboard())
        for target in panel.get("targets", [])
    ]


# ------------------------------------------------------------------------------- static checks


def test_schema_and_identity() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == "messaging-stats-exporter"
    assert dashboard["title"]
    assert dashboard["id"] is None  # importable anywhere
    assert "__inputs" not in dashboard  # no import-time ${DS_...}: the sidecar does not fill it in
    assert "${DS_" not in DASHBOARD.read_text(encoding="utf-8")


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "provider", "account"]
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    install = 'job=~"$job", instance=~"$instance"'
    for name, query in {
        "job": "label_values(messaging_exporter_build_info, job)",
        "instance": 'label_values(messaging_exporter_build_info{job=~"$job"}, instance)',
        "provider": f"label_values(messaging_exporter_collect_success{{{install}}}, provider)",
        "account": f"label_values(messaging_exporter_collect_success{{{install}, "
        'provider=~"$provider"}, account)',
    }.items():
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["definition"] == query
        assert variable["query"]["query"] == query
        assert variable["refresh"] in (1, 2)  # on load or time range change, never "never"
        if name == "job":  # one install at a time: its shards (instances) together, by default
            assert variable["multi"] is False
            assert variable["includeAll"] is False
            continue
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["allValue"] == ALL
        assert variable["current"]["value"] == ["$__all"]


def test_rows_overview_first_then_one_per_provider() -> None:
    rows = [p["title"] for p in load_dashboard()["panels"] if p["type"] == "row"]
    assert rows == list(ROWS)
    assert sorted(set(ROWS.values()) - {"exporter"}) == sorted(PROVIDERS), "a row per provider"


def test_the_metrics_left_off_the_dashboard_are_provider_metrics_it_does_not_use() -> None:
    declared = {spec.name for provider in registry().values() for spec in provider.metrics}
    assert set(NOT_ON_THE_DASHBOARD) <= declared
    text = DASHBOARD.read_text(encoding="utf-8")
    assert not [name for name in NOT_ON_THE_DASHBOARD if re.search(rf"\b{name}\b", text)]


def test_every_panel_has_a_title_description_and_the_datasource_variable() -> None:
    panels = panels_by_row(load_dashboard())
    assert len(panels) >= 25
    for row, panel in panels:
        where = f"{row} / {panel.get('title')}"
        assert panel["title"], where
        assert len(panel.get("description", "")) > 20, f"{where}: no description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert target["expr"].strip(), where


def test_layout_has_unique_ids_and_no_overlaps() -> None:
    dashboard = load_dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_spec_metric_is_on_a_panel() -> None:
    used = set().union(*(query.metrics for query in dashboard_queries()))
    assert set(METRICS) - used == set()


def test_provider_rows_show_their_provider_only() -> None:
    for query in dashboard_queries():
        assert query.providers, f"{query.name}: no spec metric in {query.expr!r}"
        assert query.providers == {ROWS[query.row]}, query.name


def test_queries_filter_by_account_and_provider_where_the_metric_has_them() -> None:
    for query in dashboard_queries():
        for match in _METRIC_RE.finditer(query.expr):
            metric = match.group(1)
            labels = KNOWN_METRICS[metric][1]
            rest = query.expr[match.end() :]
            selector = rest[1 : rest.index("}")] if rest.startswith("{") else ""
            if "account" in labels:
                assert 'account=~"$account"' in selector, f"{query.name}: {metric}"
            if "provider" in labels:
                assert 'provider=~"$provider"' in selector, f"{query.name}: {metric}"


def test_every_selector_of_every_query_carries_the_job_and_instance_variables() -> None:
    queries = dashboard_queries()
    selectors = 0
    for query in queries:
        matches = list(_METRIC_RE.finditer(query.expr))
        assert matches, query.name
        for match in matches:
            rest = query.expr[match.end() :]
            assert rest.startswith("{"), f"{query.name}: {match.group(0)} has no selector"
            selector = rest[1 : rest.index("}")]
            assert selector.startswith(", ".join(INSTALL_MATCHERS)), f"{query.name}: {selector}"
            selectors += 1
    assert selectors > len(queries)


def test_substitution_fills_every_variable() -> None:
    for query in dashboard_queries():
        assert "$" not in substitute(query.expr), query.name
    assert substitute('x{account=~"$account"}[$__rate_interval]', "1m", account="a|b") == (
        'x{account=~"a|b"}[1m]'
    )


# The exporter's own per-target metrics: the overview's success, duration, errors and staleness
# panels are built on these alone, so they show every provider, a plugin's included.
OVERVIEW_TARGET_METRICS = {
    "messaging_exporter_collect_success",
    "messaging_exporter_collect_duration_seconds",
    "messaging_exporter_collect_errors_total",
    "messaging_exporter_last_success_timestamp_seconds",
    "messaging_exporter_collect_interval_seconds",
}
# Providers the overview must not name: every registered one and the example plugin.
KNOWN_PROVIDERS = tuple(sorted({*registry(), *PROVIDERS, "acme"}))


def _strings(value: Any) -> list[str]:
    """Every string in a panel's JSON that decides what it shows (queries, legends, titles,
    overrides, links); descriptions are prose, and may name a provider as an example."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() if key != "description" for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def overview_queries() -> list[Query]:
    return [query for query in dashboard_queries() if query.row == "Overview"]


def test_the_overview_names_no_provider() -> None:
    """No provider is written into the overview: not in a query, a selector, a legend, a title or
    an override. Which providers it shows is the provider variable's choice."""
    word = re.compile(r"\b(" + "|".join(KNOWN_PROVIDERS) + r")\b", re.I)
    fixed_selector = re.compile(r'\bprovider\s*(=~|!~|!=|=)\s*"(?!\$provider")')
    for row, panel in panels_by_row(load_dashboard()):
        if row != "Overview":
            continue
        for text in _strings(panel):
            assert not word.search(text), f"{panel['title']}: names a provider in {text!r}"
        for target in panel["targets"]:
            assert not fixed_selector.search(target["expr"]), f"{panel['title']}: {target['expr']}"


def test_the_overview_uses_the_exporters_own_metrics_for_every_target() -> None:
    used: set[str] = set()
    for query in overview_queries():
        assert query.providers == {"exporter"}, query.name
        used |= query.metrics
    assert used >= OVERVIEW_TARGET_METRICS


def test_the_provider_variable_is_a_query_over_the_exporters_metrics() -> None:
    """The variable's values come from Prometheus, so a new provider is offered as soon as its
    targets are collected: no list of providers, no regex, no custom variable."""
    variables = load_dashboard()["templating"]["list"]
    assert not [v["name"] for v in variables if v["type"] == "custom"]
    (provider,) = [v for v in variables if v["name"] == "provider"]
    assert provider["type"] == "query"
    query = (
        'label_values(messaging_exporter_collect_success{job=~"$job", instance=~"$instance"}, '
        "provider)"
    )
    assert provider["definition"] == query
    assert provider["query"]["query"] == query
    assert provider["options"] == []
    assert provider["regex"] == ""
    assert provider["refresh"] in (1, 2)  # on dashboard load or time range change, never "never"
    assert provider["current"]["value"] == ["$__all"]


# ---------------------------------------------------------------------------------- promtool


def _rule_name(index: int) -> str:
    return f"dashboard:query_{index:03d}"


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each substituted query (as a recording rule's expression)."""
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": _rule_name(i), "expr": substitute(q.expr)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


# Series shaped like the spec's: every label of every metric, the label values the spec lists.
_JOB = 'job="messaging-stats-exporter", instance="exporter:10057"'
_ALTCRAFT = 'account="altcraft-prod", resource_id="24", list_id="1"'
_CHANNELS = ("email", "push")
_PROVIDER_SERIES: list[tuple[str, str, str]] = [
    *(
        (
            "altcraft_resource_subscriptions",
            f'{_ALTCRAFT}, channel="{c}", status="{s}"',
            f"{n}x20",
        )
        for c in _CHANNELS
        for s, n in (
            ("subscribed", 900),
            ("unconfirmed", 30),
            ("unsubscribed", 40),
            ("hardbounced", 20),
            ("complained", 3),
            ("invalid", 5),
            ("suspended", 2),
        )
    ),
    *(
        ("altcraft_resource_sendable_subscriptions", f'{_ALTCRAFT}, channel="{c}", status="{s}"', v)
        for c in _CHANNELS
        for s, v in (("subscribed", "850x20"), ("unconfirmed", "10x20"))
    ),
    *(("altcraft_resource_profiles", f'{_ALTCRAFT}, channel="{c}"', "1000x20") for c in _CHANNELS),
    ("altcraft_resource_counters_updated_timestamp_seconds", _ALTCRAFT, "0+60x20"),
    ("altcraft_resource_count_duration_seconds", _ALTCRAFT, "0.231x20"),
    *(
        (
            "altcraft_segment_sendable_subscriptions",
            f'account="altcraft-prod", segment_id="7", resource_id="24", list_id="1", '
            f'channel="email", status="{s}"',
            "100x20",
        )
        for s in ("subscribed", "unconfirmed")
    ),
    (
        "altcraft_segment_counters_updated_timestamp_seconds",
        'account="altcraft-prod", segment_id="7", resource_id="24", list_id="1"',
        "0+60x20",
    ),
    ("thulium_outbound_campaign_records", 'account="thulium-acme", campaign_id="00001"', "1324x20"),
    (
        "thulium_outbound_campaign_completion_ratio",
        'account="thulium-acme", campaign_id="00001"',
        "0.1+0.01x20",
    ),
    ("thulium_outbound_active_campaigns", 'account="thulium-acme"', "1x20"),
    *(
        ("trustlat_notifications", f'account="trust", company_id="1", state="{s}"', f"{n}x20")
        for s, n in (("sent", 90), ("pending", 5), ("failed", 5))
    ),
    ("trustlat_notifications_scheduled", 'account="trust", company_id="1"', "100x20"),
    *(
        ("trustlat_notification_actions", f'account="trust", company_id="1", action="{a}"', "7x20")
        for a in ("received", "press_action", "closed", "unknown")
    ),
    ("trustlat_campaigns", 'account="trust", company_id="1"', "3x20"),
    ("trustlat_access_token_expiry_timestamp_seconds", 'account="trust"', "7200x20"),
    *(
        ("exolve_sms_messages", f'account="exolve-sms", direction="{d}", status="{s}"', "10x20")
        for d in ("incoming", "outgoing")
        for s in ("queued", "transmitted", "delivered", "failed", "underfunded", "prohibited")
    ),
    (
        "exolve_sms_messages_by_delivery_status",
        'account="exolve-sms", direction="outgoing", delivery_status="delivered"',
        "10x20",
    ),
    (
        "exolve_sms_messages_by_billing_status",
        'account="exolve-sms", direction="outgoing", billing_status="billed"',
        "10x20",
    ),
]


def _targets(series: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(provider, account) of every account the provider series above belong to."""
    found = set()
    for name, labels, _ in series:
        account = re.search(r'account="([^"]*)"', labels)
        assert account, name
        found.add((METRICS[name][0], account.group(1)))
    return sorted(found)


SYNTHETIC: list[tuple[str, str, str]] = [
    *_PROVIDER_SERIES,
    *(
        (name, f'provider="{p}", account="{a}"', values)
        for p, a in _targets(_PROVIDER_SERIES)
        for name, values in (
            ("messaging_exporter_collect_success", "1x20"),
            ("messaging_exporter_collect_duration_seconds", "0.2x20"),
            ("messaging_exporter_last_success_timestamp_seconds", "0+60x20"),
            ("messaging_exporter_collect_interval_seconds", "60x20"),
        )
    ),
    *(
        (
            "messaging_exporter_collect_errors_total",
            f'provider="thulium", account="thulium-acme", reason="{r}"',
            "0x20",
        )
        for r in Reason
    ),
    *(
        (
            "messaging_exporter_provider_request_duration_seconds_bucket",
            f'provider="thulium", endpoint="outbounds/stats", code="200", le="{le}"',
            f"0+{n}x20",
        )
        for le, n in (("0.1", 1), ("1", 2), ("+Inf", 2))
    ),
    (
        "messaging_exporter_provider_request_duration_seconds_sum",
        'provider="thulium", endpoint="outbounds/stats", code="200"',
        "0+0.5x20",
    ),
    (
        "messaging_exporter_provider_request_duration_seconds_count",
        'provider="thulium", endpoint="outbounds/stats", code="200"',
        "0+2x20",
    ),
    ("messaging_exporter_build_info", 'version="0.1.0", python_version="3.11.7"', "1x20"),
    ("messaging_exporter_config_last_reload_successful", "", "1x20"),
    ("messaging_exporter_shard_info", 'index="0", count="1"', "1x20"),
    ("messaging_exporter_targets", 'state="assigned"', f"{len(_targets(_PROVIDER_SERIES))}x20"),
    ("messaging_exporter_targets", 'state="skipped"', "0x20"),
]


def test_synthetic_series_cover_every_metric_with_its_labels() -> None:
    for metric, (_, labels) in METRICS.items():
        names = {f"{metric}_bucket", f"{metric}_sum", f"{metric}_count"}
        if metric not in HISTOGRAMS:
            names = {metric}
        for name in names:
            rows = [series_labels for n, series_labels, _ in SYNTHETIC if n == name]
            assert rows, name
            for series_labels in rows:
                assert {part.split("=")[0] for part in series_labels.split(", ") if part} >= set(
                    labels
                ), name


def test_every_query_returns_data_on_spec_shaped_series(tmp_path: Path) -> None:
    """promtool evaluates each substituted query over series of every provider: each must return
    at least one sample (so a typo in a metric or label name cannot leave a panel empty)."""
    queries = dashboard_queries()
    unit_test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"{name}{{{_JOB}{', ' if labels else ''}{labels}}}", "values": v}
                    for name, labels, v in SYNTHETIC
                ],
                "promql_expr_test": [
                    {
                        # One sample (value 1) exactly when the query returns something.
                        "expr": f"count({substitute(q.expr)}) > bool 0",
                        "eval_time": "15m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for q in queries
                ],
            }
        ],
    }
    path = tmp_path / "dashboard_test.yaml"
    path.write_text(yaml.safe_dump(unit_test, width=1000), encoding="utf-8")
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


_PLUGIN_TARGET = 'provider="acme", account="acme-shop"'
PLUGIN_ONLY: list[tuple[str, str, str]] = [
    ("messaging_exporter_collect_success", _PLUGIN_TARGET, "1x20"),
    ("messaging_exporter_collect_duration_seconds", _PLUGIN_TARGET, "0.1x20"),
    ("messaging_exporter_last_success_timestamp_seconds", _PLUGIN_TARGET, "0+60x20"),
    ("messaging_exporter_collect_interval_seconds", _PLUGIN_TARGET, "60x20"),
    ("messaging_exporter_collect_errors_total", f'{_PLUGIN_TARGET}, reason="timeout"', "0+1x20"),
    *(
        (
            "messaging_exporter_provider_request_duration_seconds_bucket",
            f'provider="acme", endpoint="v1/stats", code="200", le="{le}"',
            "0+1x20",
        )
        for le in ("0.1", "+Inf")
    ),
    (
        "messaging_exporter_provider_request_duration_seconds_sum",
        'provider="acme", endpoint="v1/stats", code="200"',
        "0+0.05x20",
    ),
    (
        "messaging_exporter_provider_request_duration_seconds_count",
        'provider="acme", endpoint="v1/stats", code="200"',
        "0+1x20",
    ),
    ("messaging_exporter_build_info", 'version="0.1.0", python_version="3.11.7"', "1x20"),
    ("messaging_exporter_config_last_reload_successful", "", "1x20"),
    ("messaging_exporter_shard_info", 'index="0", count="1"', "1x20"),
    ("messaging_exporter_targets", 'state="assigned"', "1x20"),
    ("messaging_exporter_targets", 'state="skipped"', "0x20"),
]


def test_the_overview_shows_a_plugin_provider(tmp_path: Path) -> None:
    """An exporter whose only provider is a plugin's ("acme", unknown to the dashboard): every
    overview query returns data, with the provider variable at All and at "acme"."""
    unit_test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"{name}{{{_JOB}{', ' if labels else ''}{labels}}}", "values": v}
                    for name, labels, v in PLUGIN_ONLY
                ],
                "promql_expr_test": [
                    {
                        "expr": f"count({substitute(q.expr, provider=provider)}) > bool 0",
                        "eval_time": "15m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for q in overview_queries()
                    for provider in (ALL, "acme")
                ],
            }
        ],
    }
    path = tmp_path / "plugin_overview_test.yaml"
    path.write_text(yaml.safe_dump(unit_test, width=1000), encoding="utf-8")
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_row_has_panels(provider: str) -> None:
    assert any(q.providers == {provider} for q in dashboard_queries())


# ------------------------------------------------------------------------------ sharded installs
# With `sharding.replicas: N` every shard exports messaging_exporter_targets{state} (its assigned
# and skipped targets: together, the whole config) and the series of its own accounts only, with
# its own `pod` and `instance`. While a resize grows the shards an account is briefly collected by
# two of them. The overview must count configured targets once (not once per shard) and accounts,
# not series.


def _overview_query(panel: str, ref_id: str) -> str:
    (query,) = [q for q in dashboard_queries() if q.panel == panel and q.ref_id == ref_id]
    return substitute(query.expr)


def _shard(
    pod: str, namespace: str = "monitoring", job: str = "rel-messaging-stats-exporter"
) -> str:
    return (
        f'namespace="{namespace}", job="{job}", service="{job}", endpoint="http", '
        f'pod="{pod}", instance="{pod}.ip:10057"'
    )


def _shard_series(
    pod: str, assigned: int, skipped: int, accounts: dict[tuple[str, str], int], **where: str
) -> list[dict[str, str]]:
    labels = _shard(pod, **where)
    series = [
        {"series": f'messaging_exporter_targets{{{labels}, state="{state}"}}', "values": f"{n}x20"}
        for state, n in (("assigned", assigned), ("skipped", skipped))
    ]
    for (provider, account), success in accounts.items():
        target = f'{labels}, provider="{provider}", account="{account}"'
        series += [
            {
                "series": f"messaging_exporter_collect_success{{{target}}}",
                "values": f"{success}x20",
            },
            {
                "series": f"messaging_exporter_last_success_timestamp_seconds{{{target}}}",
                "values": "0+60x20",
            },
        ]
    return series


# Five targets in the config. Growing from 3 to 4 shards: pod 3 (count 4) already collects
# exolve-sms, which pod 0 (count 3, not replaced yet) still collects too; thulium-globex fails.
_GROWING = [
    *_shard_series("rel-0", 2, 3, {("thulium", "thulium-acme"): 1, ("exolve", "exolve-sms"): 1}),
    *_shard_series("rel-1", 1, 4, {("trustlat", "trust"): 1}),
    *_shard_series(
        "rel-2", 2, 3, {("altcraft", "altcraft-prod"): 1, ("thulium", "thulium-globex"): 0}
    ),
    *_shard_series("rel-3", 1, 4, {("exolve", "exolve-sms"): 1}),
]
# The same five targets, pod 2 Pending (not scraped: its two accounts have no series at all), and
# another install in another namespace, unsharded, with two targets of its own.
_SHARD_DOWN = [
    *_shard_series("rel-0", 2, 3, {("thulium", "thulium-acme"): 1, ("exolve", "exolve-sms"): 1}),
    *_shard_series("rel-1", 1, 4, {("trustlat", "trust"): 1}),
    *_shard_series(
        "staging-6d9f7c-x2x7k",
        2,
        0,
        {("thulium", "staging-thulium"): 1, ("trustlat", "staging-trust"): 1},
        namespace="staging",
    ),
]
# (panel, refId) -> value, per scenario; every overview query of these panels answers one number
# (the per-account panels are counted).
_SHARDED_EXPECTED: dict[str, tuple[list[dict[str, str]], dict[tuple[str, str], int]]] = {
    "growing": (
        _GROWING,
        {
            ("Targets up", "A"): 4,
            ("Targets up", "B"): 5,
            ("Targets failing", "A"): 1,
            ("Targets by state", "A"): 5,  # configured: once, not once per shard (20)
            ("Targets by state", "B"): 6,  # collected: exolve-sms twice, for the moment
            ("Targets by state", "C"): 0,  # uncovered
            ("Collection status", "A"): 5,  # boxes: one per account
            ("Last success age", "A"): 5,  # lines: one per account
        },
    ),
    "shard down": (
        _SHARD_DOWN,
        {
            ("Targets up", "A"): 5,
            ("Targets up", "B"): 5,
            ("Targets failing", "A"): 0,
            ("Targets by state", "A"): 7,  # 5 + 2, over both installs
            ("Targets by state", "B"): 5,
            ("Targets by state", "C"): 2,  # the Pending shard's two accounts
            ("Collection status", "A"): 5,
            ("Last success age", "A"): 5,
        },
    ),
}
_COUNTED = {"Collection status", "Last success age"}


@pytest.mark.parametrize("scenario", sorted(_SHARDED_EXPECTED))
def test_overview_counts_targets_and_accounts_across_shards(tmp_path: Path, scenario: str) -> None:
    series, expected = _SHARDED_EXPECTED[scenario]
    tests = []
    for (panel, ref_id), value in expected.items():
        expr = _overview_query(panel, ref_id)
        tests.append(
            {
                "expr": f"count({expr})" if panel in _COUNTED else expr,
                "eval_time": "15m",
                "exp_samples": [{"labels": "{}", "value": value}],
            }
        )
    unit_test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "sharded_dashboard_test.yaml"
    path.write_text(yaml.safe_dump(unit_test, width=1000), encoding="utf-8")
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# Two installs scraped by one Prometheus, each with an account named thulium-acme: "a" unsharded
# (acme up, 3 campaigns), "b" over two shards (acme failing with 7 campaigns on b-0, globex up on
# b-1). The job and instance variables keep them apart.
_TWO_INSTALLS = [
    *_shard_series("a-0", 1, 0, {("thulium", "thulium-acme"): 1}, job="a"),
    *_shard_series("b-0", 1, 1, {("thulium", "thulium-acme"): 0}, job="b"),
    *_shard_series("b-1", 1, 1, {("thulium", "thulium-globex"): 1}, job="b"),
    *(
        {
            "series": f"thulium_outbound_active_campaigns{{{_shard(pod, job=job)}, "
            f'account="{account}"}}',
            "values": f"{campaigns}x20",
        }
        for pod, job, account, campaigns in (
            ("a-0", "a", "thulium-acme", 3),
            ("b-0", "b", "thulium-acme", 7),
            ("b-1", "b", "thulium-globex", 1),
        )
    ),
]
# (job, instance) selected -> (panel, refId) -> the one value it shows
_BY_INSTALL: dict[tuple[str, str], dict[tuple[str, str], float]] = {
    ("a", ALL): {
        ("Targets up", "A"): 1,
        ("Targets failing", "A"): 0,
        ("Targets by state", "A"): 1,
        ("Targets by state", "B"): 1,
        ("Active campaigns", "A"): 3,
    },
    ("b", ALL): {
        ("Targets up", "A"): 1,
        ("Targets up", "B"): 2,
        ("Targets failing", "A"): 1,
        ("Targets by state", "A"): 2,
        ("Targets by state", "B"): 2,
    },
    ("b", "b-1.ip:10057"): {
        ("Targets up", "A"): 1,
        ("Targets up", "B"): 1,
        ("Targets failing", "A"): 0,
        ("Targets by state", "B"): 1,
    },
}


def test_the_job_and_instance_variables_keep_two_installs_apart(tmp_path: Path) -> None:
    tests = []
    for (job, instance), expected in _BY_INSTALL.items():
        for (panel, ref_id), value in expected.items():
            (query,) = [q for q in dashboard_queries() if (q.panel, q.ref_id) == (panel, ref_id)]
            expr = substitute(query.expr, job=job, instance=instance, account="thulium-acme")
            if panel.startswith("Targets"):  # the overview's counts: every account
                expr = substitute(query.expr, job=job, instance=instance)
            tests.append(
                {
                    "expr": f"sum({expr})",
                    "eval_time": "15m",
                    "exp_samples": [{"labels": "{}", "value": value}],
                }
            )
    unit_test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _TWO_INSTALLS, "promql_expr_test": tests}],
    }
    path = tmp_path / "two_installs_dashboard_test.yaml"
    path.write_text(yaml.safe_dump(unit_test, width=1000), encoding="utf-8")
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_overview_covers_every_panel_that_counts() -> None:
    """Every query of the overview's count panels is in the sharded scenarios above."""
    covered = {key for _, expected in _SHARDED_EXPECTED.values() for key in expected}
    for query in dashboard_queries():
        if query.panel in {"Targets up", "Targets failing", "Targets by state"} | _COUNTED:
            assert (query.panel, query.ref_id) in covered, query.name
