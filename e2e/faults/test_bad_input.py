"""Bad input, one case per test: what KAITO, a user or the cluster may hand the operator.

One cluster-wide operator serves the whole module, so every case also proves it stays
up: after each case a canary workspace in its own namespace must still converge. Each
case asserts what the user gets (an Event, a log line, or the API server's own 422),
and adds a row to the bad-input table printed at the end of the session.

The last case deletes the Workspace CRD from the shared plane and installs it again;
it must stay last.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest

from e2e.conftest import OperatorFactory
from e2e.faults.audit import EtcdTransitionAuditor, wait_audited, wait_clean
from e2e.faults.conftest import StartAudit
from e2e.faults.figures import BadInputFigure, Figures
from e2e.faults.load import (
    INFERENCE_SETS,
    alive,
    logged,
    wait_quiet,
)
from e2e.faults.planes import CRD_DIR, client_for, private_plane
from e2e.harness import (
    FIXTURES,
    TUNING_EXAMPLE,
    WORKSPACE,
    Operator,
    condition,
    create_workspace,
    events_for,
    eventually,
    merge_patch_conditions,
    set_conditions,
    state_of,
    wait_event,
    wait_state,
)
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.errors import Invalid, NotFound
from reconciler.informer import BACKOFF_MAX
from reconciler.resource import CRD, NAMESPACE

CANARY_BOUND = 20.0
CRD_NAME = "workspaces.kaito.sh"
TUNING_SPEC = {
    "preset": {"name": "phi-3-mini-128k-instruct"},
    "method": "qlora",
    "input": {"urls": ["https://example.com/d.parquet"]},
    "output": {"image": "example.com/out:1"},
}
READY, CRASHING = INFERENCE_SETS["ready"], INFERENCE_SETS["crashing"]
EVENT_WRITE_FAILED = "event write failed; dropping it (further such failures logged at debug)"


# -- module fixtures: one operator, one canary, one auditor ------------------------------
@pytest.fixture(scope="module")
async def admin(kubeconfig: Path) -> AsyncIterator[Client]:
    async with client_for(kubeconfig) as client:
        yield client


@pytest.fixture(scope="module")
async def sentinel(
    control_plane: ControlPlane | None, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Operator]:
    """The cluster-wide operator every case runs against."""
    if control_plane is None:
        pytest.skip("the bad-input cases change the cluster (CRD removal): local plane only")
    op = Operator(kubeconfig, tmp_path_factory.mktemp("bad-input") / "sentinel.log").start()
    await op.wait_ready(60)
    yield op
    code = op.stop()
    assert code == 0, f"operator exited {code} on SIGTERM:\n{op.log()[-4000:]}"


@dataclass
class Canary:
    """A valid workspace that must keep converging whatever the cases do."""

    namespace: str
    name: str = "canary"
    ready: bool = False

    async def create(self, client: Client) -> None:
        await create_workspace(client, self.namespace, self.name)
        await wait_state(client, self.namespace, self.name, "Pending", CANARY_BOUND)
        self.ready = False

    async def flip(self, client: Client) -> float:
        """Toggle ready ↔ crashing; seconds until the operator wrote the new state."""
        self.ready = not self.ready
        started = time.monotonic()
        conditions = READY if self.ready else CRASHING
        await set_conditions(client, self.namespace, self.name, *conditions)
        want = "Ready" if self.ready else "NotReady"
        await wait_state(client, self.namespace, self.name, want, CANARY_BOUND)
        return time.monotonic() - started


@pytest.fixture(scope="module")
async def canary(admin: Client, sentinel: Operator) -> Canary:
    ns = f"canary-{uuid.uuid4().hex[:6]}"
    await admin.create(NAMESPACE, {"metadata": {"name": ns}})
    c = Canary(ns)
    await c.create(admin)
    return c


@pytest.fixture(scope="module")
def module_audit(control_plane: ControlPlane | None) -> Iterator[EtcdTransitionAuditor]:
    if control_plane is None:
        pytest.skip("needs the local plane's etcd")
    auditor = EtcdTransitionAuditor(control_plane.etcd_url)
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(auditor.run)
        yield auditor
        future.cancel()
    assert auditor.illegal == []
    assert auditor.stale == []


@pytest.fixture(scope="module")
def kaito_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """KAITO's own CRD: status.state without an enum, and no status.status at all."""
    with private_plane(
        tmp_path_factory,
        "kaito-crd",
        crd_paths=[FIXTURES / "kaito.sh_workspaces.yaml"],
        apiserver_args=(),
    ) as plane:
        yield plane


# -- the cases ----------------------------------------------------------------------------
@dataclass
class Ctx:
    k8s: Client
    ns: str
    op: Operator
    plane: ControlPlane
    auditor: EtcdTransitionAuditor
    canary: Canary
    start_operator: OperatorFactory
    start_audit: StartAudit
    request: pytest.FixtureRequest


CaseFn = Callable[[Ctx], Awaitable[str]]


@dataclass(frozen=True)
class Case:
    id: str
    input: str
    run: CaseFn


async def rejected(write: Awaitable[Any], *words: str) -> str:
    """The API server refuses the write with 422 and says why."""
    with pytest.raises(Invalid) as info:
        await write
    message = info.value.message
    for word in words:
        assert word in message, message
    return f"API server refuses it: 422 {message[:140]}"


async def settled_state(ctx: Ctx, name: str, state: str | None) -> None:
    """The operator has finished with ``name`` and left it in ``state``."""
    if state is not None:
        await wait_state(ctx.k8s, ctx.ns, name, state)
    await wait_quiet(ctx.op)
    assert await state_of(ctx.k8s, ctx.ns, name) == state


async def both_workloads(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w", tuning=TUNING_SPEC)
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY)
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "InvalidWorkload", "both")
    await settled_state(ctx, "w", None)
    return f"{ev['type']} {ev['reason']}: {ev['message']}; no state written, no retries"


async def neither_workload(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w", inference=None)
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "InvalidWorkload", "neither")
    await settled_state(ctx, "w", None)
    return f"{ev['type']} {ev['reason']}: {ev['message']}; no state written"


async def duplicate_first_true(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    # KAITO cannot write two entries of one type (SetStatusCondition updates the first).
    await merge_patch_conditions(
        ctx.k8s,
        ctx.ns,
        "w",
        *READY,
        condition("InferenceReady", "False", "StaleDuplicate", "a stale second entry"),
    )
    await settled_state(ctx, "w", "Ready")
    return "Ready: the first InferenceReady (True) counts, as meta.FindStatusCondition reads it"


async def duplicate_first_false(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await merge_patch_conditions(
        ctx.k8s,
        ctx.ns,
        "w",
        condition("InferenceReady", "False", "WorkspaceInferenceStatusPending"),
        *READY,
    )
    await settled_state(ctx, "w", "Pending")
    return "Pending: the first InferenceReady (False) counts; the later True is ignored"


async def unknown_status(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await set_conditions(
        ctx.k8s,
        ctx.ns,
        "w",
        condition("ResourceReady", "Unknown", "Provisioning"),
        condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
    )
    await settled_state(ctx, "w", "Pending")
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY)
    await wait_state(ctx.k8s, ctx.ns, "w", "Ready")
    return "Pending while ResourceReady=Unknown, Ready once it is True"


async def unknown_after_ready(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY)
    await wait_state(ctx.k8s, ctx.ns, "w", "Ready")
    await set_conditions(
        ctx.k8s,
        ctx.ns,
        "w",
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "Unknown", "Probing"),
    )
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "NotReady", "no False condition reported")
    await settled_state(ctx, "w", "NotReady")
    return f"NotReady; {ev['type']} {ev['reason']}: {ev['message']}"


async def missing_reason(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    bad = {k: v for k, v in condition("InferenceReady", "True").items() if k != "reason"}
    outcome = await rejected(set_conditions(ctx.k8s, ctx.ns, "w", bad), "reason")
    await settled_state(ctx, "w", "Pending")
    return outcome


async def message_32k(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY)
    await wait_state(ctx.k8s, ctx.ns, "w", "Ready")
    huge = "CrashLoopBackOff: " + "x" * (32768 - 18)
    await set_conditions(
        ctx.k8s,
        ctx.ns,
        "w",
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "False", "ContainerCrashLoopBackOff", huge),
    )
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "NotReady", "ContainerCrashLoopBackOff")
    await settled_state(ctx, "w", "NotReady")
    size = len(ev["message"].encode())
    assert size <= 1024, size
    assert "x" * 201 not in ev["message"]
    return (
        f"NotReady; the Warning names the cause with the message cut to 200 characters "
        f"({size} bytes in all)"
    )


async def message_over_32k(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    too_long = condition("InferenceReady", "False", "Crash", "x" * 32769)
    outcome = await rejected(set_conditions(ctx.k8s, ctx.ns, "w", too_long), "Too long")
    await settled_state(ctx, "w", "Pending")
    return outcome


async def unknown_type_false(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await set_conditions(
        ctx.k8s, ctx.ns, "w", *READY, condition("FutureGate", "False", "NotYet", "new check")
    )
    await settled_state(ctx, "w", "Pending")
    return "Pending: an unknown type that is False gates Ready"


async def unknown_type_true(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY, condition("FutureGate", "True", "Done"))
    await settled_state(ctx, "w", "Ready")
    return "Ready: an unknown type that is True blocks nothing"


async def status_not_in_enum(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    maybe = condition("InferenceReady", "Maybe", "Guessing")
    outcome = await rejected(set_conditions(ctx.k8s, ctx.ns, "w", maybe), "Maybe")
    await settled_state(ctx, "w", "Pending")
    return outcome


async def bad_enum_state(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await wait_state(ctx.k8s, ctx.ns, "w", "Pending")
    patch = {"status": {"status": "Exploded"}}
    write = ctx.k8s.patch_status(WORKSPACE, "w", patch, namespace=ctx.ns)
    outcome = await rejected(write, "Exploded")
    await settled_state(ctx, "w", "Pending")
    return f"our CRD's enum: {outcome}"


async def _garbage_previous(ctx: Ctx, file: str, garbage: str, want: str) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w", file)
    await wait_state(ctx.k8s, ctx.ns, "w", "Pending")
    ctx.auditor.expect_external(ctx.ns, "w", garbage)
    patch = {"status": {"status": garbage}}
    await ctx.k8s.patch_status(WORKSPACE, "w", patch, namespace=ctx.ns)
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "IllegalPreviousState", repr(garbage))
    await settled_state(ctx, "w", want)
    return f"{ev['type']} {ev['reason']}: {ev['message']}; replaced by {want}"


async def running_on_inference(ctx: Ctx) -> str:
    return await _garbage_previous(ctx, "kaito_workspace_phi_4_mini.yaml", "Running", "Pending")


async def ready_on_tuning(ctx: Ctx) -> str:
    return await _garbage_previous(ctx, TUNING_EXAMPLE, "Ready", "Pending")


async def garbage_under_kaito_crd(ctx: Ctx) -> str:
    plane: ControlPlane = ctx.request.getfixturevalue("kaito_plane")
    auditor = ctx.start_audit(plane)
    ns = "garbage"
    async with client_for(plane.kubeconfig) as k8s:
        await k8s.create(NAMESPACE, {"metadata": {"name": ns}})
        await create_workspace(k8s, ns, "w")
        stored = await k8s.patch_status(
            WORKSPACE, "w", {"status": {"status": "Exploded", "state": "Exploded"}}, namespace=ns
        )
        # KAITO's CRD has no status.status: the garbage is pruned, never stored. Its own
        # status.state has no enum and keeps the garbage, which the operator never reads.
        assert "status" not in stored["status"]
        assert stored["status"]["state"] == "Exploded"
        await set_conditions(k8s, ns, "w", *READY)
        # --manage-crd=false: the case is the pruning, not the repair of the CRD.
        op = ctx.start_operator(
            f"--namespace={ns}", "--manage-crd=false", kubeconfig_path=plane.kubeconfig
        )
        await op.wait_ready()
        ev = await wait_event(k8s, ns, "w", "StatusFieldPruned", "status.status")
        await wait_quiet(op)
        assert alive(op)
        assert await state_of(k8s, ns, "w") is None
        pruned = [e for e in await events_for(k8s, ns, "w") if e["reason"] == "StatusFieldPruned"]
        assert len(pruned) == 1
        await wait_audited(auditor)
    return (
        "garbage status.status is pruned by KAITO's CRD (status.state='Exploded' is kept, "
        f"and ignored); {ev['type']} {ev['reason']} once, no retry loop"
    )


async def bad_timestamp(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    bad = {**condition("InferenceReady", "True"), "lastTransitionTime": "yesterday"}
    outcome = await rejected(set_conditions(ctx.k8s, ctx.ns, "w", bad), "lastTransitionTime")
    await settled_state(ctx, "w", "Pending")
    return outcome


async def many_conditions(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    checks = [condition(f"Check{i:03d}", "True", "Fine") for i in range(200)]
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY, *checks)
    await wait_state(ctx.k8s, ctx.ns, "w", "Ready")
    failing = [condition(f"Check{i:03d}", "False", "Broken", "x" * 200) for i in range(100)]
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY, *failing)
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "NotReady", "Check000=False")
    await settled_state(ctx, "w", "NotReady")
    size = len(ev["message"].encode())
    assert size <= 1024, size
    return f"200 conditions: Ready; 100 False: NotReady, Warning names them in {size} bytes"


async def unicode_message(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY)
    await wait_state(ctx.k8s, ctx.ns, "w", "Ready")
    text = "💥 OOMKilled\n\tpod 模型-0 \u202eevil\u202c \x07 done"
    await set_conditions(
        ctx.k8s,
        ctx.ns,
        "w",
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "False", "OOMKilled", text),
    )
    ev = await wait_event(ctx.k8s, ctx.ns, "w", "NotReady", "💥 OOMKilled")
    await settled_state(ctx, "w", "NotReady")
    assert "模型-0" in ev["message"]
    return "NotReady; the Warning carries the message as written (emoji, CJK, bidi, BEL)"


async def conditions_not_a_list(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    patch = {"status": {"conditions": {"type": "InferenceReady", "status": "True"}}}
    write = ctx.k8s.patch_status(WORKSPACE, "w", patch, namespace=ctx.ns)
    outcome = await rejected(write, "conditions")
    await settled_state(ctx, "w", "Pending")
    return outcome


async def empty_type(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w")
    outcome = await rejected(set_conditions(ctx.k8s, ctx.ns, "w", condition("", "True")), "type")
    await settled_state(ctx, "w", "Pending")
    return outcome


async def older_api_version(ctx: Ctx) -> str:
    await create_workspace(ctx.k8s, ctx.ns, "w", "v1alpha1_azure_kaito_workspace_falcon_7b.yaml")
    await set_conditions(ctx.k8s, ctx.ns, "w", *READY)
    await settled_state(ctx, "w", "Ready")
    return "a v1alpha1 Workspace converges like a v1beta1 one: Ready"


async def longest_name(ctx: Ctx) -> str:
    name = "w" + "x" * 252
    await create_workspace(ctx.k8s, ctx.ns, name)
    ev = await wait_event(ctx.k8s, ctx.ns, name, "StateChanged", "none → Pending")
    await settled_state(ctx, name, "Pending")
    event_name = ev["metadata"]["name"]
    assert len(event_name) <= 253
    return f"Pending; its StateChanged Event gets a valid {len(event_name)}-character name"


async def deleted_while_reconciling(ctx: Ctx) -> str:
    errors_before = len(logged(ctx.op, "reconciler error"))
    for i in range(20):
        await create_workspace(ctx.k8s, ctx.ns, f"gone{i}")
        await set_conditions(ctx.k8s, ctx.ns, f"gone{i}", *READY)
        await ctx.k8s.delete(WORKSPACE, f"gone{i}", ctx.ns)
    await wait_quiet(ctx.op)
    errors = len(logged(ctx.op, "reconciler error")) - errors_before
    assert errors == 0, logged(ctx.op, "reconciler error")[-3:]
    return "20 workspaces created, made ready and deleted at once: 0 reconcile errors"


async def _finalize_namespace(k8s: Client, ns: str) -> None:
    """What the namespace controller (not part of envtest) does: empty it, finalize it."""
    for obj in (await k8s.list(WORKSPACE, ns)).get("items") or []:
        await k8s.delete(WORKSPACE, obj["metadata"]["name"], ns)
    body = await k8s.get(NAMESPACE, ns)
    body["spec"] = {"finalizers": []}
    await k8s.raw("PUT", f"/api/v1/namespaces/{ns}/finalize", body)

    async def gone() -> bool:
        try:
            await k8s.get(NAMESPACE, ns)
        except NotFound:
            return True
        return False

    await eventually(gone, 30, f"namespace {ns} to be gone")


async def namespace_deleted(ctx: Ctx) -> str:
    ns = f"doomed-{uuid.uuid4().hex[:6]}"
    await ctx.k8s.create(NAMESPACE, {"metadata": {"name": ns}})
    for i in range(5):
        await create_workspace(ctx.k8s, ns, f"w{i}")
    for i in range(5):
        await wait_state(ctx.k8s, ns, f"w{i}", "Pending")
    await ctx.k8s.delete(NAMESPACE, ns)
    # Terminating: states are still written, but the namespace takes no new Events.
    for i in range(5):
        await set_conditions(ctx.k8s, ns, f"w{i}", *READY)
    for i in range(5):
        await wait_state(ctx.k8s, ns, f"w{i}", "Ready")

    def refusals() -> list[dict[str, Any]]:
        return [r for r in logged(ctx.op, EVENT_WRITE_FAILED) if r.get("namespace") == ns]

    await eventually(lambda: bool(refusals()), 20, "the refused Event to be logged")
    await _finalize_namespace(ctx.k8s, ns)
    await wait_quiet(ctx.op)
    (refusal,) = refusals()  # once per namespace and cause, however many Events
    assert refusal["error"].startswith("403"), refusal
    return (
        "terminating namespace: states still written; its Events refused and logged once "
        f"({refusal['error'][:90]}); namespace finalized under the operator"
    )


async def namespace_recreated(ctx: Ctx) -> str:
    ns = f"phoenix-{uuid.uuid4().hex[:6]}"
    await ctx.k8s.create(NAMESPACE, {"metadata": {"name": ns}})
    op = ctx.start_operator(f"--namespace={ns}")
    await op.wait_ready()
    await create_workspace(ctx.k8s, ns, "w")
    await wait_state(ctx.k8s, ns, "w", "Pending")
    await ctx.k8s.delete(NAMESPACE, ns)
    await _finalize_namespace(ctx.k8s, ns)
    await ctx.k8s.create(NAMESPACE, {"metadata": {"name": ns}})
    started = time.monotonic()
    await create_workspace(ctx.k8s, ns, "w")
    await wait_state(ctx.k8s, ns, "w", "Pending")
    took = time.monotonic() - started
    assert alive(op)
    return (
        f"an operator scoped to a namespace that is deleted and re-created keeps going: "
        f"the new workspace is Pending {took:.1f} s after creation"
    )


async def crd_removed_and_readded(ctx: Ctx) -> str:
    warnings_before = len(logged(ctx.op, "watch failed")) + len(logged(ctx.op, "list failed"))
    ctx.plane.kubectl("delete", "crd", CRD_NAME, "--wait=true", "--timeout=60s")

    async def crd_gone() -> bool:
        try:
            await ctx.k8s.get(CRD, CRD_NAME)
        except NotFound:
            return True
        return False

    await eventually(crd_gone, 60, "the CRD to be deleted")

    def complained() -> bool:
        now = len(logged(ctx.op, "watch failed")) + len(logged(ctx.op, "list failed"))
        return now > warnings_before

    await eventually(complained, 30, "the operator to log the missing resource")
    await anyio.sleep(3.0)  # a while without the CRD: the operator must stay up
    assert alive(ctx.op)
    await anyio.to_thread.run_sync(lambda: ctx.plane.install_crds([CRD_DIR]))
    started = time.monotonic()
    await create_workspace(ctx.k8s, ctx.ns, "reborn")
    await wait_state(ctx.k8s, ctx.ns, "reborn", "Pending", 2 * BACKOFF_MAX + 15)
    took = time.monotonic() - started
    await ctx.canary.create(ctx.k8s)  # deleted with the CRD
    failures = logged(ctx.op, "watch failed") + logged(ctx.op, "list failed")
    return (
        f"CRD deleted: {len(failures)} 'watch/list failed' warnings "
        f"({failures[-1].get('error', '')[:60]}), operator up; re-installed: a new workspace "
        f"is Pending {took:.1f} s later"
    )


CASES = [
    Case("both-workloads", ".inference and .tuning both set", both_workloads),
    Case("neither-workload", "neither .inference nor .tuning", neither_workload),
    Case("duplicate-first-true", "InferenceReady twice: True, then False", duplicate_first_true),
    Case("duplicate-first-false", "InferenceReady twice: False, then True", duplicate_first_false),
    Case("unknown-status", "ResourceReady=Unknown", unknown_status),
    Case("unknown-after-ready", "Ready, then InferenceReady=Unknown", unknown_after_ready),
    Case("missing-reason", "a condition without reason", missing_reason),
    Case("message-32KiB", "a 32 KiB condition message", message_32k),
    Case("message-over-32KiB", "a 32 KiB + 1 condition message", message_over_32k),
    Case("unknown-type-false", "an unknown condition type, False", unknown_type_false),
    Case("unknown-type-true", "an unknown condition type, True", unknown_type_true),
    Case("status-not-in-enum", "condition status 'Maybe'", status_not_in_enum),
    Case("bad-enum-state", "status.status 'Exploded' (our CRD)", bad_enum_state),
    Case("running-on-inference", "status.status 'Running' on inference", running_on_inference),
    Case("ready-on-tuning", "status.status 'Ready' on tuning", ready_on_tuning),
    Case("garbage-under-kaito-crd", "status.status garbage, KAITO's CRD", garbage_under_kaito_crd),
    Case("bad-timestamp", "lastTransitionTime 'yesterday'", bad_timestamp),
    Case("many-conditions", "200 condition types, then 100 False", many_conditions),
    Case("unicode-message", "emoji, CJK, bidi override, BEL in a message", unicode_message),
    Case("conditions-not-a-list", "status.conditions is an object", conditions_not_a_list),
    Case("empty-type", "a condition with type ''", empty_type),
    Case("older-api-version", "a v1alpha1 Workspace", older_api_version),
    Case("longest-name", "a 253-character workspace name", longest_name),
    Case(
        "deleted-while-reconciling",
        "workspaces deleted right after a change",
        deleted_while_reconciling,
    ),
    Case("namespace-deleted", "a namespace deleted under the operator", namespace_deleted),
    Case(
        "namespace-recreated", "the watched namespace deleted and re-created", namespace_recreated
    ),
    # Must stay last: it takes every Workspace in the shared plane with it.
    Case(
        "crd-removed-and-readded",
        "the Workspace CRD deleted, then installed again",
        crd_removed_and_readded,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input(
    case: Case,
    k8s: Client,
    namespace: str,
    sentinel: Operator,
    canary: Canary,
    module_audit: EtcdTransitionAuditor,
    control_plane: ControlPlane,
    admin: Client,
    start_operator: OperatorFactory,
    start_audit: StartAudit,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    ctx = Ctx(
        k8s,
        namespace,
        sentinel,
        control_plane,
        module_audit,
        canary,
        start_operator,
        start_audit,
        request,
    )
    outcome = await case.run(ctx)
    assert alive(sentinel), f"the operator exited:\n{sentinel.log()[-4000:]}"
    # Valid workspaces keep converging on the same process.
    canary_took = await canary.flip(admin)
    await wait_clean(module_audit)
    assert "Traceback" not in sentinel.log()
    figures.add(
        BadInputFigure(case.id, case.input, outcome, alive(sentinel), round(canary_took, 2))
    )


def test_the_table_has_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20
    assert CASES[-1].id == "crd-removed-and-readded"
