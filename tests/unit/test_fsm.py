"""Specification of the Workspace state machine (controllers/workspace/fsm.py).

Readable examples first (one per edge of each machine, then each rule), then the
function and the transition table checked against each other: exhaustively over a small
domain of conditions, and with hypothesis over the whole input space.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controllers.workspace.fsm import (
    AWAITED_CONDITIONS,
    INFORMATIONAL_CONDITIONS,
    LEGAL_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    TUNING_FAILURE_REASONS,
    ConditionStatus,
    ConditionSummary,
    ConditionType,
    Decision,
    Deleting,
    InvalidWorkload,
    Outcome,
    Workload,
    WorkspaceState,
    is_legal_transition,
    next_state,
    pending_blockers,
    stale_conditions,
)
from controllers.workspace.model import Workspace, parse_workspace
from controllers.workspace.record import RECORD_CONDITION

INF = Workload.INFERENCE
TUN = Workload.TUNING
S = WorkspaceState
Cond = dict[str, Any]


def c(type_: str, status: str, reason: str = "", message: str = "") -> Cond:
    """A condition as KAITO stores it; an empty reason or message is left out."""
    condition: Cond = {
        "type": type_,
        "status": status,
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def workspace_dict(
    workload: str | None,
    previous: str | None = None,
    conditions: Iterable[Cond] = (),
    *,
    deleting: bool = False,
    kaito_state: str | None = "Pending",
) -> dict[str, Any]:
    """A Workspace as the informer delivers it. `workload`: inference, tuning, both, None.

    `kaito_state` is KAITO's own `status.state` (v0.9 and later write it; None is v0.8.1).
    """
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "uid": "u-1", "generation": 1},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    if workload in ("inference", "both"):
        obj["inference"] = {"preset": {"name": "phi-4-mini-instruct"}}
    if workload in ("tuning", "both"):
        obj["tuning"] = {"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora"}
    status: dict[str, Any] = {"conditions": list(conditions)}
    if kaito_state is not None:
        status["state"] = kaito_state
    if previous is not None:
        status["status"] = previous
    obj["status"] = status
    return obj


def outcome_of(
    workload: str | None,
    previous: str | None = None,
    conditions: Iterable[Cond] = (),
    *,
    deleting: bool = False,
) -> Outcome:
    return next_state(
        parse_workspace(workspace_dict(workload, previous, conditions, deleting=deleting))
    )


def decide(workload: Workload, previous: str | None, conditions: Iterable[Cond]) -> Decision:
    outcome = outcome_of(workload.value, previous, conditions)
    assert isinstance(outcome, Decision), outcome
    return outcome


# KAITO's conditions at typical moments (reasons and messages as KAITO writes them).
INFERENCE_INITIALISING = [
    c("NodeClaimReady", "False", "NodeClaimNotReady", "Ready NodeClaims are not enough"),
    c("ResourceReady", "False", "NodeClaimNotReady", "Ready NodeClaims are not enough"),
    c(
        "InferenceReady",
        "False",
        "WorkspaceInferenceStatusPending",
        "Inference workload is not ready",
    ),
    c("WorkspaceSucceeded", "False", "workspacePending", "workspace is waiting for inference"),
]
INFERENCE_SERVING = [
    c("NodeClaimReady", "True", "NodeClaimsReady", "Enough NodeClaims are ready"),
    c("ResourceReady", "True", "workspaceResourceStatusSuccess", "workspace resource is ready"),
    c("InferenceReady", "True", "WorkspaceInferenceStatusSuccess", "Inference has been deployed"),
    c("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
]
INFERENCE_CRASHING = [
    c("ResourceReady", "True", "workspaceResourceStatusSuccess", "workspace resource is ready"),
    c(
        "InferenceReady",
        "False",
        "ContainerCrashLoopBackOff",
        'container "llm" is in CrashLoopBackOff',
    ),
    c("WorkspaceSucceeded", "False", "workspacePending", "workspace is waiting for inference"),
]
TUNING_INITIALISING = [
    c("ResourceReady", "False", "NodeNotReady", "Not enough Nodes are ready"),
    c("JobStarted", "False", "WorkspaceTuningJobStatusPending", "Tuning job has not started"),
    c("WorkspaceSucceeded", "False", "workspacePending", "tuning job has not started"),
]
TUNING_RUNNING = [
    c("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    c("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started"),
    c("WorkspaceSucceeded", "False", "workspacePending", "tuning job is running"),
]
TUNING_DONE = [
    c("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    c("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started"),
    c("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
]
TUNING_FAILED = [
    c("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    c("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "tuning job failed"),
    c("WorkspaceSucceeded", "False", "workspaceFailed", "tuning job failed"),
]


@dataclass(frozen=True)
class Edge:
    workload: Workload
    previous: WorkspaceState | None
    conditions: Sequence[Cond]
    expected: WorkspaceState
    why: str


EDGE_EXAMPLES = [
    Edge(INF, None, INFERENCE_INITIALISING, S.PENDING, "first write while initialising"),
    Edge(INF, None, INFERENCE_SERVING, S.READY, "first write of a serving workspace"),
    Edge(INF, S.PENDING, INFERENCE_INITIALISING, S.PENDING, "still initialising"),
    Edge(INF, S.PENDING, INFERENCE_SERVING, S.READY, "initialisation done"),
    Edge(INF, S.READY, INFERENCE_SERVING, S.READY, "still serving"),
    Edge(INF, S.READY, INFERENCE_CRASHING, S.NOT_READY, "pod crashes"),
    Edge(INF, S.NOT_READY, INFERENCE_CRASHING, S.NOT_READY, "still crashing"),
    Edge(INF, S.NOT_READY, INFERENCE_SERVING, S.READY, "recovered"),
    Edge(TUN, None, TUNING_INITIALISING, S.PENDING, "first write while initialising"),
    Edge(TUN, None, TUNING_RUNNING, S.RUNNING, "first seen running"),
    Edge(TUN, None, TUNING_DONE, S.SUCCEEDED, "first seen done"),
    Edge(TUN, None, TUNING_FAILED, S.FAILED, "first seen failed"),
    Edge(TUN, S.PENDING, TUNING_INITIALISING, S.PENDING, "still initialising"),
    Edge(TUN, S.PENDING, TUNING_RUNNING, S.RUNNING, "job started"),
    Edge(TUN, S.PENDING, TUNING_DONE, S.SUCCEEDED, "job ran and finished between two looks"),
    Edge(TUN, S.PENDING, TUNING_FAILED, S.FAILED, "job failed before it was seen running"),
    Edge(TUN, S.RUNNING, TUNING_RUNNING, S.RUNNING, "still running"),
    Edge(TUN, S.RUNNING, TUNING_DONE, S.SUCCEEDED, "job succeeded"),
    Edge(TUN, S.RUNNING, TUNING_FAILED, S.FAILED, "job failed"),
    Edge(TUN, S.SUCCEEDED, TUNING_FAILED, S.SUCCEEDED, "terminal: a later failure is ignored"),
    Edge(TUN, S.FAILED, TUNING_DONE, S.FAILED, "terminal: a later success is ignored"),
]


@pytest.mark.parametrize(
    "edge",
    EDGE_EXAMPLES,
    ids=[f"{e.workload}:{e.previous}->{e.expected} ({e.why})" for e in EDGE_EXAMPLES],
)
def test_edge_examples(edge: Edge) -> None:
    decision = decide(edge.workload, edge.previous, edge.conditions)
    assert decision.state is edge.expected
    assert decision.previous is edge.previous
    assert not decision.previous_was_illegal
    assert decision.changed == (edge.previous is not edge.expected)
    assert is_legal_transition(edge.workload, edge.previous, decision.state)


def test_edge_examples_cover_the_whole_table() -> None:
    for workload in Workload:
        shown = {(e.previous, e.expected) for e in EDGE_EXAMPLES if e.workload is workload}
        assert shown == TRANSITIONS[workload]


# --- the transition table ------------------------------------------------------------


def test_legal_states_per_workload() -> None:
    assert LEGAL_STATES[INF] == {S.PENDING, S.READY, S.NOT_READY}
    assert LEGAL_STATES[TUN] == {S.PENDING, S.RUNNING, S.SUCCEEDED, S.FAILED}
    assert LEGAL_STATES[INF] | LEGAL_STATES[TUN] == set(WorkspaceState)


@pytest.mark.parametrize("workload", list(Workload))
def test_nothing_returns_to_pending(workload: Workload) -> None:
    into_pending = {prev for prev, nxt in TRANSITIONS[workload] if nxt is S.PENDING}
    assert into_pending == {None, S.PENDING}


def test_inference_never_starts_not_ready() -> None:
    assert not is_legal_transition(INF, None, S.NOT_READY)


def test_pending_inference_only_moves_to_ready() -> None:
    assert {nxt for prev, nxt in TRANSITIONS[INF] if prev is S.PENDING} == {S.PENDING, S.READY}


def test_terminal_states_only_loop() -> None:
    for terminal in TERMINAL_STATES:
        assert {nxt for prev, nxt in TRANSITIONS[TUN] if prev is terminal} == {terminal}


@pytest.mark.parametrize(
    ("workload", "previous", "next_"),
    [
        (INF, S.READY, S.PENDING),
        (INF, S.NOT_READY, S.PENDING),
        (INF, S.PENDING, S.NOT_READY),
        (INF, None, S.RUNNING),
        (TUN, S.RUNNING, S.PENDING),
        (TUN, S.SUCCEEDED, S.FAILED),
        (TUN, S.FAILED, S.RUNNING),
        (TUN, None, S.READY),
    ],
)
def test_edges_the_writer_refuses(
    workload: Workload, previous: WorkspaceState | None, next_: WorkspaceState
) -> None:
    assert not is_legal_transition(workload, previous, next_)


# --- inference rules -----------------------------------------------------------------


@pytest.mark.parametrize("previous", [S.READY, S.NOT_READY])
def test_established_inference_never_goes_back_to_pending(previous: WorkspaceState) -> None:
    # A spec update re-provisions from scratch; the workspace was serving, so NotReady.
    assert decide(INF, previous, INFERENCE_INITIALISING).state is S.NOT_READY


def test_failed_initialisation_stays_pending() -> None:
    conditions = [
        c("ResourceReady", "False", "InsufficientCapacity", "quota exceeded for NC24ads_A100_v4"),
        c("InferenceReady", "False", "WorkspaceInferenceStatusPending"),
    ]
    decision = decide(INF, S.PENDING, conditions)
    assert decision.state is S.PENDING
    assert [b.reason for b in decision.blocking] == [
        "InsufficientCapacity",
        "WorkspaceInferenceStatusPending",
    ]


def test_failed_benchmark_blocks_ready_but_keeps_pending() -> None:
    # KAITO itself moves Pending -> NotReady here; the proposal keeps a workspace that
    # never served in Pending, and so do we.
    conditions = [
        c("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        c("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        c("BenchmarkCompleted", "False", "BenchmarkFailed", "benchmark pod exited 1"),
        c("WorkspaceSucceeded", "False", "BenchmarkFailed", "benchmark pod exited 1"),
    ]
    pending = decide(INF, None, conditions)
    assert pending.state is S.PENDING
    assert pending.blocking == (
        ConditionSummary(
            "BenchmarkCompleted", ConditionStatus.FALSE, "BenchmarkFailed", "benchmark pod exited 1"
        ),
    )
    assert decide(INF, S.READY, conditions).state is S.NOT_READY


def test_unknown_condition_type_that_is_false_gates() -> None:
    future = c("GatewayRouteReady", "False", "RouteNotAccepted", "no listener")
    decision = decide(INF, S.READY, [*INFERENCE_SERVING, future])
    assert decision.state is S.NOT_READY
    assert [b.type for b in decision.blocking] == ["GatewayRouteReady"]


@pytest.mark.parametrize("status", ["True", "Unknown"])
def test_unknown_condition_type_that_is_not_false_does_not_gate(status: str) -> None:
    future = c("GatewayRouteReady", status, "Whatever")
    assert decide(INF, S.READY, [*INFERENCE_SERVING, future]).state is S.READY


@pytest.mark.parametrize(
    "informational",
    [
        c("WorkspaceSucceeded", "False", "workspacePending", "lagging summary"),
        c("ScalingDownCompleted", "False", "ScalingDown"),
        c("JobStarted", "False", "WorkspaceTuningJobStatusPending", "left over"),
    ],
    ids=lambda cond: str(cond["type"]),
)
def test_informational_condition_does_not_gate(informational: Cond) -> None:
    conditions = [
        c("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        c("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        informational,
    ]
    decision = decide(INF, S.PENDING, conditions)
    assert decision.state is S.READY
    assert decision.blocking == ()


@pytest.mark.parametrize("status", ["Unknown", "true", "", None])
def test_awaited_condition_that_is_not_true_blocks_ready(status: str | None) -> None:
    resource: Cond = {"type": "ResourceReady"}
    if status is not None:
        resource["status"] = status
    conditions = [resource, c("InferenceReady", "True", "WorkspaceInferenceStatusSuccess")]
    decision = decide(INF, None, conditions)
    assert decision.state is S.PENDING
    assert decision.blocking == ()
    assert decision.awaiting == (ConditionSummary("ResourceReady", ConditionStatus.UNKNOWN),)


def test_absent_awaited_conditions_are_reported_as_not_reported() -> None:
    decision = decide(INF, None, [])
    assert decision.state is S.PENDING
    assert decision.awaiting == (
        ConditionSummary("ResourceReady", ConditionStatus.UNKNOWN, reported=False),
        ConditionSummary("InferenceReady", ConditionStatus.UNKNOWN, reported=False),
    )


def test_blocking_lists_false_gating_conditions_in_stored_order() -> None:
    decision = decide(INF, S.READY, INFERENCE_CRASHING)
    assert decision.blocking == (
        ConditionSummary(
            "InferenceReady",
            ConditionStatus.FALSE,
            "ContainerCrashLoopBackOff",
            'container "llm" is in CrashLoopBackOff',
        ),
    )


def test_false_condition_without_reason_or_message_still_gates() -> None:
    conditions = [{"type": "ResourceReady", "status": "False"}, c("InferenceReady", "True")]
    decision = decide(INF, S.READY, conditions)
    assert decision.state is S.NOT_READY
    assert decision.blocking == (ConditionSummary("ResourceReady", ConditionStatus.FALSE),)


def test_huge_message_is_carried_whole() -> None:
    message = "x" * 1_000_000
    decision = decide(INF, S.READY, [c("ResourceReady", "False", "Big", message)])
    assert decision.blocking[0].message == message


# --- tuning rules --------------------------------------------------------------------


def test_running_does_not_go_back_to_pending() -> None:
    # The Job was recreated (new revision) and has not started yet.
    assert decide(TUN, S.RUNNING, TUNING_INITIALISING).state is S.RUNNING


@pytest.mark.parametrize(
    "failure",
    [
        [c("WorkspaceSucceeded", "False", "workspaceFailed", "tuning job failed")],
        [c("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "tuning job failed")],
    ],
    ids=["WorkspaceSucceeded", "JobStarted"],
)
def test_either_failure_signal_fails_tuning(failure: list[Cond]) -> None:
    assert decide(TUN, S.RUNNING, failure).state is S.FAILED


def test_failure_wins_over_success() -> None:
    conditions = [
        c("JobStarted", "False", "WorkspaceTuningJobStatusFailed"),
        c("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    ]
    assert decide(TUN, S.RUNNING, conditions).state is S.FAILED


@pytest.mark.parametrize("reason", ["workspacePending", "SomethingElse", ""])
def test_false_succeeded_without_failure_reason_is_not_failure(reason: str) -> None:
    conditions = [c("WorkspaceSucceeded", "False", reason)]
    assert decide(TUN, S.PENDING, conditions).state is S.PENDING


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
@pytest.mark.parametrize(
    "conditions",
    [[], TUNING_INITIALISING, TUNING_RUNNING, TUNING_DONE, TUNING_FAILED],
    ids=["none", "initialising", "running", "done", "failed"],
)
def test_terminal_states_never_change(terminal: WorkspaceState, conditions: list[Cond]) -> None:
    decision = decide(TUN, terminal, conditions)
    assert decision.state is terminal
    assert not decision.changed


def test_tuning_pending_names_its_blockers() -> None:
    decision = decide(TUN, None, TUNING_INITIALISING)
    assert decision.state is S.PENDING
    # WorkspaceSucceeded is KAITO's summary: not named as a cause.
    assert [b.type for b in decision.blocking] == ["ResourceReady", "JobStarted"]
    assert pending_blockers(decision) == decision.blocking


# --- deletion, invalid workloads, previous states --------------------------------------


@pytest.mark.parametrize("workload", ["inference", "tuning", "both", None])
def test_deletion_timestamp_leaves_state_alone(workload: str | None) -> None:
    outcome = outcome_of(workload, "Ready", INFERENCE_SERVING, deleting=True)
    assert outcome == Deleting("metadata.deletionTimestamp is set")


def test_workspace_deleting_condition_leaves_state_alone() -> None:
    conditions = [*TUNING_RUNNING, c("WorkspaceDeleting", "True", "workspaceDeleted")]
    assert isinstance(outcome_of("tuning", "Running", conditions), Deleting)


@pytest.mark.parametrize("status", ["False", "Unknown"])
def test_workspace_deleting_not_true_is_not_deletion(status: str) -> None:
    conditions = [*TUNING_RUNNING, c("WorkspaceDeleting", status, "Whatever")]
    assert isinstance(outcome_of("tuning", "Running", conditions), Decision)


@pytest.mark.parametrize(("workload", "word"), [(None, "neither"), ("both", "both")])
def test_invalid_workload(workload: str | None, word: str) -> None:
    outcome = outcome_of(workload, "Ready", INFERENCE_SERVING)
    assert isinstance(outcome, InvalidWorkload)
    assert outcome.message.startswith(word)


def test_empty_workload_object_counts_as_set() -> None:
    obj = workspace_dict(None)
    obj["tuning"] = {}
    outcome = next_state(parse_workspace(obj))
    assert isinstance(outcome, Decision)
    assert outcome.workload is TUN


@pytest.mark.parametrize(
    ("workload", "raw"),
    [
        (INF, "Running"),
        (INF, "Succeeded"),
        (TUN, "Ready"),
        (TUN, "NotReady"),
        (INF, "ready"),
        (INF, "Bogus"),
        (TUN, ""),
        (TUN, "5"),
    ],
)
def test_illegal_previous_is_read_as_absent_and_flagged(workload: Workload, raw: str) -> None:
    serving = INFERENCE_SERVING if workload is INF else TUNING_RUNNING
    decision = decide(workload, raw, serving)
    assert decision.previous is None
    assert decision.raw_previous == raw
    assert decision.previous_was_illegal
    assert decision.changed
    assert decision.state is (S.READY if workload is INF else S.RUNNING)


def test_illegal_previous_read_as_absent_can_still_mean_pending() -> None:
    decision = decide(INF, "Running", INFERENCE_INITIALISING)
    assert decision.state is S.PENDING
    assert is_legal_transition(INF, decision.previous, decision.state)


def test_non_string_previous_is_flagged() -> None:
    obj = workspace_dict("inference", None, INFERENCE_SERVING)
    obj["status"]["status"] = {"phase": "Ready"}
    decision = next_state(parse_workspace(obj))
    assert isinstance(decision, Decision)
    assert decision.previous_was_illegal
    assert decision.state is S.READY


# --- duplicates ------------------------------------------------------------------------


def test_first_entry_of_a_duplicated_type_wins() -> None:
    resource = c("ResourceReady", "True")
    stale_false = c("InferenceReady", "False", "Stale")
    live_true = c("InferenceReady", "True", "WorkspaceInferenceStatusSuccess")
    assert decide(INF, S.READY, [resource, live_true, stale_false]).state is S.READY
    assert decide(INF, S.READY, [resource, stale_false, live_true]).state is S.NOT_READY


def test_duplicated_tuning_failure_reads_the_first_entry() -> None:
    conditions = [
        c("WorkspaceSucceeded", "False", "workspacePending"),
        c("WorkspaceSucceeded", "False", "workspaceFailed"),
    ]
    assert decide(TUN, S.RUNNING, conditions).state is S.RUNNING


# --- pending_blockers ------------------------------------------------------------------


def test_pending_blockers_of_a_pending_inference() -> None:
    conditions = [c("ResourceReady", "False", "NodeNotReady", "Not enough Nodes are ready")]
    decision = decide(INF, None, conditions)
    assert pending_blockers(decision) == (
        ConditionSummary(
            "ResourceReady", ConditionStatus.FALSE, "NodeNotReady", "Not enough Nodes are ready"
        ),
        ConditionSummary("InferenceReady", ConditionStatus.UNKNOWN, reported=False),
    )


@pytest.mark.parametrize(
    ("workload", "previous", "conditions"),
    [
        (INF, S.READY, INFERENCE_CRASHING),
        (INF, None, INFERENCE_SERVING),
        (TUN, None, TUNING_FAILED),
    ],
)
def test_pending_blockers_is_empty_unless_pending(
    workload: Workload, previous: WorkspaceState | None, conditions: list[Cond]
) -> None:
    assert pending_blockers(decide(workload, previous, conditions)) == ()


# --- exhaustive: table == reachable edges ------------------------------------------------

_PREVIOUS_VALUES: list[str | None] = [None, *(s.value for s in WorkspaceState), "Garbage"]
_ANY = (None, ("True", "Ok"), ("False", "Broken"), ("Unknown", "Unsure"))
_DOMAIN: dict[Workload, dict[str, tuple[tuple[str, str] | None, ...]]] = {
    INF: {
        "ResourceReady": _ANY,
        "InferenceReady": _ANY,
        "BenchmarkCompleted": _ANY,
        "WorkspaceSucceeded": _ANY,
        "JobStarted": _ANY,
        "FutureCondition": _ANY,
    },
    TUN: {
        "JobStarted": (
            *_ANY,
            ("False", "WorkspaceTuningJobStatusPending"),
            ("False", "WorkspaceTuningJobStatusFailed"),
        ),
        "WorkspaceSucceeded": (
            *_ANY,
            ("False", "workspacePending"),
            ("False", "workspaceFailed"),
        ),
        "ResourceReady": _ANY,
        "FutureCondition": _ANY,
    },
}


@pytest.mark.parametrize("workload", list(Workload))
def test_exhaustively_reachable_edges_are_exactly_the_table(workload: Workload) -> None:
    domain = _DOMAIN[workload]
    reached: set[tuple[WorkspaceState | None, WorkspaceState]] = set()
    for choice in itertools.product(*domain.values()):
        conditions = [
            c(type_, picked[0], picked[1])
            for type_, picked in zip(domain, choice, strict=True)
            if picked is not None
        ]
        for previous in _PREVIOUS_VALUES:
            decision = decide(workload, previous, conditions)
            edge = (decision.previous, decision.state)
            assert edge in TRANSITIONS[workload], (previous, conditions, edge)
            reached.add(edge)
    assert reached == TRANSITIONS[workload]


# --- properties over the whole input space ----------------------------------------------

KNOWN_TYPES = [t.value for t in ConditionType]
UNKNOWN_TYPES = ["FutureCondition", "ServiceReady", "example.com/GatewayReady"]
ALL_REASONS = sorted(
    {r for reasons in TUNING_FAILURE_REASONS.values() for r in reasons}
    | {
        "workspacePending",
        "workspaceSucceeded",
        "BenchmarkFailed",
        "ContainerCrashLoopBackOff",
        "WorkspaceTuningJobStatusPending",
        "WorkspaceTuningJobStatusStarted",
        "NodeClaimNotReady",
    }
)
STATUSES = st.sampled_from(["True", "False", "Unknown"]) | st.sampled_from(["true", "", "Maybe"])
REASONS = st.sampled_from(ALL_REASONS) | st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
PREVIOUS = st.none() | st.sampled_from([s.value for s in WorkspaceState]) | st.text(max_size=10)


def condition_with_type(type_: str) -> st.SearchStrategy[Cond]:
    return st.fixed_dictionaries(
        {"type": st.just(type_), "status": STATUSES},
        optional={
            "reason": REASONS,
            "message": st.text(max_size=30),
            "observedGeneration": st.integers(0, 5),
            "lastTransitionTime": st.just("2026-01-01T00:00:00Z"),
            "unknownField": st.integers(),
        },
    )


@st.composite
def condition_lists(
    draw: st.DrawFn, types: Sequence[str] = KNOWN_TYPES + UNKNOWN_TYPES
) -> list[Cond]:
    """Each type absent or present once, in any order, then maybe duplicates after."""
    present = draw(st.lists(st.sampled_from(types), unique=True))
    conditions = [draw(condition_with_type(t)) for t in present]
    conditions = list(draw(st.permutations(conditions)))
    if present:
        conditions += draw(
            st.lists(st.sampled_from(present).flatmap(condition_with_type), max_size=3)
        )
    return conditions


def first_of_each(conditions: Sequence[Cond]) -> dict[str, Cond]:
    first: dict[str, Cond] = {}
    for condition in conditions:
        first.setdefault(condition["type"], condition)
    return first


def status_of(first: dict[str, Cond], type_: str) -> str | None:
    condition = first.get(type_)
    return None if condition is None else condition["status"]


def stale_oracle(workload: Workload, first: dict[str, Cond]) -> set[str]:
    """The stale rule, restated: older than the newest stamp, and not awaited."""
    stamps = {t: x["observedGeneration"] for t, x in first.items() if "observedGeneration" in x}
    newest = max(stamps.values(), default=None)
    return {
        t
        for t, g in stamps.items()
        if newest is not None and g < newest and t not in AWAITED_CONDITIONS[workload]
    }


ANY_WORKLOAD = st.sampled_from(list(Workload))
PROPERTY_SETTINGS = settings(max_examples=250, deadline=None)


@PROPERTY_SETTINGS
@given(
    workload=st.sampled_from(["inference", "tuning", "both", None]),
    previous=PREVIOUS,
    conditions=condition_lists(),
    deleting=st.booleans(),
)
def test_outcome_kind(
    workload: str | None, previous: str | None, conditions: list[Cond], deleting: bool
) -> None:
    outcome = outcome_of(workload, previous, conditions, deleting=deleting)
    deleting_condition = status_of(first_of_each(conditions), "WorkspaceDeleting") == "True"
    if deleting or deleting_condition:
        assert isinstance(outcome, Deleting)
    elif workload in ("both", None):
        assert isinstance(outcome, InvalidWorkload)
    else:
        assert isinstance(outcome, Decision)
        assert outcome.workload is Workload(workload)


@st.composite
def decisions(
    draw: st.DrawFn, workload: st.SearchStrategy[Workload] = ANY_WORKLOAD
) -> tuple[Workload, str | None, list[Cond], Decision]:
    chosen = draw(workload)
    previous = draw(PREVIOUS)
    conditions = draw(condition_lists())
    first = first_of_each(conditions)
    if status_of(first, "WorkspaceDeleting") == "True":
        conditions = [x for x in conditions if x["type"] != "WorkspaceDeleting"]
    return chosen, previous, conditions, decide(chosen, previous, conditions)


@PROPERTY_SETTINGS
@given(decisions())
def test_every_decision_is_an_edge_of_the_table(
    case: tuple[Workload, str | None, list[Cond], Decision],
) -> None:
    workload, raw, _, decision = case
    assert is_legal_transition(workload, decision.previous, decision.state)
    legal = {s.value: s for s in LEGAL_STATES[workload]}
    assert decision.previous_was_illegal == (raw is not None and raw not in legal)
    assert decision.previous == (None if raw is None else legal.get(raw))
    assert decision.raw_previous == raw
    assert decision.changed == (decision.state is not decision.previous)


@PROPERTY_SETTINGS
@given(decisions())
def test_summaries_are_consistent(case: tuple[Workload, str | None, list[Cond], Decision]) -> None:
    workload, _, _, decision = case
    for summary in decision.blocking:
        assert summary.status is ConditionStatus.FALSE
        assert summary.type not in INFORMATIONAL_CONDITIONS[workload]
    for summary in decision.awaiting:
        assert summary.status is ConditionStatus.UNKNOWN
        assert summary.type in AWAITED_CONDITIONS[workload]
    assert len({s.type for s in decision.blocking + decision.awaiting}) == len(
        decision.blocking + decision.awaiting
    )
    expected = decision.blocking + decision.awaiting if decision.state is S.PENDING else ()
    assert pending_blockers(decision) == expected


@PROPERTY_SETTINGS
@given(decisions(st.just(INF)))
def test_inference_is_ready_exactly_when_the_contract_says(
    case: tuple[Workload, str | None, list[Cond], Decision],
) -> None:
    _, _, conditions, decision = case
    first = first_of_each(conditions)
    stale = stale_oracle(INF, first)
    gating_false = any(
        x["status"] == "False" and t not in INFORMATIONAL_CONDITIONS[INF] and t not in stale
        for t, x in first.items()
    )
    ready = (
        status_of(first, "ResourceReady") == "True"
        and status_of(first, "InferenceReady") == "True"
        and not gating_false
    )
    if ready:
        assert decision.state is S.READY
    elif decision.previous in (S.READY, S.NOT_READY):
        assert decision.state is S.NOT_READY
    else:
        assert decision.state is S.PENDING


@PROPERTY_SETTINGS
@given(decisions(st.just(TUN)))
def test_tuning_follows_the_contract(
    case: tuple[Workload, str | None, list[Cond], Decision],
) -> None:
    _, _, conditions, decision = case
    first = first_of_each(conditions)

    def is_false_with(type_: str, reasons: frozenset[str]) -> bool:
        x = first.get(type_)
        return x is not None and x["status"] == "False" and x.get("reason", "") in reasons

    failed = is_false_with("WorkspaceSucceeded", frozenset({"workspaceFailed"})) or is_false_with(
        "JobStarted", frozenset({"WorkspaceTuningJobStatusFailed"})
    )
    if decision.previous in TERMINAL_STATES:
        expected = decision.previous
    elif failed:
        expected = S.FAILED
    elif status_of(first, "WorkspaceSucceeded") == "True":
        expected = S.SUCCEEDED
    elif status_of(first, "JobStarted") == "True" or decision.previous is S.RUNNING:
        expected = S.RUNNING
    else:
        expected = S.PENDING
    assert decision.state is expected


@PROPERTY_SETTINGS
@given(decisions())
def test_nothing_goes_back_to_pending(
    case: tuple[Workload, str | None, list[Cond], Decision],
) -> None:
    _, _, _, decision = case
    if decision.previous not in (None, S.PENDING):
        assert decision.state is not S.PENDING


@PROPERTY_SETTINGS
@given(decisions(), st.data())
def test_duplicates_appended_after_change_nothing(
    case: tuple[Workload, str | None, list[Cond], Decision], data: st.DataObject
) -> None:
    workload, previous, conditions, decision = case
    if not conditions:
        return
    types = sorted({x["type"] for x in conditions} - {"WorkspaceDeleting"})
    if not types:
        return
    extra = data.draw(st.lists(st.sampled_from(types).flatmap(condition_with_type), max_size=4))
    assert decide(workload, previous, conditions + extra) == decision


@PROPERTY_SETTINGS
@given(decisions(), st.randoms(use_true_random=False))
def test_order_of_distinct_types_does_not_change_the_state(
    case: tuple[Workload, str | None, list[Cond], Decision], rng: Any
) -> None:
    workload, previous, conditions, decision = case
    distinct = list(first_of_each(conditions).values())
    rng.shuffle(distinct)
    assert decide(workload, previous, distinct).state is decision.state


@PROPERTY_SETTINGS
@given(decisions())
def test_informational_conditions_do_not_change_the_state(
    case: tuple[Workload, str | None, list[Cond], Decision],
) -> None:
    workload, previous, conditions, decision = case
    if workload is INF:
        ignored = INFORMATIONAL_CONDITIONS[INF]
    else:
        # Tuning reads only JobStarted and WorkspaceSucceeded.
        read = {"JobStarted", "WorkspaceSucceeded"}
        ignored = frozenset(KNOWN_TYPES + UNKNOWN_TYPES) - read
    kept = [x for x in conditions if x["type"] not in ignored]

    # An informational condition still stamps the generation KAITO has processed, which
    # decides what is stale: the property holds where removing them keeps the newest.
    def newest(cs: list[Cond]) -> int | None:
        stamps = [x["observedGeneration"] for x in first_of_each(cs).values()]
        return max((g for g in stamps if g is not None), default=None)

    first = {t: x.get("observedGeneration") for t, x in first_of_each(conditions).items()}
    assume(
        newest([{"type": t, "observedGeneration": g} for t, g in first.items()])
        == newest(
            [{"type": x["type"], "observedGeneration": x.get("observedGeneration")} for x in kept]
        )
    )
    assert decide(workload, previous, kept).state is decision.state


@PROPERTY_SETTINGS
@given(decisions(st.just(INF)), st.sampled_from(UNKNOWN_TYPES), REASONS)
def test_a_false_unknown_type_always_blocks_ready(
    case: tuple[Workload, str | None, list[Cond], Decision], type_: str, reason: str
) -> None:
    _, previous, conditions, _ = case
    without = [x for x in conditions if x["type"] != type_]
    live = c(type_, "False", reason)
    # Stamped with the newest generation present: a condition KAITO maintains.
    live["observedGeneration"] = max(
        (x.get("observedGeneration", 0) for x in first_of_each(without).values()), default=1
    )
    decision = decide(INF, previous, [live, *without])
    assert decision.state is not S.READY
    assert ConditionSummary(type_, ConditionStatus.FALSE, reason) in decision.blocking


@PROPERTY_SETTINGS
@given(decisions())
def test_stale_conditions_are_exactly_the_rule(
    case: tuple[Workload, str | None, list[Cond], Decision],
) -> None:
    workload, _, conditions, decision = case
    first = first_of_each(conditions)
    assert {s.type for s in decision.stale} == {
        t
        for t in stale_oracle(workload, first)
        if first[t]["status"] == "False" and t not in INFORMATIONAL_CONDITIONS[workload]
    }
    assert not {s.type for s in decision.stale} & {s.type for s in decision.blocking}


def test_next_state_is_a_function_of_the_model() -> None:
    workspace = parse_workspace(workspace_dict("inference", "Ready", INFERENCE_CRASHING))
    assert isinstance(workspace, Workspace)
    assert next_state(workspace) == next_state(workspace.model_copy())


# --- stale conditions (KAITO no longer maintains them) ----------------------------------


def stamped(condition: Cond, generation: int) -> Cond:
    return {**condition, "observedGeneration": generation}


def test_a_condition_left_at_an_older_generation_does_not_gate() -> None:
    # Streaming turned off in generation 2: KAITO stamps what it maintains with 2 and
    # never touches ModelMirrorReady again.
    conditions = [stamped(x, 2) for x in INFERENCE_SERVING] + [
        stamped(c("ModelMirrorReady", "False", "ModelMirrorPending", "in progress"), 1)
    ]
    decision = decide(INF, "Ready", conditions)
    assert decision.state is S.READY
    assert [s.type for s in decision.stale] == ["ModelMirrorReady"]
    assert decision.blocking == ()


def test_a_live_false_condition_still_gates() -> None:
    conditions = [stamped(x, 2) for x in INFERENCE_SERVING] + [
        stamped(c("BenchmarkCompleted", "False", "BenchmarkFailed", "boom"), 2)
    ]
    decision = decide(INF, "Ready", conditions)
    assert decision.state is S.NOT_READY
    assert [s.type for s in decision.blocking] == ["BenchmarkCompleted"]
    assert decision.stale == ()


def test_awaited_conditions_are_never_stale() -> None:
    conditions = [
        stamped(c("ResourceReady", "True"), 3),
        stamped(c("InferenceReady", "False", "ContainerCrashLoopBackOff"), 2),
    ]
    parsed = parse_workspace(workspace_dict("inference", None, conditions))
    assert stale_conditions(INF, parsed.status.conditions, restamped=True) == frozenset()
    assert decide(INF, "Ready", conditions).state is S.NOT_READY


def test_without_generations_nothing_is_stale() -> None:
    conditions = [
        {k: v for k, v in x.items() if k != "observedGeneration"} for x in INFERENCE_CRASHING
    ]
    assert decide(INF, "Ready", conditions).stale == ()


V0_8_1_AFTER_A_SPEC_CHANGE = [
    # KAITO v0.8.1 rewrites a condition only when its status, reason or message changes,
    # so after a spec change (generation 2) the unchanged ones keep generation 1.
    stamped(c("NodeClaimReady", "False", "NodeClaimNotReady"), 1),
    stamped(c("ResourceReady", "False", "workspaceResourceStatusNotReady"), 2),
    stamped(c("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"), 1),
    stamped(c("WorkspaceSucceeded", "False", "workspacePending"), 2),
]


def test_kaito_v0_8_1_conditions_are_never_stale() -> None:
    workspace = workspace_dict("inference", "Ready", V0_8_1_AFTER_A_SPEC_CHANGE, kaito_state=None)
    decision = next_state(parse_workspace(workspace))
    assert isinstance(decision, Decision)
    assert decision.state is S.NOT_READY
    assert decision.stale == ()
    assert [s.type for s in decision.blocking] == ["NodeClaimReady", "ResourceReady"]


def test_the_same_conditions_from_a_restamping_kaito_ignore_the_old_one() -> None:
    decision = decide(INF, "Ready", V0_8_1_AFTER_A_SPEC_CHANGE)
    assert [s.type for s in decision.stale] == ["NodeClaimReady"]
    assert [s.type for s in decision.blocking] == ["ResourceReady"]


# --- the record of the previous state (survives writers that drop status.status) -------


def record(state: str) -> Cond:
    return {
        "type": RECORD_CONDITION,
        "status": "True",
        "reason": state,
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def test_the_record_stands_in_when_status_status_was_dropped() -> None:
    decision = decide(INF, None, [*INFERENCE_CRASHING, record("Ready")])
    assert decision.previous is S.READY
    assert decision.state is S.NOT_READY
    assert decision.changed
    assert decision.needs_write


def test_a_terminal_tuning_state_survives_a_dropped_field() -> None:
    decision = decide(TUN, None, [*TUNING_RUNNING, record("Succeeded")])
    assert decision.state is S.SUCCEEDED
    assert not decision.changed
    assert decision.needs_write  # the field must be restored


def test_status_status_wins_over_the_record() -> None:
    decision = decide(INF, "NotReady", [*INFERENCE_SERVING, record("Ready")])
    assert decision.previous is S.NOT_READY
    assert decision.state is S.READY
    assert decision.needs_write


def test_nothing_to_write_when_field_and_record_agree() -> None:
    decision = decide(INF, "Ready", [*INFERENCE_SERVING, record("Ready")])
    assert not decision.changed
    assert not decision.needs_write


def test_an_illegal_field_falls_back_to_the_record() -> None:
    decision = decide(INF, "Running", [*INFERENCE_CRASHING, record("Ready")])
    assert decision.previous_was_illegal
    assert decision.previous is S.READY
    assert decision.state is S.NOT_READY


def test_an_illegal_record_is_flagged_and_read_as_absent() -> None:
    decision = decide(INF, None, [*INFERENCE_CRASHING, record("Succeeded")])
    assert decision.previous_was_illegal
    assert decision.previous is None
    assert decision.state is S.PENDING


def test_the_record_never_gates_nor_is_named() -> None:
    false_record = {**record("Ready"), "status": "False"}
    decision = decide(INF, "Ready", [*INFERENCE_SERVING, false_record])
    assert decision.state is S.READY
    assert RECORD_CONDITION not in {s.type for s in decision.blocking + decision.stale}


@PROPERTY_SETTINGS
@given(decisions(), st.none() | st.sampled_from([s.value for s in WorkspaceState]))
def test_previous_is_the_field_else_the_record(
    case: tuple[Workload, str | None, list[Cond], Decision], kept: str | None
) -> None:
    workload, raw, conditions, _ = case
    with_record = conditions if kept is None else [*conditions, record(kept)]
    decision = decide(workload, raw, with_record)
    legal = {s.value: s for s in LEGAL_STATES[workload]}
    from_field = legal.get(raw) if raw is not None else None
    expected = from_field if from_field is not None else legal.get(kept) if kept else None
    assert decision.previous == expected
    assert is_legal_transition(workload, decision.previous, decision.state)
    assert decision.needs_write == (raw != decision.state.value or kept != decision.state.value)


def test_a_deleting_workspace_whose_field_was_dropped_gets_its_kept_state_back() -> None:
    obj = workspace_dict("inference", None, [*INFERENCE_SERVING, record("Ready")], deleting=True)
    assert next_state(parse_workspace(obj)) == Deleting(
        "metadata.deletionTimestamp is set", "Ready"
    )
    obj = workspace_dict("inference", "Ready", [*INFERENCE_SERVING, record("Ready")], deleting=True)
    assert next_state(parse_workspace(obj)) == Deleting("metadata.deletionTimestamp is set")
