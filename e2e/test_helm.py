"""The Helm chart against a real API server: lint, a server-side dry run of what it
renders, and install / upgrade / uninstall with the ServiceAccount's permissions checked
as the API server's authorizer answers them (``kubectl auth can-i --as``).

The local control plane has no kubelet or scheduler, so the Deployment's pods never
run: these tests are about the objects Helm creates, changes and removes. The
ServiceMonitor and PrometheusRule install for real against prometheus-operator's own
CRDs (``hack/tools/build.sh`` fetches them from its Go module).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e.chart import CHART, Obj, helm_env, run, tool
from e2e.harness import eventually, kubectl_binary
from reconciler.envtest.controlplane import ControlPlane

EVERYTHING = [
    "--set",
    "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
]
MONITORING_CRDS = ("servicemonitors", "prometheusrules")
RBAC_TIMEOUT = 30.0


class Cluster:
    """helm and kubectl against the test cluster, with Helm's state in a folder of its own."""

    def __init__(self, plane: ControlPlane | None, kubeconfig: Path, home: Path) -> None:
        self._kubectl = kubectl_binary(plane)
        self._kubeconfig = str(kubeconfig)
        self._env = helm_env(home)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            [tool("helm"), "--kubeconfig", self._kubeconfig, *args], check=check, env=self._env
        )

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [self._kubectl, f"--kubeconfig={self._kubeconfig}", *args], check=check, stdin=stdin
        )

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        where = ["-n", namespace] if namespace else []
        done = self.kubectl(
            "get", kind, name, *where, "--ignore-not-found", "-o", "name", check=False
        )
        assert done.returncode == 0, done.stderr
        return bool(done.stdout.strip())

    def get(self, kind: str, name: str, namespace: str) -> Obj:
        return dict(
            json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        )

    def can_i(self, sa: str, namespace: str, verb: str, resource: str, *scope: str) -> bool:
        done = self.kubectl(
            "auth", "can-i", verb, resource, *scope,
            f"--as=system:serviceaccount:{namespace}:{sa}", check=False,
        )  # fmt: skip
        answer = done.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i: {done.stdout}{done.stderr}"
        return answer == "yes"


@pytest.fixture(scope="module")
def cluster(
    control_plane: ControlPlane | None, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Cluster:
    """The cluster, with prometheus-operator's ServiceMonitor and PrometheusRule CRDs
    installed (left installed: nothing else on the plane minds them)."""
    c = Cluster(control_plane, kubeconfig, tmp_path_factory.mktemp("helm"))
    crds = tool("prometheus-operator-crds")
    c.kubectl("apply", "--server-side", "-f", str(crds))
    names = [f"crd/{kind}.monitoring.coreos.com" for kind in MONITORING_CRDS]
    c.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return c


def test_helm_lint_passes(cluster: Cluster) -> None:
    for extra in ([], EVERYTHING, ["--set", "sharding.totalShards=3,leaderElection.enabled=false"]):
        done = cluster.helm("lint", "--strict", str(CHART), *extra)
        assert "0 chart(s) failed" in done.stdout, done.stdout


def test_what_the_chart_renders_passes_a_server_side_dry_run(
    cluster: Cluster, namespace: str
) -> None:
    rendered = cluster.helm(
        "template", "dry", str(CHART), "--namespace", namespace, *EVERYTHING,
        "--set", "sharding.totalShards=2",
    ).stdout  # fmt: skip
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    # The ten objects of the release, with a second Deployment for the second shard.
    assert len(objects) == 11, [o["kind"] for o in objects]
    done = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    accepted = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(objects), done.stdout
    # A dry run stores nothing.
    assert not cluster.exists("clusterrole", "dry-workspace-status-controller")


def _objects(release: str, namespace: str) -> list[tuple[str, str, str | None]]:
    """What the release installs with everything on: (kind, name, namespace)."""
    name = f"{release}-workspace-status-controller"
    return [
        ("serviceaccount", name, namespace),
        ("clusterrole", name, None),
        ("clusterrolebinding", name, None),
        ("role", f"{name}-leader-election", namespace),
        ("rolebinding", f"{name}-leader-election", namespace),
        ("service", f"{name}-metrics", namespace),
        ("deployment", name, namespace),
        ("servicemonitor", name, namespace),
        ("prometheusrule", name, namespace),
        ("configmap", f"{name}-dashboard", namespace),
    ]


# What the operator does and needs, and what it must not be able to do.
ALLOWED = [
    ("list", "workspaces.kaito.sh", "--all-namespaces"),
    ("watch", "workspaces.kaito.sh", "-n", "default"),
    ("patch", "workspaces.kaito.sh", "--subresource=status", "-n", "default"),
    ("create", "events", "-n", "default"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io/workspaces.kaito.sh"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io/workspaces.kaito.sh"),
]
LEASES = [("get", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io")]
DENIED = [
    ("patch", "workspaces.kaito.sh", "-n", "default"),
    ("update", "workspaces.kaito.sh", "--subresource=status", "-n", "default"),
    ("delete", "workspaces.kaito.sh", "-n", "default"),
    ("get", "secrets", "--all-namespaces"),
    ("list", "configmaps", "-n", "default"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    (
        "patch",
        "customresourcedefinitions.apiextensions.k8s.io/servicemonitors.monitoring.coreos.com",
    ),
    ("create", "leases.coordination.k8s.io", "-n", "default"),
    ("delete", "leases.coordination.k8s.io", "-n", "kube-system"),
]


async def test_install_upgrade_and_uninstall(cluster: Cluster, namespace: str) -> None:
    release = f"wsc-{namespace.removeprefix('t-')}"
    sa = f"{release}-workspace-status-controller"
    objects = _objects(release, namespace)

    cluster.helm("install", release, str(CHART), "--namespace", namespace, *EVERYTHING)
    missing = [o for o in objects if not cluster.exists(*o)]
    assert missing == []
    manifest = cluster.helm("get", "manifest", release, "--namespace", namespace).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
    assert "CustomResourceDefinition" not in kinds
    assert cluster.exists("crd", "workspaces.kaito.sh"), "the Workspace CRD is KAITO's to keep"
    deployment = cluster.get("deployment", sa, namespace)
    assert deployment["spec"]["replicas"] == 2

    # RBAC reaches the authorizer through the API server's informers: wait for it once.
    async def authorized() -> bool:
        return cluster.can_i(sa, namespace, *ALLOWED[0])

    await eventually(authorized, RBAC_TIMEOUT, "the chart's RBAC to take effect")
    for check in ALLOWED:
        assert cluster.can_i(sa, namespace, *check), check
    for verb, resource in LEASES:
        assert cluster.can_i(sa, namespace, verb, resource, "-n", namespace), (verb, resource)
    for check in DENIED:
        assert not cluster.can_i(sa, namespace, *check), check

    cluster.helm(
        "upgrade", release, str(CHART), "--namespace", namespace,
        "--set", "manageCRD=false,replicaCount=3,prometheusRule.enabled=true",
    )  # fmt: skip
    deployment = cluster.get("deployment", sa, namespace)
    assert deployment["spec"]["replicas"] == 3
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--manage-crd=false" in args
    gone = [("servicemonitor", sa, namespace), ("configmap", f"{sa}-dashboard", namespace)]

    def upgraded() -> bool:
        return not any(cluster.exists(*o) for o in gone)

    await eventually(upgraded, 30, "the upgrade to remove what it turned off")
    assert cluster.exists("prometheusrule", sa, namespace)
    crd = ALLOWED[4]

    async def no_crd_patch() -> bool:
        return not cluster.can_i(sa, namespace, *crd)

    await eventually(no_crd_patch, RBAC_TIMEOUT, "manageCRD=false to take patch on the CRD away")
    assert cluster.can_i(sa, namespace, "watch", crd[1])

    cluster.helm("uninstall", release, "--namespace", namespace)

    def uninstalled() -> bool:
        return not any(cluster.exists(*o) for o in objects)

    await eventually(uninstalled, 60, "helm uninstall to remove every object")
    assert cluster.helm("list", "--namespace", namespace, "-q").stdout.strip() == ""
    assert cluster.exists("crd", "workspaces.kaito.sh")
