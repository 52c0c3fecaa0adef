"""The benchmark's workspaces: KAITO-shaped objects, their conditions, and the states
they must end in.

Half of the workspaces run inference and half fine-tuning; their conditions are spread
over every state a first write can reach (Ready and Pending; Running, Succeeded, Failed
and Pending), so a controller that gets one rule wrong does not converge. What each
workspace must end in is computed by the project's own pure state machine; the
controllers under test are judged against it.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from controllers.workspace.fsm import Decision, next_state
from controllers.workspace.model import parse_workspace
from controllers.workspace.record import state_patch
from e2e.kaito import apply_conditions

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "kaito"
INFERENCE_MANIFEST = "kaito_workspace_phi_4_mini.yaml"
TUNING_MANIFEST = "kaito_workspace_tuning_phi_3.yaml"

NAMESPACES = tuple(f"bench-{i}" for i in range(4))
# What KAITO's controller calls itself when it writes conditions.
KAITO_FIELD_MANAGER = "kaito-workspace-controller"
# The harness itself, where it writes what no real writer would (the reset between runs).
HARNESS_FIELD_MANAGER = "bench-harness"
TIMESTAMP = "2026-01-05T10:00:00Z"
# The workspaces are created once and never changed: every one is at generation 1, which
# KAITO stamps on the conditions it sets.
GENERATION = 1


@dataclass(frozen=True, slots=True)
class Key:
    namespace: str
    name: str


def key_of(index: int) -> Key:
    return Key(NAMESPACES[index % len(NAMESPACES)], f"ws-{index:05d}")


def index_of(key: Key) -> int:
    return int(key.name.removeprefix("ws-"))


def is_inference(index: int) -> bool:
    return index % 2 == 0


def _manifest(file: str) -> Obj:
    for doc in yaml.safe_load_all((FIXTURES / file).read_text()):
        if doc and doc.get("kind") == "Workspace":
            return dict(doc)
    raise ValueError(f"no Workspace in {file}")


_TEMPLATES = {True: _manifest(INFERENCE_MANIFEST), False: _manifest(TUNING_MANIFEST)}


def manifest(index: int) -> Obj:
    """The object as a user applies it: the KAITO example, with the annotation and
    labels that `kubectl apply` and a real deployment leave on it."""
    obj = copy.deepcopy(_TEMPLATES[is_inference(index)])
    key = key_of(index)
    applied = {k: v for k, v in obj.items() if k != "metadata"}
    applied["metadata"] = {"name": key.name, "namespace": key.namespace}
    obj["metadata"] = {
        "name": key.name,
        "namespace": key.namespace,
        "labels": {
            "app.kubernetes.io/name": key.name,
            "app.kubernetes.io/part-of": "kaito-bench",
            "kaito.sh/workload": "inference" if is_inference(index) else "tuning",
        },
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": orjson.dumps(applied).decode()
        },
        "finalizers": ["workspace.finalizer.kaito.sh"],
    }
    return obj


def condition(type_: str, status: str, reason: str, message: str) -> Obj:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": TIMESTAMP,
    }


_NODE_CLAIM = condition(
    "NodeClaimReady", "True", "NodeClaimsReady", "Enough NodeClaims are ready (1/1)"
)
_RESOURCE_READY = condition(
    "ResourceReady", "True", "workspaceResourceStatusSuccess", "workspace resource is ready"
)
_RESOURCE_WAITING = condition(
    "ResourceReady",
    "False",
    "workspaceResourceStatusPending",
    "waiting for 1 node(s) of instance type Standard_NC24ads_A100_v4 to be provisioned",
)
_INFERENCE_READY = condition(
    "InferenceReady", "True", "WorkspaceInferenceStatusSuccess", "Inference has been deployed"
)
_INFERENCE_FAILED = condition(
    "InferenceReady",
    "False",
    "WorkspaceInferenceStatusFailed",
    "Deployment workspace-phi-4-mini has 0/1 ready replicas: container vllm is in "
    "CrashLoopBackOff (back-off 5m0s restarting failed container)",
)
_SUCCEEDED = condition("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds")
_PENDING = condition(
    "WorkspaceSucceeded", "False", "workspacePending", "workspace has not completed"
)
_FAILED = condition("WorkspaceSucceeded", "False", "workspaceFailed", "workspace failed")
_JOB_STARTED = condition(
    "JobStarted", "True", "WorkspaceTuningJobStatusStarted", "tuning job has started"
)
_JOB_FAILED = condition(
    "JobStarted",
    "False",
    "WorkspaceTuningJobStatusFailed",
    "tuning job workspace-tuning-phi-3 failed: BackoffLimitExceeded",
)

# Index % 8 → conditions; even indices are inference, odd ones tuning.
_INITIAL: dict[int, tuple[Obj, ...]] = {
    0: (_NODE_CLAIM, _RESOURCE_READY, _INFERENCE_READY, _SUCCEEDED),  # Ready
    2: (_NODE_CLAIM, _RESOURCE_READY, _INFERENCE_READY, _SUCCEEDED),  # Ready
    4: (_NODE_CLAIM, _RESOURCE_READY, _INFERENCE_READY, _SUCCEEDED),  # Ready
    6: (_NODE_CLAIM, _RESOURCE_READY, _INFERENCE_FAILED, _PENDING),  # Pending
    1: (_NODE_CLAIM, _RESOURCE_READY, _JOB_STARTED, _PENDING),  # Running
    3: (_NODE_CLAIM, _RESOURCE_READY, _JOB_STARTED, _SUCCEEDED),  # Succeeded
    5: (_NODE_CLAIM, _RESOURCE_READY, _JOB_FAILED, _FAILED),  # Failed
    7: (_RESOURCE_WAITING, _PENDING),  # Pending
}

# The conditions a latency flip writes onto an inference workspace.
READY_CONDITIONS = (_NODE_CLAIM, _RESOURCE_READY, _INFERENCE_READY, _SUCCEEDED)
NOT_READY_CONDITIONS = (_NODE_CLAIM, _RESOURCE_READY, _INFERENCE_FAILED, _PENDING)


def initial_conditions(index: int) -> list[Obj]:
    return list(_INITIAL[index % 8])


def as_kaito_builds(conditions: Sequence[Obj]) -> list[Obj]:
    """``conditions`` as KAITO's controller hands them to ``meta.SetStatusCondition``:
    without the setup's fixed lastTransitionTime (a status change is stamped with the
    time of the write) and observedGeneration (the writer sets the workspace's)."""
    dropped = ("lastTransitionTime", "observedGeneration")
    return [{k: v for k, v in c.items() if k not in dropped} for c in conditions]


def kaito_initial_conditions(index: int) -> list[Obj]:
    """What KAITO is handed to write on a fresh workspace (``e2e.kaito.KaitoWriter``)."""
    return as_kaito_builds(initial_conditions(index))


# The merge patch of the status subresource that makes a workspace's status that of a
# fresh one: no status.status, no record condition of any contender, no conditions at
# all. KAITO then writes the initial conditions (KaitoWriter.replace_conditions). The
# harness sends it, not KAITO: KAITO never removes another controller's condition, and
# what the previous contender remembered must not leak into the next one's run.
FORGET_STATUS: Obj = {"status": {"status": None, "conditions": None}}

# KAITO appends this to every condition message when the reconcile that computed the
# status returned an error (`buildReconcileErrMessageAppender`); the next reconcile
# without an error writes the plain messages again. Either write changes the typed
# status, so KAITO PUTs it, and the PUT drops status.status without changing the state.
RECONCILE_ERROR_SUFFIX = (
    " (last reconcile error: Operation cannot be fulfilled on deployments.apps "
    '"workspace-phi-4-mini": the object has been modified; please apply your changes to '
    "the latest version and try again)"
)


def expected_state(index: int, conditions: list[Obj], previous: str | None) -> str | None:
    """What the project's state machine says status.status must become."""
    obj = manifest(index)
    obj["metadata"]["generation"] = GENERATION
    obj["status"] = {"conditions": conditions}
    if previous is not None:
        obj["status"]["status"] = previous
    outcome = next_state(parse_workspace(obj))
    return outcome.state.value if isinstance(outcome, Decision) else previous


def _reset_conditions(index: int) -> list[Obj]:
    """The conditions KAITO's write leaves on a fresh status (after ``FORGET_STATUS``)."""
    return apply_conditions(
        [], kaito_initial_conditions(index), generation=GENERATION, now=TIMESTAMP
    )


def initial_expectations(n: int) -> dict[Key, str]:
    """The state each of the first ``n`` workspaces converges to from no state, read
    from the conditions exactly as KAITO's write leaves them on a fresh status."""
    cache = {r: expected_state(r, _reset_conditions(r), None) for r in range(8)}
    out: dict[Key, str] = {}
    for i in range(n):
        state = cache[i % 8]
        if state is None:
            raise AssertionError(f"workspace {i} would get no state")
        out[key_of(i)] = state
    return out


def first_state_patch(
    key: Key, resource_version: str, generation: int, state: str, now: datetime
) -> list[Obj]:
    """The JSON patch ours sends for a reset workspace's first state (``record.state_patch``
    on that workspace at ``resource_version``): the raw limit sends the same."""
    obj = manifest(index_of(key))
    obj["metadata"].update(resourceVersion=resource_version, generation=generation)
    obj["status"] = {"conditions": _reset_conditions(index_of(key))}
    return state_patch(parse_workspace(obj), state, now)


def _held_conditions(index: int, current: str | None) -> tuple[Obj, ...]:
    """The conditions a converged inference workspace in ``current`` holds in the
    latency phase: the Ready set, or the not-ready one (NotReady, and Pending, which
    only the initial not-ready set leaves it in)."""
    if not is_inference(index) or current is None:
        raise ValueError(f"workspace {index} ({current}) is not a converged inference")
    return READY_CONDITIONS if current == "Ready" else NOT_READY_CONDITIONS


def flip(index: int, current: str | None) -> tuple[list[Obj], str]:
    """New conditions for an inference workspace that change its state, as KAITO builds
    them, and that state."""
    held = _held_conditions(index, current)
    conditions = as_kaito_builds(
        NOT_READY_CONDITIONS if held == READY_CONDITIONS else READY_CONDITIONS
    )
    state = expected_state(index, conditions, current)
    if state is None or state == current:
        raise AssertionError(f"flip of {current} does not change the state")
    return conditions, state


def same_state(index: int, current: str | None, *, with_error: bool) -> tuple[list[Obj], str]:
    """New conditions for an inference workspace that keep its state, as KAITO builds
    them, and that state: the statuses and reasons it holds, every message with
    ``RECONCILE_ERROR_SUFFIX`` (``with_error``) or without. The caller alternates, so
    each write differs from what is stored."""
    suffix = RECONCILE_ERROR_SUFFIX if with_error else ""
    conditions = [
        {**c, "message": c["message"] + suffix}
        for c in as_kaito_builds(_held_conditions(index, current))
    ]
    state = expected_state(index, conditions, current)
    if state is None or state != current:
        raise AssertionError(f"a same-state write moves {current} to {state}")
    return conditions, state


def has_error_suffix(conditions: object) -> bool:
    """Whether KAITO's reconcile-error suffix is on the messages of ``conditions``."""
    return isinstance(conditions, list) and any(
        isinstance(c, dict) and str(c.get("message", "")).endswith(RECONCILE_ERROR_SUFFIX)
        for c in conditions
    )


def pick_inference(n: int, busy: set[int], rng: random.Random) -> int | None:
    """A random inference workspace among the first ``n`` that is not being written."""
    for _ in range(64):
        i = rng.randrange(0, n, 2)
        if i not in busy:
            return i
    return None
