"""The chart's Chart.yaml, as chart-testing (`ct lint`) checks it.

`ct lint` validates Chart.yaml with yamale against chart-testing's etc/chart_schema.yaml, strictly
(a key the schema does not list fails). tests/fixtures/ct_chart_schema.yaml is that file; this
test applies it the same way, and checks the metadata the prometheus-community charts carry where
it is known: maintainers (the project's, no person) and icon. `home` and `sources` are left out
until the project has an address someone has checked: no guessed address. `helm lint` then has no
recommendation left for Chart.yaml.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_helm_chart import CHART, _run_helm, helm

# The fixture, imported so that pytest finds it in this module.
__all__ = ["helm"]

CHART_YAML = CHART / "Chart.yaml"
CT_SCHEMA = Path(__file__).resolve().parent / "fixtures" / "ct_chart_schema.yaml"


@pytest.fixture(scope="module")
def yamale() -> Any:
    try:
        return importlib.import_module("yamale")
    except ImportError:
        message = "yamale is not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run the chart tests)")
        pytest.skip(message)


def _ct_lint(yamale: Any, chart_yaml: Path) -> None:
    """chart-testing's Chart.yaml check: yamale, strict. Raises yamale.YamaleError on a failure."""
    schema = yamale.make_schema(str(CT_SCHEMA))
    data = yamale.make_data(str(chart_yaml))
    yamale.validate(schema, data, strict=True)


def test_chart_yaml_passes_chart_testings_schema(yamale: Any) -> None:
    _ct_lint(yamale, CHART_YAML)


def test_the_fixture_is_chart_testings_schema() -> None:
    text = CT_SCHEMA.read_text()
    assert "helm/chart-testing" in text
    assert "etc/chart_schema.yaml" in text
    documents = list(yaml.safe_load_all(text))
    chart, *includes = documents
    assert {"name", "version", "apiVersion", "home", "sources", "maintainers", "icon"} <= set(chart)
    assert chart["maintainers"] == "list(include('maintainer'), required=False)"
    assert {"maintainer", "dependency"} <= {key for doc in includes for key in doc}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"homepage": "https://example.com"}, "homepage: Unexpected element"),
        ({"maintainers": [{"name": "x", "mail": "x@example.com"}]}, "mail: Unexpected element"),
        ({"maintainers": [{"email": "x@example.com"}]}, "name: Required field missing"),
        ({"sources": "https://example.com"}, "sources: 'https://example.com' is not a list"),
        ({"annotations": {"artifacthub.io/prerelease": True}}, "is not a str"),
    ],
)
def test_the_ct_lint_rejects_what_chart_testing_rejects(
    yamale: Any, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """Guard against a vacuous pass: the same check fails a Chart.yaml chart-testing would fail."""
    chart = yaml.safe_load(CHART_YAML.read_text())
    chart.update(change)
    broken = tmp_path / "Chart.yaml"
    broken.write_text(yaml.safe_dump(chart))
    with pytest.raises(yamale.YamaleError) as caught:
        _ct_lint(yamale, broken)
    assert message in str(caught.value)


def test_chart_yaml_has_the_community_metadata() -> None:
    chart = yaml.safe_load(CHART_YAML.read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    # No address nobody has checked: the project publishes no repository address yet. The icon
    # is Prometheus's in the CNCF artwork repository (projects/prometheus/icon/color/).
    assert "home" not in chart
    assert "sources" not in chart
    assert chart["icon"] == (
        "https://raw.githubusercontent.com/cncf/artwork/refs/heads/main/"
        "projects/prometheus/icon/color/prometheus-icon-color.svg"
    )
    assert chart["kubeVersion"]
    assert chart["description"]
    # The project maintains the chart: one entry with the project's name, no person's address.
    (maintainer,) = chart["maintainers"]
    assert maintainer == {"name": "messaging-stats-exporter maintainers"}
    assert chart["annotations"]["artifacthub.io/license"] == "Apache-2.0"


def test_helm_lint_has_nothing_to_recommend(helm: str) -> None:
    result = _run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[INFO]" not in result.stdout, result.stdout
    assert "[WARNING]" not in result.stdout, result.stdout
