"""The optional MutatingAdmissionPolicy in config/admission-policy, on the shared plane.

KAITO writes status with a full PUT of its typed status, which has no status.status, so
each of its writes blanks the column until the operator writes it back (e2e/kaito.py
plays KAITO). The policy copies the stored value into such a write. The tests install
it with ``kubectl apply -k`` as a user would, wait until the API server has loaded it,
and remove it again, waiting until it is unloaded: the control plane is shared by the
whole session.

Whether the policy acted on a request is read from the API server's counter
``apiserver_mutating_admission_policy_check_total``, which counts mutations run after
the match conditions passed (k8s.io/apiserver v0.36.3,
pkg/admission/plugin/policy/mutating/dispatcher.go).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from e2e.conftest import OperatorFactory
from e2e.harness import (
    CRASHING,
    INFERENCE_READY,
    ROOT,
    WORKSPACE,
    WORKSPACE_V1ALPHA1,
    Operator,
    TransitionAuditor,
    condition,
    create_workspace,
    eventually,
    kubectl,
    sum_samples,
    wait_state,
)
from e2e.kaito import KaitoWriter
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.resource import NAMESPACE

Obj = dict[str, Any]
POLICY_DIR = ROOT / "config" / "admission-policy"
POLICY = "workspace-status-keep"  # the policy's and the binding's name
CHECKS = "apiserver_mutating_admission_policy_check_total"
# Loading is asynchronous (informers on policies and bindings, then compilation).
LOAD_TIMEOUT = 60.0
KAITO_WRITES = 20
DEBUG = "--log-level=debug"


def _state(obj: Obj) -> str | None:
    return (obj.get("status") or {}).get("status")


def _serving(note: str) -> Obj:
    """InferenceReady=True with a new message: a KAITO status write that changes no
    condition's status (so lastTransitionTime stays) but is still written."""
    return condition(
        "InferenceReady", "True", "WorkspaceInferenceStatusSuccess", f"serving ({note})"
    )


# -- the API server's view --------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    plane: ControlPlane | None
    kubeconfig: Path

    async def kubectl(self, *args: str) -> str:
        return await kubectl(self.plane, self.kubeconfig, *args)

    async def checks(self) -> tuple[float, float]:
        """(mutations the policy ran without error, mutations that failed), so far."""
        text = await self.kubectl("get", "--raw", "/metrics")
        ok = sum_samples(text, CHECKS, {"policy": POLICY, "error_type": "no_error"})
        return ok, sum_samples(text, CHECKS, {"policy": POLICY}) - ok


async def _kept(k8s: Client, ns: str, name: str) -> bool:
    """One probe: store a status.status, then let KAITO write; was the value kept?

    Until the plugin has the Workspace schema a write it would act on gets 503; the
    writer retries that as KAITO does (see the manifest's header)."""
    await k8s.patch_status(WORKSPACE, name, {"status": {"status": "Pending"}}, namespace=ns)
    written = await KaitoWriter(k8s).set_conditions(ns, name, _serving(uuid.uuid4().hex))
    return _state(written) == "Pending"


@pytest.fixture
async def keep_status_policy(
    k8s: Client, control_plane: ControlPlane | None, kubeconfig: Path
) -> AsyncIterator[Cluster]:
    """config/admission-policy installed and in effect; removed and unloaded afterwards."""
    cluster = Cluster(control_plane, kubeconfig)
    served = await k8s.raw("GET", "/apis/admissionregistration.k8s.io/v1")
    if "mutatingadmissionpolicies" not in {r["name"] for r in served["resources"]}:
        if control_plane is None:
            pytest.skip("this cluster does not serve MutatingAdmissionPolicy v1 (1.36+)")
        raise AssertionError("the local kube-apiserver does not serve MutatingAdmissionPolicy")
    # The probe lives in its own namespace, where no test's operator or auditor looks.
    probe_ns = f"policy-probe-{uuid.uuid4().hex[:8]}"
    await k8s.create(NAMESPACE, {"metadata": {"name": probe_ns}})
    try:
        await create_workspace(k8s, probe_ns, "probe")
        await cluster.kubectl("apply", "-k", str(POLICY_DIR))
        try:
            await eventually(
                lambda: _kept(k8s, probe_ns, "probe"), LOAD_TIMEOUT, "the policy to take effect"
            )
            yield cluster
        finally:
            await cluster.kubectl("delete", "-k", str(POLICY_DIR), "--ignore-not-found")

            async def unloaded() -> bool:
                return not await _kept(k8s, probe_ns, "probe")

            await eventually(unloaded, LOAD_TIMEOUT, "the deleted policy to stop acting")
    finally:
        await k8s.delete(NAMESPACE, probe_ns)


# -- what the policy does -----------------------------------------------------------------
async def test_policy_keeps_status_status_only_when_a_status_write_omits_it(
    k8s: Client, namespace: str, keep_status_policy: Cluster
) -> None:
    ns, cluster, kaito = namespace, keep_status_policy, KaitoWriter(k8s)
    acted_before, failed_before = await cluster.checks()

    async def acted() -> float:
        """How many writes the policy changed since the last call."""
        nonlocal acted_before
        now, _ = await cluster.checks()
        delta, acted_before = now - acted_before, now
        return delta

    await create_workspace(k8s, ns, "w")
    await k8s.patch_status(WORKSPACE, "w", {"status": {"status": "Ready"}}, namespace=ns)
    assert await acted() == 0, "our controller's writes carry status.status"

    # KAITO's write: the value is kept, and KAITO's change lands.
    written = await kaito.set_conditions(ns, "w", *CRASHING)
    assert _state(written) == "Ready"
    assert [(c["type"], c["status"]) for c in written["status"]["conditions"]] == [
        ("ResourceReady", "True"),
        ("InferenceReady", "False"),
    ]
    assert await acted() == 1

    # A status write that sets a value keeps that value: a full PUT and a merge patch.
    obj = await k8s.get(WORKSPACE, "w", ns)
    obj["status"]["status"] = "NotReady"
    assert _state(await k8s.replace(WORKSPACE, obj, subresource="status")) == "NotReady"
    patched = await k8s.patch_status(WORKSPACE, "w", {"status": {"status": "Ready"}}, namespace=ns)
    assert _state(patched) == "Ready"
    assert await acted() == 0

    # A write that drops the whole status keeps status.status and nothing else.
    obj = await k8s.get(WORKSPACE, "w", ns)
    del obj["status"]
    dropped = await k8s.replace(WORKSPACE, obj, subresource="status")
    assert dropped["status"] == {"status": "Ready"}
    assert await acted() == 1

    # The main resource is not matched: a PUT of it without status.status is left alone.
    obj = await k8s.get(WORKSPACE, "w", ns)
    del obj["status"]["status"]
    obj["metadata"]["labels"] = {"example.com/touched": "yes"}
    main = await k8s.replace(WORKSPACE, obj)
    assert main["metadata"]["labels"] == {"example.com/touched": "yes"}
    assert _state(main) == "Ready"
    assert await acted() == 0

    # A workspace that never had status.status does not get one.
    await create_workspace(k8s, ns, "fresh")
    assert _state(await kaito.set_conditions(ns, "fresh", *INFERENCE_READY)) is None
    assert _state(await k8s.get(WORKSPACE, "fresh", ns)) is None
    assert await acted() == 0

    # KAITO's older API version is matched too.
    await create_workspace(k8s, ns, "old", "v1alpha1_azure_kaito_workspace_falcon_7b.yaml")
    await k8s.patch(
        WORKSPACE_V1ALPHA1,
        "old",
        {"status": {"status": "Pending"}},
        namespace=ns,
        subresource="status",
    )
    old = await KaitoWriter(k8s, resource=WORKSPACE_V1ALPHA1).set_conditions(
        ns, "old", *INFERENCE_READY
    )
    assert _state(old) == "Pending"
    assert await acted() == 1

    _, failed = await cluster.checks()
    assert failed == failed_before, "a mutation of the policy failed (and was ignored)"


# -- the blank window, with the operator running ------------------------------------------
@dataclass(frozen=True)
class Seen:
    """A version of the workspace as the watch delivered it."""

    at: float
    resource_version: str
    state: str | None


def blanks(seen: Sequence[Seen]) -> list[Seen]:
    """The versions without status.status after a version that had it."""
    out: list[Seen] = []
    was_set = False
    for s in seen:
        was_set = was_set or s.state is not None
        if was_set and s.state is None:
            out.append(s)
    return out


def blank_windows(seen: Sequence[Seen]) -> list[float]:
    """How long each blank lasted: from the first version without status.status to the
    next version with it, as the watch saw them (a blank still open at the end lasts
    until the last version seen)."""
    windows: list[float] = []
    was_set, start = False, None
    for s in seen:
        if s.state is None and was_set and start is None:
            start = s.at
        elif s.state is not None:
            was_set = True
            if start is not None:
                windows.append(s.at - start)
                start = None
    if start is not None:
        windows.append(seen[-1].at - start)
    return windows


async def _watch(
    k8s: Client,
    ns: str,
    name: str,
    resource_version: str,
    seen: list[Seen],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with k8s.watch(
        WORKSPACE, ns, resource_version=resource_version, field_selector=f"metadata.name={name}"
    ) as events:
        task_status.started()
        async for ev in events:
            if ev.type in ("ADDED", "MODIFIED"):
                rv = str(ev.object["metadata"]["resourceVersion"])
                seen.append(Seen(time.monotonic(), rv, _state(ev.object)))


async def _kaito_writes_under_watch(
    k8s: Client, op: Operator, ns: str, name: str, *, blanked: bool
) -> tuple[list[Seen], KaitoWriter]:
    """A Ready workspace gets ``KAITO_WRITES`` KAITO status writes, each followed by the
    operator's decision on the written version and, when the write ``blanked`` the
    state, by the operator's rewrite. Returns every version the watch saw, starting
    with the Ready one, and the writer (for its stats)."""
    await create_workspace(k8s, ns, name)
    await KaitoWriter(k8s).set_conditions(ns, name, *INFERENCE_READY)
    await wait_state(k8s, ns, name, "Ready")
    start = await k8s.get(WORKSPACE, name, ns)
    rv = str(start["metadata"]["resourceVersion"])
    seen = [Seen(time.monotonic(), rv, _state(start))]
    kaito = KaitoWriter(k8s)
    async with anyio.create_task_group() as tg:
        await tg.start(_watch, k8s, ns, name, rv, seen)
        for i in range(KAITO_WRITES):
            written = await kaito.set_conditions(ns, name, _serving(f"check {i}"))
            assert (_state(written) is None) == blanked
            assert await op.wait_decided(ns, name, written) == "Ready"
            if blanked:
                await wait_state(k8s, ns, name, "Ready")
        last = str((await k8s.get(WORKSPACE, name, ns))["metadata"]["resourceVersion"])
        await eventually(
            lambda: any(s.resource_version == last for s in seen),
            10,
            f"the watch to deliver {ns}/{name}@{last}",
        )
        tg.cancel_scope.cancel()
    return seen, kaito


def _report(label: str, seen: Sequence[Seen], kaito: KaitoWriter) -> str:
    ms = sorted(round(w * 1000, 1) for w in blank_windows(seen))
    median = ms[len(ms) // 2] if ms else 0.0
    return (
        f"{label}: {kaito.stats.writes} KAITO writes ({kaito.stats.conflicts} conflicts), "
        f"{len(seen) - 1} versions watched after Ready, {len(blanks(seen))} without "
        f"status.status; blank windows (ms): median {median}, max {max(ms, default=0.0)}, "
        f"all {ms}"
    )


async def test_without_the_policy_every_kaito_write_blanks_the_state(
    k8s: Client, namespace: str, start_operator: OperatorFactory
) -> None:
    # The baseline the policy is measured against, and proof the measurement sees blanks.
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    seen, kaito = await _kaito_writes_under_watch(k8s, op, namespace, "w", blanked=True)
    print(_report("without the policy", seen, kaito))
    assert len(blanks(seen)) == KAITO_WRITES
    assert len(blank_windows(seen)) == KAITO_WRITES


async def test_with_the_policy_no_kaito_write_blanks_the_state(
    k8s: Client,
    namespace: str,
    keep_status_policy: Cluster,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
) -> None:
    op = await start_operator(f"--namespace={namespace}", DEBUG).wait_ready()
    seen, kaito = await _kaito_writes_under_watch(k8s, op, namespace, "w", blanked=False)
    print(_report("with the policy", seen, kaito))
    assert blanks(seen) == []
    # Every version after Ready is one of KAITO's writes: the operator wrote nothing.
    assert len(seen) - 1 == KAITO_WRITES
