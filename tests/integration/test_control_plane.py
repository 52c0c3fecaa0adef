"""The local control plane behaves like a real cluster in the ways we depend on."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import anyio
import pytest

from reconciler.client import Client, PatchType
from reconciler.envtest.controlplane import ControlPlane
from reconciler.errors import Conflict, Gone
from reconciler.resource import CONFIG_MAP, ResourceType

WORKSPACE = ResourceType("kaito.sh", "v1beta1", "Workspace", "workspaces")


def _workspace(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"a": "b"}},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }


def test_version_and_readyz(control_plane: ControlPlane | None) -> None:
    if control_plane is None:
        pytest.skip("existing cluster")
    out = subprocess.run(
        [str(control_plane.bin_dir / "kube-apiserver"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("Kubernetes v1.")
    assert "v0.0.0" not in out
    assert control_plane.kubectl("get", "--raw", "/readyz").strip() == "ok"
    resources = control_plane.kubectl("api-resources", "--api-group=kaito.sh", "-o", "name")
    assert "workspaces.kaito.sh" in resources.split()


async def test_stale_status_patch_is_a_409(k8s: Client, namespace: str) -> None:
    created = await k8s.create(WORKSPACE, _workspace("w", namespace))
    stale_rv = created["metadata"]["resourceVersion"]
    fresh = await k8s.patch_status(
        WORKSPACE,
        "w",
        {"metadata": {"resourceVersion": stale_rv}, "status": {"status": "Pending"}},
        namespace=namespace,
    )
    assert fresh["status"]["status"] == "Pending"
    assert fresh["metadata"]["resourceVersion"] != stale_rv
    with pytest.raises(Conflict) as info:
        await k8s.patch_status(
            WORKSPACE,
            "w",
            {"metadata": {"resourceVersion": stale_rv}, "status": {"status": "Ready"}},
            namespace=namespace,
        )
    assert info.value.status == 409
    current = await k8s.get(WORKSPACE, "w", namespace)
    assert current["status"]["status"] == "Pending"


async def test_json_patch_and_server_side_apply_on_status(k8s: Client, namespace: str) -> None:
    await k8s.create(WORKSPACE, _workspace("w", namespace))
    out = await k8s.patch(
        WORKSPACE,
        "w",
        [{"op": "add", "path": "/status", "value": {"status": "Pending"}}],
        namespace=namespace,
        patch_type=PatchType.JSON,
        subresource="status",
    )
    assert out["status"]["status"] == "Pending"
    out = await k8s.patch(
        WORKSPACE,
        "w",
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "w", "namespace": namespace},
            "status": {"status": "Ready"},
        },
        namespace=namespace,
        patch_type=PatchType.APPLY,
        subresource="status",
        field_manager="test",
        force=True,
    )
    assert out["status"]["status"] == "Ready"


async def test_watch_delivers_bookmarks(k8s: Client, namespace: str) -> None:
    await k8s.create(CONFIG_MAP, {"metadata": {"name": "c", "namespace": namespace}})
    seen: list[str] = []
    with anyio.fail_after(30):
        async with k8s.watch(CONFIG_MAP, namespace, send_initial_events=True) as events:
            async for ev in events:
                seen.append(ev.type)
                if ev.type == "BOOKMARK":
                    annotations = ev.object["metadata"].get("annotations") or {}
                    assert annotations.get("k8s.io/initial-events-end") == "true"
                    assert ev.object["metadata"]["resourceVersion"]
                    break
    assert seen == ["ADDED", "BOOKMARK"]


async def test_too_old_resource_version_is_gone(
    k8s: Client, namespace: str, control_plane: ControlPlane | None
) -> None:
    if control_plane is None:
        pytest.skip("needs etcd access")
    first = await k8s.create(CONFIG_MAP, {"metadata": {"name": "c0", "namespace": namespace}})
    old_rv = first["metadata"]["resourceVersion"]
    for i in range(1, 5):
        await k8s.create(CONFIG_MAP, {"metadata": {"name": f"c{i}", "namespace": namespace}})
    control_plane.compact_etcd()
    # Asking for a version older than the watch cache keeps (it started at boot,
    # and "1" predates everything) gets 410 Gone as an ERROR event.
    with pytest.raises(Gone) as info, anyio.fail_after(30):
        async with k8s.watch(CONFIG_MAP, namespace, resource_version="1") as events:
            async for _ in events:
                pass
    assert info.value.status == 410
    assert info.value.reason in ("Expired", "Gone")
    assert int(old_rv) > 1


def test_apiserver_metrics_reachable(control_plane: ControlPlane | None) -> None:
    if control_plane is None:
        pytest.skip("existing cluster")
    with urllib.request.urlopen(
        f"{control_plane.server}/metrics", context=control_plane.admin_ssl_context(), timeout=10
    ) as resp:
        body = resp.read().decode()
    assert "apiserver_request_total" in body
    assert (
        json.loads(control_plane.kubectl("get", "ns", "default", "-o", "json"))["metadata"]["name"]
        == "default"
    )


def test_up_is_idempotent_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    import os
    import socket

    from reconciler.envtest.controlplane import _alive
    from reconciler.envtest.settings import EXISTING_KUBECONFIG_ENV, assets_dir

    if os.environ.get(EXISTING_KUBECONFIG_ENV):
        pytest.skip("needs the local control plane")
    plane = ControlPlane(assets_dir(), tmp_path / "plane")
    plane.start()
    pids = (plane.state.etcd_pid, plane.state.apiserver_pid)
    ports = (plane.state.etcd_port, plane.state.apiserver_port)
    again = ControlPlane(assets_dir(), tmp_path / "plane")
    again.start()  # reuses the running plane
    assert (again.state.etcd_pid, again.state.apiserver_pid) == pids
    again.stop()
    assert not _alive(pids[0], "etcd")
    assert not _alive(pids[1], "kube-apiserver")
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
    assert not (tmp_path / "plane" / "etcd-data").exists()


def test_compaction_and_defragmentation_give_space_back(
    control_plane: ControlPlane | None,
) -> None:
    """What the benchmark does between measurements (hack/bench: tidy_etcd)."""
    if control_plane is None:
        pytest.skip("needs etcd access")
    data = "x" * 200_000
    name = "defrag-filler"
    for i in range(20):
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"blob": data, "i": str(i)},
        }
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    control_plane.kubectl("delete", "configmap", name, "-n", "default")
    control_plane.compact_etcd()
    before = control_plane.etcd_db_size()
    control_plane.defragment_etcd()
    after = control_plane.etcd_db_size()
    # 20 versions of 200 kB were freed by the compaction; the file now gives them back.
    assert before - after > 2_000_000, (before, after)
