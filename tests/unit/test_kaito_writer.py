"""The KAITO status writer (e2e/kaito.py): apimachinery's condition rules, KAITO's typed
round trip, and client-go's DefaultRetry, as a specification."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.kaito import (
    KAITO_WORKSPACE,
    RETRY_DURATION,
    RETRY_STEPS,
    KaitoVersion,
    KaitoWriter,
    apply_conditions,
    go_time,
    remove_status_condition,
    set_status_condition,
    status_schema,
    typed_status,
)
from reconciler.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Invalid,
    NotFound,
    ServerError,
    TooManyRequests,
    TransportError,
)
from reconciler.resource import ResourceType

Obj = dict[str, Any]
NOW = "2026-03-01T12:00:00Z"
EARLIER = "2026-01-01T00:00:00Z"
GIVEN = "2030-01-01T00:00:00Z"
V0_12 = KaitoVersion.V0_12.crd()
V0_8_1 = KaitoVersion.V0_8_1.crd()
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def cond(type_: str, status: str, reason: str = "R", message: str = "m", **extra: Any) -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message, **extra}


# -- set_status_condition ---------------------------------------------------------------------
TYPES = st.sampled_from(["ResourceReady", "InferenceReady", "JobStarted", "FutureGate"])
STATUSES = st.sampled_from(["True", "False", "Unknown"])
TIMES = st.sampled_from([EARLIER, "2026-02-01T00:00:00Z"])


@st.composite
def stored_condition(draw: st.DrawFn) -> Obj:
    c = cond(
        draw(TYPES),
        draw(STATUSES),
        draw(st.sampled_from(["A", "B"])),
        draw(st.sampled_from(["x", "y"])),
        lastTransitionTime=draw(TIMES),
    )
    if draw(st.booleans()):
        c["observedGeneration"] = draw(st.integers(0, 3))
    return c


@st.composite
def new_condition(draw: st.DrawFn) -> Obj:
    c = cond(
        draw(TYPES),
        draw(STATUSES),
        draw(st.sampled_from(["A", "C"])),
        draw(st.sampled_from(["x", "z"])),
    )
    if draw(st.booleans()):
        c["lastTransitionTime"] = GIVEN
    if draw(st.booleans()):
        c["observedGeneration"] = draw(st.integers(0, 3))
    return c


CONDITION_LISTS = st.lists(stored_condition(), max_size=6)


@PROPERTY_SETTINGS
@given(CONDITION_LISTS, new_condition())
def test_set_changes_only_the_first_entry_of_the_type(conditions: list[Obj], new: Obj) -> None:
    before = copy.deepcopy(conditions)
    out = set_status_condition(conditions, new, NOW)
    assert conditions == before, "the input list is not modified"
    index = next((i for i, c in enumerate(conditions) if c["type"] == new["type"]), None)
    if index is None:
        assert out[:-1] == conditions
        expected = {**new, "lastTransitionTime": new.get("lastTransitionTime", NOW)}
        if not new.get("observedGeneration"):
            expected.pop("observedGeneration", None)
        assert out[-1] == expected
        return
    assert len(out) == len(conditions)
    assert [c for i, c in enumerate(out) if i != index] == [
        c for i, c in enumerate(conditions) if i != index
    ]
    old, changed = conditions[index], out[index]
    assert changed["type"] == old["type"]
    assert changed["status"] == new["status"]
    assert changed["reason"] == new["reason"]
    assert changed["message"] == new["message"]
    assert changed.get("observedGeneration", 0) == new.get("observedGeneration", 0)
    if old["status"] == new["status"]:
        assert changed["lastTransitionTime"] == old["lastTransitionTime"]
    else:
        assert changed["lastTransitionTime"] == new.get("lastTransitionTime", NOW)


@PROPERTY_SETTINGS
@given(CONDITION_LISTS, new_condition())
def test_setting_the_same_condition_again_changes_nothing(conditions: list[Obj], new: Obj) -> None:
    once = set_status_condition(conditions, new, NOW)
    assert set_status_condition(once, new, "2027-01-01T00:00:00Z") == once


def test_set_examples() -> None:
    stored = [
        cond("FutureGate", "True", lastTransitionTime=EARLIER),
        cond("InferenceReady", "True", lastTransitionTime=EARLIER, observedGeneration=1),
    ]
    # Same status: lastTransitionTime stays even when a new one is given.
    same = set_status_condition(
        stored, cond("InferenceReady", "True", "Other", "new", lastTransitionTime=GIVEN), NOW
    )
    assert same[1]["lastTransitionTime"] == EARLIER
    assert same[1]["reason"] == "Other"
    assert "observedGeneration" not in same[1]  # overwritten with Go's zero value
    # A status change moves it to now, or to the given time.
    assert set_status_condition(stored, cond("InferenceReady", "False"), NOW)[1][
        "lastTransitionTime"
    ] == (NOW)
    given_ = cond("InferenceReady", "False", lastTransitionTime=GIVEN)
    assert set_status_condition(stored, given_, NOW)[1]["lastTransitionTime"] == GIVEN
    # A type not yet there is appended; the unknown type before it keeps its place.
    added = set_status_condition(stored, cond("ResourceReady", "True"), NOW)
    assert [c["type"] for c in added] == ["FutureGate", "InferenceReady", "ResourceReady"]
    assert added[2]["lastTransitionTime"] == NOW
    assert added[0] == stored[0]


def test_set_updates_the_first_of_duplicate_entries_only() -> None:
    stored = [cond("InferenceReady", "True"), cond("InferenceReady", "True", "Second")]
    out = set_status_condition(stored, cond("InferenceReady", "False", "New"), NOW)
    assert [(c["status"], c["reason"]) for c in out] == [("False", "New"), ("True", "Second")]


# -- remove_status_condition and apply_conditions -------------------------------------------
@PROPERTY_SETTINGS
@given(CONDITION_LISTS, TYPES)
def test_remove_drops_every_entry_of_the_type(conditions: list[Obj], type_: str) -> None:
    out = remove_status_condition(conditions, type_)
    assert out == [c for c in conditions if c["type"] != type_]


def test_apply_sets_observed_generation_then_removes() -> None:
    stored = [cond("NodeClaimReady", "False", lastTransitionTime=EARLIER)]
    out = apply_conditions(
        stored,
        [cond("ResourceReady", "True"), cond("NodeClaimReady", "True")],
        generation=7,
        now=NOW,
        remove=["NodeClaimReady"],
    )
    assert out == [
        {**cond("ResourceReady", "True"), "observedGeneration": 7, "lastTransitionTime": NOW}
    ]


# -- typed_status -----------------------------------------------------------------------------
def test_the_schemas_name_the_fields_of_each_release() -> None:
    assert set(status_schema(V0_12, "v1beta1")["properties"]) == {
        "conditions",
        "performance",
        "state",
        "targetNodeCount",
        "workerNodes",
    }
    assert set(status_schema(V0_8_1, "v1beta1")["properties"]) == {
        "conditions",
        "targetNodeCount",
        "workerNodes",
    }
    assert KAITO_WORKSPACE.version == "v1beta1"
    with pytest.raises(ValueError, match="v9"):
        status_schema(V0_12, "v9")


def stored_status() -> Obj:
    return {
        "status": "Ready",
        "state": "Ready",
        "workerNodes": ["n1"],
        "targetNodeCount": 1,
        "somethingNew": {"a": 1},
        "performance": {
            "metrics": {"ttft": {"value": "1", "description": "d", "extra": "x"}},
            "extra": True,
        },
        "conditions": [
            {
                "type": "InferenceReady",
                "status": "True",
                "reason": "Ok",
                "message": "up",
                "observedGeneration": 0,
                "lastTransitionTime": "2026-01-01T02:00:00.5+02:00",
                "severity": "Info",
            }
        ],
    }


def test_v0_12_keeps_state_and_drops_status_and_unknown_fields() -> None:
    out = typed_status(stored_status(), V0_12)
    assert out == {
        "state": "Ready",
        "workerNodes": ["n1"],
        "targetNodeCount": 1,
        "performance": {"metrics": {"ttft": {"value": "1", "description": "d"}}},
        "conditions": [
            {
                "type": "InferenceReady",
                "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "reason": "Ok",
                "message": "up",
            }
        ],
    }


def test_v0_8_1_also_drops_state() -> None:
    out = typed_status(stored_status(), V0_8_1)
    assert set(out) == {"workerNodes", "targetNodeCount", "conditions"}


def test_a_condition_is_encoded_as_metav1_condition() -> None:
    bare = {"type": "X", "status": "True", "lastTransitionTime": "yesterday"}
    (out,) = typed_status({"conditions": [bare]}, V0_12)["conditions"]
    # reason and message are always encoded; a time Go could not parse goes on as is.
    assert out == {
        "type": "X",
        "status": "True",
        "lastTransitionTime": "yesterday",
        "reason": "",
        "message": "",
    }
    assert "conditions" not in typed_status({"conditions": []}, V0_12)


STATUS_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@PROPERTY_SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["status", "state", "workerNodes", "performance", "other"]),
        STATUS_VALUES,
    ),
    CONDITION_LISTS,
    st.sampled_from(list(KaitoVersion)),
)
def test_typed_status_is_a_projection(
    status: Obj, conditions: list[Obj], version: KaitoVersion
) -> None:
    status = {**status, "conditions": conditions}
    out = typed_status(status, version.crd())
    assert "status" not in out
    assert "other" not in out
    assert ("state" in out) == ("state" in status and version is KaitoVersion.V0_12)
    assert typed_status(out, version.crd()) == out
    for c in out.get("conditions", []):
        assert set(c) <= {
            "type",
            "status",
            "observedGeneration",
            "lastTransitionTime",
            "reason",
            "message",
        }
    assert [c["type"] for c in out.get("conditions", [])] == [c["type"] for c in conditions]


def test_go_time_is_utc_whole_seconds() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime(2026, 1, 1, 2, 0, 0, 900_000, tzinfo=timezone(timedelta(hours=2)))
    assert go_time(moment) == "2026-01-01T00:00:00Z"
    assert go_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


# -- the writer against a fake API server -----------------------------------------------------
class FakeServer:
    """The API server's part in a status write: GET, and PUT of /status that refuses a
    stale resourceVersion with 409 and keeps everything but status as stored. ``fail``
    holds errors to raise, in order, instead of answering (key "get" or "put")."""

    def __init__(self, status: Obj | None = None) -> None:
        self.obj: Obj = {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "w", "namespace": "ns", "generation": 3, "resourceVersion": "1"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
            "status": status or {},
        }
        self.fail: dict[str, list[Exception]] = {"get": [], "put": []}
        self.puts: list[Obj] = []

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        assert (rt, name, namespace) == (KAITO_WORKSPACE, "w", "ns")
        if self.fail["get"]:
            raise self.fail["get"].pop(0)
        return copy.deepcopy(self.obj)

    async def replace(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        assert (rt, subresource) == (KAITO_WORKSPACE, "status")
        if self.fail["put"]:
            raise self.fail["put"].pop(0)
        self.puts.append(copy.deepcopy(obj))
        meta = self.obj["metadata"]
        if obj["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.obj["status"] = copy.deepcopy(obj["status"])
        return copy.deepcopy(self.obj)

    def bump(self) -> None:
        """Someone else wrote since our GET."""
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)


def conflict() -> Conflict:
    return Conflict(409, "Conflict", "the object has been modified")


async def test_a_write_drops_what_kaito_does_not_know_and_sets_observed_generation() -> None:
    server = FakeServer(
        {
            "status": "Ready",
            "state": "Ready",
            "conditions": [cond("Foreign", "True", lastTransitionTime=EARLIER)],
        }
    )
    writer = KaitoWriter(server)
    written = await writer.set_conditions("ns", "w", cond("InferenceReady", "False"))
    assert written["status"]["state"] == "Ready"
    assert "status" not in written["status"]
    foreign, new = written["status"]["conditions"]
    assert foreign == {**cond("Foreign", "True"), "lastTransitionTime": EARLIER}
    assert new["observedGeneration"] == 3
    assert server.puts[0]["metadata"]["resourceVersion"] == "1"
    assert writer.stats.writes == 1


async def test_nothing_is_written_when_the_typed_status_does_not_change() -> None:
    server = FakeServer({"status": "Ready"})
    writer = KaitoWriter(server)
    await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    again = await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    assert len(server.puts) == 1
    assert writer.stats.unchanged == 1
    assert again == server.obj


async def test_replace_leaves_exactly_the_given_types_and_others_conditions() -> None:
    stored = [
        cond("NodeClaimReady", "False"),
        cond("InferenceReady", "True"),
        cond("example.com/Theirs", "True"),
        cond("X", "True"),
    ]
    server = FakeServer({"conditions": [{**c, "lastTransitionTime": EARLIER} for c in stored]})
    writer = KaitoWriter(server)
    out = await writer.replace_conditions(
        "ns", "w", cond("X", "True"), cond("InferenceReady", "True")
    )
    assert [c["type"] for c in out["status"]["conditions"]] == [
        "InferenceReady",
        "example.com/Theirs",
        "X",
    ]
    assert {c["lastTransitionTime"] for c in out["status"]["conditions"]} == {EARLIER}
    emptied = await writer.replace_conditions("ns", "w")
    assert [c["type"] for c in emptied["status"]["conditions"]] == ["example.com/Theirs"]


async def test_v0_8_1_writer_drops_state() -> None:
    server = FakeServer({"state": "Ready"})
    written = await KaitoWriter(server, version=KaitoVersion.V0_8_1).set_conditions(
        "ns", "w", cond("InferenceReady", "True")
    )
    assert "state" not in written["status"]


async def test_conflicts_are_retried_with_a_fresh_get() -> None:
    server = FakeServer()
    writer = KaitoWriter(server)
    server.fail["put"] = [conflict(), conflict(), conflict()]
    started = time.monotonic()
    await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    assert time.monotonic() - started >= 3 * RETRY_DURATION
    assert (writer.stats.gets, writer.stats.conflicts, writer.stats.retries) == (4, 3, 3)
    assert (writer.stats.writes, writer.stats.requeues) == (1, 0)


async def test_a_write_between_get_and_put_is_kept() -> None:
    server = FakeServer()
    writer = KaitoWriter(server)
    get = server.get
    calls = 0

    async def racing_get(rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        nonlocal calls
        calls += 1
        read = await get(rt, name, namespace)
        if calls == 1:  # another writer lands after our first GET
            server.obj["status"] = {
                "conditions": [cond("Other", "True", lastTransitionTime=EARLIER)]
            }
            server.bump()
        return read

    server.get = racing_get  # type: ignore[method-assign]
    out = await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    assert [c["type"] for c in out["status"]["conditions"]] == ["Other", "InferenceReady"]
    assert writer.stats.conflicts == 1


async def test_default_retry_gives_up_after_five_attempts_then_requeues() -> None:
    server = FakeServer()
    writer = KaitoWriter(server)
    server.fail["put"] = [conflict() for _ in range(RETRY_STEPS)]
    await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    # One round: 5 attempts, 4 sleeps; then a requeue and a sixth attempt that wins.
    assert (writer.stats.conflicts, writer.stats.retries, writer.stats.requeues) == (5, 4, 1)
    assert writer.stats.gets == 6


async def test_requeues_stop_at_the_deadline_with_the_last_error() -> None:
    server = FakeServer()
    writer = KaitoWriter(server, deadline=0.3, max_requeue_delay=0.05)
    server.fail["put"] = [conflict() for _ in range(10_000)]
    started = time.monotonic()
    with pytest.raises(Conflict):
        await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    assert time.monotonic() - started < 2.0
    assert writer.stats.requeues >= 2
    assert writer.stats.writes == 0


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ServerError(503, "ServiceUnavailable", ""), True),
        (ServerError(500, "ServerTimeout", ""), True),
        (TooManyRequests(429, "TooManyRequests", ""), True),
        (AlreadyExists(409, "AlreadyExists", ""), False),
        (Invalid(422, "Invalid", "bad"), False),
        (NotFound(404, "NotFound", ""), False),
    ],
)
async def test_which_errors_default_retry_retries(error: ApiError, retried: bool) -> None:
    server = FakeServer()
    writer = KaitoWriter(server, deadline=0.0)
    server.fail["put"] = [error]
    if retried:
        await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
        assert writer.stats.retries == 1
    else:
        with pytest.raises(type(error)):
            await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
        assert (writer.stats.gets, writer.stats.retries, writer.stats.requeues) == (1, 0, 0)


async def test_no_answer_is_requeued_not_retried() -> None:
    server = FakeServer()
    writer = KaitoWriter(server)
    server.fail["get"] = [TransportError("connection refused")]
    await writer.set_conditions("ns", "w", cond("InferenceReady", "True"))
    assert (writer.stats.retries, writer.stats.requeues, writer.stats.writes) == (0, 1, 1)
