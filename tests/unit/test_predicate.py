"""Predicates: which create/update/delete events reach a controller's queue."""

from __future__ import annotations

import pytest

from reconciler.predicate import (
    Funcs,
    Predicate,
    and_,
    annotations_changed,
    generation_changed,
    labels_changed,
    new_predicate,
    not_,
    or_,
    resource_version_changed,
)
from reconciler.resource import Obj


def obj(
    *,
    name: str = "a",
    generation: int | None = 1,
    rv: str = "10",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    data: str = "x",
) -> Obj:
    meta: Obj = {"name": name, "namespace": "ns", "resourceVersion": rv}
    if generation is not None:
        meta["generation"] = generation
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": data}}


def verdicts(p: Predicate, old: Obj, new: Obj) -> tuple[bool, bool, bool]:
    """(create(new), update(old, new), delete(old))."""
    return p.create(new), p.update(old, new), p.delete(old)


# -- Funcs --------------------------------------------------------------------------------


def test_funcs_without_functions_lets_every_event_through() -> None:
    assert verdicts(Funcs(), obj(), obj(rv="11")) == (True, True, True)


def test_funcs_uses_only_the_functions_it_is_given() -> None:
    p = Funcs(on_update=lambda old, new: False)
    assert verdicts(p, obj(), obj(rv="11")) == (True, False, True)
    p = Funcs(on_create=lambda o: False, on_delete=lambda o: False)
    assert verdicts(p, obj(), obj(rv="11")) == (False, True, False)


def test_funcs_update_receives_old_then_new() -> None:
    seen: list[tuple[str, str]] = []

    def record(old: Obj, new: Obj) -> bool:
        seen.append((old["metadata"]["resourceVersion"], new["metadata"]["resourceVersion"]))
        return True

    Funcs(on_update=record).update(obj(rv="1"), obj(rv="2"))
    assert seen == [("1", "2")]


# -- generation_changed -------------------------------------------------------------------


def test_generation_changed_passes_spec_edits_and_drops_status_writes() -> None:
    p = generation_changed()
    assert p.update(obj(generation=1, rv="10"), obj(generation=2, rv="11"))
    # A status write bumps the resourceVersion but not the generation.
    assert not p.update(obj(generation=1, rv="10"), obj(generation=1, rv="11", data="y"))
    # A resync delivers the same object twice.
    o = obj()
    assert not p.update(o, o)


def test_generation_changed_filters_updates_only() -> None:
    p = generation_changed()
    o = obj()
    assert p.create(o)
    assert p.delete(o)


def test_generation_changed_treats_a_missing_generation_as_a_value() -> None:
    # ConfigMaps have no generation: every update looks unchanged, like controller-runtime.
    p = generation_changed()
    assert not p.update(obj(generation=None, rv="1"), obj(generation=None, rv="2"))
    assert p.update(obj(generation=None), obj(generation=1))


def test_predicates_tolerate_objects_without_metadata() -> None:
    for p in (generation_changed(), resource_version_changed(), labels_changed()):
        assert not p.update({}, {})
        assert not p.update({"metadata": None}, {"metadata": "junk"})


# -- resource_version_changed -------------------------------------------------------------


def test_resource_version_changed_drops_resyncs_only() -> None:
    p = resource_version_changed()
    o = obj(rv="10")
    assert not p.update(o, o)
    assert not p.update(obj(rv="10"), obj(rv="10"))
    assert p.update(obj(rv="10"), obj(rv="11"))
    assert p.create(o)
    assert p.delete(o)


# -- labels / annotations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ({"a": "1"}, {"a": "1"}, False),
        ({"a": "1"}, {"a": "2"}, True),
        ({"a": "1"}, {"a": "1", "b": "2"}, True),
        ({"a": "1"}, None, True),
        (None, {"a": "1"}, True),
        (None, None, False),
    ],
)
def test_labels_changed(
    old: dict[str, str] | None, new: dict[str, str] | None, changed: bool
) -> None:
    p = labels_changed()
    assert p.update(obj(labels=old, rv="1"), obj(labels=new, rv="2")) is changed
    # Annotations do not count as labels.
    assert not p.update(obj(annotations=old, rv="1"), obj(annotations=new, rv="2"))


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ({"a": "1"}, {"a": "1"}, False),
        ({"a": "1"}, {"a": "2"}, True),
        (None, {"a": "1"}, True),
        ({"a": "1"}, None, True),
    ],
)
def test_annotations_changed(
    old: dict[str, str] | None, new: dict[str, str] | None, changed: bool
) -> None:
    p = annotations_changed()
    assert p.update(obj(annotations=old, rv="1"), obj(annotations=new, rv="2")) is changed
    assert not p.update(obj(labels=old, rv="1"), obj(labels=new, rv="2"))


def test_label_and_annotation_predicates_pass_creates_and_deletes() -> None:
    for p in (labels_changed(), annotations_changed()):
        assert p.create(obj())
        assert p.delete(obj())


# -- new_predicate ------------------------------------------------------------------------


def test_new_predicate_applies_one_filter_to_every_event_and_the_new_object() -> None:
    p = new_predicate(lambda o: (o["metadata"].get("labels") or {}).get("app") == "web")
    web, other = obj(labels={"app": "web"}), obj(labels={"app": "db"})
    assert p.create(web)
    assert not p.create(other)
    assert p.delete(web)
    assert not p.delete(other)
    # Updates are judged by the new object only.
    assert p.update(other, web)
    assert not p.update(web, other)


# -- and_ / or_ / not_ --------------------------------------------------------------------

YES = Funcs(lambda o: True, lambda a, b: True, lambda o: True)
NO = Funcs(lambda o: False, lambda a, b: False, lambda o: False)


@pytest.mark.parametrize(
    ("parts", "want_and", "want_or"),
    [
        ((YES, YES), True, True),
        ((YES, NO), False, True),
        ((NO, YES), False, True),
        ((NO, NO), False, False),
        ((YES,), True, True),
        ((), True, False),  # like all() / any() of nothing
    ],
)
def test_and_or_truth_table_for_every_event(
    parts: tuple[Predicate, ...], want_and: bool, want_or: bool
) -> None:
    a, b = obj(rv="1"), obj(rv="2")
    assert verdicts(and_(*parts), a, b) == (want_and,) * 3
    assert verdicts(or_(*parts), a, b) == (want_or,) * 3


def test_not_inverts_every_event() -> None:
    a, b = obj(rv="1"), obj(rv="2")
    assert verdicts(not_(YES), a, b) == (False, False, False)
    assert verdicts(not_(NO), a, b) == (True, True, True)
    # not_ of a predicate that filters updates only blocks creates and deletes.
    assert verdicts(not_(generation_changed()), obj(generation=1), obj(generation=2)) == (
        False,
        False,
        False,
    )


def test_combinators_compose_real_predicates() -> None:
    # "spec changed, or labels changed" — the usual way to keep label-driven controllers
    # awake while ignoring status writes.
    p = or_(generation_changed(), labels_changed())
    assert p.update(obj(generation=1), obj(generation=2))
    assert p.update(obj(labels={"a": "1"}), obj(labels={"a": "2"}))
    assert not p.update(obj(rv="1"), obj(rv="2", data="status only"))

    q = and_(resource_version_changed(), not_(labels_changed()))
    assert q.update(obj(rv="1"), obj(rv="2"))
    assert not q.update(obj(rv="1", labels={"a": "1"}), obj(rv="2", labels={"a": "2"}))
    o = obj()
    assert not q.update(o, o)


def test_and_stops_at_the_first_rejection() -> None:
    calls: list[str] = []

    def recording(name: str, verdict: bool) -> Predicate:
        def f(o: Obj) -> bool:
            calls.append(name)
            return verdict

        return Funcs(on_create=f)

    assert not and_(recording("first", False), recording("second", True)).create(obj())
    assert calls == ["first"]
    calls.clear()
    assert or_(recording("first", True), recording("second", False)).create(obj())
    assert calls == ["first"]
