"""The operator binary against a real API server, with the tests playing KAITO's controller.

Each test runs its own operator scoped to the test's namespace (``--namespace``), and
the transition auditor fails the test on any status.status edge not in the table.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import anyio
import pytest

from e2e.conftest import OperatorFactory
from e2e.harness import (
    INFERENCE_READY,
    TUNING_EXAMPLE,
    WORKSPACE,
    TransitionAuditor,
    assert_held,
    condition,
    create_workspace,
    events_for,
    eventually,
    kubectl,
    kubectl_binary,
    set_conditions,
    state_of,
    sum_samples,
    wait_event,
    wait_state,
)
from e2e.kaito import is_kaito_type
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane

# Tests that check a state does *not* change wait for the operator's logged decision on
# the written version (see ``assert_held``); those lines are logged at debug level.
DEBUG = "--log-level=debug"


async def test_inference_lifecycle(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    ns = namespace
    await create_workspace(k8s, ns, "phi")
    await wait_state(k8s, ns, "phi", "Pending")

    # Provisioning fails: still Pending (Pending only ever goes to Ready).
    written = await set_conditions(
        k8s,
        ns,
        "phi",
        condition("ResourceReady", "False", "NodeClaimNotReady", "quota exceeded"),
        condition("InferenceReady", "False", "WorkspaceInferenceStatusPending"),
    )
    await assert_held(k8s, op, ns, "phi", written, "Pending")

    await set_conditions(k8s, ns, "phi", *INFERENCE_READY)
    await wait_state(k8s, ns, "phi", "Ready")
    await wait_event(k8s, ns, "phi", "StateChanged", "Pending → Ready")

    # Runtime failure: NotReady, with the root cause named in a Warning.
    await set_conditions(
        k8s,
        ns,
        "phi",
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition(
            "InferenceReady",
            "False",
            "ContainerCrashLoopBackOff",
            'container "phi" is in CrashLoopBackOff',
        ),
    )
    await wait_state(k8s, ns, "phi", "NotReady")
    ev = await wait_event(k8s, ns, "phi", "NotReady", "InferenceReady=False")
    assert ev["type"] == "Warning"
    assert "ContainerCrashLoopBackOff" in ev["message"]

    # Everything unknown again (e.g. a rollout): NotReady, never back to Pending.
    written = await set_conditions(k8s, ns, "phi")
    await assert_held(k8s, op, ns, "phi", written, "NotReady")

    await set_conditions(k8s, ns, "phi", *INFERENCE_READY)
    await wait_state(k8s, ns, "phi", "Ready")
    await auditor.wait_changes(
        ns,
        "phi",
        [
            (None, "Pending"),
            ("Pending", "Ready"),
            ("Ready", "NotReady"),
            ("NotReady", "Ready"),
        ],
    )


async def test_unknown_condition_type_gates_ready(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    await create_workspace(k8s, namespace, "w")
    written = await set_conditions(
        k8s,
        namespace,
        "w",
        *INFERENCE_READY,
        condition("FutureGate", "False", "NotYet", "a check KAITO adds later"),
    )
    await assert_held(k8s, op, namespace, "w", written, "Pending")
    await set_conditions(
        k8s, namespace, "w", *INFERENCE_READY, condition("FutureGate", "True", "Done")
    )
    await wait_state(k8s, namespace, "w", "Ready")


async def test_already_ready_workspace_goes_straight_to_ready(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    await create_workspace(k8s, namespace, "old")
    await set_conditions(k8s, namespace, "old", *INFERENCE_READY)
    await start_operator(f"--namespace={namespace}").wait_ready()
    await wait_state(k8s, namespace, "old", "Ready")
    await auditor.wait_changes(namespace, "old", [(None, "Ready")])


async def test_tuning_success_is_terminal(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    ns = namespace
    await create_workspace(k8s, ns, "tune", TUNING_EXAMPLE)
    await wait_state(k8s, ns, "tune", "Pending")
    await set_conditions(
        k8s, ns, "tune", condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted")
    )
    await wait_state(k8s, ns, "tune", "Running")
    # The job pod is between retries: Running holds (previous state is Running).
    written = await set_conditions(
        k8s, ns, "tune", condition("JobStarted", "False", "WorkspaceTuningJobStatusPending")
    )
    await assert_held(k8s, op, ns, "tune", written, "Running")
    await set_conditions(
        k8s,
        ns,
        "tune",
        condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    )
    await wait_state(k8s, ns, "tune", "Succeeded")
    # The Job is deleted and recreated (a spec update): Succeeded stays.
    written = await set_conditions(
        k8s,
        ns,
        "tune",
        condition("JobStarted", "False", "WorkspaceTuningJobStatusFailed"),
        condition("WorkspaceSucceeded", "False", "workspaceFailed"),
    )
    await assert_held(k8s, op, ns, "tune", written, "Succeeded")
    await auditor.wait_changes(
        ns,
        "tune",
        [
            (None, "Pending"),
            ("Pending", "Running"),
            ("Running", "Succeeded"),
        ],
    )


async def test_tuning_failure_is_terminal(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    ns = namespace
    await create_workspace(k8s, ns, "tune", TUNING_EXAMPLE)
    await set_conditions(
        k8s, ns, "tune", condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted")
    )
    await wait_state(k8s, ns, "tune", "Running")
    await set_conditions(
        k8s,
        ns,
        "tune",
        condition("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "tuning job failed"),
        condition("WorkspaceSucceeded", "False", "workspaceFailed"),
    )
    await wait_state(k8s, ns, "tune", "Failed")
    ev = await wait_event(k8s, ns, "tune", "Failed", "JobStarted=False")
    assert ev["type"] == "Warning"
    written = await set_conditions(
        k8s,
        ns,
        "tune",
        condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    )
    await assert_held(k8s, op, ns, "tune", written, "Failed")


async def test_pending_tuning_can_fail_directly(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    await start_operator(f"--namespace={namespace}").wait_ready()
    await create_workspace(k8s, namespace, "t", TUNING_EXAMPLE)
    await wait_state(k8s, namespace, "t", "Pending")
    await set_conditions(
        k8s, namespace, "t", condition("WorkspaceSucceeded", "False", "workspaceFailed")
    )
    await wait_state(k8s, namespace, "t", "Failed")
    await auditor.wait_changes(namespace, "t", [(None, "Pending"), ("Pending", "Failed")])


async def test_deleting_workspace_keeps_its_state(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    ns = namespace
    await create_workspace(k8s, ns, "bye", metadata={"finalizers": ["test.kaito.sh/hold"]})
    await set_conditions(k8s, ns, "bye", *INFERENCE_READY)
    await wait_state(k8s, ns, "bye", "Ready")
    await k8s.delete(WORKSPACE, "bye", ns)
    written = await set_conditions(
        k8s,
        ns,
        "bye",
        condition("InferenceReady", "False", "ContainerCrashLoopBackOff"),
        condition("WorkspaceDeleting", "True", "workspaceDeleted"),
    )
    await assert_held(k8s, op, ns, "bye", written, "Ready", decided="Deleting")
    await k8s.patch(WORKSPACE, "bye", {"metadata": {"finalizers": None}}, namespace=ns)


async def test_workspace_deleting_condition_keeps_state(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    await create_workspace(k8s, namespace, "w")
    await set_conditions(k8s, namespace, "w", *INFERENCE_READY)
    await wait_state(k8s, namespace, "w", "Ready")
    written = await set_conditions(
        k8s,
        namespace,
        "w",
        condition("InferenceReady", "False", "PodEvicted"),
        condition("WorkspaceDeleting", "True", "workspaceDeleted"),
    )
    await assert_held(k8s, op, namespace, "w", written, "Ready", decided="Deleting")


@pytest.mark.parametrize("variant", ["both", "neither"])
async def test_invalid_workload_gets_a_warning_and_no_state(
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
    variant: str,
) -> None:
    op = await start_operator(f"--namespace={namespace}").wait_ready()
    overrides: dict[str, object] = {}
    if variant == "both":
        overrides["tuning"] = {
            "preset": {"name": "phi-3-mini-128k-instruct"},
            "method": "qlora",
            "input": {"urls": ["https://example.com/d.parquet"]},
            "output": {"image": "example.com/out:1"},
        }
    else:
        overrides["inference"] = None
    await create_workspace(k8s, namespace, "bad", **overrides)
    await create_workspace(k8s, namespace, "good")
    await set_conditions(k8s, namespace, "bad", *INFERENCE_READY)
    ev = await wait_event(k8s, namespace, "bad", "InvalidWorkload", variant)
    assert ev["type"] == "Warning"
    await wait_state(k8s, namespace, "good", "Pending")
    assert await state_of(k8s, namespace, "bad") is None
    # No hot loop: a handful of reconciles, not a spin.
    before = op.metric("controller_runtime_reconcile_total")
    await anyio.sleep(2.0)
    assert op.metric("controller_runtime_reconcile_total") - before <= 2
    assert (
        len(
            [e for e in await events_for(k8s, namespace, "bad") if e["reason"] == "InvalidWorkload"]
        )
        == 1
    )


async def test_garbage_previous_state_is_reported_and_replaced(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    # Our CRD's enum refuses garbage; "Running" is in the enum but illegal for inference.
    await create_workspace(k8s, namespace, "w")
    auditor.expect_external(namespace, "w", "Running")
    await k8s.patch_status(WORKSPACE, "w", {"status": {"status": "Running"}}, namespace=namespace)
    await start_operator(f"--namespace={namespace}").wait_ready()
    await wait_state(k8s, namespace, "w", "Pending")
    await wait_event(k8s, namespace, "w", "IllegalPreviousState", "'Running'")


async def test_crd_enum_rejects_a_bad_state(k8s: Client, namespace: str) -> None:
    from reconciler.errors import Invalid

    await create_workspace(k8s, namespace, "w")
    with pytest.raises(Invalid) as info:
        await k8s.patch_status(
            WORKSPACE, "w", {"status": {"status": "Exploded"}}, namespace=namespace
        )
    assert "Exploded" in info.value.message


async def test_stuck_pending_warning_names_the_blockers(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    await start_operator(f"--namespace={namespace}", "--pending-warning-after=2s").wait_ready()
    await create_workspace(k8s, namespace, "slow")
    await set_conditions(
        k8s,
        namespace,
        "slow",
        condition(
            "NodeClaimReady", "False", "NodeClaimNotReady", "InsufficientCapacity: quota exceeded"
        ),
    )
    ev = await wait_event(k8s, namespace, "slow", "StuckPending", "NodeClaimReady=False")
    assert "quota exceeded" in ev["message"]
    assert ev["type"] == "Warning"
    assert await state_of(k8s, namespace, "slow") == "Pending"


async def test_conditions_written_by_others_are_never_clobbered(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    await start_operator(f"--namespace={namespace}").wait_ready()
    await create_workspace(k8s, namespace, "race")
    flip = [
        (condition("ResourceReady", "True"), condition("InferenceReady", "True", "ok", "up")),
        (condition("ResourceReady", "True"), condition("InferenceReady", "False", "down", "x")),
    ]
    last: tuple[dict[str, object], ...] = ()
    for i in range(60):
        last = flip[i % 2] + (condition("Writes", "True", "n", str(i)),)
        await set_conditions(k8s, namespace, "race", *last)

    def kaitos(obj: dict[str, Any]) -> list[dict[str, Any]]:
        return [c for c in obj["status"]["conditions"] if is_kaito_type(c["type"])]

    obj = await k8s.get(WORKSPACE, "race", namespace)
    assert [c["message"] for c in kaitos(obj)] == [c["message"] for c in last]
    final = "NotReady"  # the last write (i=59) has InferenceReady=False after being Ready
    await wait_state(k8s, namespace, "race", final)
    obj = await k8s.get(WORKSPACE, "race", namespace)
    assert kaitos(obj)[-1]["message"] == "59"


async def test_kubectl_shows_status_and_can_wait_for_it(
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
    control_plane: ControlPlane | None,
    kubeconfig: object,
) -> None:
    await start_operator(f"--namespace={namespace}").wait_ready()
    await create_workspace(k8s, namespace, "phi")
    await wait_state(k8s, namespace, "phi", "Pending")
    kc = str(kubeconfig)
    table = await kubectl(control_plane, kc, "get", "workspace", "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "INSTANCE", "STATUS", "AGE"]
    assert row.split()[:3] == ["phi", "Standard_NC24ads_A100_v4", "Pending"]
    wide = await kubectl(control_plane, kc, "get", "workspace", "-n", namespace, "-o", "wide")
    assert wide.splitlines()[0].split() == [
        "NAME",
        "INSTANCE",
        "STATUS",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "AGE",
    ]

    def wait_ready() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                kubectl_binary(control_plane),
                f"--kubeconfig={kc}",
                "wait",
                "-n",
                namespace,
                "workspace/phi",
                "--for=jsonpath={.status.status}=Ready",
                "--timeout=60s",
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )

    async with anyio.create_task_group() as tg:
        result: list[subprocess.CompletedProcess[str]] = []

        async def waiter() -> None:
            result.append(await anyio.to_thread.run_sync(wait_ready))

        tg.start_soon(waiter)
        await anyio.sleep(0.5)
        await set_conditions(k8s, namespace, "phi", *INFERENCE_READY)
    assert result[0].returncode == 0, result[0].stderr
    assert "condition met" in result[0].stdout


async def test_every_kaito_example_is_accepted_and_gets_a_state(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    from e2e.harness import FIXTURES

    await start_operator(f"--namespace={namespace}").wait_ready()
    files = sorted(p.name for p in FIXTURES.glob("*.yaml") if p.name != "kaito.sh_workspaces.yaml")
    assert len(files) == 8
    for i, f in enumerate(files):
        await create_workspace(k8s, namespace, f"ex{i}", f)
    for i in range(len(files)):
        await wait_state(k8s, namespace, f"ex{i}", "Pending")


async def test_metrics_and_probes(
    k8s: Client, namespace: str, start_operator: OperatorFactory
) -> None:
    op = await start_operator(f"--namespace={namespace}").wait_ready()
    await create_workspace(k8s, namespace, "m")
    await set_conditions(k8s, namespace, "m", *INFERENCE_READY)
    await wait_state(k8s, namespace, "m", "Ready")

    async def counted() -> bool:
        return op.metric("kaito_workspace_status_workspaces", state="Ready") == 1

    await eventually(counted, 10, "the state gauge to count the workspace")
    text = op.metrics()
    for name in (
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_time_seconds",
        "workqueue_depth",
        "workqueue_adds_total",
        "rest_client_requests_total",
        "controller_runtime_active_workers",
        "kaito_workspace_status_pending_seconds",
    ):
        assert name in text, name
    assert (
        op.metric(
            "controller_runtime_reconcile_total", controller="workspace-status", result="success"
        )
        >= 1
    )
    assert op.metric("kaito_workspace_status_pending_seconds_count") == 1
    assert json.dumps  # keep import used for readers of metrics tests


async def test_bad_kubeconfig_fails_clearly(
    start_operator: OperatorFactory, tmp_path: object
) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.kubeconfig"
    bad.write_text("this: is: not: a kubeconfig")
    op = start_operator(kubeconfig_path=bad)
    assert op.proc is not None
    code = await anyio.to_thread.run_sync(lambda: op.proc.wait(30) if op.proc else None)
    assert code == 2
    assert "cannot load cluster configuration" in op.log()


async def test_a_taken_probe_port_fails_clearly(
    start_operator: OperatorFactory, tmp_path: object
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        op = start_operator(f"--health-probe-bind-address=127.0.0.1:{port}")
        assert op.proc is not None
        code = await anyio.to_thread.run_sync(lambda: op.proc.wait(30) if op.proc else None)
    assert code == 2, op.log()
    assert "Traceback" not in op.log(), op.log()
    assert (
        f"cannot listen on 127.0.0.1:{port} for health probes: Address already in use; "
        "is another operator running here? Choose another port with "
        "--health-probe-bind-address"
    ) in op.log()


TUNING_PHASES = {
    "Running": (condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),),
    "Succeeded": (
        condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    ),
    "Failed": (
        condition("JobStarted", "False", "WorkspaceTuningJobStatusFailed"),
        condition("WorkspaceSucceeded", "False", "workspaceFailed"),
    ),
}


@pytest.mark.parametrize("phase", sorted(TUNING_PHASES))
async def test_tuning_first_write_can_be_any_phase(
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
    phase: str,
) -> None:
    # The operator starts after the job has already progressed.
    await create_workspace(k8s, namespace, "t", TUNING_EXAMPLE)
    await set_conditions(k8s, namespace, "t", *TUNING_PHASES[phase])
    await start_operator(f"--namespace={namespace}").wait_ready()
    await wait_state(k8s, namespace, "t", phase)
    await auditor.wait_changes(namespace, "t", [(None, phase)])


async def test_pending_tuning_can_succeed_directly(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    await start_operator(f"--namespace={namespace}").wait_ready()
    await create_workspace(k8s, namespace, "t", TUNING_EXAMPLE)
    await wait_state(k8s, namespace, "t", "Pending")
    await set_conditions(k8s, namespace, "t", *TUNING_PHASES["Succeeded"][1:])
    await wait_state(k8s, namespace, "t", "Succeeded")
    await auditor.wait_changes(namespace, "t", [(None, "Pending"), ("Pending", "Succeeded")])


async def test_the_echo_of_our_own_write_is_not_reconciled_again(
    k8s: Client, namespace: str, start_operator: OperatorFactory
) -> None:
    """A status write comes back on the watch; reconciling that version again would find
    nothing to do, so the operator drops it, also when the echo outruns the write's
    answer (it mostly does). Nobody else writes here, so every echo is dropped."""
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    names = [f"echo{i}" for i in range(8)]
    for name in names:
        await create_workspace(k8s, namespace, name)
    for name in names:
        await wait_state(k8s, namespace, name, "Pending")
    ours = {
        name: str((await k8s.get(WORKSPACE, name, namespace))["metadata"]["resourceVersion"])
        for name in names
    }
    # Barrier: a later external write is decided, and nothing is queued or in progress.
    written = await set_conditions(k8s, namespace, names[0], *INFERENCE_READY)
    assert await op.wait_decided(namespace, names[0], written) == "Ready"

    async def idle() -> bool:
        text = op.metrics()
        return (
            sum_samples(text, "workqueue_depth", {"name": "workspace-status"}) == 0
            and sum_samples(
                text, "controller_runtime_active_workers", {"controller": "workspace-status"}
            )
            == 0
        )

    await eventually(idle, 10, "the workspace queue to drain")
    skipped = [n for n in names if ours[n] not in op.decisions(namespace, n)]
    assert skipped == names, f"own writes reconciled again: {ours}"
    assert all(op.decisions(namespace, n) for n in names)  # each was decided at creation
