"""The durable record of a workspace's state, and the one status write that keeps it.

Why a record besides `status.status`
------------------------------------
KAITO's workspace controller writes status by reading the Workspace into its Go type
and PUTting the whole status subresource back (`Status().Update`). Its type has no
`status.status`, so every KAITO status write erases ours. The state machine needs the
previous state ("nothing returns to Pending", "Succeeded is terminal"), so it cannot
live only in a field that another writer blanks many times a minute.

KAITO's conditions are `[]metav1.Condition`, and its typed round trip keeps condition
types it does not know, in place. So the state is recorded a second time as a
condition of our own type, `RECORD_CONDITION`:

* `status` is always "True" (the record exists); `reason` is the state (`Ready`);
  `lastTransitionTime` is when that state was entered; `observedGeneration` is the
  workspace's generation at that write.
* It is written in the same request as `status.status`, so the two never disagree
  except where another writer dropped or changed `status.status`.
* It is never read as a gating condition (see `fsm.INFORMATIONAL_CONDITIONS`).

The write is a JSON patch of the status subresource whose first op sets
`metadata.resourceVersion` to the version the decision was made on. The API server
takes the patched object's resourceVersion as the update's precondition, so a stale
cache gets 409 Conflict, never a stale write, and the condition index the patch names
is the one that version had. (A `test` op would guard too, but kube-apiserver answers
a failed test with 422 Invalid, indistinguishable from a malformed patch; measured on
v1.36.3.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controllers.workspace.model import Condition, Workspace

__all__ = ["RECORD_CONDITION", "recorded_state", "state_patch"]

RECORD_CONDITION = "workspace-status.kaito.sh/State"
"""The condition type that records the last state written; the domain says whose it is."""

_MESSAGE = (
    "status.status is {state} since this time; recorded here because status writes "
    "that do not know status.status (KAITO's) drop it"
)


def recorded_state(conditions: Sequence[Condition]) -> str | None:
    """The state the record holds (its reason), or None without a record.

    The first entry of the type counts, as everywhere conditions are read.
    """
    for condition in conditions:
        if condition.type == RECORD_CONDITION:
            return condition.reason or None
    return None


def _record(state: str, generation: int | None, since: datetime) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": RECORD_CONDITION,
        "status": "True",
        "reason": state,
        "message": _MESSAGE.format(state=state),
        "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def state_patch(
    workspace: Workspace, state: str, now: datetime, *, with_field: bool = True
) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that sets `status.status` and the record to `state`;
    the record alone with `with_field=False` (where admission refuses the field).

    Precondition: `workspace` is the version the decision was made on; the patch
    carries its resourceVersion (a conflict, if the object has moved on). The record
    keeps its lastTransitionTime when it already holds `state` (a restore after
    another writer blanked `status.status`), and takes `now` when the state changes.
    Other conditions are untouched.
    """
    rv = workspace.metadata.resource_version
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}
    ]
    conditions = workspace.status.conditions
    index = next((i for i, c in enumerate(conditions) if c.type == RECORD_CONDITION), None)
    since = now
    if index is not None:
        old = conditions[index]
        if old.reason == state and old.last_transition_time is not None:
            since = old.last_transition_time
    record = _record(state, workspace.metadata.generation, since)
    # Absent and null parents must be created whole: RFC 6902 adds only into a parent
    # that exists. (Parsing drops nulls, so neither shows in `model_fields_set`.)
    if "status" not in workspace.model_fields_set:
        ops.append(
            {"op": "add", "path": "/status", "value": {"status": state} if with_field else {}}
        )
    elif with_field:
        ops.append({"op": "add", "path": "/status/status", "value": state})
    if index is not None:
        ops.append({"op": "replace", "path": f"/status/conditions/{index}", "value": record})
    elif "conditions" not in workspace.status.model_fields_set:
        ops.append({"op": "add", "path": "/status/conditions", "value": [record]})
    else:
        ops.append({"op": "add", "path": "/status/conditions/-", "value": record})
    return ops
