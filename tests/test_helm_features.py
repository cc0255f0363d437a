"""The chart's prometheus-community features: `serviceMonitor.additionalLabels`,
`prometheusRule.additionalLabels`, `prometheusRule.rules`/`additionalRules` (lists of the user's
rules) beside `prometheusRule.alertOverrides` (the shipped alerts' settings), `extraManifests`
(maps or strings through tpl), the optional NetworkPolicy, the Service's NodePort and LoadBalancer
settings, NOTES.txt for each Service type, and the README's Upgrading section.

Uses the helpers and fixtures of tests/test_helm_chart.py (helm v3 and kubernetes-validate from
.ci/install-chart-tools; a missing tool skips these tests, or fails them in CI).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_helm_chart import (
    CHART,
    CI_VALUES,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    Manifest,
    _kinds,
    _one,
    _selects,
    _validate,
    helm,
    kubernetes_validate,
    render,
)

ROOT = Path(__file__).resolve().parent.parent

# The fixtures, imported so that pytest finds them in this module.
__all__ = ["helm", "kubernetes_validate", "render"]

KPS = {"release": "kube-prometheus-stack"}


# ------------------------------------------------------------------- ServiceMonitor, PrometheusRule


def test_additional_labels_of_the_service_monitor_and_the_rule(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    docs = render(
        {
            "serviceMonitor": {"enabled": True, "additionalLabels": KPS},
            "prometheusRule": {"enabled": True, "additionalLabels": {**KPS, "role": "alerts"}},
        }
    )
    monitor, rule = _one(docs, "ServiceMonitor"), _one(docs, "PrometheusRule")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["role"] == "alerts"
    # The chart's own labels stay beside them.
    for doc in (monitor, rule):
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        _validate(kubernetes_validate, doc)


def _groups(docs: list[Manifest]) -> dict[str, list[dict[str, Any]]]:
    return {g["name"]: g["rules"] for g in _one(docs, "PrometheusRule")["spec"]["groups"]}


def test_rules_and_additional_rules_are_lists_of_the_users_rules(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    ours = [{"alert": "Ours", "expr": "vector(1)", "for": "5m", "labels": {"severity": "info"}}]
    more = [{"record": "job:up:sum", "expr": "sum by (job) (up)"}]
    values = {
        "prometheusRule": {
            "enabled": True,
            "additionalRuleLabels": {"team": "messaging"},
            "rules": ours,
            "additionalRules": more,
        }
    }
    docs = render(values)
    groups = _groups(docs)
    # As given, `rules` first, in a group after the shipped ones; the shipped alerts' settings
    # (additionalRuleLabels) are not applied to the user's own rules.
    assert list(groups)[-1] == f"{FULLNAME}.additional"
    assert groups[f"{FULLNAME}.additional"] == ours + more
    shipped = [
        r for name, rules in groups.items() if name != f"{FULLNAME}.additional" for r in rules
    ]
    assert shipped
    assert all(r["labels"]["team"] == "messaging" for r in shipped if "alert" in r)
    _validate(kubernetes_validate, _one(docs, "PrometheusRule"))


def test_alert_overrides_adjust_the_shipped_alerts(render: Callable[..., Any]) -> None:
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    first = alerts["groups"][0]["rules"][0]["alert"]
    values = {
        "prometheusRule": {
            "enabled": True,
            "alertOverrides": {first: {"for": "2h", "severity": "critical"}},
        }
    }
    (rule,) = [
        r for rules in _groups(render(values)).values() for r in rules if r.get("alert") == first
    ]
    assert rule["for"] == "2h"
    assert rule["labels"]["severity"] == "critical"
    off = {"prometheusRule": {"enabled": True, "alertOverrides": {first: {"enabled": False}}}}
    names = [r.get("alert") for rules in _groups(render(off)).values() for r in rules]
    assert first not in names


# ---------------------------------------------------------------------------------- extraManifests


def test_extra_manifests_maps_and_strings_go_through_tpl(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    values = {
        "extraManifests": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": '{{ include "messaging-stats-exporter.fullname" . }}-extra',
                    "namespace": "{{ .Release.Namespace }}",
                },
                "data": {"port": "{{ .Values.service.port }}", "plain": "text"},
            },
            "apiVersion: v1\n"
            "kind: Secret\n"
            "metadata:\n"
            "  name: {{ .Release.Name }}-extra\n"
            "  namespace: {{ .Release.Namespace }}\n"
            "stringData:\n"
            "  chart: {{ .Chart.Name }}\n",
        ]
    }
    docs = render(values)
    config_map = _one(docs, "ConfigMap", f"{FULLNAME}-extra")
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["data"] == {"port": "10057", "plain": "text"}
    secret = _one(docs, "Secret", f"{RELEASE}-extra")
    assert secret["stringData"] == {"chart": "messaging-stats-exporter"}
    for doc in (config_map, secret):
        _validate(kubernetes_validate, doc)


def test_no_extra_manifests_by_default(render: Callable[..., Any]) -> None:
    assert _kinds(render()) == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]


def test_the_ci_values_carry_extra_manifests_of_both_kinds(render: Callable[..., Any]) -> None:
    raw = yaml.safe_load(CI_VALUES["all-features-values"].read_text())["extraManifests"]
    assert {type(item) for item in raw} == {dict, str}
    docs = render(values_files=(CI_VALUES["all-features-values"],))
    assert _one(docs, "ConfigMap", f"{FULLNAME}-extra")["data"] == {"release": RELEASE}
    _one(docs, "ServiceAccount", f"{RELEASE}-extra")


# ---------------------------------------------------------------------------------- NetworkPolicy


def _policy(docs: list[Manifest]) -> dict[str, Any]:
    return dict(_one(docs, "NetworkPolicy")["spec"])


def _workload_pod_labels(docs: list[Manifest]) -> dict[str, str]:
    (workload,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _test_pod(docs: list[Manifest]) -> Manifest:
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    return pod


def test_no_network_policy_by_default(render: Callable[..., Any]) -> None:
    assert "NetworkPolicy" not in _kinds(render())


@pytest.mark.parametrize("sharded", [False, True], ids=["deployment", "sharded"])
def test_the_network_policy_allows_the_metrics_port_dns_and_https_only(
    render: Callable[..., Any], kubernetes_validate: Any, sharded: bool
) -> None:
    values: dict[str, Any] = {"networkPolicy": {"enabled": True}}
    if sharded:
        values["sharding"] = {"replicas": 3}
    docs = render(values)
    policy = _one(docs, "NetworkPolicy")
    _validate(kubernetes_validate, policy)
    spec = policy["spec"]
    # It selects the exporter's pods (every shard's), not the `helm test` pod.
    assert _selects(spec["podSelector"], _workload_pod_labels(docs))
    assert not _selects(spec["podSelector"], _test_pod(docs)["metadata"]["labels"])
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # In: the metrics port only, from anywhere.
    assert spec["ingress"] == [{"ports": [{"port": 10057, "protocol": "TCP"}]}]
    # Out: DNS over UDP and TCP, and the providers' HTTPS, to anywhere.
    assert spec["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"ports": [{"port": 443, "protocol": "TCP"}]},
    ]


def test_the_network_policy_follows_the_container_port(render: Callable[..., Any]) -> None:
    docs = render({"containerPort": 9100, "networkPolicy": {"enabled": True}})
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 9100
    assert _policy(docs)["ingress"][0]["ports"] == [{"port": 9100, "protocol": "TCP"}]


def test_the_network_policy_peers_ports_and_extra_rules(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    kube_dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    internet = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}
    extra_in = {"from": [{"podSelector": {"matchLabels": {"app": "debug"}}}]}
    extra_out = {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 3128}]}
    values = {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [monitoring],
            "dnsTo": [kube_dns],
            "providerPorts": [443, 8443],
            "providersTo": [internet],
            "extraIngress": [extra_in],
            "extraEgress": [extra_out],
        }
    }
    docs = render(values)
    policy = _one(docs, "NetworkPolicy")
    _validate(kubernetes_validate, policy)
    spec = policy["spec"]
    metrics, extra = spec["ingress"]
    assert extra == extra_in
    assert metrics["ports"] == [{"port": 10057, "protocol": "TCP"}]
    # The given peers, and the chart's `helm test` pod, so that `helm test` keeps working.
    assert metrics["from"][0] == monitoring
    (test_peer,) = metrics["from"][1:]
    assert set(test_peer) == {"podSelector"}
    assert _selects(test_peer["podSelector"], _test_pod(docs)["metadata"]["labels"])
    assert not _selects(test_peer["podSelector"], _workload_pod_labels(docs))
    dns, providers, extra = spec["egress"]
    assert dns["to"] == [kube_dns]
    assert providers == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}],
        "to": [internet],
    }
    assert extra == extra_out


def test_no_provider_ports_means_no_provider_rule(render: Callable[..., Any]) -> None:
    spec = _policy(render({"networkPolicy": {"enabled": True, "providerPorts": []}}))
    assert [rule["ports"][0]["port"] for rule in spec["egress"]] == [53]


def test_the_service_does_not_select_the_test_pod(render: Callable[..., Any]) -> None:
    docs = render()
    service = _one(docs, "Service")
    assert not _selects(
        {"matchLabels": service["spec"]["selector"]}, _test_pod(docs)["metadata"]["labels"]
    )
    assert _selects({"matchLabels": service["spec"]["selector"]}, _workload_pod_labels(docs))


# ---------------------------------------------------------------------------------- Service types


def test_node_port_and_load_balancer_settings(
    render: Callable[..., Any], kubernetes_validate: Any
) -> None:
    cluster_ip = _one(render({"service": {"nodePort": 30057}}), "Service")["spec"]
    assert "nodePort" not in cluster_ip["ports"][0]  # only where the type has node ports
    node_port = _one(render({"service": {"type": "NodePort", "nodePort": 30057}}), "Service")
    assert node_port["spec"]["type"] == "NodePort"
    assert node_port["spec"]["ports"][0]["nodePort"] == 30057
    picked = _one(render({"service": {"type": "NodePort"}}), "Service")["spec"]
    assert "nodePort" not in picked["ports"][0]  # 0: Kubernetes picks one
    ranges = ["10.0.0.0/8"]
    values = {"service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ranges}}
    balancer = _one(render(values), "Service")
    assert balancer["spec"]["loadBalancerSourceRanges"] == ranges
    not_lb = {"service": {"loadBalancerSourceRanges": ranges}}
    assert "loadBalancerSourceRanges" not in _one(render(not_lb), "Service")["spec"]
    for service in (node_port, balancer):
        _validate(kubernetes_validate, service)


# ---------------------------------------------------------------------------------------- NOTES


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that renders NOTES.txt into a ConfigMap. `helm template` leaves
    NOTES.txt out, and helm 3.18.0's `install --dry-run=client` still asks a cluster for its
    version, so the notes are rendered with tpl, with the chart's own named templates."""
    chart = tmp_path_factory.mktemp("notes") / "messaging-stats-exporter"
    shutil.copytree(CHART, chart)
    (chart / "notes").mkdir()
    shutil.move(chart / "templates" / "NOTES.txt", chart / "notes" / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes/NOTES.txt") . | toJson }}\n'
    )
    return chart


def _notes(render: Callable[..., Any], chart: Path, values: dict[str, Any]) -> str:
    return str(_one(render(values, chart=chart), "ConfigMap", "notes")["data"]["notes"])


def test_notes_for_a_cluster_ip_service(render: Callable[..., Any], notes_chart: Path) -> None:
    notes = _notes(render, notes_chart, {})
    assert f"deployed as {FULLNAME} in {NAMESPACE}" in notes
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 10057:10057" in notes
    assert "curl -s http://127.0.0.1:10057/metrics" in notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:10057/metrics" in notes
    assert "NODE_PORT" not in notes
    assert "SERVICE_IP" not in notes
    assert "serviceMonitor.enabled=true" in notes


def test_notes_for_a_node_port_service(render: Callable[..., Any], notes_chart: Path) -> None:
    notes = _notes(render, notes_chart, {"service": {"type": "NodePort"}})
    assert (
        f"kubectl -n {NAMESPACE} get service {FULLNAME} "
        '-o jsonpath="{.spec.ports[0].nodePort}"' in notes
    )
    assert 'curl -s "http://$NODE_IP:$NODE_PORT/metrics"' in notes
    assert "port-forward service/" not in notes


def test_notes_for_a_load_balancer_service(render: Callable[..., Any], notes_chart: Path) -> None:
    notes = _notes(render, notes_chart, {"service": {"type": "LoadBalancer", "port": 9100}})
    assert f"kubectl -n {NAMESPACE} get service {FULLNAME} -w" in notes
    assert ".status.loadBalancer.ingress[0]" in notes
    assert 'curl -s "http://$SERVICE_IP:9100/metrics"' in notes
    assert "service.loadBalancerSourceRanges" in notes  # open to everyone: said so
    restricted = {"service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0/8"]}}
    assert "service.loadBalancerSourceRanges" not in _notes(render, notes_chart, restricted)


def test_notes_with_every_feature(render: Callable[..., Any], notes_chart: Path) -> None:
    values = yaml.safe_load(CI_VALUES["all-features-values"].read_text())
    notes = _notes(render, notes_chart, {**values, "sharding": {"replicas": 3}})
    assert "A ServiceMonitor was created" in notes
    assert '{"release":"kube-prometheus-stack"}' in notes
    assert f"{FULLNAME}-0 to {FULLNAME}-2" in notes
    assert (
        "A NetworkPolicy lets the pods in on port 10057 only, from networkPolicy.metricsFrom"
        in notes
    )


# ---------------------------------------------------------------------------- the chart as a whole


def test_the_chart_never_passes_single_process() -> None:
    """The exporter is one process; the chart must not pass the removed --single-process flag."""
    for path in CHART.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".tpl", ".txt", ".json", ".md"}:
            text = path.read_text()
            assert "single-process" not in text, path
            assert "single_process" not in text, path


def test_the_readme_upgrading_section_lists_the_renamed_keys() -> None:
    readme = (CHART / "README.md").read_text()
    upgrading = readme[readme.index("## Upgrading") :]
    upgrading = upgrading[: upgrading.find("\n## ", 1)] if "\n## " in upgrading[1:] else upgrading
    for before, now in (
        ("serviceMonitor.labels", "serviceMonitor.additionalLabels"),
        ("prometheusRule.labels", "prometheusRule.additionalLabels"),
        ("prometheusRule.rules", "prometheusRule.alertOverrides"),
    ):
        assert re.search(rf"\| `{re.escape(before)}`[^|]*\| `{re.escape(now)}`", upgrading), before
    assert "values.schema.json" in upgrading
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert f"### To {chart['version']}" in upgrading


def test_the_readme_documents_the_new_features() -> None:
    readme = (CHART / "README.md").read_text()
    for topic in (
        "## Network policy",
        "## Extra manifests",
        "values.schema.json",
        "`prometheusRule.rules`",
        "`prometheusRule.additionalRules`",
        "NodePort",
        "LoadBalancer",
    ):
        assert topic in readme, topic


# ---------------------------------------------------------------- target files and auto reload


def test_target_files_from_configmaps_and_secrets_are_mounted_and_named_by_the_config(
    render: Callable[..., Any],
) -> None:
    values = {
        "config": {"targets": []},
        "targetFiles": {"configMaps": ["tenants", "more-tenants"], "secrets": ["tenant-creds"]},
    }
    docs = render(values)
    root = "/etc/messaging-stats-exporter/targets.d"
    config = yaml.safe_load(_one(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["target_files"] == [f"{root}/*/*.yaml"]
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    expected = {
        "target-files-configmap-0": (f"{root}/configmap-tenants", {"name": "tenants"}),
        "target-files-configmap-1": (f"{root}/configmap-more-tenants", {"name": "more-tenants"}),
        "target-files-secret-0": (
            f"{root}/secret-tenant-creds",
            {"secretName": "tenant-creds", "defaultMode": 0o444},
        ),
    }
    for name, (path, source) in expected.items():
        # A directory, never a subPath: the kubelet updates it in place, auto reload follows.
        assert mounts[name] == {"name": name, "mountPath": path, "readOnly": True}
        kind = "configMap" if "configmap" in name else "secret"
        assert volumes[name] == {"name": name, kind: source}
    # The glob of a directory mounted there matches each key's file, and nothing else.
    assert fnmatch.fnmatch(f"{root}/configmap-tenants/acme.yaml", config["target_files"][0])


def test_target_files_keep_the_globs_of_the_config(render: Callable[..., Any]) -> None:
    values = {
        "config": {"target_files": ["local/*.yaml"], "targets": []},
        "targetFiles": {"configMaps": ["tenants"], "mountPath": "/srv/t/"},
    }
    config = yaml.safe_load(_one(render(values), "ConfigMap")["data"]["config.yaml"])
    assert config["target_files"] == ["local/*.yaml", "/srv/t/*/*.yaml"]
    # Without target files the config is left as given.
    plain = yaml.safe_load(_one(render(), "ConfigMap")["data"]["config.yaml"])
    assert "target_files" not in plain


def test_auto_reload_is_on_by_default_value_controlled_and_off_with_the_demo(
    render: Callable[..., Any],
) -> None:
    def args(values: dict[str, Any]) -> list[str]:
        pod = _one(render(values), "Deployment")["spec"]["template"]["spec"]
        return list(pod["containers"][0]["args"])

    assert args({})[2:4] == ["--config.auto-reload-interval", "30s"]
    assert args({"autoReloadInterval": "1m"})[2:4] == ["--config.auto-reload-interval", "1m"]
    assert "--config.auto-reload-interval" not in args({"autoReloadInterval": ""})
    assert "--config.auto-reload-interval" not in args({"demo": True})


def test_the_rendered_config_with_target_files_passes_check_config(
    render: Callable[..., Any], tmp_path: Path
) -> None:
    """The chart's config and a target file laid out as the kubelet mounts a ConfigMap (keys as
    links into a ..data directory) are what the exporter accepts."""
    root = tmp_path / "targets.d"
    values = {
        "config": {"targets": []},
        "targetFiles": {"configMaps": ["tenants"], "mountPath": str(root)},
    }
    text = _one(render(values), "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(text)
    data = root / "configmap-tenants" / "..2024_01_01_00_00_00.1"
    data.mkdir(parents=True)
    (data / "acme.yaml").write_text(
        yaml.safe_dump(
            [{"name": "acme", "provider": "exolve", "base_url": "https://x", "api_key": "k"}]
        )
    )
    (root / "configmap-tenants" / "..data").symlink_to(data.name)
    (root / "configmap-tenants" / "acme.yaml").symlink_to("..data/acme.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--check-config", "--config", "config.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"from {root}/configmap-tenants/acme.yaml: 1 target(s)" in result.stdout
