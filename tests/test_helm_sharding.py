"""The Helm chart's sharded mode: `sharding.replicas: N` (N > 1) runs a StatefulSet of N pods, each
started with `--shard-from-hostname --shard-count N`, governed by a headless Service, with a
PodDisruptionBudget; the ServiceMonitor keeps scraping every pod through the regular Service (and
never through the headless one, which would scrape each pod twice). With the default values the
chart renders what it rendered before sharding existed: one Deployment, no StatefulSet, no PDB.

Uses the helpers and fixtures of tests/test_helm_chart.py (helm v3 and kubernetes-validate,
installed by .ci/install-chart-tools; a missing tool skips these tests, or fails them in CI).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import cli
from exporter.config import Sharding
from tests.test_helm_chart import (
    CHART,
    CI_VALUES,
    CONFIG_PATH,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    Manifest,
    _kinds,
    _missing,
    _one,
    _run_helm,
    _selects,
    _validate,
    helm,
    kubernetes_validate,
    render,
)

# The fixtures, imported so that pytest finds them in this module.
__all__ = ["helm", "kubernetes_validate", "render"]

SHARDS = 3
HEADLESS = f"{FULLNAME}-headless"
SHARDED = {"sharding": {"replicas": SHARDS}}
# A sharded install as a kube-prometheus-stack user with many accounts would set it. The chart's
# ci/sharded-values.yaml is another: tests/test_helm_chart.py runs every ci/*.yaml through lint,
# validation and the security-context checks (which find the pods of a Deployment or a
# StatefulSet); test_the_ci_sharded_values_run_three_shards below checks that it does shard.
SHARDED_INSTALL = {
    "image": {"repository": "registry.example.com/monitoring/messaging-stats-exporter"},
    "sharding": {"replicas": SHARDS, "podDisruptionBudget": {"maxUnavailable": 1}},
    "existingSecret": "messaging-accounts",
    "config": {
        "targets": [
            {
                "name": f"thulium-agency-{agency}",
                "provider": "thulium",
                "base_url": f"https://agency-{agency}.thulium.com/api",
                "username": "api_user",
                "password_file": f"/etc/messaging-stats-exporter/secrets/thulium-{agency}",
            }
            for agency in "abcdef"
        ]
    },
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True},
}


@pytest.fixture
def sharded_values(tmp_path: Path) -> Path:
    path = tmp_path / "sharded-values.yaml"
    path.write_text(yaml.safe_dump(SHARDED_INSTALL))
    return path


def _pod_template(docs: list[Manifest], kind: str = "StatefulSet") -> dict[str, Any]:
    return dict(_one(docs, kind)["spec"]["template"])


def _args(docs: list[Manifest], kind: str = "StatefulSet") -> list[str]:
    (container,) = _pod_template(docs, kind)["spec"]["containers"]
    return list(container["args"])


def _services(docs: list[Manifest]) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}


# ---------------------------------------------------------------------------------- sharded render


def test_sharded_values_render_a_statefulset_headless_service_and_pdb(
    render: Callable[..., Any],
) -> None:
    docs = render(SHARDED)
    assert _kinds(docs) == [
        "ConfigMap",
        "Pod",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    assert "Deployment" not in _kinds(docs)

    statefulset = _one(docs, "StatefulSet")
    assert statefulset["metadata"]["name"] == FULLNAME
    spec = statefulset["spec"]
    assert spec["replicas"] == SHARDS
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert "strategy" not in spec  # the Deployment's field; a StatefulSet has updateStrategy
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()

    # Every pod takes its index from its ordinal and the count from sharding.replicas.
    args = _args(docs)
    assert args[args.index("--shard-from-hostname") :] == [
        "--shard-from-hostname",
        "--shard-count",
        str(SHARDS),
    ]
    assert args[:6] == [
        "--config",
        CONFIG_PATH,
        "--config.auto-reload-interval",
        "30s",
        "--web.listen-address",
        "0.0.0.0:10057",
    ]

    # serviceName is a headless Service that selects the StatefulSet's pods.
    services = _services(docs)
    assert spec["serviceName"] == HEADLESS
    headless = services[HEADLESS]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert headless["spec"]["ports"] == [
        {"name": "http", "port": 10057, "targetPort": "http", "protocol": "TCP"}
    ]
    # The regular Service still selects every pod: its endpoints are all the shards.
    assert services[FULLNAME]["spec"]["selector"].items() <= pod_labels.items()

    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == FULLNAME
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_sharded_render_passes_kubernetes_validate(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    docs = render({**SHARDED, "serviceMonitor": {"enabled": True}})
    for doc in docs:
        _validate(kubernetes_validate, doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_a_sharded_install_passes_the_kubernetes_validate_cli(
    helm: str, kubernetes_validate: Any, tmp_path: Path, sharded_values: Path
) -> None:
    """As a user runs it: helm template -f sharded-values.yaml | kubernetes-validate --strict."""
    result = _run_helm(helm, "template", RELEASE, str(CHART), "-f", str(sharded_values))
    assert result.returncode == 0, result.stderr
    manifests = tmp_path / "sharded.yaml"
    manifests.write_text(result.stdout)
    beside = Path(sys.executable).parent / "kubernetes-validate"
    command = shutil.which("kubernetes-validate") or (str(beside) if beside.is_file() else None)
    if command is None:
        _missing("the kubernetes-validate command")
    assert command is not None
    checked = subprocess.run(
        [command, "--strict", str(manifests)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    for resource in (
        f"statefulset/{FULLNAME}",
        f"service/{HEADLESS}",
        f"poddisruptionbudget/{FULLNAME}",
    ):
        assert f"passed for resource {resource}" in output


@pytest.mark.parametrize("how", ["set-flag", "values-file"])
def test_helm_lint_strict_with_sharding(helm: str, sharded_values: Path, how: str) -> None:
    values = (
        ("--set", f"sharding.replicas={SHARDS}")
        if how == "set-flag"
        else ("--values", str(sharded_values))
    )
    result = _run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_a_sharded_install_with_every_feature_renders_valid_manifests(
    render: Callable[..., Any], kubernetes_validate: Any, sharded_values: Path
) -> None:
    docs = render(values_files=(sharded_values,))
    assert "StatefulSet" in _kinds(docs)
    assert "Deployment" not in _kinds(docs)
    for doc in docs:
        _validate(kubernetes_validate, doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_the_shards_security_context_is_strict(render: Callable[..., Any]) -> None:
    """The Deployment's guarantees (tests/test_helm_chart.py) hold for the StatefulSet's pods."""
    pod = _pod_template(render(SHARDED))["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_demo_mode_shards_too(render: Callable[..., Any]) -> None:
    args = _args(render({**SHARDED, "demo": True}))
    assert args[0] == "--demo"
    assert "--config" not in args
    assert args[-3:] == ["--shard-from-hostname", "--shard-count", str(SHARDS)]


def test_each_pod_name_gives_the_exporter_its_shard(
    render: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered arguments, parsed by the exporter on pods <statefulset>-0..N-1, give shards
    0..N-1 of N; an ordinal the count does not cover (a pod made by `kubectl scale`) is refused."""
    docs = render(SHARDED)
    name = _one(docs, "StatefulSet")["metadata"]["name"]
    args = cli.parser().parse_args(_args(docs))
    for ordinal in range(SHARDS):
        monkeypatch.setattr(socket, "gethostname", lambda o=ordinal: f"{name}-{o}")
        assert cli._shard(args) == Sharding(index=ordinal, count=SHARDS)
    monkeypatch.setattr(socket, "gethostname", lambda: f"{name}-{SHARDS}")
    with pytest.raises(ValueError, match="index must be below count"):
        cli._shard(args)


def test_the_ci_sharded_values_run_three_shards(render: Callable[..., Any]) -> None:
    """ci/sharded-values.yaml (run through every ci/*.yaml check of tests/test_helm_chart.py) is
    the sharded mode with the features that matter to it: the shards, the ServiceMonitor that
    scrapes each once, and the rules with the alert for targets no shard collects."""
    assert "sharded-values" in CI_VALUES
    docs = render(values_files=(CI_VALUES["sharded-values"],))
    assert "Deployment" not in _kinds(docs)
    statefulset = _one(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == SHARDS
    assert _args(docs)[-3:] == ["--shard-from-hostname", "--shard-count", str(SHARDS)]
    assert _one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert HEADLESS in _services(docs)
    selector = _one(docs, "ServiceMonitor")["spec"]["selector"]
    scraped = [n for n, s in _services(docs).items() if _selects(selector, s["metadata"]["labels"])]
    assert scraped == [FULLNAME]
    alerts = {
        rule.get("alert")
        for group in _one(docs, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    }
    assert "MessagingExporterShardTargetsUncovered" in alerts


# ------------------------------------------------------------------------- scraping every shard


@pytest.mark.parametrize("values", [{}, SHARDED], ids=["unsharded", "sharded"])
def test_the_service_monitor_selects_the_regular_service_only(
    render: Callable[..., Any], values: dict[str, Any]
) -> None:
    """Prometheus scrapes each endpoint of each selected Service: selecting the headless Service as
    well would scrape every shard twice (and double every sum). The regular Service's endpoints are
    all the pods, so selecting it alone scrapes every shard once, under the same job either way."""
    docs = render({**values, "serviceMonitor": {"enabled": True}})
    selector = _one(docs, "ServiceMonitor")["spec"]["selector"]
    selected = [
        name
        for name, service in _services(docs).items()
        if _selects(selector, service["metadata"]["labels"])
    ]
    assert selected == [FULLNAME]
    workload = "StatefulSet" if values else "Deployment"
    pod_labels = _pod_template(docs, workload)["metadata"]["labels"]
    assert _services(docs)[FULLNAME]["spec"]["selector"].items() <= pod_labels.items()


def test_sharding_changes_neither_the_service_nor_the_names(render: Callable[..., Any]) -> None:
    """The scraped Service (hence the `job` and `service` labels), the ConfigMap and the workload's
    name are the same sharded or not, so dashboards and alerts keep their selectors."""
    plain, sharded = render(), render(SHARDED)
    assert _one(plain, "Service") == _services(sharded)[FULLNAME]
    assert _one(plain, "ConfigMap") == _one(sharded, "ConfigMap")
    assert _one(plain, "Deployment")["metadata"] == _one(sharded, "StatefulSet")["metadata"]


def test_checksum_config_is_kept_in_sharded_mode(render: Callable[..., Any]) -> None:
    """Without auto reload, as unsharded; with it, no shard is rolled by a config change."""
    off = {"autoReloadInterval": ""}

    def checksum(docs: list[Manifest]) -> str:
        return str(_pod_template(docs)["metadata"]["annotations"]["checksum/config"])

    base = checksum(render({**SHARDED, **off}))
    deployment = _one(render(off), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert base == deployment["checksum/config"]  # the same ConfigMap, the same checksum
    changed = checksum(render({**SHARDED, **off, "config": {"log": {"level": "debug"}}}))
    assert changed != base
    assert "annotations" not in _pod_template(render(SHARDED))["metadata"]
    secret = _pod_template(render({**SHARDED, "secrets": {"a": "b"}}))["metadata"]["annotations"]
    assert "checksum/secret" in secret


def test_pod_settings_reach_the_statefulset(render: Callable[..., Any]) -> None:
    values = {
        **SHARDED,
        "existingSecret": "accounts",
        "podLabels": {"tier": "monitoring"},
        "deploymentLabels": {"owner": "messaging"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
    }
    docs = render(values)
    statefulset = _one(docs, "StatefulSet")
    assert statefulset["metadata"]["labels"]["owner"] == "messaging"
    template = statefulset["spec"]["template"]
    assert template["metadata"]["labels"]["tier"] == "monitoring"
    assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["secrets"]["projected"]["sources"] == [{"secret": {"name": "accounts"}}]
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


# ---------------------------------------------------------------------------- the default stays


def test_default_values_render_no_statefulset_and_no_pdb(render: Callable[..., Any]) -> None:
    docs = render()
    assert _kinds(docs) == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]
    assert not any("--shard" in arg for arg in _args(docs, "Deployment"))
    monitor = _one(render({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    assert "matchExpressions" not in monitor["spec"]["selector"]


def test_one_shard_is_exactly_the_unsharded_chart(helm: str) -> None:
    """sharding.replicas: 1 (the default, said explicitly) renders byte for byte what the chart
    renders without it."""

    def template(*extra: str) -> str:
        result = _run_helm(helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *extra)
        assert result.returncode == 0, result.stderr
        return result.stdout

    for values in ((), ("-f", str(CI_VALUES["all-features-values"]))):
        assert template(*values, "--set", "sharding.replicas=1") == template(*values)


# ------------------------------------------------------------------------------------ the PDB


@pytest.mark.parametrize(
    ("pdb", "expected"),
    [
        ({"maxUnavailable": 2}, {"maxUnavailable": 2}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"minAvailable": 2, "maxUnavailable": 1}, {"minAvailable": 2}),
    ],
)
def test_the_pdb_is_configurable(
    render: Callable[..., Any], pdb: dict[str, Any], expected: dict[str, Any]
) -> None:
    spec = _one(
        render({"sharding": {"replicas": 4, "podDisruptionBudget": pdb}}), "PodDisruptionBudget"
    )["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == expected


def test_the_pdb_can_be_left_out(render: Callable[..., Any]) -> None:
    docs = render({"sharding": {"replicas": SHARDS, "podDisruptionBudget": {"enabled": False}}})
    assert "PodDisruptionBudget" not in _kinds(docs)
    assert "StatefulSet" in _kinds(docs)


# ------------------------------------------------------------------------- settings refused


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sharding": {"replicas": 0}}, "sharding.replicas: 0 is not a whole number of shards"),
        ({"sharding": {"replicas": 2.5}}, "sharding.replicas: 2.5 is not a whole number"),
        ({"sharding": {"replicas": "three"}}, "sharding.replicas: three is not a whole number"),
        (
            {"sharding": {"replicas": 3}, "replicaCount": 2},
            "replicaCount: 2 with sharding.replicas: 3",
        ),
        (
            {"sharding": {"replicas": 3}, "extraArgs": ["--shard=0/3"]},
            "extraArgs: --shard=0/3 with sharding.replicas: 3",
        ),
        (
            {"sharding": {"replicas": 3}, "fullnameOverride": "x" * 53},
            "a StatefulSet name may have at most 52",
        ),
        (
            {"sharding": {"replicas": 3, "podDisruptionBudget": {"maxUnavailable": ""}}},
            "sharding.podDisruptionBudget: set maxUnavailable or minAvailable",
        ),
    ],
)
def test_contradictory_sharding_settings_fail(
    render: Callable[..., Any], values: dict[str, Any], message: str
) -> None:
    assert message in render(values, expect_error=True)


def test_a_52_character_name_is_accepted(render: Callable[..., Any]) -> None:
    docs = render({**SHARDED, "fullnameOverride": "x" * 52})
    assert _one(docs, "StatefulSet")["spec"]["serviceName"] == "x" * 52 + "-headless"


# ----------------------------------------------------------------------------------- documentation


def _keys(values: dict[str, Any], prefix: str) -> Iterator[str]:
    for key, value in values.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "updateStrategy":
            yield from _keys(value, f"{prefix}{key}.")


def test_every_sharding_value_is_documented() -> None:
    """Each key under `sharding` has a comment in values.yaml and a row in the chart README."""
    text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    lines = text.splitlines()
    start = lines.index("sharding:")
    end = next(
        i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith((" ", "#"))
    )
    block = lines[start:end]
    keys = list(_keys(yaml.safe_load(text)["sharding"], "sharding."))
    assert "sharding.podDisruptionBudget.maxUnavailable" in keys
    for key in keys:
        assert f"`{key}`" in readme, f"README.md does not document `{key}`"
        leaf, depth = key.rsplit(".", 1)[-1], key.count(".")
        (index,) = [i for i, line in enumerate(block) if line.startswith(f"{'  ' * depth}{leaf}:")]
        assert block[index - 1].strip().startswith("#"), f"values.yaml: {key} has no comment"


def test_running_at_scale_is_documented() -> None:
    readme = (CHART / "README.md").read_text()
    scaling = (CHART.parents[1] / "docs" / "scaling.md").read_text()
    for text in (readme, scaling):
        assert "Running at scale" in text
        for topic in ("sharding.replicas", "headless", "PodDisruptionBudget", "1/(N+1)"):
            assert topic in text, topic
