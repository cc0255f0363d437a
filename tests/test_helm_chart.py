"""The Helm chart in helm/messaging-stats-exporter.

`helm lint --strict`, `helm template` with the default values, the demo values and every feature on
(ci/*.yaml), each rendered manifest validated: Kubernetes kinds with kubernetes-validate (offline
schemas, strict), the Prometheus Operator kinds (ServiceMonitor, PrometheusRule) with the models
that cloudcoil-models-prometheus-operator generates from the operator's own CRDs, unknown fields
rejected. Then the contracts of the features: args, probes, security context, checksum/config,
secrets, ServiceMonitor, PrometheusRule toggles (on a temporary copy of the chart with a fixture
alerts file) and the Grafana dashboard ConfigMap.

Tools: helm (v3) from $HELM, PATH or .tools/bin (installed by .ci/install-chart-tools), the Python
packages kubernetes-validate and cloudcoil-models-prometheus-operator (in the test extra), and
promtool. A missing tool skips these tests on a developer machine and fails them in CI (the CI
variable is set).
"""

from __future__ import annotations

import base64
import copy
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from tests.conftest import run_promtool

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "messaging-stats-exporter"
CI_VALUES = {path.stem: path for path in sorted((CHART / "ci").glob("*.yaml"))}
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
RELEASE = "rel"
NAMESPACE = "monitoring"
FULLNAME = f"{RELEASE}-messaging-stats-exporter"
CONFIG_DIR = "/etc/messaging-stats-exporter/config"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
AUTO_RELOAD = ["--config.auto-reload-interval", "30s"]
SECRETS_PATH = "/etc/messaging-stats-exporter/secrets"

Manifest = dict[str, Any]


def _missing(what: str) -> None:
    # helm is the one chart tool pip cannot install; the others come with the test extra.
    how = "run .ci/install-chart-tools" if what == "helm" else "pip install -e '.[test]'"
    message = f"{what} is not installed: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the chart tests)")
    pytest.skip(message)


@functools.cache
def _find_helm() -> str | None:
    candidates = [
        os.environ.get("HELM"),
        shutil.which("helm"),
        str(REPO / ".tools" / "bin" / "helm"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    found = _find_helm()
    if found is None:
        _missing("helm")
    assert found is not None
    version = subprocess.run(
        [found, "version", "--short"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version.startswith("v3."), f"the chart is tested with helm v3, found {version}"
    return found


@pytest.fixture(scope="session")
def kubernetes_validate() -> Any:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        _missing("kubernetes-validate")


# ----------------------------------------------------------------------------------------- helpers


def _run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False)


def _template(
    helm: str,
    tmp_dir: Path,
    values: dict[str, Any] | None = None,
    *,
    chart: Path = CHART,
    values_files: tuple[Path, ...] = (),
    expect_error: bool = False,
) -> Any:
    """`helm template`: the rendered documents, or (with expect_error) helm's error text."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for path in values_files:
        args += ["--values", str(path)]
    if values is not None:
        values_path = tmp_dir / f"values-{len(list(tmp_dir.glob('values-*.yaml')))}.yaml"
        values_path.write_text(yaml.safe_dump(values))
        args += ["--values", str(values_path)]
    result = _run_helm(helm, *args)
    if expect_error:
        assert result.returncode != 0, f"helm template should have failed:\n{result.stdout}"
        return result.stderr
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['kind'] for d in docs]}"
    return found[0]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) applied to labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _kinds(docs: list[Manifest]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def _container(docs: list[Manifest]) -> dict[str, Any]:
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _pod_annotations(docs: list[Manifest]) -> dict[str, str]:
    return dict(_one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {})


# ------------------------------------------------------ the Prometheus Operator's custom kinds
# kubernetes-validate ships only Kubernetes' own schemas. ServiceMonitor and PrometheusRule
# (monitoring.coreos.com/v1) are checked with the pydantic models that
# cloudcoil-models-prometheus-operator generates from the Prometheus Operator's CRDs: their types,
# enums and patterns (durations, for instance) are the CRDs'. The models ignore unknown fields by
# default; validating with extra="forbid" rejects them at any depth, as the API server's strict
# field validation (`kubectl --validate=strict`) does. The manifest goes in as JSON, as it reaches
# the API server, and strict=True refuses coercions ("false" for a boolean).

OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")


@functools.cache
def _operator_models() -> Any:
    try:
        return importlib.import_module("cloudcoil.models.prometheus_operator.v1")
    except ImportError:
        _missing("cloudcoil-models-prometheus-operator")


def _validate_operator_kind(doc: Manifest) -> None:
    """Raises pydantic.ValidationError unless doc is valid for its CRD, unknown fields included."""
    model = getattr(_operator_models(), doc["kind"])
    model.model_validate_json(json.dumps(doc), strict=True, extra="forbid")


def _validate(kubernetes_validate: Any, doc: Manifest) -> None:
    """kubernetes-validate --strict for Kubernetes kinds, the CRD models for the operator's."""
    if doc["kind"] in OPERATOR_KINDS:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", doc["apiVersion"]
        _validate_operator_kind(doc)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


# ---------------------------------------------------------------------------------------- fixtures

FIXTURE_ALERTS = """\
groups:
  - name: messaging-stats-exporter
    rules:
      - alert: MessagingExporterCollectFailing
        expr: messaging_exporter_collect_success == 0
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.provider }} account {{ $labels.account }} is failing"
      - alert: MessagingExporterTargetStale
        expr: time() - messaging_exporter_last_success_timestamp_seconds > 3600
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.account }} has not succeeded for an hour"
      - record: account:messaging_exporter_collect_success:min
        expr: min by (account) (messaging_exporter_collect_success)
  - name: messaging-providers
    rules:
      - alert: ThuliumCampaignStuck
        expr: thulium_outbound_campaign_completion_ratio < 0.5
        for: 2h
        labels:
          severity: info
        annotations:
          summary: "campaign {{ $labels.campaign_id }} is below half"
"""
FIXTURE_DASHBOARD = (
    '{"title": "Messaging statistics", "uid": "messaging-stats",'
    ' "panels": [{"title": "{{ not a helm template }}", "type": "stat"}]}'
)


@pytest.fixture(scope="module")
def fixture_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart whose files/ holds a fixture alerts file and dashboard."""
    chart = tmp_path_factory.mktemp("chart") / "messaging-stats-exporter"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("files"))
    (chart / "files").mkdir()
    (chart / "files" / "alerts.yaml").write_text(FIXTURE_ALERTS)
    (chart / "files" / "dashboard.json").write_text(FIXTURE_DASHBOARD)
    return chart


@pytest.fixture(scope="module")
def bare_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart without files/: how it is before dashboards and alerts exist."""
    chart = tmp_path_factory.mktemp("bare") / "messaging-stats-exporter"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("files"))
    return chart


@pytest.fixture
def render(helm: str, tmp_path: Path) -> Callable[..., Any]:
    def _render(values: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return _template(helm, tmp_path, values, **kwargs)

    return _render


# --------------------------------------------------------------------------------- lint & validate


def test_ci_values_files_cover_demo_and_every_feature() -> None:
    assert set(CI_VALUES) >= {"demo-values", "all-features-values"}
    everything = yaml.safe_load(CI_VALUES["all-features-values"].read_text())
    for feature in ("serviceMonitor", "prometheusRule", "grafanaDashboard"):
        assert everything[feature]["enabled"] is True
    assert everything["existingSecret"]
    assert everything["secrets"]
    assert everything["runbookBaseUrl"]
    assert yaml.safe_load(CI_VALUES["demo-values"].read_text())["demo"] is True


@pytest.mark.parametrize("values_name", [None, *CI_VALUES])
def test_helm_lint_strict(helm: str, values_name: str | None) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if values_name:
        args += ["--values", str(CI_VALUES[values_name])]
    result = _run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


SCENARIOS = {
    "default": {},
    **{name: {"values_files": (path,)} for name, path in CI_VALUES.items()},
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_manifests_are_valid(
    render: Callable[..., Any], kubernetes_validate: Any, scenario: str
) -> None:
    docs = render(**SCENARIOS[scenario])
    assert docs
    for doc in docs:
        _validate(kubernetes_validate, doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_every_feature_with_files_renders_valid_manifests(
    render: Callable[..., Any], kubernetes_validate: Any, fixture_chart: Path
) -> None:
    docs = render(chart=fixture_chart, values_files=(CI_VALUES["all-features-values"],))
    assert _kinds(docs) == sorted(
        [
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "ConfigMap",
            "Service",
            "Deployment",
            "ServiceMonitor",
            "PrometheusRule",
            "Pod",
            "NetworkPolicy",
            # extraManifests: a ConfigMap (an object) and a ServiceAccount (a string).
            "ConfigMap",
            "ServiceAccount",
        ]
    )
    for doc in docs:
        _validate(kubernetes_validate, doc)


def test_validation_is_strict(render: Callable[..., Any], kubernetes_validate: Any) -> None:
    """Guard against a vacuous pass: a misspelt field is rejected by both kinds of validation."""
    docs = render({"serviceMonitor": {"enabled": True}})
    deployment = copy.deepcopy(_one(docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)
    monitor = copy.deepcopy(_one(docs, "ServiceMonitor"))
    _validate(kubernetes_validate, monitor)  # as rendered: valid
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(pydantic.ValidationError, match="intervall"):
        _validate(kubernetes_validate, monitor)


def _operator_kind_error(doc: Manifest) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        _validate_operator_kind(doc)
    return str(caught.value)


def test_the_crd_models_reject_unknown_fields_at_any_depth(
    render: Callable[..., Any], fixture_chart: Path
) -> None:
    """The ServiceMonitor and PrometheusRule models of the operator's CRDs, as this test file uses
    them, reject a misspelt field wherever it is, and a value of the wrong type or pattern."""
    values = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    docs = render(values, chart=fixture_chart)
    monitor, rule = _one(docs, "ServiceMonitor"), _one(docs, "PrometheusRule")
    for doc in (monitor, rule):
        _validate_operator_kind(doc)

    typo = copy.deepcopy(monitor)
    endpoint = typo["spec"]["endpoints"][0]
    endpoint["scrapeTimout"] = endpoint.pop("scrapeTimeout")
    error = _operator_kind_error(typo)
    assert "spec.endpoints.0.scrapeTimout" in error
    assert "Extra inputs are not permitted" in error

    typo = copy.deepcopy(monitor)
    typo["spec"]["selector"]["matchLabel"] = typo["spec"]["selector"].pop("matchLabels")
    assert "spec.selector.matchLabel" in _operator_kind_error(typo)

    typo = copy.deepcopy(monitor)
    typo["metadata"]["label"] = {"release": "kube-prometheus-stack"}
    assert "metadata.label" in _operator_kind_error(typo)

    wrong = copy.deepcopy(monitor)
    wrong["spec"]["endpoints"][0]["interval"] = "30 seconds"  # not a Prometheus duration
    assert "spec.endpoints.0.interval" in _operator_kind_error(wrong)

    wrong = copy.deepcopy(monitor)
    wrong["spec"]["endpoints"][0]["honorLabels"] = "false"  # a string, not a boolean
    assert "spec.endpoints.0.honorLabels" in _operator_kind_error(wrong)

    typo = copy.deepcopy(rule)
    typo["spec"]["groups"][0]["rules"][0]["annotation"] = {"summary": "x"}
    assert "spec.groups.0.rules.0.annotation" in _operator_kind_error(typo)

    typo = copy.deepcopy(rule)
    typo["spec"]["group"] = typo["spec"].pop("groups")
    assert "spec.group" in _operator_kind_error(typo)


def test_kubernetes_validate_cli_passes_the_demo_render(
    helm: str, kubernetes_validate: Any, tmp_path: Path
) -> None:
    """The issue's "done when" as a user runs it: helm template | kubernetes-validate --strict."""
    result = _run_helm(helm, "template", RELEASE, str(CHART), "-f", str(CI_VALUES["demo-values"]))
    assert result.returncode == 0, result.stderr
    manifests = tmp_path / "demo.yaml"
    manifests.write_text(result.stdout)
    beside = Path(sys.executable).parent / "kubernetes-validate"
    cli = shutil.which("kubernetes-validate") or (str(beside) if beside.is_file() else None)
    if cli is None:
        _missing("the kubernetes-validate command")
    assert cli is not None
    checked = subprocess.run(
        [cli, "--strict", str(manifests)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "passed for resource deployment/" in checked.stdout + checked.stderr


# ----------------------------------------------------------------------------- the workload itself


def test_default_values_render_the_workload_only(render: Callable[..., Any]) -> None:
    docs = render()
    assert _kinds(docs) == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    container = _container(docs)
    assert container["args"] == [
        "--config",
        CONFIG_PATH,
        *AUTO_RELOAD,
        "--web.listen-address",
        "0.0.0.0:10057",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 10057, "protocol": "TCP"}]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"messaging-stats-exporter:{app_version}"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # The ConfigMap's directory, not a subPath: the kubelet updates the file in place.
    assert mounts["config"] == {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
    assert "secrets" not in mounts
    service = _one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 10057, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_config_map_holds_values_config(render: Callable[..., Any]) -> None:
    config = {
        "log": {"level": "debug", "format": "console"},
        "targets": [
            {
                "name": "thulium-acme",
                "provider": "thulium",
                "base_url": "https://acme.thulium.com/api",
                "username": "api_user",
                "password_file": f"{SECRETS_PATH}/thulium-password",
            },
            {"name": "exolve", "provider": "exolve", "base_url": "https://x", "api_key": "${KEY}"},
        ],
    }
    docs = render({"config": config})
    rendered = yaml.safe_load(_one(docs, "ConfigMap")["data"]["config.yaml"])
    # Helm merges a map into the default one (`defaults` stays) and replaces lists (`targets`).
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    assert rendered == {**defaults, **config}
    # ${VAR} reaches the exporter untouched: the exporter, not Helm, resolves it.
    assert rendered["targets"][1]["api_key"] == "${KEY}"


def _check_config(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_the_default_config_is_refused_for_want_of_targets(
    render: Callable[..., Any], tmp_path: Path
) -> None:
    """The chart's defaults name no target: the exporter refuses to start collecting nothing,
    saying which key to fill in."""
    result = _check_config(_one(render(), "ConfigMap")["data"]["config.yaml"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "targets: at least one target is required" in result.stderr


def test_the_default_settings_with_a_target_pass_the_exporters_check(
    render: Callable[..., Any], tmp_path: Path
) -> None:
    """The chart's defaults with one target are a config the exporter accepts."""
    target = {
        "name": "thulium-main",
        "provider": "thulium",
        "base_url": "https://example.thulium.com/api",
        "username": "u",
        "password": "p",
    }
    docs = render({"config": {"targets": [target]}})
    result = _check_config(_one(docs, "ConfigMap")["data"]["config.yaml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_may_be_a_string_used_verbatim(render: Callable[..., Any]) -> None:
    text = "# managed elsewhere\ntargets: []\nlog: {level: warning}\n"
    docs = render({"config": text})
    assert _one(docs, "ConfigMap")["data"]["config.yaml"] == text


def test_demo_runs_the_simulator(render: Callable[..., Any]) -> None:
    docs = render(values_files=(CI_VALUES["demo-values"],))
    args = _container(docs)["args"]
    assert args[0] == "--demo"
    assert "--config" not in args
    assert args[args.index("--web.listen-address") + 1] == "0.0.0.0:10057"


def test_extra_args_env_and_port(render: Callable[..., Any]) -> None:
    env = [{"name": "ALTCRAFT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "a", "key": "t"}}}]
    docs = render({"extraArgs": ["--demo"], "containerPort": 9100, "env": env})
    container = _container(docs)
    assert container["args"] == [
        "--config",
        CONFIG_PATH,
        *AUTO_RELOAD,
        "--web.listen-address",
        "0.0.0.0:9100",
        "--demo",
    ]
    assert container["env"] == env
    assert container["ports"][0]["containerPort"] == 9100


def test_image_reference(render: Callable[..., Any]) -> None:
    image = {"registry": "registry.example.com/", "repository": "team/exporter", "tag": "1.2.3"}
    assert (
        _container(render({"image": image}))["image"] == "registry.example.com/team/exporter:1.2.3"
    )
    digest = "sha256:" + "a" * 64
    pinned = _container(render({"image": {**image, "digest": digest}}))["image"]
    assert pinned == f"registry.example.com/team/exporter@{digest}"


# The exporter's workload: a Deployment, or with `sharding.replicas` above 1 a StatefulSet.
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def _workload(docs: list[Manifest]) -> Manifest:
    """The exporter's Deployment or StatefulSet: exactly one of them is rendered."""
    found = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert len(found) == 1, f"expected one Deployment or StatefulSet, got {_kinds(docs)}"
    return found[0]


def _pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec the chart renders: the workload's pod template (Deployment or StatefulSet)
    and bare Pods (the `helm test` pod)."""
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_security_context_is_strict(render: Callable[..., Any], scenario: str) -> None:
    docs = render(**SCENARIOS[scenario])
    pods = list(_pod_specs(docs))
    assert len(pods) == 2  # the exporter and the `helm test` pod
    for name, pod in pods:
        assert pod["automountServiceAccountToken"] is False, name
        pod_context = pod["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert pod_context["runAsUser"] > 0, name
        assert pod_context["runAsGroup"] > 0, name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert "hostNetwork" not in pod, name
        assert "hostPID" not in pod, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["privileged"] is False, name
            assert context["runAsNonRoot"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert container["resources"]["limits"]["memory"], name
    exporter_pod = _workload(docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in exporter_pod["volumes"]}
    assert volumes["tmp"]["emptyDir"]["sizeLimit"]  # the only writable path, and a bounded one


def test_service_account_token_is_not_mounted(render: Callable[..., Any]) -> None:
    docs = render()
    assert _one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    docs = render({"serviceAccount": {"create": False}})
    assert "ServiceAccount" not in _kinds(docs)
    assert _one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


# ------------------------------------------------------------------------------ rollout on changes


def test_with_auto_reload_a_config_change_does_not_roll_the_pod(
    render: Callable[..., Any],
) -> None:
    """The exporter reloads an edited ConfigMap itself: no annotation follows the config."""
    plain = _one(render(), "Deployment")["spec"]["template"]
    changed = render({"config": {"log": {"level": "debug"}, "targets": []}})
    assert "annotations" not in plain["metadata"]
    assert _one(changed, "Deployment")["spec"]["template"] == plain


def test_without_auto_reload_checksum_config_follows_the_config_only(
    render: Callable[..., Any],
) -> None:
    off = {"autoReloadInterval": ""}
    assert not any(arg.startswith("--config.auto") for arg in _container(render(off))["args"])
    base = _pod_annotations(render(off))["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert _pod_annotations(render(off))["checksum/config"] == base  # deterministic
    config = {"config": {"log": {"level": "debug"}, "targets": []}}
    changed = _pod_annotations(render({**off, **config}))
    assert changed["checksum/config"] != base
    unrelated = _pod_annotations(render({**off, "podLabels": {"x": "z"}, "resources": {}}))
    assert unrelated["checksum/config"] == base
    assert "checksum/secret" not in _pod_annotations(render(off))


def test_checksum_secret_follows_the_chart_secret(render: Callable[..., Any]) -> None:
    first = _pod_annotations(render({"secrets": {"thulium-password": "one"}}))["checksum/secret"]
    second = _pod_annotations(render({"secrets": {"thulium-password": "two"}}))["checksum/secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert first != second


# ----------------------------------------------------------------------------------------- secrets


def _secret_volume(docs: list[Manifest]) -> dict[str, Any]:
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secrets"]
    assert mounts == [{"name": "secrets", "mountPath": SECRETS_PATH, "readOnly": True}]
    return dict(volume)


def test_secrets_from_values_make_a_mounted_secret(render: Callable[..., Any]) -> None:
    docs = render({"secrets": {"thulium-password": "s3cret\n", "exolve-api-key": 12345}})
    secret = _one(docs, "Secret")
    assert secret["metadata"]["name"] == FULLNAME
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"thulium-password": "s3cret\n", "exolve-api-key": "12345"}
    assert _secret_volume(docs)["projected"]["sources"] == [{"secret": {"name": FULLNAME}}]


def test_existing_secret_is_mounted_and_no_secret_is_made(render: Callable[..., Any]) -> None:
    docs = render({"existingSecret": "messaging-accounts"})
    assert "Secret" not in _kinds(docs)
    sources = _secret_volume(docs)["projected"]["sources"]
    assert sources == [{"secret": {"name": "messaging-accounts"}}]
    assert "checksum/secret" not in _pod_annotations(docs)


def test_existing_secret_and_values_secrets_combine(render: Callable[..., Any]) -> None:
    docs = render({"existingSecret": "accounts", "secrets": {"a": "b"}})
    sources = _secret_volume(docs)["projected"]["sources"]
    assert sources == [{"secret": {"name": "accounts"}}, {"secret": {"name": FULLNAME}}]


def test_a_secret_key_that_cannot_be_a_file_name_fails(render: Callable[..., Any]) -> None:
    error = render({"secrets": {"bad/key": "x"}}, expect_error=True)
    assert "secrets.bad/key" in error


# ---------------------------------------------------------------------------------- ServiceMonitor


def test_service_monitor(render: Callable[..., Any]) -> None:
    values = {
        "serviceMonitor": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
            "scrapeTimeout": "5s",
            "relabelings": [{"targetLabel": "cluster", "replacement": "prod"}],
        }
    }
    docs = render(values)
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = _one(docs, "Service")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert endpoint["relabelings"] == values["serviceMonitor"]["relabelings"]
    elsewhere = _one(
        render({"serviceMonitor": {"enabled": True, "namespace": "prom"}}), "ServiceMonitor"
    )
    assert elsewhere["metadata"]["namespace"] == "prom"
    assert elsewhere["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


# ---------------------------------------------------------------------------------- PrometheusRule


def test_without_files_the_optional_features_render_nothing(
    render: Callable[..., Any], bare_chart: Path
) -> None:
    docs = render(
        {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
        chart=bare_chart,
    )
    assert "PrometheusRule" not in _kinds(docs)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"] == [FULLNAME]


@pytest.mark.parametrize("key", ["rules", "additionalRules"])
def test_additional_rules_render_without_the_rules_file(
    render: Callable[..., Any], bare_chart: Path, key: str
) -> None:
    extra = [{"alert": "Extra", "expr": "vector(1)", "labels": {"severity": "info"}}]
    docs = render({"prometheusRule": {"enabled": True, key: extra}}, chart=bare_chart)
    groups = _one(docs, "PrometheusRule")["spec"]["groups"]
    assert groups == [{"name": f"{FULLNAME}.additional", "rules": extra}]


def _rules(docs: list[Manifest]) -> dict[str, dict[str, Any]]:
    rule = _one(docs, "PrometheusRule")
    return {
        r.get("alert") or r["record"]: r for group in rule["spec"]["groups"] for r in group["rules"]
    }


def test_prometheus_rule_is_the_rules_file_by_default(
    render: Callable[..., Any], fixture_chart: Path
) -> None:
    docs = render({"prometheusRule": {"enabled": True}}, chart=fixture_chart)
    rule = _one(docs, "PrometheusRule")
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["spec"]["groups"] == yaml.safe_load(FIXTURE_ALERTS)["groups"]
    # Alert templating reaches Prometheus untouched: Helm must not evaluate {{ $labels }}.
    summary = _rules(docs)["MessagingExporterCollectFailing"]["annotations"]["summary"]
    assert summary == "{{ $labels.provider }} account {{ $labels.account }} is failing"
    assert "PrometheusRule" not in _kinds(render(chart=fixture_chart))  # off by default


def test_prometheus_rule_per_alert_toggles_and_overrides(
    render: Callable[..., Any], fixture_chart: Path
) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "additionalRuleLabels": {"team": "messaging"},
            "additionalRuleAnnotations": {"runbook_url": "https://runbooks.example.com"},
            "alertOverrides": {
                "MessagingExporterTargetStale": {"enabled": False},
                "MessagingExporterCollectFailing": {
                    "enabled": True,
                    "for": "1h",
                    "severity": "critical",
                    "labels": {"pager": "yes"},
                    "annotations": {"summary": "overridden"},
                },
                "ThuliumCampaignStuck": {
                    "expr": "thulium_outbound_campaign_completion_ratio < 0.2"
                },
            },
        }
    }
    docs = render(values, chart=fixture_chart)
    rule = _one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = _rules(docs)
    assert "MessagingExporterTargetStale" not in rules
    failing = rules["MessagingExporterCollectFailing"]
    assert failing["for"] == "1h"
    assert failing["labels"] == {"severity": "critical", "team": "messaging", "pager": "yes"}
    assert failing["annotations"] == {
        "summary": "overridden",
        "runbook_url": "https://runbooks.example.com",
    }
    assert failing["expr"] == "messaging_exporter_collect_success == 0"
    stuck = rules["ThuliumCampaignStuck"]
    assert stuck["expr"] == "thulium_outbound_campaign_completion_ratio < 0.2"
    assert stuck["for"] == "2h"
    assert stuck["labels"] == {"severity": "info", "team": "messaging"}
    recording = rules["account:messaging_exporter_collect_success:min"]
    assert "labels" not in recording  # rule labels are for alerts; a recording rule is untouched


def test_a_group_whose_alerts_are_all_disabled_is_dropped(
    render: Callable[..., Any], fixture_chart: Path
) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "alertOverrides": {"ThuliumCampaignStuck": {"enabled": False}},
        }
    }
    groups = _one(render(values, chart=fixture_chart), "PrometheusRule")["spec"]["groups"]
    assert [g["name"] for g in groups] == ["messaging-stats-exporter"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"MessagingExporterCollectFaling": {"enabled": False}},
            "prometheusRule.alertOverrides."
            "MessagingExporterCollectFaling: no alert of that name in files/alerts.yaml",
        ),
        (
            # values.schema.json knows the settings of an override.
            {"ThuliumCampaignStuck": {"enable": False}},
            "prometheusRule.alertOverrides.ThuliumCampaignStuck: "
            "Additional property enable is not allowed",
        ),
    ],
)
def test_a_misspelt_override_fails_instead_of_being_ignored(
    render: Callable[..., Any], fixture_chart: Path, override: dict[str, Any], message: str
) -> None:
    values = {"prometheusRule": {"enabled": True, "alertOverrides": override}}
    assert message in render(values, chart=fixture_chart, expect_error=True)


def test_rendered_rules_pass_promtool(
    render: Callable[..., Any], fixture_chart: Path, tmp_path: Path
) -> None:
    values = yaml.safe_load(CI_VALUES["all-features-values"].read_text())
    values["prometheusRule"]["alertOverrides"] = {
        "ThuliumCampaignStuck": {"for": "3h", "severity": "warning"}
    }
    spec = _one(render(values, chart=fixture_chart), "PrometheusRule")["spec"]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec))
    result = run_promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------- Grafana dashboard


def test_grafana_dashboard_config_map(render: Callable[..., Any], fixture_chart: Path) -> None:
    off = render(chart=fixture_chart)  # off by default: the exporter's ConfigMap only
    assert [d["metadata"]["name"] for d in off if d["kind"] == "ConfigMap"] == [FULLNAME]
    docs = render({"grafanaDashboard": {"enabled": True}}, chart=fixture_chart)
    dashboard = _one(docs, "ConfigMap", f"{FULLNAME}-dashboards")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == NAMESPACE
    # The JSON arrives byte for byte: Helm does not evaluate the {{ }} inside it.
    assert dashboard["data"] == {f"{FULLNAME}-dashboard.json": FIXTURE_DASHBOARD}

    custom = {
        "enabled": True,
        "namespace": "grafana",
        "label": "grafana_dashboard_messaging",
        "labelValue": "true",
        "labels": {"extra": "x"},
        "annotations": {"grafana_folder": "Messaging"},
    }
    docs = render({"grafanaDashboard": custom}, chart=fixture_chart)
    metadata = _one(docs, "ConfigMap", f"{FULLNAME}-dashboards")["metadata"]
    assert metadata["namespace"] == "grafana"
    assert metadata["labels"]["grafana_dashboard_messaging"] == "true"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["labels"]["extra"] == "x"
    assert metadata["annotations"] == {"grafana_folder": "Messaging"}


def test_an_invalid_dashboard_fails_the_render(
    helm: str, tmp_path: Path, fixture_chart: Path
) -> None:
    chart = tmp_path / "messaging-stats-exporter"
    shutil.copytree(fixture_chart, chart)
    (chart / "files" / "broken.json").write_text('{"title": ')
    error = _template(
        helm, tmp_path, {"grafanaDashboard": {"enabled": True}}, chart=chart, expect_error=True
    )
    assert "files/broken.json is not valid JSON" in error


# -------------------------------------------------------------- the chart's real files, once there


def test_the_charts_own_alerts_and_dashboards_render(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    alerts = CHART / "files" / "alerts.yaml"
    dashboards = sorted((CHART / "files").glob("*.json"))
    if not alerts.is_file() and not dashboards:
        pytest.skip("the chart has no files/alerts.yaml or files/*.json yet")
    docs = render({"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}})
    for doc in docs:
        _validate(kubernetes_validate, doc)
    if alerts.is_file():
        names = [
            r["alert"]
            for g in yaml.safe_load(alerts.read_text())["groups"]
            for r in g["rules"]
            if "alert" in r
        ]
        assert sorted(a for a in _rules(docs) if a in names) == sorted(names)
        # Every alert can be switched off by name.
        overrides = {n: {"enabled": False} for n in names}
        off = {"prometheusRule": {"enabled": True, "alertOverrides": overrides}}
        remaining = [d for d in render(off) if d["kind"] == "PrometheusRule"]
        assert all(
            "alert" not in r for d in remaining for g in d["spec"]["groups"] for r in g["rules"]
        )
    if dashboards:
        data = _one(docs, "ConfigMap", f"{FULLNAME}-dashboards")["data"]
        assert sorted(data) == sorted(f"{FULLNAME}-{p.name}" for p in dashboards)


# ----------------------------------------------------------------------------------- documentation


def _value_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Top-level keys, and the keys of the groups whose members are set one by one."""
    grouped = {
        "image",
        "serviceAccount",
        "service",
        "serviceMonitor",
        "prometheusRule",
        "grafanaDashboard",
        "networkPolicy",
    }
    for key, value in values.items():
        yield prefix + key
        if not prefix and key in grouped:
            yield from _value_keys(value, prefix=f"{key}.")


def test_every_value_is_documented_in_values_yaml_and_readme() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    readme = (CHART / "README.md").read_text()
    lines = text.splitlines()
    for key in _value_keys(values):
        assert f"`{key}`" in readme, f"README.md does not document `{key}`"
        leaf = key.rsplit(".", 1)[-1]
        indent = "  " * key.count(".")
        (index,) = [
            i
            for i, line in enumerate(lines)
            if line.startswith(f"{indent}{leaf}:")
            and (not indent or _parent_of(lines, i) == key.split(".")[0])
        ]
        assert lines[index - 1].strip().startswith("#"), f"values.yaml: {key} has no comment"


def _parent_of(lines: list[str], index: int) -> str:
    for line in reversed(lines[:index]):
        if line and not line.startswith((" ", "#")):
            return line.split(":", 1)[0]
    return ""


def test_readme_shows_the_installs() -> None:
    readme = (CHART / "README.md").read_text()
    assert "--set demo=true" in readme
    assert "existingSecret" in readme
    assert "create secret generic" in readme
    assert "kube-prometheus-stack" in readme
    assert "serviceMonitor.additionalLabels.release" in readme
    assert "prometheusRule.alertOverrides.<AlertName>" in readme


# ------------------------------------------------------------------------------- runbook address
RUNBOOK = "https://git.example.com/ops/messaging-stats-exporter/blob/v1/docs/runbook.md"
PLACEHOLDER = "${RUNBOOK_BASE_URL}"


def _shipped_alerts() -> list[str]:
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    return [r["alert"] for g in shipped["groups"] for r in g["rules"] if "alert" in r]


def test_runbook_urls_are_the_runbook_base_url_and_the_alerts_section(
    render: Callable[..., Any], tmp_path: Path
) -> None:
    docs = render({"prometheusRule": {"enabled": True}, "runbookBaseUrl": RUNBOOK})
    rules = _rules(docs)
    names = _shipped_alerts()
    assert names
    for name in names:
        assert rules[name]["annotations"]["runbook_url"] == f"{RUNBOOK}#{name.lower()}"
    spec = _one(docs, "PrometheusRule")["spec"]
    assert PLACEHOLDER not in json.dumps(spec)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec))
    result = run_promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_a_runbook_base_url_the_alerts_name_no_address(
    render: Callable[..., Any],
) -> None:
    docs = render({"prometheusRule": {"enabled": True}})
    rules = _rules(docs)
    for name in _shipped_alerts():
        annotations = rules[name]["annotations"]
        assert "runbook_url" not in annotations, name
        assert {"summary", "description"} <= set(annotations)
    assert PLACEHOLDER not in json.dumps(_one(docs, "PrometheusRule")["spec"])
    # An address the user gives for every alert, or for one, still arrives.
    given = {
        "prometheusRule": {
            "enabled": True,
            "additionalRuleAnnotations": {"runbook_url": "https://runbooks.example.com/all"},
            "alertOverrides": {
                "MessagingExporterDataStale": {
                    "annotations": {"runbook_url": "https://runbooks.example.com/stale"}
                }
            },
        },
        "runbookBaseUrl": RUNBOOK,
    }
    rules = _rules(render(given))
    assert rules["MessagingExporterDataStale"]["annotations"]["runbook_url"] == (
        "https://runbooks.example.com/stale"
    )
    assert rules["MessagingExporterCollectFailing"]["annotations"]["runbook_url"] == (
        "https://runbooks.example.com/all"
    )


def _dashboards(docs: list[Manifest]) -> dict[str, str]:
    return dict(_one(docs, "ConfigMap", f"{FULLNAME}-dashboards")["data"])


def test_the_dashboard_links_to_the_runbook_base_url_only_when_given(
    render: Callable[..., Any],
) -> None:
    files = {f"{FULLNAME}-{p.name}": p.read_text() for p in (CHART / "files").glob("*.json")}
    assert files
    for text in files.values():
        assert json.loads(text)["links"] == [], "the shipped dashboards name no address"
    plain = _dashboards(render({"grafanaDashboard": {"enabled": True}}))
    assert plain == {key: text.rstrip("\n") for key, text in files.items()}  # byte for byte
    linked = _dashboards(render({"grafanaDashboard": {"enabled": True}, "runbookBaseUrl": RUNBOOK}))
    assert set(linked) == set(files)
    for key, text in linked.items():
        dashboard = json.loads(text)
        (link,) = dashboard.pop("links")
        assert link["url"] == RUNBOOK
        assert link["title"] == "Runbook"
        assert link["type"] == "link"
        shipped = json.loads(files[key])
        shipped.pop("links")
        assert dashboard == shipped  # the same dashboard otherwise


@pytest.mark.parametrize(
    "address",
    [
        "git.example.com/runbook.md",  # no scheme
        f"{RUNBOOK}#messagingexportercollectfailing",  # the chart adds the section
        "https://example.com/run book.md",
    ],
)
def test_a_runbook_base_url_that_is_no_address_fails(
    render: Callable[..., Any], address: str
) -> None:
    error = render({"runbookBaseUrl": address}, expect_error=True)
    assert "runbookBaseUrl" in error
