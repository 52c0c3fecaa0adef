"""The operator beside KAITO's real way of writing status (``e2e/kaito.py``).

Every KAITO status write is a PUT of KAITO's typed status, which drops
``status.status``. The operator must keep the state machine's promises across those
writes, across a kill -9 while KAITO keeps writing, and for both KAITO releases whose
CRDs the project carries (v0.12.0 and v0.8.1).
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest

from e2e.conftest import OperatorFactory
from e2e.harness import (
    CRASHING,
    INFERENCE_READY,
    RECORD,
    TUNING_EXAMPLE,
    WORKSPACE,
    TransitionAuditor,
    condition,
    create_workspace,
    eventually,
    kubectl,
    state_of,
    wait_event,
    wait_state,
)
from e2e.kaito import KaitoVersion, KaitoWriter
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane

DEBUG = "--log-level=debug"
JOB_DONE = (
    condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
    condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
)
# KAITO recreates the Job (a spec change, or the Job deleted): not started, pending.
JOB_RECREATED = (
    condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    condition("JobStarted", "False", "WorkspaceTuningJobStatusPending"),
    condition("WorkspaceSucceeded", "False", "workspacePending"),
)


async def record_of(k8s: Client, ns: str, name: str) -> str | None:
    obj = await k8s.get(WORKSPACE, name, ns)
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == RECORD:
            return str(c["reason"])
    return None


@pytest.mark.parametrize("version", list(KaitoVersion))
async def test_kill_9_while_kaito_writes_then_not_ready_not_pending(
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
    version: KaitoVersion,
) -> None:
    kaito = KaitoWriter(k8s, version=version)
    ns = namespace
    op = await start_operator(f"--namespace={ns}").wait_ready()
    await create_workspace(k8s, ns, "phi")
    await wait_state(k8s, ns, "phi", "Pending")
    await kaito.replace_conditions(ns, "phi", *INFERENCE_READY)
    await wait_state(k8s, ns, "phi", "Ready")

    assert op.stop(signal.SIGKILL) == -signal.SIGKILL
    # KAITO goes on: each write drops status.status, and the model starts crashing.
    for note in ("rollout", "rollout again"):
        ready = (*INFERENCE_READY[:1], condition("InferenceReady", "True", "ok", note))
        await kaito.replace_conditions(ns, "phi", *ready)
    written = await kaito.replace_conditions(ns, "phi", *CRASHING)
    assert (written.get("status") or {}).get("status") is None
    assert await record_of(k8s, ns, "phi") == "Ready"

    await start_operator(f"--namespace={ns}").wait_ready()
    await wait_state(k8s, ns, "phi", "NotReady")
    await wait_event(k8s, ns, "phi", "NotReady", "Ready → NotReady")
    await auditor.wait_changes(
        ns, "phi", [(None, "Pending"), ("Pending", "Ready"), ("Ready", "NotReady")]
    )
    assert auditor.illegal == []
    assert auditor.erasures, "KAITO's writes should have blanked the field"


async def test_a_finished_tuning_job_stays_succeeded_across_kill_9_and_job_recreation(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    kaito = KaitoWriter(k8s)
    ns = namespace
    op = await start_operator(f"--namespace={ns}").wait_ready()
    await create_workspace(k8s, ns, "tune", TUNING_EXAMPLE)
    await wait_state(k8s, ns, "tune", "Pending")
    await kaito.replace_conditions(ns, "tune", *JOB_DONE)
    await wait_state(k8s, ns, "tune", "Succeeded")

    assert op.stop(signal.SIGKILL) == -signal.SIGKILL
    await kaito.replace_conditions(ns, "tune", *JOB_RECREATED)
    assert await state_of(k8s, ns, "tune") is None

    await start_operator(f"--namespace={ns}", DEBUG).wait_ready()
    await wait_state(k8s, ns, "tune", "Succeeded")
    await auditor.wait_changes(ns, "tune", [(None, "Pending"), ("Pending", "Succeeded")])
    assert auditor.illegal == []


# -- the blank window: KAITO's write → status.status back -------------------------------
@dataclass
class Timeline:
    """Versions of one workspace as a watch received them: (seconds, resourceVersion,
    status.status)."""

    seen: list[tuple[float, str, str | None]] = field(default_factory=list)

    def at(self, rv: str) -> float | None:
        return next((t for t, v, _ in self.seen if v == rv), None)

    def first_after(self, rv: str, value: str) -> float | None:
        """When the first version after ``rv`` holding ``value`` arrived."""
        after = False
        for t, v, state in self.seen:
            after = after or v == rv
            if after and v != rv and state == value:
                return t
        return None

    def blank_windows(self) -> list[float]:
        """Seconds from each version without status.status to the next with it."""
        windows: list[float] = []
        blank_since: float | None = None
        for at, _, value in self.seen:
            if value is None and blank_since is None:
                blank_since = at
            elif value is not None and blank_since is not None:
                windows.append(at - blank_since)
                blank_since = None
        return windows

    def still_blank(self) -> bool:
        return bool(self.seen) and self.seen[-1][2] is None


@asynccontextmanager
async def watching(k8s: Client, ns: str, name: str) -> AsyncIterator[Timeline]:
    timeline = Timeline()

    async def follow(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        obj = await k8s.get(WORKSPACE, name, ns)
        rv = obj["metadata"]["resourceVersion"]
        async with k8s.watch(WORKSPACE, ns, resource_version=rv, idle_timeout=30) as events:
            task_status.started()
            async for ev in events:
                if ev.object["metadata"].get("name") != name:
                    continue
                status = ev.object.get("status") or {}
                rv = str(ev.object["metadata"]["resourceVersion"])
                timeline.seen.append((time.monotonic(), rv, status.get("status")))

    async with anyio.create_task_group() as tg:
        await tg.start(follow)
        yield timeline
        tg.cancel_scope.cancel()


def _quantiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):.1f} / p99 {p99:.1f} / max {ms[-1]:.1f} ms (n={len(ms)})"


async def test_every_blank_is_restored_and_the_window_is_reported(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    """20 KAITO writes that keep the state (each blanks the field) and 20 that change it
    (Ready ↔ NotReady): every blank ends with the field restored; the blank window is
    printed beside the condition → state latency of the same run."""
    kaito = KaitoWriter(k8s)
    ns, name = namespace, "blank"
    await start_operator(f"--namespace={ns}").wait_ready()
    await create_workspace(k8s, ns, name)
    await kaito.replace_conditions(ns, name, *INFERENCE_READY)
    await wait_state(k8s, ns, name, "Ready")
    decide: list[float] = []
    async with watching(k8s, ns, name) as timeline:
        for i in range(20):
            ready = i % 2 == 0  # the state held now: Ready on even rounds, NotReady on odd
            serving = (*INFERENCE_READY[:1], condition("InferenceReady", "True", "ok", f"n{i}"))
            crashing = (*CRASHING[:1], condition("InferenceReady", "False", "Crash", f"n{i}"))
            # Same state, new message: KAITO writes, the operator restores.
            await kaito.replace_conditions(ns, name, *(serving if ready else crashing))
            await eventually(lambda: not timeline.still_blank(), 10, "the field restored")
            # A change: the operator decides and writes the new state.
            want = "NotReady" if ready else "Ready"
            written = await kaito.replace_conditions(ns, name, *(crashing if ready else serving))
            rv = str(written["metadata"]["resourceVersion"])

            def decided(rv: str = rv, want: str = want) -> bool:
                return timeline.first_after(rv, want) is not None

            await eventually(decided, 10, f"{want} written after {rv}")
            seen_at, decided_at = timeline.at(rv), timeline.first_after(rv, want)
            assert seen_at is not None
            assert decided_at is not None
            decide.append(decided_at - seen_at)
    blanks = timeline.blank_windows()
    assert len(blanks) >= 20
    assert not timeline.still_blank()
    assert auditor.illegal == []
    print(f"\nblank window (KAITO write → status.status back): {_quantiles(blanks)}")
    print(f"condition → state (KAITO write → new state written): {_quantiles(decide)}")


async def test_a_condition_kaito_left_behind_at_an_older_generation_does_not_hold_it_back(
    k8s: Client, namespace: str, start_operator: OperatorFactory, auditor: TransitionAuditor
) -> None:
    """KAITO v0.12 (it writes status.state) restamps every condition it maintains with
    the new generation; ModelMirrorReady, no longer maintained after the spec change,
    keeps the old one and must not gate."""
    kaito = KaitoWriter(k8s)
    ns, name = namespace, "mirror"
    await start_operator(f"--namespace={ns}").wait_ready()
    await create_workspace(k8s, ns, name)
    # KAITO's own summary, as KAITO v0.12 writes it (the writer sends it back as read).
    await k8s.patch_status(WORKSPACE, name, {"status": {"state": "Pending"}}, namespace=ns)
    mirror = condition("ModelMirrorReady", "False", "ModelMirrorPending", "download in progress")
    await kaito.set_conditions(ns, name, *INFERENCE_READY, mirror)
    await wait_state(k8s, ns, name, "Pending")

    # The spec changes (generation 2) and streaming no longer applies: KAITO stamps what
    # it maintains with generation 2 and leaves ModelMirrorReady at generation 1.
    spec = await k8s.patch(WORKSPACE, name, {"resource": {"count": 2}}, namespace=ns)
    assert spec["metadata"]["generation"] == 2
    written = await kaito.set_conditions(ns, name, *INFERENCE_READY)
    stamps = {c["type"]: c.get("observedGeneration") for c in written["status"]["conditions"]}
    assert stamps["ModelMirrorReady"] == 1
    assert stamps["InferenceReady"] == 2
    await wait_state(k8s, ns, name, "Ready")
    await auditor.wait_changes(ns, name, [(None, "Pending"), ("Pending", "Ready")])

    # The same leftover, live (stamped with the current generation), still gates.
    await kaito.set_conditions(ns, name, mirror)
    await wait_state(k8s, ns, name, "NotReady")
    await wait_event(k8s, ns, name, "NotReady", "ModelMirrorReady=False")


async def test_with_status_field_off_the_column_still_shows_every_state(
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
    control_plane: ControlPlane | None,
    kubeconfig: object,
) -> None:
    """--status-field=false (beside KAITO's webhook): only the record is written, and
    the STATUS column, which reads it, shows the state through KAITO's writes."""
    kaito = KaitoWriter(k8s)
    ns = namespace
    await start_operator(f"--namespace={ns}", "--status-field=false").wait_ready()
    await create_workspace(k8s, ns, "phi")

    async def column() -> str:
        table = await kubectl(control_plane, kubeconfig, "get", "workspace", "phi", "-n", ns)
        return table.splitlines()[1].split()[2]

    for conditions, state in ((INFERENCE_READY, "Ready"), (CRASHING, "NotReady")):
        await kaito.replace_conditions(ns, "phi", *conditions)

        async def shown(state: str = state) -> bool:
            return await column() == state

        await eventually(shown, 20, f"STATUS {state}")
        assert await state_of(k8s, ns, "phi") is None
    assert auditor.transitions == []  # status.status was never written
