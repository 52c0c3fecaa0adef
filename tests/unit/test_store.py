"""Store: objects by key, the replace diff, and indices that never drift from the objects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.resource import Obj
from reconciler.store import NAMESPACE_INDEX, Store, object_key


def obj(
    name: str, namespace: str | None = "ns", rv: str = "1", labels: dict[str, str] | None = None
) -> Obj:
    meta: Obj = {"name": name, "resourceVersion": rv}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    return {"metadata": meta}


def by_app(o: Obj) -> list[str]:
    app = ((o.get("metadata") or {}).get("labels") or {}).get("app")
    return [app] if app else []


def by_label_values(o: Obj) -> list[str]:
    # Several values per object, and deliberately a duplicate one now and then.
    labels = (o.get("metadata") or {}).get("labels") or {}
    return [*labels.values(), *labels.values()]


def names(objs: Iterable[Obj]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


# -- keys and basic operations ------------------------------------------------------------


def test_object_key_is_namespace_slash_name_or_name() -> None:
    assert object_key(obj("a", "ns")) == "ns/a"
    assert object_key(obj("n", None)) == "n"
    assert object_key(obj("n", "")) == "n"


def test_upsert_returns_the_previous_object() -> None:
    store = Store()
    first, second = obj("a", rv="1"), obj("a", rv="2")
    assert store.upsert(first) is None
    assert store.upsert(second) is first
    assert store.get("ns/a") is second
    assert len(store) == 1
    assert "ns/a" in store
    assert store.keys() == ["ns/a"]


def test_delete_returns_the_removed_object_and_tolerates_unknown_keys() -> None:
    store = Store()
    a = obj("a")
    store.upsert(a)
    assert store.delete("ns/a") is a
    assert store.delete("ns/a") is None
    assert store.get("ns/a") is None
    assert store.by_index(NAMESPACE_INDEX, "ns") == []


def test_namespace_index_lists_objects_per_namespace() -> None:
    store = Store()
    for o in (obj("a", "x"), obj("b", "x"), obj("c", "y"), obj("n", None)):
        store.upsert(o)
    assert names(store.by_index(NAMESPACE_INDEX, "x")) == {"a", "b"}
    assert names(store.by_index(NAMESPACE_INDEX, "y")) == {"c"}
    assert store.by_index(NAMESPACE_INDEX, "absent") == []
    assert names(store.list()) == {"a", "b", "c", "n"}


def test_custom_index_follows_updates() -> None:
    store = Store({"app": by_app})
    store.upsert(obj("a", labels={"app": "web"}))
    store.upsert(obj("b", labels={"app": "web"}))
    assert names(store.by_index("app", "web")) == {"a", "b"}
    store.upsert(obj("a", rv="2", labels={"app": "db"}))
    assert names(store.by_index("app", "web")) == {"b"}
    assert names(store.by_index("app", "db")) == {"a"}
    store.upsert(obj("b", rv="2"))
    assert store.by_index("app", "web") == []


def test_indexer_added_later_indexes_existing_objects() -> None:
    store = Store()
    store.upsert(obj("a", labels={"app": "web"}))
    store.add_indexer("app", by_app)
    assert names(store.by_index("app", "web")) == {"a"}


def test_indexer_names_are_unique() -> None:
    store = Store({"app": by_app})
    store.add_indexer("app", by_app)  # the same function again is harmless
    with pytest.raises(ValueError, match="already exists"):
        store.add_indexer("app", by_label_values)
    with pytest.raises(ValueError, match="already exists"):
        Store({NAMESPACE_INDEX: by_app})


def test_unknown_index_is_an_error() -> None:
    with pytest.raises(KeyError):
        Store().by_index("nope", "x")
    with pytest.raises(KeyError):
        Store().by_indices({NAMESPACE_INDEX: "ns", "nope": "x"})
    assert Store({"app": by_app}).has_index("app")
    assert Store().has_index(NAMESPACE_INDEX)
    assert not Store().has_index("nope")


def test_by_indices_is_the_intersection_of_the_buckets() -> None:
    store = Store({"app": by_app})
    for o in (
        obj("a", "x", labels={"app": "web"}),
        obj("b", "x", labels={"app": "db"}),
        obj("c", "y", labels={"app": "web"}),
    ):
        store.upsert(o)
    assert names(store.by_indices({NAMESPACE_INDEX: "x", "app": "web"})) == {"a"}
    assert names(store.by_indices({"app": "web"})) == {"a", "c"}
    assert store.by_indices({NAMESPACE_INDEX: "y", "app": "db"}) == []
    assert store.by_indices({NAMESPACE_INDEX: "z", "app": "web"}) == []
    assert names(store.by_indices({})) == {"a", "b", "c"}


# -- replace ------------------------------------------------------------------------------


def test_replace_reports_added_updated_and_deleted() -> None:
    store = Store()
    kept, changed, gone = obj("kept", rv="1"), obj("changed", rv="1"), obj("gone", rv="1")
    for o in (kept, changed, gone):
        store.upsert(o)
    changed2, new = obj("changed", rv="2"), obj("new", rv="1")
    added, updated, deleted = store.replace([obj("kept", rv="1"), changed2, new])
    assert added == [new]
    assert updated == [(changed, changed2)]
    assert deleted == [gone]
    assert names(store.list()) == {"kept", "changed", "new"}
    assert store.get("ns/changed") is changed2


def test_replace_with_nothing_empties_the_store_and_its_indices() -> None:
    store = Store({"app": by_app})
    store.upsert(obj("a", labels={"app": "web"}))
    added, updated, deleted = store.replace([])
    assert (added, updated, names(deleted)) == ([], [], {"a"})
    assert len(store) == 0
    assert store.by_index("app", "web") == []
    assert store.by_index(NAMESPACE_INDEX, "ns") == []


def test_replace_keeps_the_fresh_object_even_when_unchanged() -> None:
    # Same resourceVersion: not reported, but the listed copy is what the store holds.
    store = Store()
    store.upsert(obj("a", rv="5"))
    fresh = obj("a", rv="5")
    assert store.replace([fresh]) == ([], [], [])
    assert store.get("ns/a") is fresh


# -- the index invariant, against a dict model --------------------------------------------

NAMESPACES = st.sampled_from(["a", "b", None])
OBJ_NAMES = st.sampled_from(["x", "y", "z", "w"])
LABEL_VALUES = st.sampled_from(["web", "db", "cache"])
ALL_VALUES = ["web", "db", "cache", "a", "b"]


@st.composite
def objects(draw: st.DrawFn) -> Obj:
    labels = draw(st.dictionaries(st.sampled_from(["app", "tier"]), LABEL_VALUES, max_size=2))
    return obj(
        draw(OBJ_NAMES),
        draw(NAMESPACES),
        rv=str(draw(st.integers(1, 3))),
        labels=labels or None,
    )


@dataclass(frozen=True)
class Upsert:
    obj: Obj


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Replace:
    objs: list[Obj]


KEYS = st.builds(lambda ns, name: f"{ns}/{name}" if ns else name, NAMESPACES, OBJ_NAMES)
OPERATIONS = st.lists(
    st.one_of(
        st.builds(Upsert, objects()),
        st.builds(Delete, KEYS),
        st.builds(Replace, st.lists(objects(), max_size=6)),
    ),
    max_size=30,
)
INDEXERS = {"app": by_app, "values": by_label_values}


def check_invariant(store: Store, model: dict[str, Obj]) -> None:
    assert sorted(store.keys()) == sorted(model)
    for key, o in model.items():
        assert store.get(key) is o
    for index, fn in [(NAMESPACE_INDEX, None), *INDEXERS.items()]:
        for value in ALL_VALUES:
            if fn is None:
                want = {k for k, o in model.items() if o["metadata"].get("namespace") == value}
            else:
                want = {k for k, o in model.items() if value in fn(o)}
            got = [object_key(o) for o in store.by_index(index, value)]
            assert len(got) == len(set(got)), f"{index}={value} lists an object twice"
            assert set(got) == want, f"{index}={value}"
    for ns in ("a", "b"):
        for value in ALL_VALUES:
            got = [object_key(o) for o in store.by_indices({NAMESPACE_INDEX: ns, "app": value})]
            want = {
                k
                for k, o in model.items()
                if o["metadata"].get("namespace") == ns and value in by_app(o)
            }
            assert len(got) == len(set(got)), f"namespace={ns}, app={value} lists one twice"
            assert set(got) == want, f"namespace={ns}, app={value}"


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_random_operations_keep_every_index_consistent(ops: list[Any]) -> None:
    store = Store(dict(INDEXERS))
    model: dict[str, Obj] = {}
    for op in ops:
        if isinstance(op, Upsert):
            key = object_key(op.obj)
            assert store.upsert(op.obj) is model.get(key)
            model[key] = op.obj
        elif isinstance(op, Delete):
            assert store.delete(op.key) is model.pop(op.key, None)
        else:
            fresh = {object_key(o): o for o in op.objs}
            added, updated, deleted = store.replace(op.objs)
            assert {object_key(o) for o in added} == fresh.keys() - model.keys()
            assert {object_key(o) for o in deleted} == model.keys() - fresh.keys()
            want_updated = {
                k
                for k in fresh.keys() & model.keys()
                if fresh[k]["metadata"]["resourceVersion"]
                != model[k]["metadata"]["resourceVersion"]
            }
            assert {object_key(new) for _, new in updated} == want_updated
            for old, new in updated:
                assert old is model[object_key(old)]
                assert new is fresh[object_key(new)]
            model = fresh
        check_invariant(store, model)
