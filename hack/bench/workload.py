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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from controllers.workspace.fsm import Decision, next_state
from controllers.workspace.model import parse_workspace

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "kaito"
INFERENCE_MANIFEST = "kaito_workspace_phi_4_mini.yaml"
TUNING_MANIFEST = "kaito_workspace_tuning_phi_3.yaml"

NAMESPACES = tuple(f"bench-{i}" for i in range(4))
# What KAITO's controller calls itself when it writes conditions.
KAITO_FIELD_MANAGER = "kaito-workspace-controller"
TIMESTAMP = "2026-01-05T10:00:00Z"


@dataclass(frozen=True, slots=True)
class Key:
    namespace: str
    name: str


def key_of(index: int) -> Key:
    return Key(NAMESPACES[index % len(NAMESPACES)], f"ws-{index:05d}")


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


def status_reset(index: int) -> Obj:
    """The status merge patch that puts a workspace back where every run starts: its
    initial conditions and no status.status."""
    return {"status": {"status": None, "conditions": initial_conditions(index)}}


def expected_state(index: int, conditions: list[Obj], previous: str | None) -> str | None:
    """What the project's state machine says status.status must become."""
    obj = manifest(index)
    obj["status"] = {"conditions": conditions}
    if previous is not None:
        obj["status"]["status"] = previous
    outcome = next_state(parse_workspace(obj))
    return outcome.state.value if isinstance(outcome, Decision) else previous


def initial_expectations(n: int) -> dict[Key, str]:
    """The state each of the first ``n`` workspaces converges to from no state."""
    cache = {r: expected_state(r, initial_conditions(r), None) for r in range(8)}
    out: dict[Key, str] = {}
    for i in range(n):
        state = cache[i % 8]
        if state is None:
            raise AssertionError(f"workspace {i} would get no state")
        out[key_of(i)] = state
    return out


def flip(index: int, current: str | None) -> tuple[list[Obj], str]:
    """New conditions for an inference workspace that change its state, and that state."""
    if not is_inference(index) or current is None:
        raise ValueError(f"workspace {index} ({current}) cannot flip: not a converged inference")
    conditions = list(NOT_READY_CONDITIONS if current == "Ready" else READY_CONDITIONS)
    state = expected_state(index, conditions, current)
    if state is None or state == current:
        raise AssertionError(f"flip of {current} does not change the state")
    return conditions, state


def pick_inference(n: int, busy: set[int], rng: random.Random) -> int | None:
    """A random inference workspace among the first ``n`` that is not being flipped."""
    for _ in range(64):
        i = rng.randrange(0, n, 2)
        if i not in busy:
            return i
    return None
