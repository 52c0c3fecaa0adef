"""The Workspace state machine: conditions and the previous state in, the next state out.

`next_state` is pure (no I/O, no clock) and total: every `Workspace` yields one outcome.

* `Deleting`: the workspace is being deleted; leave `status.status` alone.
* `InvalidWorkload`: neither or both of `.inference` and `.tuning` are set; write nothing
  and tell the user with a Warning Event.
* `Decision`: the state to hold, with what the reconciler needs for its Events.

Every edge a `Decision` can take, self-edges ("no write") and first writes (from `None`)
included, is listed in `TRANSITIONS`; the writer refuses any other with
`is_legal_transition`. The tests check the function and the table against each other.

How conditions are read
-----------------------
* Duplicate types: the first entry of a type wins. That is `meta.FindStatusCondition`,
  which KAITO uses to read and to update (`meta.SetStatusCondition`) its own conditions,
  so the first entry is the one KAITO keeps current and a later duplicate is stale.
* A status other than "True" or "False" reads as Unknown, and so does an absent
  condition (Kubernetes API conventions).
* Gating: a False condition of any type not in `INFORMATIONAL_CONDITIONS` blocks an
  inference workspace from Ready, and is what a `Decision` names as a cause (tuning
  too). Types this module has never heard of gate, so a condition KAITO adds later
  reaches users through `status.status` without a release of this controller.
* Stale conditions (`stale_conditions`): a condition whose observedGeneration is older
  than the newest one KAITO stamped on another condition is one KAITO no longer
  maintains; it does not gate. Awaited conditions are never stale.

The previous state
------------------
`status.status` when it holds a legal state for the workload, else this controller's
record condition (`record.py`), which survives KAITO's status writes that drop the
field. So the rules hold over the sequence of states written, not of values seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TypeAlias

from controllers.workspace.model import Condition, Workspace
from controllers.workspace.record import RECORD_CONDITION, recorded_state

__all__ = [
    "AWAITED_CONDITIONS",
    "INFORMATIONAL_CONDITIONS",
    "LEGAL_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "TUNING_FAILURE_REASONS",
    "ConditionStatus",
    "ConditionSummary",
    "ConditionType",
    "Decision",
    "Deleting",
    "InvalidWorkload",
    "Outcome",
    "Workload",
    "WorkspaceState",
    "is_legal_transition",
    "next_state",
    "pending_blockers",
    "stale_conditions",
]


class Workload(StrEnum):
    INFERENCE = "inference"
    TUNING = "tuning"


class WorkspaceState(StrEnum):
    """The values of `status.status`; the CRD's enum lists the same six."""

    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """The condition types KAITO sets on a Workspace (api/v1beta1/condition_types.go)."""

    NODE_CLAIM_READY = "NodeClaimReady"
    NODES_READY = "NodesReady"
    RESOURCE_READY = "ResourceReady"
    MODEL_MIRROR_READY = "ModelMirrorReady"
    INFERENCE_READY = "InferenceReady"
    BENCHMARK_COMPLETED = "BenchmarkCompleted"
    JOB_STARTED = "JobStarted"
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
    SCALING_DOWN_COMPLETED = "ScalingDownCompleted"
    WORKSPACE_DELETING = "WorkspaceDeleting"


_ALWAYS_INFORMATIONAL: frozenset[str] = frozenset(
    {
        # This controller's own record of the state it wrote (see record.py).
        RECORD_CONDITION,
        # Handled before any state is computed: a deleting workspace keeps its state.
        ConditionType.WORKSPACE_DELETING,
        # KAITO's own summary, derived from the conditions below: False/workspacePending
        # for as long as a workspace initialises or a job runs, True once ready or done.
        # It adds no cause of its own (BenchmarkFailed is also on BenchmarkCompleted,
        # workspaceFailed also on JobStarted), and gating on it would name a symptom as
        # the root cause. Tuning still reads it for success and failure.
        ConditionType.WORKSPACE_SUCCEEDED,
        # Progress of a scale-down, not availability; defined by KAITO, not yet set.
        ConditionType.SCALING_DOWN_COMPLETED,
    }
)

INFORMATIONAL_CONDITIONS: Mapping[Workload, frozenset[str]] = MappingProxyType(
    {
        # A condition of the other workload is never set by KAITO on this one; if one is
        # left over, it says nothing about this workload. BenchmarkCompleted is not here:
        # KAITO reports a failed benchmark as not ready, and so do we.
        Workload.INFERENCE: _ALWAYS_INFORMATIONAL | {ConditionType.JOB_STARTED},
        Workload.TUNING: _ALWAYS_INFORMATIONAL
        | {ConditionType.INFERENCE_READY, ConditionType.BENCHMARK_COMPLETED},
    }
)
"""Types that never block and are never named as a cause. Any other type gates."""

AWAITED_CONDITIONS: Mapping[Workload, tuple[ConditionType, ...]] = MappingProxyType(
    {
        # Ready needs both True.
        Workload.INFERENCE: (ConditionType.RESOURCE_READY, ConditionType.INFERENCE_READY),
        # Pending becomes Running when the job has started.
        Workload.TUNING: (ConditionType.JOB_STARTED,),
    }
)
"""Types whose True a workspace waits for to leave its initial state."""

TUNING_FAILURE_REASONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        ConditionType.WORKSPACE_SUCCEEDED: frozenset({"workspaceFailed"}),
        ConditionType.JOB_STARTED: frozenset({"WorkspaceTuningJobStatusFailed"}),
    }
)
"""A tuning workspace has failed when one of these types is False with one of its reasons."""

_S = WorkspaceState

TRANSITIONS: Mapping[Workload, frozenset[tuple[WorkspaceState | None, WorkspaceState]]] = (
    MappingProxyType(
        {
            Workload.INFERENCE: frozenset(
                {
                    # NotReady means "was serving, is not now": never a first write.
                    (None, _S.PENDING),
                    (None, _S.READY),
                    # Pending only moves to Ready; a failed initialisation stays Pending.
                    (_S.PENDING, _S.PENDING),
                    (_S.PENDING, _S.READY),
                    (_S.READY, _S.READY),
                    (_S.READY, _S.NOT_READY),
                    (_S.NOT_READY, _S.NOT_READY),
                    (_S.NOT_READY, _S.READY),
                }
            ),
            Workload.TUNING: frozenset(
                {
                    # A job may be seen first in any phase, and may finish or fail between
                    # two observations, so Running can be skipped.
                    (None, _S.PENDING),
                    (None, _S.RUNNING),
                    (None, _S.SUCCEEDED),
                    (None, _S.FAILED),
                    (_S.PENDING, _S.PENDING),
                    (_S.PENDING, _S.RUNNING),
                    (_S.PENDING, _S.SUCCEEDED),
                    (_S.PENDING, _S.FAILED),
                    (_S.RUNNING, _S.RUNNING),
                    (_S.RUNNING, _S.SUCCEEDED),
                    (_S.RUNNING, _S.FAILED),
                    # Terminal.
                    (_S.SUCCEEDED, _S.SUCCEEDED),
                    (_S.FAILED, _S.FAILED),
                }
            ),
        }
    )
)
"""Every legal (previous, next) pair per workload; `None` is "no state written yet"."""

LEGAL_STATES: Mapping[Workload, frozenset[WorkspaceState]] = MappingProxyType(
    {workload: frozenset(state for _, state in edges) for workload, edges in TRANSITIONS.items()}
)

TERMINAL_STATES = frozenset({WorkspaceState.SUCCEEDED, WorkspaceState.FAILED})


@dataclass(frozen=True, slots=True)
class ConditionSummary:
    """A condition as an Event reports it."""

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    # False for an awaited condition that is absent (which reads as Unknown).
    reported: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """The state to hold and why.

    Invariants: `(previous, state)` is in `TRANSITIONS[workload]`; `previous` is
    `raw_previous` when that is a legal state for the workload, else `raw_record` when
    that is, else None; `previous_was_illegal` says that a stored value was not legal.
    """

    workload: Workload
    state: WorkspaceState
    # The previous state as the machine read it; what the writer checks the edge from.
    previous: WorkspaceState | None
    # `status.status` as stored, before interpretation.
    raw_previous: str | None
    # A stored value that is not a state of this workload (e.g. Running on an inference
    # workspace, or garbage) was read as absent: warn the user.
    previous_was_illegal: bool
    # False conditions of gating types, in stored order: the root causes.
    blocking: tuple[ConditionSummary, ...]
    # Awaited conditions that are neither True nor False (absent or Unknown).
    awaiting: tuple[ConditionSummary, ...]
    # The state this controller's record condition holds, as stored (record.py).
    raw_record: str | None = None
    # False conditions that would gate but are stale (`stale_conditions`), ignored.
    stale: tuple[ConditionSummary, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether this is a transition: the state differs from the previous one."""
        return self.state != self.previous

    @property
    def needs_write(self) -> bool:
        """Whether `status.status` or the record differs from `state`: a transition, or
        a restore after another writer blanked or changed the field."""
        return self.raw_previous != self.state.value or self.raw_record != self.state.value


@dataclass(frozen=True, slots=True)
class Deleting:
    """The workspace is being deleted; its state stays as it is.

    `restore` is the recorded state when another writer dropped `status.status` (KAITO
    writes `WorkspaceDeleting` with a PUT that drops it): the state it keeps, to be
    shown again. None when there is nothing to put back.
    """

    reason: str
    restore: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidWorkload:
    """Neither or both workloads are set; no state can be computed."""

    message: str


Outcome: TypeAlias = Decision | Deleting | InvalidWorkload


def is_legal_transition(
    workload: Workload, previous: WorkspaceState | None, next_: WorkspaceState
) -> bool:
    """Whether the writer may move `status.status` from `previous` to `next_`."""
    return (previous, next_) in TRANSITIONS[workload]


def next_state(workspace: Workspace) -> Outcome:
    """What `status.status` should be, read from the workspace's conditions and its
    current `status.status`."""
    conditions = _first_of_each_type(workspace.status.conditions)

    dropped = None
    if workspace.status.status is None:
        dropped = recorded_state(workspace.status.conditions)
    if workspace.metadata.is_deleting:
        return Deleting("metadata.deletionTimestamp is set", dropped)
    if _status(conditions.get(ConditionType.WORKSPACE_DELETING)) is ConditionStatus.TRUE:
        return Deleting(f"{ConditionType.WORKSPACE_DELETING} is True", dropped)

    if workspace.has_inference == workspace.has_tuning:
        which = "both" if workspace.has_inference else "neither"
        return InvalidWorkload(
            f"{which} of .inference and .tuning are set; a Workspace runs exactly one workload"
        )
    workload = Workload.INFERENCE if workspace.has_inference else Workload.TUNING

    raw = workspace.status.status
    record = recorded_state(workspace.status.conditions)
    from_field = _read_previous(workload, raw)
    # status.status first: it is what users and other writers see. The record stands in
    # when another writer dropped the field (or put something illegal there).
    previous = from_field if from_field is not None else _read_previous(workload, record)
    informational = INFORMATIONAL_CONDITIONS[workload]
    stale = stale_conditions(
        workload, conditions.values(), restamped=workspace.status.state is not None
    )
    gating = [
        c
        for c in conditions.values()
        if _status(c) is ConditionStatus.FALSE and c.type not in informational
    ]
    blocking = tuple(_summary(c) for c in gating if c.type not in stale)
    awaiting = tuple(
        _summary(conditions.get(t), t)
        for t in AWAITED_CONDITIONS[workload]
        if _status(conditions.get(t)) is ConditionStatus.UNKNOWN
    )

    if workload is Workload.INFERENCE:
        state = _next_inference(previous, conditions, blocking)
    else:
        state = _next_tuning(previous, conditions)
    return Decision(
        workload=workload,
        state=state,
        previous=previous,
        raw_previous=raw,
        previous_was_illegal=(raw is not None and from_field is None)
        or (raw is None and record is not None and previous is None),
        blocking=blocking,
        awaiting=awaiting,
        raw_record=record,
        stale=tuple(_summary(c) for c in gating if c.type in stale),
    )


def stale_conditions(
    workload: Workload, conditions: Iterable[Condition], *, restamped: bool
) -> frozenset[str]:
    """The types of conditions KAITO no longer maintains.

    KAITO v0.9 and later recompute every condition they maintain on each sync and stamp
    each with the workspace's generation (`meta.SetStatusCondition` updates
    observedGeneration even when nothing else changed). Once some condition carries a
    newer generation than another, KAITO has processed the newer spec and left the
    older one behind (e.g. `ModelMirrorReady` after streaming was turned off). Such a
    condition neither gates nor is named as a cause.

    `restamped` says the writer is such a KAITO; it is recognised by `status.state`,
    which came in the same release. KAITO v0.8.1 rewrites a condition only when its
    status, reason or message changes, so live conditions there carry old generations
    and nothing is stale. The awaited conditions are never stale: a workspace is not
    Ready until they are True, whatever their generation. Conditions without an
    observedGeneration, and this controller's record, take no part.
    (Facts and references: docs/kaito-behaviour.md.)
    """
    if not restamped:
        return frozenset()
    stamped = [
        c for c in conditions if c.observed_generation is not None and c.type != RECORD_CONDITION
    ]
    if not stamped:
        return frozenset()
    newest = max(c.observed_generation or 0 for c in stamped)
    awaited = AWAITED_CONDITIONS[workload]
    return frozenset(
        c.type for c in stamped if (c.observed_generation or 0) < newest and c.type not in awaited
    )


def pending_blockers(decision: Decision) -> tuple[ConditionSummary, ...]:
    """What holds a Pending workspace in Pending: its blocking conditions, then the
    awaited ones not yet reported. Empty for any other state.

    For the reconciler's "stuck in Pending" warning; how long is too long is its call.
    """
    if decision.state is not WorkspaceState.PENDING:
        return ()
    return decision.blocking + decision.awaiting


def _next_inference(
    previous: WorkspaceState | None,
    conditions: Mapping[str, Condition],
    blocking: tuple[ConditionSummary, ...],
) -> WorkspaceState:
    ready = not blocking and all(
        _status(conditions.get(t)) is ConditionStatus.TRUE
        for t in AWAITED_CONDITIONS[Workload.INFERENCE]
    )
    if ready:
        return WorkspaceState.READY
    if previous in (WorkspaceState.READY, WorkspaceState.NOT_READY):
        return WorkspaceState.NOT_READY
    return WorkspaceState.PENDING


def _next_tuning(
    previous: WorkspaceState | None, conditions: Mapping[str, Condition]
) -> WorkspaceState:
    if previous is not None and previous in TERMINAL_STATES:
        return previous
    failed = any(
        _status(c) is ConditionStatus.FALSE and c.reason in reasons
        for t, reasons in TUNING_FAILURE_REASONS.items()
        if (c := conditions.get(t)) is not None
    )
    if failed:
        return WorkspaceState.FAILED
    if _status(conditions.get(ConditionType.WORKSPACE_SUCCEEDED)) is ConditionStatus.TRUE:
        return WorkspaceState.SUCCEEDED
    started = _status(conditions.get(ConditionType.JOB_STARTED)) is ConditionStatus.TRUE
    if started or previous is WorkspaceState.RUNNING:
        return WorkspaceState.RUNNING
    return WorkspaceState.PENDING


def _read_previous(workload: Workload, raw: str | None) -> WorkspaceState | None:
    if raw is None:
        return None
    try:
        state = WorkspaceState(raw)
    except ValueError:
        return None
    return state if state in LEGAL_STATES[workload] else None


def _first_of_each_type(conditions: Iterable[Condition]) -> dict[str, Condition]:
    first: dict[str, Condition] = {}
    for condition in conditions:
        first.setdefault(condition.type, condition)
    return first


def _status(condition: Condition | None) -> ConditionStatus:
    if condition is None:
        return ConditionStatus.UNKNOWN
    if condition.status == ConditionStatus.TRUE:
        return ConditionStatus.TRUE
    if condition.status == ConditionStatus.FALSE:
        return ConditionStatus.FALSE
    return ConditionStatus.UNKNOWN


def _summary(condition: Condition | None, type_: str = "") -> ConditionSummary:
    if condition is None:
        return ConditionSummary(type=type_, status=ConditionStatus.UNKNOWN, reported=False)
    return ConditionSummary(
        type=condition.type,
        status=_status(condition),
        reason=condition.reason,
        message=condition.message,
    )
