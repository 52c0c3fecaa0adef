"""The KAITO status writer (e2e/kaito.py) against a real API server with our CRD: what a
KAITO write does to fields KAITO does not know, to foreign conditions, and to a write
that lands between its GET and its PUT."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import create_workspace
from e2e.kaito import KAITO_WORKSPACE, KaitoVersion, KaitoWriter
from reconciler.client import Client
from reconciler.errors import Invalid
from reconciler.resource import ResourceType

Obj = dict[str, Any]
EARLIER = "2026-01-01T00:00:00Z"


def cond(type_: str, status: str, reason: str = "Because", message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def stored(type_: str, status: str, reason: str = "Before") -> Obj:
    """A condition as someone else left it, with an old transition time."""
    return {**cond(type_, status, reason, "as stored"), "lastTransitionTime": EARLIER}


def by_type(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def seconds_ago(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


@pytest.fixture
async def other_client(kubeconfig: Path) -> AsyncIterator[Client]:
    client = await Client.from_config(str(kubeconfig))
    yield client
    await client.close()


async def workspace_with_status(k8s: Client, ns: str, status: Obj) -> Obj:
    await create_workspace(k8s, ns, "w")
    return await k8s.patch_status(KAITO_WORKSPACE, "w", {"status": status}, namespace=ns)


async def test_a_kaito_write_erases_status_status_and_keeps_foreign_conditions(
    k8s: Client, namespace: str
) -> None:
    await workspace_with_status(
        k8s,
        namespace,
        {
            "status": "Ready",
            "state": "Ready",
            "conditions": [stored("ForeignCheck", "True"), stored("InferenceReady", "True")],
        },
    )
    # A spec change, so that observedGeneration must come from the object.
    bumped = await k8s.patch(KAITO_WORKSPACE, "w", {"resource": {"count": 2}}, namespace=namespace)
    generation = bumped["metadata"]["generation"]
    assert generation == 2
    writer = KaitoWriter(k8s)

    written = await writer.set_conditions(
        namespace,
        "w",
        cond("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        cond("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    )
    assert written == await k8s.get(KAITO_WORKSPACE, "w", namespace)
    assert "status" not in written["status"]
    assert written["status"]["state"] == "Ready"
    assert [c["type"] for c in written["status"]["conditions"]] == [
        "ForeignCheck",
        "InferenceReady",
        "ResourceReady",
    ]
    conditions = by_type(written)
    assert conditions["ForeignCheck"] == stored("ForeignCheck", "True")
    inference = conditions["InferenceReady"]
    assert inference["lastTransitionTime"] == EARLIER  # same status: no transition
    assert inference["reason"] == "WorkspaceInferenceStatusSuccess"
    assert inference["observedGeneration"] == generation
    assert conditions["ResourceReady"]["observedGeneration"] == generation
    assert seconds_ago(conditions["ResourceReady"]["lastTransitionTime"]) < 60

    flipped = await writer.set_conditions(
        namespace, "w", cond("InferenceReady", "False", "ContainerCrashLoopBackOff")
    )
    moved = by_type(flipped)["InferenceReady"]["lastTransitionTime"]
    assert moved != EARLIER
    assert seconds_ago(moved) < 60
    assert by_type(flipped)["ForeignCheck"] == stored("ForeignCheck", "True")
    assert writer.stats.writes == 2
    assert writer.stats.conflicts == 0


async def test_an_unchanged_status_is_not_written_and_status_status_survives(
    k8s: Client, namespace: str
) -> None:
    condition = {**stored("InferenceReady", "True"), "observedGeneration": 1}
    before = await workspace_with_status(
        k8s, namespace, {"status": "Ready", "conditions": [condition]}
    )
    writer = KaitoWriter(k8s)
    # What KAITO computes equals what it read: no PUT, so nothing is erased.
    same = cond("InferenceReady", "True", "Before", "as stored")
    out = await writer.set_conditions(namespace, "w", same)
    assert out["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert out["status"]["status"] == "Ready"
    assert (writer.stats.writes, writer.stats.unchanged) == (0, 1)


async def test_replacing_kaitos_conditions_keeps_other_controllers_conditions(
    k8s: Client, namespace: str
) -> None:
    ours = stored("workspace-status.kaito.sh/State", "True", "Ready")
    await workspace_with_status(
        k8s,
        namespace,
        {"conditions": [stored("NodeClaimReady", "False"), ours, stored("ResourceReady", "True")]},
    )
    writer = KaitoWriter(k8s)
    out = await writer.replace_conditions(namespace, "w", cond("ResourceReady", "True"))
    assert [c["type"] for c in out["status"]["conditions"]] == [
        "workspace-status.kaito.sh/State",
        "ResourceReady",
    ]
    assert by_type(out)["workspace-status.kaito.sh/State"] == ours
    emptied = await writer.replace_conditions(namespace, "w")
    assert emptied["status"]["conditions"] == [ours]


async def test_a_write_between_get_and_put_conflicts_and_both_writes_survive(
    k8s: Client, other_client: Client, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await workspace_with_status(k8s, namespace, {"conditions": [stored("NodesReady", "True")]})
    other = KaitoWriter(other_client)
    read = k8s.get
    gets: list[str] = []

    async def get_then_someone_writes(rt: ResourceType, name: str, ns: str | None = None) -> Obj:
        obj = await read(rt, name, ns)
        gets.append(obj["metadata"]["resourceVersion"])
        if len(gets) == 1:
            await other.set_conditions(namespace, "w", cond("ResourceReady", "False"))
        return obj

    monkeypatch.setattr(k8s, "get", get_then_someone_writes)
    writer = KaitoWriter(k8s)
    written = await writer.set_conditions(namespace, "w", cond("InferenceReady", "True"))

    assert writer.stats.conflicts == 1
    assert writer.stats.gets == 2
    assert gets[0] != gets[1]
    assert [c["type"] for c in written["status"]["conditions"]] == [
        "NodesReady",
        "ResourceReady",
        "InferenceReady",
    ]
    assert by_type(written)["ResourceReady"]["status"] == "False"
    assert other.stats.writes == 1


async def test_imitating_v0_8_1_drops_state_and_v0_12_keeps_it(k8s: Client, namespace: str) -> None:
    await workspace_with_status(k8s, namespace, {"state": "Ready", "status": "Ready"})
    kept = await KaitoWriter(k8s).set_conditions(namespace, "w", cond("InferenceReady", "True"))
    assert kept["status"]["state"] == "Ready"
    assert "status" not in kept["status"]
    old = KaitoWriter(k8s, version=KaitoVersion.V0_8_1)
    dropped = await old.set_conditions(namespace, "w", cond("InferenceReady", "False"))
    assert "state" not in dropped["status"]
    assert old.version is KaitoVersion.V0_8_1


async def test_the_api_servers_refusal_is_raised_at_once(k8s: Client, namespace: str) -> None:
    await workspace_with_status(k8s, namespace, {})
    writer = KaitoWriter(k8s)
    with pytest.raises(Invalid) as info:
        await writer.set_conditions(namespace, "w", cond("InferenceReady", "Maybe"))
    assert "Maybe" in info.value.message
    assert (writer.stats.gets, writer.stats.retries, writer.stats.requeues) == (1, 0, 0)
