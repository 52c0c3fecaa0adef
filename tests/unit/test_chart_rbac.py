"""The Helm chart against the repository's single sources: its RBAC rules are
config/rbac's, its Deployment config/manager's hardening, its arguments the operator's
own flags, its alerts and dashboard config/prometheus's and config/grafana's; and it
leaves the Workspace CRD to KAITO's chart. Renders with ``helm template`` (no cluster).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from controllers.workspace.operator import LEASE_NAME, parse_args
from e2e.chart import CHART, DASHBOARD, ROOT, RULE, Obj, config_object, only, render

RBAC = ROOT / "config" / "rbac"
MANAGER = ROOT / "config" / "manager" / "deployment.yaml"
CRD_RULE = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"]}


def _rules(obj: Obj) -> list[Obj]:
    return list(obj["rules"])


def _args(objs: list[Obj]) -> list[list[str]]:
    return [
        d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in objs
        if d["kind"] == "Deployment"
    ]


def test_the_cluster_role_has_exactly_config_rbacs_rules() -> None:
    chart = only(render(), "ClusterRole")
    assert _rules(chart) == _rules(config_object(RBAC / "role.yaml", "ClusterRole"))


def test_the_lease_role_has_exactly_config_rbacs_rules_in_the_lease_namespace() -> None:
    role = only(render(namespace="ops"), "Role")
    assert _rules(role) == _rules(config_object(RBAC / "leader_election_role.yaml", "Role"))
    assert role["metadata"]["namespace"] == "ops"
    elsewhere = only(render({"leaderElection": {"namespace": "leases"}}, namespace="ops"), "Role")
    assert elsewhere["metadata"]["namespace"] == "leases"
    binding = only(
        render({"leaderElection": {"namespace": "leases"}}, namespace="ops"), "RoleBinding"
    )
    assert binding["metadata"]["namespace"] == "leases"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "workspace-status-controller", "namespace": "ops"}
    ]


def test_manage_crd_false_takes_only_patch_on_the_crd_away() -> None:
    expected = _rules(config_object(RBAC / "role.yaml", "ClusterRole"))
    for rule in expected:
        if all(rule.get(k) == v for k, v in CRD_RULE.items()):
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    assert _rules(only(render({"manageCRD": False}), "ClusterRole")) == expected
    assert "--manage-crd=false" in _args(render({"manageCRD": False}))[0]


def test_no_lease_permission_without_leader_election() -> None:
    objs = render({"leaderElection": {"enabled": False}})
    assert [o for o in objs if o["kind"] in ("Role", "RoleBinding")] == []
    assert "--leader-elect" not in _args(objs)[0]


def test_bindings_name_the_service_account_the_pods_run_as() -> None:
    objs = render({"serviceAccount": {"name": "wsc"}}, release="r", namespace="ops")
    sa = only(objs, "ServiceAccount")["metadata"]
    assert (sa["name"], sa["namespace"]) == ("wsc", "ops")
    subject = {"kind": "ServiceAccount", "name": "wsc", "namespace": "ops"}
    assert only(objs, "ClusterRoleBinding")["subjects"] == [subject]
    assert only(objs, "RoleBinding")["subjects"] == [subject]
    role = only(objs, "ClusterRole")["metadata"]["name"]
    assert only(objs, "ClusterRoleBinding")["roleRef"]["name"] == role
    assert only(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "wsc"


def test_the_default_release_leads_with_config_managers_lease() -> None:
    # config/manager's Deployment uses the operator's default Lease: a release named
    # like the chart takes the same one, so moving from config/ to the chart never
    # runs two leaders at once, and other releases get Leases of their own.
    default = parse_args(_args(render())[0])
    assert default.leader_election_id == LEASE_NAME
    other = parse_args(_args(render(release="team-a"))[0])
    assert other.leader_election_id == "team-a-workspace-status-controller.kaito.sh"


def test_the_chart_never_installs_a_crd() -> None:
    # KAITO's chart owns workspaces.kaito.sh; two charts owning it would fight on
    # every upgrade of either.
    everything = render(
        {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        }
    )
    assert [o for o in everything if o["kind"] == "CustomResourceDefinition"] == []
    assert not (CHART / "crds").exists()


def test_the_deployment_keeps_config_managers_hardening() -> None:
    config = config_object(MANAGER, "Deployment")["spec"]
    chart = only(render(), "Deployment")["spec"]
    assert chart["replicas"] == config["replicas"] == 2
    pod, config_pod = chart["template"]["spec"], config["template"]["spec"]
    assert pod["securityContext"] == config_pod["securityContext"]
    assert pod["terminationGracePeriodSeconds"] == config_pod["terminationGracePeriodSeconds"]
    container, config_container = pod["containers"][0], config_pod["containers"][0]
    for key in ("securityContext", "resources", "livenessProbe", "readinessProbe"):
        assert container[key] == config_container[key], key
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 8080,
        "probes": 8081,
    }
    assert "--leader-elect" in container["args"]


def _help_flags(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps its help, hyphens included
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", capsys.readouterr().out))


EVERY_VALUE: dict[str, Any] = {
    "leaderElection": {"enabled": True, "namespace": "leases", "id": "wsc.example.com"},
    "watchNamespace": "team-a",
    "labelSelector": "team=a",
    "sharding": {"totalShards": 3, "shard": 1},
    "maxConcurrentReconciles": 4,
    "pendingWarningAfter": "30m",
    "gracefulShutdownTimeout": "20s",
    "watchIdleTimeout": "2m",
    "manageCRD": False,
    "statusField": True,
    "logFormat": "console",
    "logLevel": "debug",
    "eventLoop": "asyncio",
    "metrics": {"enabled": True, "port": 9090},
    "health": {"port": 9091},
}


def test_every_operator_flag_has_a_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = _help_flags(capsys, monkeypatch) - {"--help", "--kubeconfig"}  # in-cluster config
    assert "--manage-crd" in flags, "could not read the operator's flags"
    rendered = {arg.partition("=")[0] for arg in _args(render(EVERY_VALUE))[0]}
    assert flags - rendered == set()


def test_the_rendered_arguments_mean_what_the_values_say() -> None:
    (args,) = _args(render(EVERY_VALUE))
    cfg = parse_args(args)
    assert cfg.leader_elect
    assert cfg.leader_election_namespace == "leases"
    assert cfg.leader_election_id == "wsc.example.com"
    assert (cfg.namespace, cfg.label_selector) == ("team-a", "team=a")
    assert (cfg.shard.index, cfg.shard.total) == (1, 3)
    assert cfg.max_concurrent_reconciles == 4
    assert cfg.pending_warning_after == 1800
    assert cfg.graceful_shutdown_timeout == 20
    assert cfg.watch_idle_timeout == 120
    assert (cfg.manage_crd, cfg.status_field) == (False, True)
    assert (cfg.log_format, cfg.log_level) == ("console", "debug")
    assert cfg.event_loop == "asyncio"
    assert (cfg.metrics_bind_address, cfg.health_probe_bind_address) == (":9090", ":9091")


def test_the_defaults_suit_a_cluster_with_kaitos_chart() -> None:
    cfg = parse_args(_args(render())[0])
    # KAITO's chart installs its validating webhook, which refuses status.status.
    assert cfg.status_field is False
    assert cfg.manage_crd is True
    assert cfg.leader_elect
    assert not cfg.shard.sharded


def test_sharding_runs_one_deployment_per_shard_each_with_its_own_pods() -> None:
    objs = render({"sharding": {"totalShards": 3}})
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    shards = [parse_args(_args([d])[0]).shard for d in deployments]
    assert [(s.index, s.total) for s in shards] == [(0, 3), (1, 3), (2, 3)]
    selectors = [json.dumps(d["spec"]["selector"], sort_keys=True) for d in deployments]
    assert len(set(selectors)) == 3, "two shards' Deployments would own the same pods"
    one = [
        o for o in render({"sharding": {"totalShards": 3, "shard": 2}}) if o["kind"] == "Deployment"
    ]
    assert [parse_args(_args([d])[0]).shard.index for d in one] == [2]
    unsharded = only(render({"sharding": {"totalShards": 1}}), "Deployment")
    assert not parse_args(_args([unsharded])[0]).shard.sharded


def test_the_metrics_service_and_servicemonitor_reach_the_pods() -> None:
    objs = render({"serviceMonitor": {"enabled": True}, "sharding": {"totalShards": 2}})
    service = only(objs, "Service")
    monitor = only(objs, "ServiceMonitor")
    for deployment in (o for o in objs if o["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    no_metrics = render({"metrics": {"enabled": False}})
    assert [o for o in no_metrics if o["kind"] == "Service"] == []
    assert "--metrics-bind-address=0" in _args(no_metrics)[0]


def test_the_prometheus_rule_is_config_prometheus() -> None:
    rule = only(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert rule["spec"] == config_object(RULE, "PrometheusRule")["spec"], (
        "charts/workspace-status-controller/files/prometheus-rules.yaml differs from the "
        "spec of config/prometheus/prometheusrule.yaml: copy the spec over"
    )


def test_the_dashboard_is_config_grafana() -> None:
    configmap = only(render({"grafanaDashboard": {"enabled": True}}), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text()), (
        "charts/workspace-status-controller/files/workspace-status.json differs from "
        "config/grafana/workspace-status.json: copy it over"
    )
