"""The state record and the status write that keeps it (controllers/workspace/record.py).

Each patch is applied with an RFC 6902 implementation to the object it was built from,
as the API server applies it.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.workspace.fsm import WorkspaceState
from controllers.workspace.model import parse_workspace
from controllers.workspace.record import RECORD_CONDITION, recorded_state, state_patch

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
EARLIER = "2026-11-01T08:00:00Z"


def workspace(status: Any = None, *, rv: str = "42", generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "w", "namespace": "ns", "resourceVersion": rv},
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }
    if generation:
        obj["metadata"]["generation"] = generation
    if status is not None:
        obj["status"] = status
    return obj


def kaito(type_: str, status: str = "True") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": f"{type_}{status}",
        "message": "m",
        "observedGeneration": 3,
        "lastTransitionTime": EARLIER,
    }


def record(state: str, since: str = EARLIER) -> dict[str, Any]:
    return {
        "type": RECORD_CONDITION,
        "status": "True",
        "reason": state,
        "message": "old",
        "observedGeneration": 2,
        "lastTransitionTime": since,
    }


def apply(obj: dict[str, Any], state: str) -> dict[str, Any]:
    patch = state_patch(parse_workspace(obj), state, NOW)
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patch)
    return result


def records(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in obj["status"]["conditions"] if c["type"] == RECORD_CONDITION]


def test_first_op_makes_the_read_version_the_precondition() -> None:
    patch = state_patch(parse_workspace(workspace({"conditions": []}, rv="977")), "Ready", NOW)
    assert patch[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "977"}


@pytest.mark.parametrize(
    "status",
    [None, {}, {"conditions": None}, {"conditions": []}, {"status": None}],
    ids=["no-status", "empty-status", "null-conditions", "no-conditions", "null-field"],
)
def test_writes_onto_any_status_shape(status: Any) -> None:
    out = apply(workspace(status), "Pending")
    assert out["status"]["status"] == "Pending"
    (rec,) = records(out)
    assert rec["reason"] == "Pending"
    assert rec["status"] == "True"
    assert rec["lastTransitionTime"] == "2026-11-30T12:00:00Z"
    assert rec["observedGeneration"] == 3


def test_kaito_conditions_are_kept_in_place_and_untouched() -> None:
    theirs = [kaito("ResourceReady"), record("Pending"), kaito("InferenceReady", "False")]
    obj = workspace({"conditions": copy.deepcopy(theirs), "state": "Pending", "workerNodes": ["n"]})
    out = apply(obj, "Ready")
    conditions = out["status"]["conditions"]
    assert [c["type"] for c in conditions] == [c["type"] for c in theirs]
    assert conditions[0] == theirs[0]
    assert conditions[2] == theirs[2]
    assert out["status"]["state"] == "Pending"
    assert out["status"]["workerNodes"] == ["n"]
    assert out["metadata"] == obj["metadata"]


def test_a_state_change_moves_the_records_transition_time() -> None:
    out = apply(workspace({"status": "Ready", "conditions": [record("Ready")]}), "NotReady")
    (rec,) = records(out)
    assert (rec["reason"], rec["lastTransitionTime"]) == ("NotReady", "2026-11-30T12:00:00Z")


def test_a_restore_keeps_the_records_transition_time() -> None:
    # KAITO's PUT dropped status.status; the record still says since when it is Ready.
    out = apply(workspace({"conditions": [kaito("ResourceReady"), record("Ready")]}), "Ready")
    assert out["status"]["status"] == "Ready"
    (rec,) = records(out)
    assert rec["lastTransitionTime"] == EARLIER
    assert rec["observedGeneration"] == 3


def test_only_the_first_record_is_replaced() -> None:
    obj = workspace({"conditions": [record("Ready"), record("Pending")]})
    out = apply(obj, "NotReady")
    assert [c["reason"] for c in records(out)] == ["NotReady", "Pending"]
    assert recorded_state(parse_workspace(out).status.conditions) == "NotReady"


def test_no_generation_no_observed_generation() -> None:
    (rec,) = records(apply(workspace({}, generation=0), "Pending"))
    assert "observedGeneration" not in rec


CONDITION_TYPES = st.sampled_from(
    ["ResourceReady", "InferenceReady", "NodesReady", "FutureThing", RECORD_CONDITION]
)


@settings(max_examples=200, deadline=None)
@given(
    types=st.lists(CONDITION_TYPES, max_size=6),
    field=st.none() | st.sampled_from([s.value for s in WorkspaceState]),
    state=st.sampled_from([s.value for s in WorkspaceState]),
)
def test_after_the_patch_field_and_record_agree(
    types: list[str], field: str | None, state: str
) -> None:
    conditions = [record("Running") if t == RECORD_CONDITION else kaito(t) for t in types]
    status: dict[str, Any] = {"conditions": conditions}
    if field is not None:
        status["status"] = field
    out = apply(workspace(status), state)
    parsed = parse_workspace(out)
    assert parsed.status.status == state
    assert recorded_state(parsed.status.conditions) == state
    others = [c for c in out["status"]["conditions"] if c["type"] != RECORD_CONDITION]
    assert others == [c for c in conditions if c["type"] != RECORD_CONDITION]
    assert len(out["status"]["conditions"]) == len(conditions) + (RECORD_CONDITION not in types)
