"""Builder wiring on a manager that is never started (its client points nowhere).

Informer stores are filled by hand before ``complete()``: an informer replays its store
to every handler added later, so the queue of the built controller shows exactly which
objects each watch let through and what they were mapped to.
"""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import reconciler.builder
import reconciler.manager
from reconciler._kubeconfig import Configuration
from reconciler.builder import Builder, BuilderError
from reconciler.client import Client
from reconciler.controller import Controller, ControllerOptions
from reconciler.manager import Manager, ManagerOptions
from reconciler.predicate import new_predicate
from reconciler.request import Request, Result
from reconciler.resource import CONFIG_MAP, POD, SECRET, ResourceType

Obj = dict[str, Any]
NS = "ns"


class Noop:
    async def reconcile(self, request: Request) -> Result:
        return Result()


@pytest.fixture
async def mgr() -> AsyncIterator[Manager]:
    # Port 9 (discard): nothing is ever sent, the manager is never run.
    client = Client(Configuration(host="https://127.0.0.1:9"))
    try:
        yield Manager(client, ManagerOptions(handle_signals=False))
    finally:
        await client.close()


def obj(kind: str, name: str, *, keep: bool = False, owner: str | None = None, **ref: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": NS, "resourceVersion": "1"}
    if keep:
        meta["labels"] = {"keep": "yes"}
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": owner, **ref}
        ]
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


def seed(mgr: Manager, rt: ResourceType, *objs: Obj) -> None:
    store = mgr.cache.informer_for(rt).store
    for o in objs:
        store.upsert(o)


async def queued(controller: Controller) -> set[Request]:
    """What the controller queues from the objects its informers hold, once it takes
    events (what run() starts with, here without workers)."""
    controller._start_watching()
    out: set[Request] = set()
    with anyio.fail_after(5):
        while len(controller.queue):
            item = await controller.queue.get()
            controller.queue.done(item)
            out.add(item)
    return out


def has_keep_label(o: Obj) -> bool:
    return (o["metadata"].get("labels") or {}).get("keep") == "yes"


# -- validation ---------------------------------------------------------------------------


async def test_for_may_be_called_once(mgr: Manager) -> None:
    b = Builder(mgr).for_(CONFIG_MAP)
    with pytest.raises(BuilderError, match="only be called once"):
        b.for_(SECRET)


async def test_owns_needs_for_first(mgr: Manager) -> None:
    with pytest.raises(BuilderError, match="for_"):
        Builder(mgr).owns(SECRET)


async def test_a_controller_without_watches_is_rejected(mgr: Manager) -> None:
    with pytest.raises(BuilderError, match="no watches"):
        Builder(mgr).named("idle").complete(Noop())
    assert mgr.controllers == []


async def test_watches_without_for_needs_a_name(mgr: Manager) -> None:
    with pytest.raises(BuilderError, match="named"):
        Builder(mgr).watches(POD, lambda o: []).complete(Noop())
    c = Builder(mgr).watches(POD, lambda o: []).named("pods").complete(Noop())
    assert c.name == "pods"


async def test_name_defaults_to_the_lowercase_kind(mgr: Manager) -> None:
    assert Builder(mgr).for_(CONFIG_MAP).complete(Noop()).name == "configmap"
    assert Builder(mgr).for_(CONFIG_MAP).named("other").complete(Noop()).name == "other"


async def test_complete_registers_the_controller_with_options_and_manager_metrics(
    mgr: Manager,
) -> None:
    options = ControllerOptions(max_concurrent_reconciles=4)
    reconciler = Noop()
    c = Builder(mgr).for_(CONFIG_MAP).with_options(options).complete(reconciler)
    assert mgr.controllers == [c]
    assert c.options is options
    assert c.reconciler is reconciler
    assert (
        mgr.registry.get_sample_value(
            "controller_runtime_max_concurrent_reconciles", {"controller": "configmap"}
        )
        == 4
    )


async def test_duplicate_controller_names_are_rejected(mgr: Manager) -> None:
    Builder(mgr).for_(CONFIG_MAP).complete(Noop())
    with pytest.raises((ValueError, BuilderError), match="already used"):
        Builder(mgr).for_(SECRET).named("configmap").complete(Noop())
    assert [c.name for c in mgr.controllers] == ["configmap"]


async def test_a_rejected_duplicate_leaves_no_trace(mgr: Manager) -> None:
    seed(mgr, CONFIG_MAP, obj("ConfigMap", "a"))
    first = Builder(mgr).for_(CONFIG_MAP).named("dup").complete(Noop())
    with pytest.raises((ValueError, BuilderError), match="already used"):
        Builder(mgr).for_(CONFIG_MAP).named("dup").with_options(
            ControllerOptions(max_concurrent_reconciles=7)
        ).complete(Noop())
    labels = {"name": "dup", "controller": "dup"}
    first._start_watching()
    # Only the first controller's handler feeds the series (the rejected one's would
    # share it and count twice).
    assert mgr.registry.get_sample_value("workqueue_adds_total", labels) == len(first.queue) == 1
    assert (
        mgr.registry.get_sample_value(
            "controller_runtime_max_concurrent_reconciles", {"controller": "dup"}
        )
        == first.options.max_concurrent_reconciles
    )


# -- wiring -------------------------------------------------------------------------------


async def test_controllers_of_one_type_share_one_informer(mgr: Manager) -> None:
    Builder(mgr).for_(CONFIG_MAP).named("one").complete(Noop())
    Builder(mgr).for_(CONFIG_MAP).named("two").complete(Noop())
    Builder(mgr).for_(SECRET).owns(CONFIG_MAP).named("three").complete(Noop())
    assert sorted(i.resource.kind for i in mgr.cache.informers) == ["ConfigMap", "Secret"]


async def test_event_filter_applies_to_for_owns_and_watches(mgr: Manager) -> None:
    seed(mgr, CONFIG_MAP, obj("ConfigMap", "cm-keep", keep=True), obj("ConfigMap", "cm-drop"))
    seed(
        mgr,
        SECRET,
        obj("Secret", "s-keep", keep=True, owner="owner-keep", controller=True),
        obj("Secret", "s-drop", owner="owner-drop", controller=True),
    )
    seed(mgr, POD, obj("Pod", "p-keep", keep=True), obj("Pod", "p-drop"))

    def pod_mapper(o: Obj) -> list[Request]:
        return [Request(NS, "from-" + o["metadata"]["name"])]

    c = (
        Builder(mgr)
        .for_(CONFIG_MAP)
        .owns(SECRET)
        .watches(POD, pod_mapper)
        .with_event_filter(new_predicate(has_keep_label))
        .complete(Noop())
    )
    assert await queued(c) == {
        Request(NS, "cm-keep"),
        Request(NS, "owner-keep"),
        Request(NS, "from-p-keep"),
    }


async def test_event_filter_and_per_watch_predicates_must_both_agree(mgr: Manager) -> None:
    seed(
        mgr,
        CONFIG_MAP,
        obj("ConfigMap", "a", keep=True),
        obj("ConfigMap", "b", keep=True),
        obj("ConfigMap", "c"),
    )
    not_b = new_predicate(lambda o: o["metadata"]["name"] != "b")
    c = (
        Builder(mgr)
        .with_event_filter(new_predicate(has_keep_label))  # order does not matter
        .for_(CONFIG_MAP, not_b)
        .complete(Noop())
    )
    assert await queued(c) == {Request(NS, "a")}


async def test_owns_maps_to_the_controller_owner_unless_told_otherwise(mgr: Manager) -> None:
    seed(
        mgr,
        SECRET,
        obj("Secret", "controlled", owner="boss", controller=True),
        obj("Secret", "merely-owned", owner="bystander", controller=False),
    )
    strict = Builder(mgr).for_(CONFIG_MAP).owns(SECRET).named("strict").complete(Noop())
    loose = (
        Builder(mgr)
        .for_(CONFIG_MAP)
        .owns(SECRET, only_controller=False)
        .named("loose")
        .complete(Noop())
    )
    assert await queued(strict) == {Request(NS, "boss")}
    assert await queued(loose) == {Request(NS, "boss"), Request(NS, "bystander")}


# -- dependencies -------------------------------------------------------------------------


def imported_modules(module: ModuleType) -> set[str]:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return found | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_the_builder_depends_on_the_manager_and_not_the_reverse() -> None:
    # As controller-runtime's pkg/builder and pkg/manager: one direction, no cycle.
    assert "reconciler.manager" in imported_modules(reconciler.builder)
    assert "reconciler.builder" not in imported_modules(reconciler.manager)
