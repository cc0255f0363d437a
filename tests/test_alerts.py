"""The alert rules, helm/messaging-stats-exporter/files/alerts.yaml: `promtool check rules`, the
promtool unit tests in tests/promtool/alerts_test.yaml (timing, with the shipped `for:`), and the
conventions every alert follows (severity, annotations with label templates, a threshold in the
description, a runbook section). tests/test_prometheus_e2e.py loads them into a real Prometheus."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_promtool
from tests.test_dashboard import EXTRA_METRICS, METRICS, metrics_in

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "helm" / "messaging-stats-exporter" / "files" / "alerts.yaml"
UNIT_TESTS = REPO / "tests" / "promtool" / "alerts_test.yaml"
RUNBOOK = REPO / "docs" / "runbook.md"
# Where each runbook_url names the runbook's address: the operator's copy, put in by the chart
# (runbookBaseUrl) or by the README's sed line.
RUNBOOK_URL = "${RUNBOOK_BASE_URL}"

# The alerts the issue asks for, by what they mean.
EXPECTED_ALERTS = {
    "MessagingExporterCollectFailing",  # target down: collect_success == 0 for a while
    "MessagingExporterDataStale",  # last success older than a few intervals
    "MessagingExporterConfigReloadFailed",
    # sharding: targets of a shard collected by nobody, whose series simply vanish
    "MessagingExporterShardTargetsUncovered",
    "AltcraftCountersStale",  # altcraft_*_counters_updated_timestamp_seconds old
    "AltcraftHardBounceRatioHigh",
    "ThuliumCampaignStalled",  # completion flat while records remain
    "TrustlatNotificationFailureRatioHigh",
    "ExolveSmsDeliveryFailureRatioHigh",
}
SEVERITIES = {"info", "warning", "critical"}


def load_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in load_rules() if "alert" in rule}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


# ---------------------------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_load_the_shipped_rules() -> None:
    data = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    assert [(UNIT_TESTS.parent / f).resolve() for f in data["rule_files"]] == [ALERTS.resolve()]


def test_every_alert_has_a_firing_and_a_quiet_unit_test_case() -> None:
    data = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in data["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing >= set(alerts()), set(alerts()) - firing
    assert quiet >= set(alerts()), set(alerts()) - quiet


# ------------------------------------------------------------------------------- conventions


def test_the_alerts_of_the_issue_and_no_recording_rules_without_a_name() -> None:
    assert set(alerts()) == EXPECTED_ALERTS
    names = [rule.get("alert") or rule["record"] for rule in load_rules()]
    assert len(names) == len(set(names))
    for name in alerts():
        assert re.fullmatch(r"[A-Z][A-Za-z]+", name), name


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_alert_follows_the_conventions(name: str) -> None:
    rule = alerts()[name]
    assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
    assert seconds(rule["for"]) >= 5 * 60, "production durations: at least 5m"
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{ $labels." in annotations["summary"]
    assert "{{ $labels." in annotations["description"]
    # The chart README asks for the threshold (or, for a plain condition, the duration).
    assert re.search(r"threshold|for at least", annotations["description"])
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"
    assert name.lower() in runbook_anchors(), f"docs/runbook.md has no section {name}"
    used = metrics_in(rule["expr"])
    assert used, "the expression uses no metric of the spec"
    # Nothing but spec metrics: a renamed metric must fail here, not silently never fire.
    words = set(re.findall(r"\b[a-z]+_[a-z0-9_]+\b", rule["expr"]))
    known = METRICS | EXTRA_METRICS
    labels = {label for _, (_, names) in known.items() for label in names}
    assert words - set(known) - labels == set()


# Where the scrape gives a `pod` label (a ServiceMonitor's), an alert names the exporter by it
# rather than by `instance` (the pod's IP and port); a plain static config has `instance` only.
POD_OR_INSTANCE = "{{ with $labels.pod }}{{ . }}{{ else }}{{ $labels.instance }}{{ end }}"


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_alerts_name_the_exporter_by_pod_when_there_is_one(name: str) -> None:
    for key, text in alerts()[name]["annotations"].items():
        bare = text.replace(POD_OR_INSTANCE, "")
        assert "$labels.instance" not in bare, f"{name} {key}: {{{{ $labels.instance }}}} alone"


def test_the_shard_alert_groups_by_namespace_and_job_only() -> None:
    """Its expression keeps `namespace` where the scrape has it (a ServiceMonitor's) and works
    without it (a static config): the promtool unit tests cover both; here, that no per-pod label
    (pod, instance) is kept, which would compare each shard with the whole config."""
    expr = alerts()["MessagingExporterShardTargetsUncovered"]["expr"]
    groupings = re.findall(r"\b(?:sum|max) by \(([^)]*)\)", expr)
    assert groupings, expr
    for grouping in groupings:
        assert {label.strip() for label in grouping.split(",")} == {"namespace", "job"}, expr
    assert 'state=~"assigned|disabled"' in expr


def test_runbook_has_a_section_per_alert_with_meaning_causes_and_checks() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    by_name = {s.split("\n", 1)[0].strip(): s for s in sections}
    for name in EXPECTED_ALERTS:
        section = by_name.get(name)
        assert section is not None, name
        for part in ("Meaning", "Likely causes", "What to check"):
            assert f"**{part}**" in section, f"{name}: no {part}"


# ------------------------------------------------------------------------------ runbook address


def readme_substitution() -> str:
    """The README's command that copies the rules file with the runbook's address in place."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (command,) = [
        block
        for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        if RUNBOOK_URL in block and "alerts.yaml" in block
    ]
    return command.strip()


def test_the_placeholder_is_the_only_address_in_the_rules() -> None:
    """No address is written into the file: every runbook_url is the placeholder and an anchor,
    and no other annotation holds a URL."""
    for name, rule in alerts().items():
        for key, text in rule["annotations"].items():
            if key == "runbook_url":
                assert text == f"{RUNBOOK_URL}#{name.lower()}"
            else:
                assert "://" not in text, f"{name} {key}"


def test_the_readmes_substitution_makes_rules_promtool_accepts(tmp_path: Path) -> None:
    """The README's sed line, run as written in a copy of the repository's layout, gives a rules
    file whose every runbook_url is the address it names plus the alert's section."""
    command = readme_substitution()
    address = re.search(r"\|(https://[^|]+)\|", command)
    assert address, command
    copy = tmp_path / ALERTS.relative_to(REPO)
    copy.parent.mkdir(parents=True)
    shutil.copy(ALERTS, copy)
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True, timeout=30)
    (written,) = list(tmp_path.glob("*.yaml"))
    result = run_promtool("check", "rules", str(written))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = {rule["alert"]: rule for rule in load_rules(written) if "alert" in rule}
    assert set(rules) == EXPECTED_ALERTS
    for name, rule in rules.items():
        assert rule["annotations"]["runbook_url"] == f"{address.group(1)}#{name.lower()}"
    # Only the placeholder changed: the alert templates ($labels, $value) are intact.
    assert rules == {
        name: {
            **rule,
            "annotations": {
                **rule["annotations"],
                "runbook_url": rule["annotations"]["runbook_url"].replace(
                    RUNBOOK_URL, address.group(1)
                ),
            },
        }
        for name, rule in alerts().items()
    }
