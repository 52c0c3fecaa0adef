"""The operator as its ServiceAccount, bound to config/rbac and nothing else.

The core scenarios pass under it (inference and tuning lifecycles with their Events,
leader election on a Lease in kaito-workspace-status), and it is refused (403) what it
does not need: Secrets, and any write to a Workspace other than its status.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from e2e.faults.audit import wait_audited
from e2e.faults.figures import Figures, ScenarioFigure
from e2e.faults.load import crashes, logged, sample
from e2e.faults.planes import client_for
from e2e.faults.rbac import NAMESPACE as SA_NAMESPACE
from e2e.faults.rbac import service_account_kubeconfig
from e2e.faults.scenario import Scenario
from e2e.harness import (
    INFERENCE_READY,
    TUNING_EXAMPLE,
    WORKSPACE,
    Operator,
    condition,
    create_workspace,
    eventually,
    set_conditions,
    wait_event,
    wait_state,
    walk_inference,
)
from reconciler.client import Client, PatchType
from reconciler.envtest.controlplane import ControlPlane
from reconciler.errors import Forbidden, NotFound
from reconciler.resource import CONFIG_MAP, LEASE, SECRET

LEASE_NAME = "workspace-status-controller.kaito.sh"


@pytest.fixture(scope="module")
async def service_account(control_plane: ControlPlane | None, kubeconfig: Path) -> tuple[Path, str]:
    if control_plane is None:
        pytest.skip("needs the local plane to install config/rbac and mint a token")
    async with client_for(kubeconfig) as admin:
        return await service_account_kubeconfig(control_plane, admin)


@pytest.fixture
async def sa_client(service_account: tuple[Path, str]) -> AsyncIterator[Client]:
    async with client_for(service_account[0]) as client:
        yield client


def no_denials(op: Operator) -> None:
    log = op.log()
    assert "Forbidden" not in log
    assert " 403" not in log


async def test_lifecycles_and_events_under_the_service_account(
    service_account: tuple[Path, str], scenario: Scenario
) -> None:
    k8s, ns = scenario.k8s, scenario.namespace
    auditor = scenario.audit()
    op = scenario.start_operator(f"--namespace={ns}", kubeconfig_path=service_account[0])
    await op.wait_ready()

    await walk_inference(k8s, ns, "phi")
    await wait_event(k8s, ns, "phi", "StateChanged", "Pending → Ready")
    ev = await wait_event(k8s, ns, "phi", "NotReady", "ContainerCrashLoopBackOff")
    assert ev["type"] == "Warning"
    await set_conditions(k8s, ns, "phi", *INFERENCE_READY)
    await wait_state(k8s, ns, "phi", "Ready")

    await create_workspace(k8s, ns, "tune", TUNING_EXAMPLE)
    await wait_state(k8s, ns, "tune", "Pending")
    await set_conditions(
        k8s, ns, "tune", condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted")
    )
    await wait_state(k8s, ns, "tune", "Running")
    await set_conditions(
        k8s,
        ns,
        "tune",
        condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    )
    await wait_state(k8s, ns, "tune", "Succeeded")
    await wait_event(k8s, ns, "tune", "StateChanged", "Running → Succeeded")
    no_denials(op)
    assert crashes(op) == 0
    await wait_audited(auditor)
    assert auditor.changes_of(ns, "phi") == [
        (None, "Pending"),
        ("Pending", "Ready"),
        ("Ready", "NotReady"),
        ("NotReady", "Ready"),
    ]
    assert auditor.changes_of(ns, "tune") == [
        (None, "Pending"),
        ("Pending", "Running"),
        ("Running", "Succeeded"),
    ]
    scenario.figures.add(
        ScenarioFigure(
            scenario="least privilege: lifecycles",
            load="1 inference + 1 tuning workspace through every state",
            faults="operator runs as the config/rbac ServiceAccount (TokenRequest token)",
            convergence="every state and Event written; 0 denials in the operator's log",
            illegal_transitions=len(auditor.illegal),
            lost_updates=0,
            crashes=0,
        )
    )


def leading(op: Operator) -> bool:
    return sample(op, "leader_election_master_status", {"name": LEASE_NAME}) == 1


async def test_leader_election_under_the_service_account(
    service_account: tuple[Path, str], scenario: Scenario
) -> None:
    k8s, ns, start_operator = scenario.k8s, scenario.namespace, scenario.start_operator
    auditor = scenario.audit()
    # A lease left by an earlier run would hold the election up for its duration.
    with contextlib.suppress(NotFound):
        await k8s.delete(LEASE, LEASE_NAME, SA_NAMESPACE)
    args = [
        f"--namespace={ns}",
        "--leader-elect",
        f"--leader-election-namespace={SA_NAMESPACE}",
    ]
    first = await start_operator(*args, kubeconfig_path=service_account[0]).wait_ready()
    await eventually(lambda: leading(first), 30, "the first replica to lead")
    second = await start_operator(*args, kubeconfig_path=service_account[0]).wait_ready()
    await create_workspace(k8s, ns, "w")
    await wait_state(k8s, ns, "w", "Pending")
    assert not leading(second)

    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    handover = time.monotonic()
    await eventually(lambda: leading(second), 15, "the second replica to take over")
    took = time.monotonic() - handover
    assert first.stop() == 0
    assert logged(first, "released leader lease")
    await set_conditions(k8s, ns, "w", *INFERENCE_READY)
    await wait_state(k8s, ns, "w", "Ready")
    lease = await k8s.get(LEASE, LEASE_NAME, SA_NAMESPACE)
    assert lease["spec"]["leaseTransitions"] >= 1
    no_denials(first)
    no_denials(second)
    await wait_audited(auditor)
    assert auditor.illegal == []
    assert took < 10
    scenario.figures.add(
        ScenarioFigure(
            scenario="least privilege: leader election",
            load=f"2 replicas as the ServiceAccount, Lease in {SA_NAMESPACE}",
            faults="SIGTERM of the leader",
            convergence=f"handover in {took:.1f} s; the workspace converged on the new leader",
            illegal_transitions=len(auditor.illegal),
            lost_updates=0,
            crashes=0,
        )
    )


async def test_the_service_account_is_refused_what_it_does_not_need(
    sa_client: Client, k8s: Client, namespace: str, figures: Figures
) -> None:
    ns = namespace
    await create_workspace(k8s, ns, "w")
    await k8s.create(SECRET, {"metadata": {"name": "s", "namespace": ns}, "data": {}})
    denied: dict[str, Callable[[], Awaitable[object]]] = {
        "list Secrets cluster-wide": lambda: sa_client.list(SECRET),
        "list Secrets in a namespace": lambda: sa_client.list(SECRET, ns),
        "get a Secret": lambda: sa_client.get(SECRET, "s", ns),
        "get its own namespace's Secrets": lambda: sa_client.list(SECRET, SA_NAMESPACE),
        "patch a Workspace's spec": lambda: sa_client.patch(
            WORKSPACE, "w", {"inference": {"preset": {"name": "evil"}}}, namespace=ns
        ),
        "patch a Workspace's labels": lambda: sa_client.patch(
            WORKSPACE, "w", {"metadata": {"labels": {"x": "y"}}}, namespace=ns
        ),
        "server-side apply a Workspace": lambda: sa_client.patch(
            WORKSPACE,
            "w",
            {"apiVersion": WORKSPACE.api_version, "kind": "Workspace", "inference": {}},
            namespace=ns,
            patch_type=PatchType.APPLY,
            field_manager="evil",
        ),
        "delete a Workspace": lambda: sa_client.delete(WORKSPACE, "w", ns),
        "create a Workspace": lambda: sa_client.create(
            WORKSPACE,
            {
                "apiVersion": WORKSPACE.api_version,
                "kind": "Workspace",
                "metadata": {"name": "x", "namespace": ns},
            },
        ),
        "read ConfigMaps": lambda: sa_client.list(CONFIG_MAP, ns),
        "touch Leases outside its namespace": lambda: sa_client.get(LEASE, "any", ns),
    }
    allowed = []
    for what, attempt in denied.items():
        try:
            await attempt()
        except Forbidden:
            continue
        allowed.append(what)
    assert allowed == [], f"the ServiceAccount may {allowed}"
    # What it needs, it has: read Workspaces, write their status.
    assert (await sa_client.get(WORKSPACE, "w", ns))["metadata"]["name"] == "w"
    written = await sa_client.patch_status(
        WORKSPACE, "w", {"status": {"status": "Pending"}}, namespace=ns
    )
    assert written["status"]["status"] == "Pending"
    figures.add(
        ScenarioFigure(
            scenario="least privilege: denials",
            load="the ServiceAccount's own client",
            faults=f"{len(denied)} requests it must not make",
            convergence="all 403 Forbidden: " + "; ".join(denied),
            illegal_transitions=0,
            lost_updates=0,
            crashes=0,
            notes="reading Workspaces and patching workspaces/status still allowed",
        )
    )
