"""Specification of the Workspace models, `parse_workspace` and `project`."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.workspace.fsm import Decision, Workload, WorkspaceState, next_state
from controllers.workspace.model import (
    Condition,
    Workspace,
    WorkspaceParseError,
    parse_workspace,
    project,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kaito"


def kaito_workspace() -> dict[str, Any]:
    """A Workspace as the API server returns it after KAITO has worked on it."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "workspace-phi-4-mini",
            "namespace": "default",
            "uid": "3f1c2a9e-0000-4000-8000-000000000001",
            "generation": 2,
            "resourceVersion": "48213",
            "creationTimestamp": "2026-01-01T10:00:00Z",
            "labels": {"team": "ml"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 100},
            "finalizers": ["workspace.finalizer.kaito.sh"],
            "ownerReferences": [
                {
                    "apiVersion": "kaito.sh/v1alpha1",
                    "kind": "InferenceSet",
                    "name": "set",
                    "uid": "x",
                }
            ],
            "managedFields": [{"manager": "kaito", "fieldsV1": {"f:status": {}}}] * 20,
        },
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "phi-4"}},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        "status": {
            "status": "Ready",
            "state": "Ready",
            "targetNodeCount": 1,
            "workerNodes": ["aks-ws-12345"],
            "performance": {"metrics": {"tpm": {"description": "stress", "value": "1"}}},
            "conditions": [
                {
                    "type": "ResourceReady",
                    "status": "True",
                    "reason": "workspaceResourceStatusSuccess",
                    "message": "workspace resource is ready",
                    "observedGeneration": 2,
                    "lastTransitionTime": "2026-01-01T10:05:00Z",
                },
                {
                    "type": "InferenceReady",
                    "status": "True",
                    "reason": "WorkspaceInferenceStatusSuccess",
                    "message": "Inference has been deployed successfully",
                    "observedGeneration": 2,
                    "lastTransitionTime": "2026-01-01T10:09:00Z",
                },
            ],
        },
    }


def test_reads_a_workspace_as_kaito_leaves_it() -> None:
    ws = parse_workspace(kaito_workspace())
    assert ws.api_version == "kaito.sh/v1beta1"
    assert ws.metadata.name == "workspace-phi-4-mini"
    assert ws.metadata.namespace == "default"
    assert ws.metadata.uid == "3f1c2a9e-0000-4000-8000-000000000001"
    assert ws.metadata.generation == 2
    assert ws.metadata.resource_version == "48213"
    assert ws.metadata.creation_timestamp == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert not ws.metadata.is_deleting
    assert ws.resource.instance_type == "Standard_NC24ads_A100_v4"
    assert ws.has_inference
    assert not ws.has_tuning
    assert ws.status.status == "Ready"
    condition = ws.status.conditions[1]
    assert condition.type == "InferenceReady"
    assert condition.status == "True"
    assert condition.reason == "WorkspaceInferenceStatusSuccess"
    assert condition.message == "Inference has been deployed successfully"
    assert condition.observed_generation == 2
    assert condition.last_transition_time == datetime(2026, 1, 1, 10, 9, tzinfo=UTC)


def test_models_are_immutable() -> None:
    ws = parse_workspace(kaito_workspace())
    with pytest.raises(ValueError, match="frozen"):
        ws.metadata.name = "other"


def test_an_empty_object_parses() -> None:
    ws = parse_workspace({})
    assert ws.metadata.name == ""
    assert ws.status.status is None
    assert ws.status.conditions == ()
    assert not ws.has_inference
    assert not ws.has_tuning


def test_condition_with_only_a_type() -> None:
    (condition,) = parse_workspace({"status": {"conditions": [{"type": "X"}]}}).status.conditions
    assert condition == Condition(type="X")
    assert condition.status == "Unknown"
    assert condition.reason == ""
    assert condition.message == ""
    assert condition.observed_generation is None
    assert condition.last_transition_time is None


def test_condition_status_is_kept_verbatim() -> None:
    raw = {"status": {"conditions": [{"type": "X", "status": "Maybe"}]}}
    assert parse_workspace(raw).status.conditions[0].status == "Maybe"


def test_unknown_fields_are_ignored_at_every_level() -> None:
    raw = kaito_workspace()
    raw["futureTopLevel"] = {"a": [1, 2]}
    raw["metadata"]["futureMeta"] = 1
    raw["status"]["futureStatus"] = "x"
    raw["status"]["conditions"][0]["severity"] = "Warning"
    assert parse_workspace(raw) == parse_workspace(kaito_workspace())


def test_json_nulls_mean_unset() -> None:
    raw = {
        "metadata": {"name": "w", "deletionTimestamp": None, "generation": None},
        "inference": None,
        "tuning": {},
        "resource": None,
        "status": {
            "status": None,
            "conditions": [{"type": "X", "status": None, "reason": None, "message": None}],
        },
    }
    ws = parse_workspace(raw)
    assert not ws.metadata.is_deleting
    assert ws.metadata.generation is None
    assert not ws.has_inference
    assert ws.has_tuning
    assert ws.resource.instance_type is None
    assert ws.status.status is None
    assert ws.status.conditions == (Condition(type="X"),)
    assert parse_workspace({"status": None}).status.conditions == ()
    assert parse_workspace({"status": {"conditions": None}}).status.conditions == ()


def test_huge_message() -> None:
    message = "OOMKilled " * 200_000
    raw = {"status": {"conditions": [{"type": "InferenceReady", "message": message}]}}
    assert parse_workspace(raw).status.conditions[0].message == message


@pytest.mark.parametrize("previous", ["Bogus", "", "ready", "Running"])
def test_any_string_previous_state_is_representable(previous: str) -> None:
    assert parse_workspace({"status": {"status": previous}}).status.status == previous


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (5, "5"),
        (True, "true"),
        ({"phase": "Ready"}, '{"phase": "Ready"}'),
        (["Ready"], '["Ready"]'),
    ],
)
def test_non_string_previous_state_is_representable(value: object, kept: str) -> None:
    assert parse_workspace({"status": {"status": value}}).status.status == kept


@pytest.mark.parametrize("stamp", ["yesterday", "", "2026-13-45T00:00:00Z", 12])
def test_unreadable_timestamps_degrade_to_unknown(stamp: object) -> None:
    raw = {
        "metadata": {"creationTimestamp": stamp},
        "status": {"conditions": [{"type": "X", "lastTransitionTime": stamp}]},
    }
    ws = parse_workspace(raw)
    assert ws.metadata.creation_timestamp is None
    assert ws.status.conditions[0].last_transition_time is None


def test_any_deletion_timestamp_means_deleting() -> None:
    # Only presence matters; the API server sets it, nobody reads the time.
    ws = parse_workspace({"metadata": {"deletionTimestamp": "not a time"}})
    assert ws.metadata.is_deleting


@pytest.mark.parametrize("value", [{}, {"preset": {"name": "x"}}, [], "odd", 0, False])
def test_any_non_null_workload_value_counts_as_set(value: object) -> None:
    assert parse_workspace({"inference": value}).has_inference


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ({"metadata": "w"}, "metadata"),
        ({"metadata": {"generation": "two"}}, "metadata.generation"),
        ({"metadata": {"name": 5}}, "metadata.name"),
        ({"resource": []}, "resource"),
        ({"status": "Ready"}, "status"),
        ({"status": {"conditions": {"type": "X"}}}, "status.conditions"),
        ({"status": {"conditions": ["ResourceReady"]}}, "status.conditions.0"),
        ({"status": {"conditions": [{"status": "True"}]}}, "status.conditions.0.type"),
        ({"status": {"conditions": [{"type": ""}]}}, "status.conditions.0.type"),
        ({"status": {"conditions": [{"type": 7}]}}, "status.conditions.0.type"),
        ({"status": {"conditions": [{"type": "X", "status": True}]}}, "status.conditions.0.status"),
        ({"status": {"conditions": [{"type": "X", "reason": 1}]}}, "status.conditions.0.reason"),
    ],
)
def test_unreadable_objects_raise_a_clear_error(raw: dict[str, Any], location: str) -> None:
    raw.setdefault("metadata", {"name": "w", "namespace": "ns"})
    with pytest.raises(WorkspaceParseError) as caught:
        parse_workspace(raw)
    assert f"{location}: " in str(caught.value)
    if isinstance(raw["metadata"], dict) and isinstance(raw["metadata"].get("name"), str):
        assert "Workspace ns/w" in str(caught.value)


@pytest.mark.parametrize("raw", [[], "Workspace", None, 3])
def test_non_object_raises(raw: Any) -> None:
    with pytest.raises(WorkspaceParseError, match="expected a JSON object"):
        parse_workspace(raw)


def test_error_lists_a_bounded_number_of_problems() -> None:
    raw = {"status": {"conditions": [{"status": "True"}] * 50}}
    with pytest.raises(WorkspaceParseError) as caught:
        parse_workspace(raw)
    message = str(caught.value)
    assert message.count("Field required") == 5
    assert message.endswith("(and 45 more)")


# --- KAITO's examples ------------------------------------------------------------------


def example_workspaces() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(FIXTURES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "Workspace"
    ]


EXAMPLES = example_workspaces()


def test_every_example_file_holds_a_workspace() -> None:
    files = {p.name for p in FIXTURES.glob("*.yaml")} - {"kaito.sh_workspaces.yaml"}
    assert {name for name, _ in EXAMPLES} == files


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_examples_parse_and_start_pending(name: str, doc: dict[str, Any]) -> None:
    ws = parse_workspace(doc)
    expected = Workload.TUNING if "tuning" in name else Workload.INFERENCE
    decision = next_state(ws)
    assert isinstance(decision, Decision)
    assert decision.workload is expected
    assert decision.state is WorkspaceState.PENDING
    assert decision.previous is None
    assert not decision.previous_was_illegal


# --- project -----------------------------------------------------------------------------


def test_project_keeps_what_the_controller_reads_and_nothing_else() -> None:
    raw = kaito_workspace()
    raw["status"]["conditions"][0]["severity"] = "Warning"
    projected = project(raw)
    assert projected == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "workspace-phi-4-mini",
            "namespace": "default",
            "uid": "3f1c2a9e-0000-4000-8000-000000000001",
            "generation": 2,
            "resourceVersion": "48213",
            "creationTimestamp": "2026-01-01T10:00:00Z",
            "ownerReferences": raw["metadata"]["ownerReferences"],
            "labels": {"team": "ml"},
        },
        "inference": {},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
        "status": {
            "status": "Ready",
            "conditions": [
                {k: v for k, v in raw["status"]["conditions"][0].items() if k != "severity"},
                raw["status"]["conditions"][1],
            ],
            # KAITO's own summary: its presence says which KAITO writes the conditions.
            "state": "Ready",
        },
    }


def test_project_keeps_deletion_timestamp_and_tuning_marker() -> None:
    raw = {
        "metadata": {"name": "w", "deletionTimestamp": "2026-01-02T00:00:00Z"},
        "tuning": {"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora"},
        "inference": None,
    }
    assert project(raw) == {
        "metadata": {"name": "w", "deletionTimestamp": "2026-01-02T00:00:00Z"},
        "tuning": {},
    }


def test_project_does_not_modify_its_input() -> None:
    raw = kaito_workspace()
    before = copy.deepcopy(raw)
    project(raw)
    assert raw == before


# Arbitrary JSON, and Workspace-shaped JSON where each part may be right or wrong.
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
TIMESTAMPS = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+02:00", "soon"])
CONDITION_TYPES = st.sampled_from(
    [
        "ResourceReady",
        "InferenceReady",
        "JobStarted",
        "WorkspaceSucceeded",
        "WorkspaceDeleting",
        "BenchmarkCompleted",
        "NodesReady",
        "FutureCondition",
    ]
)
CONDITIONS = st.fixed_dictionaries(
    {"type": CONDITION_TYPES},
    optional={
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.sampled_from(["workspaceFailed", "WorkspaceTuningJobStatusFailed", "R"]),
        "message": st.text(max_size=20),
        "observedGeneration": st.integers(0, 9),
        "lastTransitionTime": TIMESTAMPS,
        "junk": JSON,
    },
)
METADATA = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=5),
        "namespace": st.text(max_size=5),
        "uid": st.text(max_size=5),
        "generation": st.integers(1, 9),
        "resourceVersion": st.text(max_size=5),
        "creationTimestamp": TIMESTAMPS,
        "deletionTimestamp": st.none() | TIMESTAMPS,
        "labels": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
        "ownerReferences": st.lists(JSON, max_size=2),
        "annotations": st.dictionaries(st.text(max_size=4), st.text(max_size=20), max_size=2),
        "managedFields": st.lists(JSON, max_size=2),
    },
)
STATUS = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from([s.value for s in WorkspaceState]) | JSON,
        "conditions": st.lists(CONDITIONS | JSON, max_size=6) | JSON,
        "state": st.text(max_size=6),
        "targetNodeCount": st.integers(0, 3),
        "workerNodes": st.lists(st.text(max_size=4), max_size=2),
    },
)
WORKSPACE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["kaito.sh/v1beta1", "kaito.sh/v1alpha1"]),
        "kind": st.just("Workspace"),
        "metadata": METADATA | JSON,
        "resource": st.fixed_dictionaries({}, optional={"instanceType": st.text(max_size=6)})
        | JSON,
        "inference": st.none() | st.just({"preset": {"name": "phi-4-mini-instruct"}}) | JSON,
        "tuning": st.none() | st.just({"method": "qlora", "input": {}, "output": {}}) | JSON,
        "status": STATUS | JSON,
        "extra": JSON,
    },
)


def parse_or_error(obj: dict[str, Any]) -> Workspace | str:
    try:
        return parse_workspace(obj)
    except WorkspaceParseError as err:
        return f"error: {err}"


@settings(max_examples=400, deadline=None)
@given(WORKSPACE_LIKE)
def test_projection_reads_exactly_like_the_original(obj: dict[str, Any]) -> None:
    original = parse_or_error(obj)
    projected = parse_or_error(project(obj))
    assert projected == original
    if isinstance(original, Workspace):
        assert isinstance(projected, Workspace)
        assert next_state(projected) == next_state(original)


@settings(max_examples=200, deadline=None)
@given(WORKSPACE_LIKE)
def test_project_is_idempotent(obj: dict[str, Any]) -> None:
    once = project(obj)
    assert project(once) == once


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=6))
def test_project_and_parse_never_fail_unexpectedly(obj: dict[str, Any]) -> None:
    project(obj)
    parse_or_error(obj)


# Conditions the API server accepts under KAITO's CRD, plus what older or looser CRDs
# let through: missing reason, message, observedGeneration or lastTransitionTime.
SCHEMA_CONDITIONS = st.fixed_dictionaries(
    {
        "type": st.from_regex(
            r"([a-z0-9]+(\.[a-z0-9]+)*/)?[A-Za-z][A-Za-z0-9_.-]{0,20}[A-Za-z0-9]", fullmatch=True
        ),
        "status": st.sampled_from(["True", "False", "Unknown"]),
    },
    optional={
        "reason": st.from_regex(r"[A-Za-z]([A-Za-z0-9_,:]{0,10}[A-Za-z0-9_])?", fullmatch=True),
        "message": st.text(max_size=200),
        "observedGeneration": st.integers(0, 2**63 - 1),
        "lastTransitionTime": st.datetimes(timezones=st.just(UTC)).map(
            lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    conditions=st.lists(SCHEMA_CONDITIONS, max_size=12),
    previous=st.none() | st.text(max_size=12),
    workload=st.sampled_from(["inference", "tuning"]),
)
def test_anything_the_api_server_accepts_parses(
    conditions: list[dict[str, Any]], previous: str | None, workload: str
) -> None:
    raw: dict[str, Any] = {
        "metadata": {"name": "w", "namespace": "ns", "generation": 3},
        workload: {},
        "status": {"conditions": conditions},
    }
    if previous is not None:
        raw["status"]["status"] = previous
    ws = parse_workspace(raw)
    assert len(ws.status.conditions) == len(conditions)
    assert isinstance(next_state(ws), Decision)
