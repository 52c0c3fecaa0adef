"""The Workspace reconciler's write path, with its collaborators faked at the boundary.

The fake API applies each JSON patch to its stored object with an RFC 6902
implementation and enforces the resourceVersion precondition the way kube-apiserver
does (the patched object's resourceVersion must be the stored one, else 409), so the
exact request the reconciler sends decides what the tests see.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import controllers.workspace.reconciler as reconciler_module
from controllers.workspace.fsm import Decision, Workload, WorkspaceState
from controllers.workspace.reconciler import (
    WORKSPACE,
    WorkspaceStatusOptions,
    WorkspaceStatusReconciler,
)
from controllers.workspace.record import RECORD_CONDITION
from reconciler import Client, Conflict, EventRecorder, InformerCache, NotFound, Request, Result
from reconciler.client import PatchType
from reconciler.errors import BadRequest
from reconciler.ownwrites import OwnWrites
from reconciler.resource import ResourceType

Obj = dict[str, Any]
REQUEST = Request("ns", "w")
NOW = 1_790_000_000.0  # 2026-09-21


def cond(type_: str, status: str, reason: str = "", generation: int = 1) -> Obj:
    return {
        "type": type_,
        "status": status,
        "reason": reason or f"{type_}{status}",
        "message": f"{type_} is {status}",
        "observedGeneration": generation,
        "lastTransitionTime": "2026-09-01T00:00:00Z",
    }


SERVING = [cond("ResourceReady", "True"), cond("InferenceReady", "True")]
CRASHING = [cond("ResourceReady", "True"), cond("InferenceReady", "False", "CrashLoop")]
JOB_DONE = [cond("JobStarted", "True"), cond("WorkspaceSucceeded", "True")]
JOB_RESTARTED = [cond("JobStarted", "False", "WorkspaceTuningJobStatusPending")]


def record(state: str) -> Obj:
    return {
        "type": RECORD_CONDITION,
        "status": "True",
        "reason": state,
        "message": "m",
        "lastTransitionTime": "2026-09-01T00:00:00Z",
    }


def workspace(
    conditions: list[Obj], state: str | None = None, *, workload: str = "inference"
) -> Obj:
    status: Obj = {"conditions": copy.deepcopy(conditions)}
    if state is not None:
        status["status"] = state
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "w",
            "namespace": "ns",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": "2026-09-20T00:00:00Z",
        },
        workload: {},
        "status": status,
    }


@dataclass
class FakeAPI:
    """The stored object and every status patch sent, as kube-apiserver would answer.

    ``prune_field`` imitates a CRD without status.status (the server drops it);
    ``refuse_field`` an admission webhook that refuses any object carrying it, as
    KAITO's strict decoding of its Go type does.
    """

    stored: Obj
    prune_field: bool = False
    refuse_field: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def patch_status(
        self,
        rt: ResourceType,
        name: str,
        patch: Obj | list[Obj],
        *,
        namespace: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        field_manager: str | None = None,
    ) -> Obj:
        self.requests.append(
            {"rt": rt, "name": name, "namespace": namespace, "patch": patch, "type": patch_type}
        )
        if self.stored is None:
            raise NotFound(404, "NotFound", "gone")
        assert patch_type is PatchType.JSON
        out = jsonpatch.apply_patch(self.stored, cast(list[Obj], patch))
        if out["metadata"]["resourceVersion"] != self.stored["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        if self.refuse_field and "status" in out.get("status", {}):
            raise BadRequest(
                400,
                "BadRequest",
                'admission webhook "validation.workspace.kaito.sh" denied the request: '
                'cannot decode incoming new object: json: unknown field "status"',
            )
        if self.prune_field:
            out["status"].pop("status", None)
        if out == self.stored:
            # kube-apiserver stores nothing for a write that changes nothing: the same
            # resourceVersion, and no watch event.
            return copy.deepcopy(out)
        out["metadata"]["resourceVersion"] = str(int(out["metadata"]["resourceVersion"]) + 1)
        self.stored = out
        return copy.deepcopy(out)


@dataclass
class FakeCache:
    obj: Obj | None

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj | None:
        return copy.deepcopy(self.obj)

    def list_nowait(self, rt: ResourceType, namespace: str | None = None, **_: object) -> list[Obj]:
        return [] if self.obj is None else [self.obj]


@dataclass
class FakeRecorder:
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def record(self, obj: Obj, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))


@dataclass
class Rig:
    api: FakeAPI
    cache: FakeCache
    recorder: FakeRecorder
    registry: CollectorRegistry
    reconciler: WorkspaceStatusReconciler

    async def reconcile(self) -> Result:
        return await self.reconciler.reconcile(REQUEST)

    def server_sees(self, obj: Obj) -> None:
        """Another writer changed the object; the cache delivers the new version."""
        rv = int(self.api.stored["metadata"]["resourceVersion"]) + 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(rv)
        self.api.stored = obj
        self.cache.obj = copy.deepcopy(obj)

    def sync_cache(self) -> None:
        self.cache.obj = copy.deepcopy(self.api.stored)

    def kaito_put(self, conditions: list[Obj]) -> None:
        """KAITO's typed full PUT: its conditions set, every field it lacks dropped."""
        obj = copy.deepcopy(self.api.stored)
        kept = [c for c in obj["status"].get("conditions", []) if c["type"] == RECORD_CONDITION]
        obj["status"] = {"conditions": copy.deepcopy(conditions) + kept}
        self.server_sees(obj)

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0


def rig(
    obj: Obj,
    *,
    prune_field: bool = False,
    options: WorkspaceStatusOptions | None = None,
    own_writes: OwnWrites | None = None,
) -> Rig:
    api = FakeAPI(copy.deepcopy(obj), prune_field=prune_field)
    cache = FakeCache(copy.deepcopy(obj))
    recorder = FakeRecorder()
    registry = CollectorRegistry()
    r = WorkspaceStatusReconciler(
        cast(Client, api),
        cast(InformerCache, cache),
        cast(EventRecorder, recorder),
        registry,
        options,
        clock=lambda: NOW,
        own_writes=own_writes,
    )
    return Rig(api, cache, recorder, registry, r)


async def test_a_transition_is_one_json_patch_of_status_guarded_by_the_read_version() -> None:
    r = rig(workspace(SERVING))
    assert await r.reconcile() == Result()
    (req,) = r.api.requests
    assert (req["rt"], req["name"], req["namespace"]) == (WORKSPACE, "w", "ns")
    assert req["type"] is PatchType.JSON
    assert req["patch"][0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "100"}
    touched = {op["path"] for op in req["patch"]}
    assert touched == {"/metadata/resourceVersion", "/status/status", "/status/conditions/-"}
    assert r.api.stored["status"]["status"] == "Ready"
    assert r.recorder.events == [("Normal", "StateChanged", "none → Ready")]


async def test_a_stale_cache_gets_a_conflict_and_a_requeue_not_a_write() -> None:
    r = rig(workspace(SERVING))
    r.api.stored["metadata"]["resourceVersion"] = "101"  # the server moved on
    assert await r.reconcile() == Result(requeue=True)
    assert "status" not in r.api.stored["status"]
    assert r.recorder.events == []


async def test_a_deleted_workspace_is_done() -> None:
    r = rig(workspace(SERVING))
    r.api.stored = None  # type: ignore[assignment]
    assert await r.reconcile() == Result()
    assert r.recorder.events == []


async def test_an_illegal_decision_is_refused_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    illegal = Decision(
        workload=Workload.INFERENCE,
        state=WorkspaceState.NOT_READY,
        previous=WorkspaceState.PENDING,
        raw_previous="Pending",
        previous_was_illegal=False,
        blocking=(),
        awaiting=(),
    )
    monkeypatch.setattr(reconciler_module, "next_state", lambda ws: illegal)
    r = rig(workspace(CRASHING, "Pending"))
    assert await r.reconcile() == Result()
    assert await r.reconcile() == Result()
    assert r.api.requests == []
    assert [e[1] for e in r.recorder.events] == ["IllegalTransition"]


async def test_nothing_is_written_when_field_and_record_agree() -> None:
    r = rig(workspace([*SERVING, record("Ready")], "Ready"))
    assert await r.reconcile() == Result()
    assert r.api.requests == []


async def test_kaito_dropping_the_field_is_restored_without_an_event() -> None:
    r = rig(workspace(SERVING))
    await r.reconcile()
    r.sync_cache()
    r.kaito_put(SERVING)
    assert "status" not in r.api.stored["status"]
    await r.reconcile()
    assert r.api.stored["status"]["status"] == "Ready"
    assert [e[1] for e in r.recorder.events] == ["StateChanged"]
    assert r.metric("kaito_workspace_status_restores_total") == 1


async def test_a_crash_after_kaito_dropped_the_field_is_not_ready_not_pending() -> None:
    r = rig(workspace(SERVING))
    await r.reconcile()
    r.sync_cache()
    r.kaito_put(CRASHING)
    await r.reconcile()
    assert r.api.stored["status"]["status"] == "NotReady"
    assert r.recorder.events[-1][:2] == ("Warning", "NotReady")
    assert r.recorder.events[-1][2].startswith("Ready → NotReady: InferenceReady=False")


async def test_a_terminal_tuning_state_survives_kaito_recreating_the_job() -> None:
    r = rig(workspace(JOB_DONE, workload="tuning"))
    await r.reconcile()
    r.sync_cache()
    r.kaito_put(JOB_RESTARTED)
    await r.reconcile()
    assert r.api.stored["status"]["status"] == "Succeeded"
    assert [e[2] for e in r.recorder.events] == ["none → Succeeded"]


async def test_the_pending_histogram_counts_only_the_first_departure() -> None:
    r = rig(workspace(SERVING))
    await r.reconcile()
    r.sync_cache()
    r.kaito_put(SERVING)
    await r.reconcile()
    count = "kaito_workspace_status_pending_seconds_count"
    assert r.metric(count) == 1


async def test_a_pruned_field_is_reported_once_and_restores_pause_until_the_crd_changes() -> None:
    r = rig(workspace(SERVING), prune_field=True)
    await r.reconcile()
    # The record holds the transition even though the field was pruned.
    assert [e[1] for e in r.recorder.events] == ["StatusFieldPruned", "StateChanged"]
    r.sync_cache()
    sent = len(r.api.requests)
    r.kaito_put(SERVING)
    await r.reconcile()
    assert len(r.api.requests) == sent  # a restore would be pruned again: not sent
    # A transition still updates the record, which survives the pruning.
    r.kaito_put(CRASHING)
    await r.reconcile()
    assert len(r.api.requests) == sent + 1
    assert r.reconciler.after_crd_repair({}) == [REQUEST]
    r.api.prune_field = False
    r.sync_cache()
    r.kaito_put(CRASHING)
    await r.reconcile()
    assert r.api.stored["status"]["status"] == "NotReady"
    assert [e[1] for e in r.recorder.events].count("StatusFieldPruned") == 1


async def test_a_refused_field_falls_back_to_the_record_and_says_so_once() -> None:
    r = rig(workspace(SERVING))
    r.api.refuse_field = True
    assert await r.reconcile() == Result()
    # One refused attempt, then the record alone.
    assert [op["path"] for op in r.api.requests[-1]["patch"]][1:] == ["/status/conditions/-"]
    assert "status" not in r.api.stored["status"]
    assert [e[1] for e in r.recorder.events] == ["StatusFieldRefused", "StateChanged"]
    r.sync_cache()
    r.kaito_put(CRASHING)
    await r.reconcile()
    conditions = r.api.stored["status"]["conditions"]
    assert [c["reason"] for c in conditions if c["type"] == RECORD_CONDITION] == ["NotReady"]
    assert [e[1] for e in r.recorder.events] == ["StatusFieldRefused", "StateChanged", "NotReady"]
    # Nothing to restore while the field is refused: no request at all.
    sent = len(r.api.requests)
    r.sync_cache()
    r.kaito_put(CRASHING)
    await r.reconcile()
    assert len(r.api.requests) == sent
    # The webhook is gone: the next transition writes the field again.
    r.api.refuse_field = False
    r.sync_cache()
    r.kaito_put(SERVING)
    await r.reconcile()
    assert r.api.stored["status"]["status"] == "Ready"


async def test_a_deleting_workspace_gets_its_kept_state_shown_again_without_an_event() -> None:
    r = rig(workspace(SERVING))
    await r.reconcile()
    r.sync_cache()
    deleting = [*SERVING, cond("WorkspaceDeleting", "True", "workspaceDeleted")]
    r.kaito_put(deleting)
    await r.reconcile()
    assert r.api.stored["status"]["status"] == "Ready"
    assert [e[1] for e in r.recorder.events] == ["StateChanged"]
    sent = len(r.api.requests)
    r.sync_cache()
    await r.reconcile()
    assert len(r.api.requests) == sent


async def test_without_the_field_only_the_record_is_written_and_nothing_is_restored() -> None:
    r = rig(workspace(SERVING), options=WorkspaceStatusOptions(write_status_field=False))
    r.api.refuse_field = True  # as beside KAITO's webhook: any field would be refused
    await r.reconcile()
    assert all(op["path"] != "/status/status" for req in r.api.requests for op in req["patch"])
    assert [e[1] for e in r.recorder.events] == ["StateChanged"]
    r.sync_cache()
    sent = len(r.api.requests)
    r.kaito_put(SERVING)
    await r.reconcile()
    assert len(r.api.requests) == sent
    r.sync_cache()
    r.kaito_put(CRASHING)
    await r.reconcile()
    conditions = r.api.stored["status"]["conditions"]
    assert [c["reason"] for c in conditions if c["type"] == RECORD_CONDITION] == ["NotReady"]
    assert "status" not in r.api.stored["status"]


# -- the echo of our own write: what OwnWrites lets the controller skip ------------------


async def test_every_status_write_is_told_to_own_writes_with_the_answered_version() -> None:
    own = OwnWrites()
    r = rig(workspace(SERVING), own_writes=own)
    await r.reconcile()
    assert r.api.stored["metadata"]["resourceVersion"] == "101"
    assert not own.update(workspace(SERVING), r.api.stored)  # its echo
    r.sync_cache()
    r.kaito_put(SERVING)  # KAITO drops the field; the restore is recorded too
    await r.reconcile()
    assert len(own) == 1
    assert not own.update(workspace(SERVING), r.api.stored)


async def test_a_refused_write_is_not_recorded() -> None:
    own = OwnWrites()
    r = rig(workspace(SERVING), own_writes=own)
    r.api.stored["metadata"]["resourceVersion"] = "101"  # 409
    assert await r.reconcile() == Result(requeue=True)
    assert len(own) == 0


_CONDITIONS = st.sampled_from([[], SERVING, CRASHING, JOB_DONE, JOB_RESTARTED])
_HELD = st.none() | st.sampled_from([*(s.value for s in WorkspaceState), "Bogus"])


@settings(deadline=None)  # one event loop per example: slow on a loaded machine
@given(
    conditions=_CONDITIONS,
    held=_HELD,
    recorded=_HELD,
    workload=st.sampled_from(["inference", "tuning"]),
    prune_field=st.booleans(),
    write_status_field=st.booleans(),
    deleting=st.booleans(),
)
def test_reconciling_the_echo_of_a_write_changes_nothing(
    conditions: list[Obj],
    held: str | None,
    recorded: str | None,
    workload: str,
    prune_field: bool,
    write_status_field: bool,
    deleting: bool,
) -> None:
    """What makes dropping the echo safe: reconciling exactly the object a write
    answered stores nothing new, reports no new problem and asks for the same requeue.
    (It may repeat a Warning already given, now for the new resourceVersion, or send a
    write the server finds changes nothing.)"""
    obj = workspace(conditions + ([record(recorded)] if recorded else []), held, workload=workload)
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-09-21T00:00:00Z"
    options = WorkspaceStatusOptions(write_status_field=write_status_field)

    async def main() -> None:
        r = rig(obj, prune_field=prune_field, options=options)
        first = await r.reconcile()
        if r.api.stored["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]:
            return  # nothing stored: no watch event, no echo
        r.sync_cache()
        stored, reasons = copy.deepcopy(r.api.stored), {e[1] for e in r.recorder.events}
        assert await r.reconcile() == first
        assert r.api.stored == stored
        assert {e[1] for e in r.recorder.events} == reasons

    anyio.run(main)
