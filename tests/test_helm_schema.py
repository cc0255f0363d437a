"""The chart's values.schema.json, which Helm applies on lint, template, install and upgrade.

A key the chart does not know, at the top level or nested, fails `helm lint` and `helm template`
with its path (a typo is never silently ignored); so do the keys renamed in 0.2.0 (the chart
README's "Upgrading" section) and values of the wrong type. The defaults and every ci/*.yaml pass.
The schema itself: valid draft-07, `additionalProperties: false` on every map of the chart's own,
and the same keys as values.yaml.

Uses the helpers and fixtures of tests/test_helm_chart.py (helm v3 from .ci/install-chart-tools; a
missing helm skips these tests, or fails them in CI).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.test_helm_chart import CHART, CI_VALUES, NAMESPACE, _run_helm, helm, render

# The fixtures, imported so that pytest finds them in this module.
__all__ = ["helm", "render"]

SCHEMA_PATH = CHART / "values.schema.json"
SCHEMA_ERROR = "values don't meet the specifications of the schema(s)"


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def _defaults() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file into the defaults: maps merge, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _object_schemas(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (sub)schema of the document, with where it sits."""
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            yield from _object_schemas(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _object_schemas(value, f"{path}/{index}")


# ------------------------------------------------------------------------------ the schema itself


def test_the_schema_is_valid_draft_07() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)


def test_every_map_of_the_charts_own_rejects_unknown_keys() -> None:
    """Wherever the schema lists a map's keys, it allows no others; maps whose keys are the user's
    (labels, alert names) or Kubernetes' (affinity, probes) list none and are left open."""
    listed = [(path, s) for path, s in _object_schemas(_schema()) if "properties" in s]
    assert len(listed) > 10
    for path, subschema in listed:
        assert subschema.get("additionalProperties") is False, f"{path or '/'} accepts any key"
    assert _schema()["additionalProperties"] is False


def _keys(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """The keys of values.yaml, down through the maps whose keys the schema lists."""
    for key, value in values.items():
        yield prefix + key
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            yield from _keys(value, sub, f"{prefix}{key}.")


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield prefix + key
        if "properties" in sub:
            yield from _schema_keys(sub, f"{prefix}{key}.")


def test_the_schema_has_exactly_the_keys_of_values_yaml() -> None:
    schema = _schema()
    in_values = set(_keys(_defaults(), schema))
    in_schema = set(_schema_keys(schema)) - {"global"}  # Helm's own, shared with subcharts
    assert in_values == in_schema
    for key in in_schema:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert node.get("description"), f"values.schema.json: {key} has no description"


@pytest.mark.parametrize("name", ["defaults", *CI_VALUES])
def test_the_defaults_and_the_ci_values_pass_the_schema(name: str) -> None:
    values = _defaults()
    if name != "defaults":
        values = _merge(values, yaml.safe_load(CI_VALUES[name].read_text()))
    jsonschema.Draft7Validator(_schema()).validate(values)


# ------------------------------------------------------------------------- helm applies it


MISSPELT = {
    "top level": ({"replicaCont": 1}, "(root): Additional property replicaCont is not allowed"),
    "serviceMonitor": (
        {"serviceMonitor": {"intervall": "30s"}},
        "serviceMonitor: Additional property intervall is not allowed",
    ),
    "two levels down": (
        {"sharding": {"podDisruptionBudget": {"maxUnavailabe": 1}}},
        "sharding.podDisruptionBudget: Additional property maxUnavailabe is not allowed",
    ),
    "an alert override": (
        {"prometheusRule": {"alertOverrides": {"ThuliumCampaignStalled": {"enable": False}}}},
        "prometheusRule.alertOverrides.ThuliumCampaignStalled: "
        "Additional property enable is not allowed",
    ),
    "networkPolicy": (
        {"networkPolicy": {"enabled": True, "egress": []}},
        "networkPolicy: Additional property egress is not allowed",
    ),
    "image": ({"image": {"pullpolicy": "Always"}}, "image: Additional property pullpolicy"),
}


def _values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("case", MISSPELT)
def test_a_misspelt_key_fails_helm_lint(helm: str, tmp_path: Path, case: str) -> None:
    values, message = MISSPELT[case]
    result = _run_helm(
        helm, "lint", str(CHART), "--namespace", NAMESPACE, "-f", _values_file(tmp_path, values)
    )
    assert result.returncode != 0, result.stdout
    assert "1 chart(s) failed" in result.stdout + result.stderr
    assert SCHEMA_ERROR in result.stdout
    assert message in result.stdout


@pytest.mark.parametrize("case", MISSPELT)
def test_a_misspelt_key_fails_helm_template(render: Callable[..., Any], case: str) -> None:
    values, message = MISSPELT[case]
    error = render(values, expect_error=True)
    assert SCHEMA_ERROR in error
    assert message in error


def test_a_misspelt_key_given_with_set_fails(helm: str) -> None:
    result = _run_helm(
        helm, "template", "rel", str(CHART), "--set", "serviceMonitor.enabled=true",
        "--set", "serviceMonitor.scrapeTimout=5s",
    )  # fmt: skip
    assert result.returncode != 0
    assert "serviceMonitor: Additional property scrapeTimout is not allowed" in result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}}},
            "serviceMonitor: Additional property labels is not allowed",
        ),
        (
            {"prometheusRule": {"labels": {"release": "kube-prometheus-stack"}}},
            "prometheusRule: Additional property labels is not allowed",
        ),
        (
            {"prometheusRule": {"rules": {"MessagingExporterCollectFailing": {"for": "1h"}}}},
            "prometheusRule.rules: Invalid type. Expected: array, given: object",
        ),
    ],
    ids=["serviceMonitor.labels", "prometheusRule.labels", "prometheusRule.rules as a map"],
)
def test_the_keys_renamed_in_0_2_0_fail_with_their_path(
    render: Callable[..., Any], values: dict[str, Any], message: str
) -> None:
    """Values written for 0.1.x fail loudly instead of losing their labels or overrides."""
    assert message in render(values, expect_error=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"service": {"port": "http"}}, "service.port: Invalid type. Expected: integer"),
        ({"service": {"type": "Nodeport"}}, "service.type: service.type must be one of"),
        ({"serviceMonitor": {"interval": "30 seconds"}}, "serviceMonitor.interval: Does not match"),
        ({"demo": "yes please"}, "demo: Invalid type. Expected: boolean, given: string"),
        ({"podLabels": {"tier": 1}}, "podLabels.tier: Invalid type. Expected: string"),
        ({"extraManifests": [42]}, "extraManifests.0: Invalid type. Expected: [object,string]"),
        (
            {"prometheusRule": {"rules": [{"alert": "X", "expr": "up", "fro": "5m"}]}},
            "Additional property fro is not allowed",
        ),
        ({"networkPolicy": {"providerPorts": [0]}}, "networkPolicy.providerPorts.0: Must be"),
        # The exporter refuses an interval under 1s: the pod would crash-loop.
        ({"autoReloadInterval": "500ms"}, "autoReloadInterval: Does not match"),
        ({"autoReloadInterval": "0s"}, "autoReloadInterval: Does not match"),
    ],
)
def test_a_value_of_the_wrong_type_fails(
    render: Callable[..., Any], values: dict[str, Any], message: str
) -> None:
    error = render(values, expect_error=True)
    assert SCHEMA_ERROR in error
    assert message in error
