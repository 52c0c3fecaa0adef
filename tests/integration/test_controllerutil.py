"""controllerutil against a real API server: finalizers that survive concurrent writers,
what create_or_update / create_or_patch report, and owner references as stored.

The local control plane runs no kube-controller-manager, so no garbage collector acts on
owner references: these tests check the fields it would read."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from e2e.harness import INFERENCE_EXAMPLE, example
from reconciler.client import Client
from reconciler.controllerutil import (
    AlreadyOwnedError,
    OperationResult,
    add_finalizer,
    controller_of,
    create_or_patch,
    create_or_update,
    ensure_finalizer,
    ensure_finalizer_removed,
    finalize,
    set_controller_reference,
    set_owner_reference,
)
from reconciler.errors import NotFound
from reconciler.handler import enqueue_for_owner
from reconciler.request import Request
from reconciler.resource import CONFIG_MAP, NAMESPACE, ResourceType

Obj = dict[str, Any]
DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments")
WORKSPACE = ResourceType("kaito.sh", "v1beta1", "Workspace", "workspaces")
OURS = "example.com/cleanup"
THEIRS = "other.example.com/keep"


def meta(name: str, ns: str, **extra: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, **extra}}


async def cm(k8s: Client, ns: str, name: str, **extra: Any) -> Obj:
    return await k8s.create(CONFIG_MAP, {**meta(name, ns, **extra), "data": {"k": "v"}})


@pytest.fixture
def requests(k8s: Client) -> Iterator[list[tuple[str, int]]]:
    """(method, status) of every request ``k8s`` sends from now on."""
    seen: list[tuple[str, int]] = []
    k8s.observer = lambda method, code, _seconds: seen.append((method, code))
    yield seen
    k8s.observer = None


def interfere_after_first_read(
    k8s: Client, monkeypatch: pytest.MonkeyPatch, write: Callable[[], Awaitable[object]]
) -> None:
    """Make ``write`` land between the helper's first read and its write: a forced 409."""
    real_get = k8s.get
    done = False

    async def get(rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        nonlocal done
        try:
            return await real_get(rt, name, namespace)
        finally:  # also after a 404
            if not done:
                done = True
                await write()

    monkeypatch.setattr(k8s, "get", get)


# -- finalizers -----------------------------------------------------------------------
async def test_a_finalizer_added_against_a_stale_read_keeps_the_other_writers(
    k8s: Client, namespace: str, requests: list[tuple[str, int]]
) -> None:
    stale = await cm(k8s, namespace, "a")
    # Another controller adds its finalizer after our read (our cache is behind).
    await k8s.patch(CONFIG_MAP, "a", {"metadata": {"finalizers": [THEIRS]}}, namespace=namespace)
    requests.clear()

    out = await ensure_finalizer(k8s, CONFIG_MAP, stale, OURS)

    assert out["metadata"]["finalizers"] == [THEIRS, OURS]
    stored = await k8s.get(CONFIG_MAP, "a", namespace)
    assert stored["metadata"]["finalizers"] == [THEIRS, OURS]
    # The first patch carried the stale version and lost; the retry read again.
    assert requests[:3] == [("PATCH", 409), ("GET", 200), ("PATCH", 200)]
    assert "finalizers" not in stale["metadata"]  # the caller's (cache's) object untouched


async def test_concurrent_finalizer_writers_from_one_stale_read_all_land(
    k8s: Client, namespace: str
) -> None:
    stale = await cm(k8s, namespace, "a")
    names = [f"w{i}.example.com/f" for i in range(4)]
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(ensure_finalizer, k8s, CONFIG_MAP, stale, name)
    stored = await k8s.get(CONFIG_MAP, "a", namespace)
    assert sorted(stored["metadata"]["finalizers"]) == names


async def test_removing_a_finalizer_against_a_stale_read_keeps_the_other_writers(
    k8s: Client, namespace: str, requests: list[tuple[str, int]]
) -> None:
    stale = await cm(k8s, namespace, "a", finalizers=[OURS])
    await k8s.patch(
        CONFIG_MAP, "a", {"metadata": {"finalizers": [OURS, THEIRS]}}, namespace=namespace
    )
    requests.clear()

    out = await ensure_finalizer_removed(k8s, CONFIG_MAP, stale, OURS)

    assert out is not None
    assert out["metadata"]["finalizers"] == [THEIRS]
    assert ("PATCH", 409) in requests
    await k8s.patch(CONFIG_MAP, "a", {"metadata": {"finalizers": None}}, namespace=namespace)


async def test_finalize_removes_the_finalizer_only_after_cleanup_succeeds(
    k8s: Client, namespace: str
) -> None:
    await cm(k8s, namespace, "a", finalizers=[OURS])
    await k8s.delete(CONFIG_MAP, "a", namespace)
    deleting = await k8s.get(CONFIG_MAP, "a", namespace)
    assert deleting["metadata"].get("deletionTimestamp")
    cleaned: list[str] = []

    async def failing(obj: Obj) -> None:
        raise RuntimeError("the external resource is still there")

    with pytest.raises(RuntimeError):
        await finalize(k8s, CONFIG_MAP, deleting, OURS, failing)
    kept = await k8s.get(CONFIG_MAP, "a", namespace)
    assert kept["metadata"]["finalizers"] == [OURS]

    # A finalizer can no longer be added to it; ensure_finalizer says so without a 422.
    assert (
        "other"
        not in (await ensure_finalizer(k8s, CONFIG_MAP, kept, "other"))["metadata"]["finalizers"]
    )

    async def cleanup(obj: Obj) -> None:
        cleaned.append(obj["metadata"]["name"])

    assert await finalize(k8s, CONFIG_MAP, kept, OURS, cleanup)
    assert cleaned == ["a"]
    # Its last finalizer gone, the object being deleted is gone at once.
    with pytest.raises(NotFound):
        await k8s.get(CONFIG_MAP, "a", namespace)
    # Again on the same (now stale) object: cleanup runs again, the removal finds nothing.
    assert await finalize(k8s, CONFIG_MAP, kept, OURS, cleanup)
    assert cleaned == ["a", "a"]


async def test_finalize_leaves_a_live_object_alone(k8s: Client, namespace: str) -> None:
    live = await cm(k8s, namespace, "a", finalizers=[OURS])

    async def cleanup(obj: Obj) -> None:
        raise AssertionError("not being deleted")

    assert not await finalize(k8s, CONFIG_MAP, live, OURS, cleanup)
    stored = await k8s.get(CONFIG_MAP, "a", namespace)
    assert stored["metadata"]["finalizers"] == [OURS]
    await k8s.patch(CONFIG_MAP, "a", {"metadata": {"finalizers": None}}, namespace=namespace)


# -- create or update / patch ---------------------------------------------------------
def set_data(**data: str) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        obj["data"] = dict(data)

    return mutate


@pytest.mark.parametrize("operation", [create_or_update, create_or_patch])
async def test_created_then_unchanged_then_updated(
    k8s: Client, namespace: str, requests: list[tuple[str, int]], operation: Any
) -> None:
    key = meta("a", namespace)
    result, created = await operation(k8s, CONFIG_MAP, key, set_data(k="1"))
    assert result is OperationResult.CREATED
    assert created["data"] == {"k": "1"}
    assert requests == [("GET", 404), ("POST", 201)]

    requests.clear()
    result, same = await operation(k8s, CONFIG_MAP, key, set_data(k="1"))
    assert result is OperationResult.UNCHANGED
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert requests == [("GET", 200)]

    requests.clear()
    result, updated = await operation(k8s, CONFIG_MAP, key, set_data(k="2"))
    assert result is OperationResult.UPDATED
    assert updated["data"] == {"k": "2"}
    assert len(requests) == 2
    assert (await k8s.get(CONFIG_MAP, "a", namespace))["data"] == {"k": "2"}
    assert key == meta("a", namespace)  # the caller's object is not modified


@pytest.mark.parametrize("operation", [create_or_update, create_or_patch])
async def test_a_write_that_the_server_stores_as_a_no_op_is_unchanged(
    k8s: Client, namespace: str, requests: list[tuple[str, int]], operation: Any
) -> None:
    """controller-runtime's warning case: mutate drops a field the API server defaults
    (a Deployment's progressDeadlineSeconds, 600). The dicts differ, so a write is sent;
    the server defaults the field again and stores nothing, keeping the resourceVersion,
    so the answer is UNCHANGED (controller-runtime would say "updated")."""
    key = meta("d", namespace)

    def deployment(obj: Obj) -> None:
        obj["spec"] = obj.get("spec") or {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "example.com/c:1"}]},
            },
        }
        obj["spec"].pop("progressDeadlineSeconds", None)

    result, created = await operation(k8s, DEPLOYMENT, key, deployment)
    assert result is OperationResult.CREATED
    assert created["spec"]["progressDeadlineSeconds"] == 600
    requests.clear()
    result, out = await operation(k8s, DEPLOYMENT, key, deployment)
    assert result is OperationResult.UNCHANGED
    assert requests[-1][0] in ("PUT", "PATCH")  # a write was sent
    assert out["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


@pytest.mark.parametrize("operation", [create_or_update, create_or_patch])
async def test_a_conflicting_writer_is_kept_and_mutate_runs_on_the_fresh_object(
    k8s: Client,
    namespace: str,
    requests: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    operation: Any,
) -> None:
    await cm(k8s, namespace, "a")

    async def other_writer() -> None:
        await k8s.patch(
            CONFIG_MAP,
            "a",
            {"metadata": {"labels": {"other": "yes"}, "finalizers": [THEIRS]}},
            namespace=namespace,
        )

    interfere_after_first_read(k8s, monkeypatch, other_writer)
    seen: list[Obj] = []

    def mutate(obj: Obj) -> None:
        seen.append(copy.deepcopy(obj))
        obj["data"] = {"k": "mine"}
        add_finalizer(obj, OURS)

    result, out = await operation(k8s, CONFIG_MAP, meta("a", namespace), mutate)

    assert result is OperationResult.UPDATED
    assert (("PUT" if operation is create_or_update else "PATCH"), 409) in requests
    stored = await k8s.get(CONFIG_MAP, "a", namespace)
    assert stored["data"] == {"k": "mine"}
    assert stored["metadata"]["labels"] == {"other": "yes"}
    assert stored["metadata"]["finalizers"] == [THEIRS, OURS]
    assert out["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert len(seen) == 2
    assert "labels" not in seen[0]["metadata"]
    assert seen[1]["metadata"]["labels"] == {"other": "yes"}
    await k8s.patch(CONFIG_MAP, "a", {"metadata": {"finalizers": None}}, namespace=namespace)


async def test_create_that_loses_the_race_updates_instead(
    k8s: Client,
    namespace: str,
    requests: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer creates the object between our 404 and our POST (AlreadyExists)."""

    async def other_creator() -> None:
        await k8s.create(CONFIG_MAP, {**meta("a", namespace), "data": {"k": "theirs"}})

    interfere_after_first_read(k8s, monkeypatch, other_creator)
    result, out = await create_or_update(k8s, CONFIG_MAP, meta("a", namespace), set_data(k="mine"))
    assert result is OperationResult.UPDATED
    assert out["data"] == {"k": "mine"}
    assert ("POST", 409) in requests


# The status subresource, on the Workspace CRD (it has one; the workspace operator does
# not run in these tests, so nobody else writes the status).
def workspace(name: str, ns: str) -> Obj:
    obj = copy.deepcopy(example(INFERENCE_EXAMPLE))
    obj["metadata"] = {"name": name, "namespace": ns}
    return obj


def label(value: str) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        obj["metadata"].setdefault("labels", {})["l"] = value

    return mutate


def status(value: str) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        obj.setdefault("status", {})["status"] = value

    return mutate


def both(*fns: Callable[[Obj], None]) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        for fn in fns:
            fn(obj)

    return mutate


async def test_create_or_patch_writes_status_through_the_subresource(
    k8s: Client, namespace: str, requests: list[tuple[str, int]]
) -> None:
    seed = workspace("w", namespace)
    # On creation the API server drops the status (controller-runtime documents the same).
    result, created = await create_or_patch(k8s, WORKSPACE, seed, both(label("1"), status("Ready")))
    assert result is OperationResult.CREATED
    assert "status" not in created or "status" not in created["status"]

    result, out = await create_or_patch(k8s, WORKSPACE, seed, status("Ready"))
    assert result is OperationResult.UPDATED_STATUS_ONLY
    assert out["status"]["status"] == "Ready"

    requests.clear()
    result, out = await create_or_patch(k8s, WORKSPACE, seed, both(label("2"), status("NotReady")))
    assert result is OperationResult.UPDATED_STATUS
    assert [method for method, _ in requests] == ["GET", "PATCH", "PATCH"]
    stored = await k8s.get(WORKSPACE, "w", namespace)
    assert stored["metadata"]["labels"] == {"l": "2"}
    assert stored["status"]["status"] == "NotReady"
    assert out["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]

    result, _ = await create_or_patch(k8s, WORKSPACE, seed, label("3"))
    assert result is OperationResult.UPDATED
    result, _ = await create_or_patch(k8s, WORKSPACE, seed, both(label("3"), status("NotReady")))
    assert result is OperationResult.UNCHANGED


async def test_create_or_update_does_not_write_status_on_a_status_subresource(
    k8s: Client, namespace: str
) -> None:
    seed = workspace("w", namespace)
    await create_or_update(k8s, WORKSPACE, seed, lambda o: None)
    result, _ = await create_or_update(k8s, WORKSPACE, seed, status("Ready"))
    # The PUT was sent, and the API server ignored the status in it.
    assert result is OperationResult.UNCHANGED
    assert "status" not in (await k8s.get(WORKSPACE, "w", namespace)).get("status", {})


# -- owner references -------------------------------------------------------------------
async def test_a_controller_reference_as_stored_for_the_garbage_collector(
    k8s: Client, namespace: str
) -> None:
    owner = await cm(k8s, namespace, "owner")

    def owned(obj: Obj) -> None:
        obj["data"] = {"from": "owner"}
        set_controller_reference(owner, obj, CONFIG_MAP)

    result, child = await create_or_update(k8s, CONFIG_MAP, meta("child", namespace), owned)
    assert result is OperationResult.CREATED
    stored = await k8s.get(CONFIG_MAP, "child", namespace)
    assert stored["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    # The framework's owner handler maps the child to its owner's request.
    assert enqueue_for_owner(CONFIG_MAP)(stored) == [Request(namespace, "owner")]

    # Setting it again changes nothing (no duplicate reference, no write).
    result, _ = await create_or_update(k8s, CONFIG_MAP, meta("child", namespace), owned)
    assert result is OperationResult.UNCHANGED

    # A second controller is refused, naming the first; a plain owner reference is fine.
    rival = await cm(k8s, namespace, "rival")
    with pytest.raises(AlreadyOwnedError, match="ConfigMap owner") as info:
        await create_or_patch(
            k8s,
            CONFIG_MAP,
            meta("child", namespace),
            lambda o: set_controller_reference(rival, o, CONFIG_MAP),
        )
    assert info.value.owner["uid"] == owner["metadata"]["uid"]
    result, child = await create_or_patch(
        k8s,
        CONFIG_MAP,
        meta("child", namespace),
        lambda o: set_owner_reference(rival, o, CONFIG_MAP),
    )
    assert result is OperationResult.UPDATED
    refs = child["metadata"]["ownerReferences"]
    assert [(r["name"], r.get("controller"), r.get("blockOwnerDeletion")) for r in refs] == [
        ("owner", True, True),
        ("rival", None, None),
    ]
    assert controller_of(child) == refs[0]


async def test_a_namespace_may_own_an_object_in_it(k8s: Client, namespace: str) -> None:
    ns = await k8s.get(NAMESPACE, namespace)
    result, child = await create_or_update(
        k8s,
        CONFIG_MAP,
        meta("child", namespace),
        lambda o: set_controller_reference(ns, o, NAMESPACE),
    )
    assert result is OperationResult.CREATED
    ref = controller_of(child)
    assert ref is not None
    assert (ref["kind"], ref["name"], ref["uid"]) == ("Namespace", namespace, ns["metadata"]["uid"])
