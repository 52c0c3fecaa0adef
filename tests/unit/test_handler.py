"""Event handlers: informer events → predicates → mapper → requests on the queue."""

from __future__ import annotations

import anyio
import pytest

from reconciler.handler import EnqueueHandler, enqueue_for_object, enqueue_for_owner
from reconciler.predicate import Funcs, generation_changed
from reconciler.request import Request
from reconciler.resource import Obj, ResourceType
from reconciler.workqueue import RateLimitingQueue

DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments")
WORKSPACE = ResourceType("kaito.sh", "v1beta1", "Workspace", "workspaces")
CLUSTER_THING = ResourceType("example.com", "v1", "ClusterThing", "clusterthings", False)


def owner_ref(
    kind: str, name: str, api_version: str = "apps/v1", controller: bool | None = True
) -> Obj:
    ref: Obj = {"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}"}
    if controller is not None:
        ref["controller"] = controller
    return ref


def owned(name: str, *refs: Obj, namespace: str | None = "ns", generation: int = 1) -> Obj:
    meta: Obj = {"name": name, "ownerReferences": list(refs), "generation": generation}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def drain(queue: RateLimitingQueue[Request]) -> set[Request]:
    """Everything ready in the queue right now (no awaiting needed)."""
    out: set[Request] = set()

    async def take() -> None:
        while len(queue):
            item = await queue.get()
            queue.done(item)
            out.add(item)

    anyio.run(take)
    return out


# -- enqueue_for_object -------------------------------------------------------------------


def test_enqueue_for_object_names_the_object_itself() -> None:
    assert enqueue_for_object(owned("p", namespace="ns")) == [Request("ns", "p")]


def test_enqueue_for_object_of_a_cluster_scoped_object_has_no_namespace() -> None:
    assert enqueue_for_object(owned("n", namespace=None)) == [Request("", "n")]


# -- enqueue_for_owner --------------------------------------------------------------------


def test_enqueue_for_owner_maps_to_the_controller_owner_in_the_same_namespace() -> None:
    mapper = enqueue_for_owner(DEPLOYMENT)
    pod = owned("p", owner_ref("Deployment", "web"), namespace="ns")
    assert list(mapper(pod)) == [Request("ns", "web")]


def test_only_controller_skips_owners_that_are_not_the_controller() -> None:
    pod = owned(
        "p",
        owner_ref("Deployment", "plain", controller=False),
        owner_ref("Deployment", "unset", controller=None),
        owner_ref("Deployment", "boss", controller=True),
    )
    assert list(enqueue_for_owner(DEPLOYMENT)(pod)) == [Request("ns", "boss")]
    assert set(enqueue_for_owner(DEPLOYMENT, only_controller=False)(pod)) == {
        Request("ns", "plain"),
        Request("ns", "unset"),
        Request("ns", "boss"),
    }


@pytest.mark.parametrize(
    "ref",
    [
        owner_ref("StatefulSet", "web"),  # kind differs
        owner_ref("Deployment", "web", api_version="extensions.example.com/v1"),  # group
        owner_ref("Deployment", "web", api_version="v1"),  # core group
    ],
)
def test_owner_of_another_group_or_kind_is_ignored(ref: Obj) -> None:
    assert list(enqueue_for_owner(DEPLOYMENT, only_controller=False)(owned("p", ref))) == []


def test_owner_version_does_not_matter_only_group_and_kind() -> None:
    # controller-runtime compares GroupKind: an owner written as v1beta1 is the same owner.
    ref = owner_ref("Workspace", "ws", api_version="kaito.sh/v1alpha1")
    assert list(enqueue_for_owner(WORKSPACE)(owned("p", ref))) == [Request("ns", "ws")]


def test_core_group_owner_matches_a_bare_version() -> None:
    config_map = ResourceType("", "v1", "ConfigMap", "configmaps")
    ref = owner_ref("ConfigMap", "cm", api_version="v1")
    assert list(enqueue_for_owner(config_map)(owned("s", ref))) == [Request("ns", "cm")]


def test_cluster_scoped_owner_is_requested_without_a_namespace() -> None:
    ref = owner_ref("ClusterThing", "big", api_version="example.com/v1")
    assert list(enqueue_for_owner(CLUSTER_THING)(owned("p", ref, namespace="ns"))) == [
        Request("", "big")
    ]


def test_object_without_owner_references_maps_to_nothing() -> None:
    pod: Obj = {"metadata": {"name": "p", "namespace": "ns"}}
    assert list(enqueue_for_owner(DEPLOYMENT)(pod)) == []
    pod["metadata"]["ownerReferences"] = None
    assert list(enqueue_for_owner(DEPLOYMENT)(pod)) == []


# -- EnqueueHandler -----------------------------------------------------------------------


def test_handler_enqueues_the_mapped_requests_for_every_event_type() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue()
    handler = EnqueueHandler(queue)
    handler.on_add(owned("a"), True)
    handler.on_update(owned("b"), owned("b", generation=2))
    handler.on_delete(owned("c"))
    assert drain(queue) == {Request("ns", "a"), Request("ns", "b"), Request("ns", "c")}


def test_handler_collapses_repeated_events_into_one_request() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue()
    handler = EnqueueHandler(queue)
    for _ in range(3):
        handler.on_add(owned("a"), False)
    handler.on_update(owned("a"), owned("a", generation=2))
    assert len(queue) == 1


def test_predicates_filter_each_event_type_and_all_must_agree() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue()
    keep_named_keep = Funcs(
        on_create=lambda o: o["metadata"]["name"].startswith("keep"),
        on_delete=lambda o: o["metadata"]["name"].startswith("keep"),
    )
    handler = EnqueueHandler(queue, predicates=[keep_named_keep, generation_changed()])
    handler.on_add(owned("keep-1"), True)
    handler.on_add(owned("drop-1"), True)
    handler.on_delete(owned("keep-2"))
    handler.on_delete(owned("drop-2"))
    handler.on_update(owned("drop-3", generation=1), owned("drop-3", generation=1))
    handler.on_update(owned("keep-4", generation=1), owned("keep-4", generation=2))
    assert drain(queue) == {
        Request("ns", "keep-1"),
        Request("ns", "keep-2"),
        Request("ns", "keep-4"),
    }


def test_update_that_moves_an_owner_reference_wakes_old_and_new_owner() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue()
    handler = EnqueueHandler(queue, enqueue_for_owner(DEPLOYMENT))
    old = owned("p", owner_ref("Deployment", "before"))
    new = owned("p", owner_ref("Deployment", "after"))
    handler.on_update(old, new)
    assert drain(queue) == {Request("ns", "before"), Request("ns", "after")}


def test_owner_handler_ignores_objects_with_foreign_owners() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue()
    handler = EnqueueHandler(queue, enqueue_for_owner(DEPLOYMENT))
    handler.on_add(owned("p", owner_ref("ReplicaSet", "rs")), False)
    handler.on_delete(owned("q"))
    assert len(queue) == 0


def test_events_after_queue_shutdown_are_dropped() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue()
    handler = EnqueueHandler(queue)
    queue.shut_down()
    handler.on_add(owned("late"), False)
    assert len(queue) == 0
