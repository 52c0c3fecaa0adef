"""The operator on a cluster without our CRD: first none at all, then KAITO's real CRD.

KAITO's CRD (tests/fixtures/kaito) has status.state but no status.status, so the API
server prunes our write. The operator must notice, say so once (log + Event), and not
retry in a loop. This module starts its own control plane so the shared one keeps our CRD.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from e2e.conftest import OperatorFactory
from e2e.harness import (
    FIXTURES,
    INFERENCE_READY,
    ROOT,
    create_workspace,
    events_for,
    set_conditions,
    state_of,
    wait_event,
)
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.plugin import private_plane
from reconciler.resource import NAMESPACE


@pytest.fixture(scope="module")
def bare_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with private_plane(
        tmp_path_factory, "kaito-crd-plane", why="needs a private control plane"
    ) as plane:
        yield plane


@pytest.fixture
async def bare_client(bare_plane: ControlPlane) -> AsyncIterator[Client]:
    client = await Client.from_config(str(bare_plane.kubeconfig))
    yield client
    await client.close()


def test_missing_crd_is_a_clear_error(bare_plane: ControlPlane, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "controllers",
            f"--kubeconfig={bare_plane.kubeconfig}",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert "install the Workspace CRD" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_pruned_status_is_reported_once_without_a_hot_loop(
    bare_plane: ControlPlane, bare_client: Client, start_operator: OperatorFactory
) -> None:
    bare_plane.install_crds([FIXTURES / "kaito.sh_workspaces.yaml"])
    ns = "kaito-crd"
    await bare_client.create(NAMESPACE, {"metadata": {"name": ns}})
    await create_workspace(bare_client, ns, "phi")
    await set_conditions(bare_client, ns, "phi", *INFERENCE_READY)
    # --manage-crd=false: this test is about the pruning, not the repair of the CRD.
    op = start_operator(
        f"--namespace={ns}",
        "--log-level=debug",
        "--manage-crd=false",
        kubeconfig_path=bare_plane.kubeconfig,
    )
    await op.wait_ready()
    ev = await wait_event(bare_client, ns, "phi", "StatusFieldPruned", "status.status")
    assert ev["type"] == "Warning"
    assert await state_of(bare_client, ns, "phi") is None
    assert "dropped status.status" in op.log()

    patches = op.metric("rest_client_requests_total", method="PATCH")
    reconciles = op.metric("controller_runtime_reconcile_total")
    await anyio.sleep(3.0)
    assert op.metric("controller_runtime_reconcile_total") == reconciles, "hot loop"
    assert op.metric("rest_client_requests_total", method="PATCH") == patches

    # A real change from KAITO is one more attempt, not a loop, and no second Event.
    written = await set_conditions(bare_client, ns, "phi", *INFERENCE_READY[:2])
    assert await op.wait_decided(ns, "phi", written) == "Ready"
    await anyio.sleep(1.0)  # grace for a (wrong) second Event to be written
    pruned = [
        e for e in await events_for(bare_client, ns, "phi") if e["reason"] == "StatusFieldPruned"
    ]
    assert len(pruned) == 1
    assert pruned[0].get("count", 1) == 1
    assert op.metric("controller_runtime_reconcile_total") - reconciles <= 3
