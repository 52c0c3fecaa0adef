"""controllerutil's pure parts (finalizer and owner-reference edits, the merge-patch diff)
as properties over their state spaces, and the retry bounds with a client that always
loses the race. The API server's side is tests/integration/test_controllerutil.py."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.client import Client
from reconciler.controllerutil import (
    AlreadyOwnedError,
    ObjectKeyChangedError,
    OperationResult,
    OwnerReferenceError,
    _merge_patch,
    add_finalizer,
    contains_finalizer,
    controller_of,
    create_or_patch,
    create_or_update,
    ensure_finalizer,
    ensure_finalizer_removed,
    finalize,
    has_controller_reference,
    remove_finalizer,
    remove_owner_reference,
    set_controller_reference,
    set_owner_reference,
)
from reconciler.errors import Conflict, NotFound
from reconciler.resource import CONFIG_MAP, NAMESPACE, ResourceType

Obj = dict[str, Any]
DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments")
WIDGET_V1 = ResourceType("example.com", "v1", "Widget", "widgets")
WIDGET_V2 = ResourceType("example.com", "v2", "Widget", "widgets")


def cm(name: str = "child", ns: str | None = "ns", **meta: Any) -> Obj:
    metadata: Obj = {"name": name, **meta}
    if ns is not None:
        metadata["namespace"] = ns
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}


def owner(
    rt: ResourceType = CONFIG_MAP, name: str = "owner", ns: str | None = "ns", uid: str = "u-1"
) -> Obj:
    meta: Obj = {"name": name, "uid": uid}
    if ns is not None:
        meta["namespace"] = ns
    return {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}


# -- finalizers -----------------------------------------------------------------------
def test_add_then_contains_then_add_again_is_no_change() -> None:
    obj = cm()
    assert not contains_finalizer(obj, "a.io/f")
    assert add_finalizer(obj, "a.io/f")
    assert obj["metadata"]["finalizers"] == ["a.io/f"]
    assert contains_finalizer(obj, "a.io/f")
    assert not add_finalizer(obj, "a.io/f")
    assert obj["metadata"]["finalizers"] == ["a.io/f"]


def test_remove_absent_adds_no_field_and_removing_the_last_drops_the_list() -> None:
    obj = cm()
    assert not remove_finalizer(obj, "a.io/f")
    assert "finalizers" not in obj["metadata"]
    add_finalizer(obj, "a.io/f")
    assert remove_finalizer(obj, "a.io/f")
    assert "finalizers" not in obj["metadata"]


def test_finalizer_edits_work_on_an_object_without_metadata_lists() -> None:
    obj: Obj = {}
    assert add_finalizer(obj, "x")
    assert obj == {"metadata": {"finalizers": ["x"]}}


NAMES = st.sampled_from(["a.io/x", "a.io/y", "b.io/x", "kubernetes"])


@given(
    initial=st.lists(NAMES, max_size=6),
    ops=st.lists(st.tuples(st.sampled_from(["add", "remove"]), NAMES), max_size=12),
)
def test_finalizer_edits_match_a_list_model(initial: list[str], ops: list[tuple[str, str]]) -> None:
    """add appends once, remove drops every occurrence and keeps the others' order, and
    each reports exactly whether the list changed."""
    obj = cm(finalizers=list(initial)) if initial else cm()
    model = list(initial)
    for op, name in ops:
        before = list(model)
        if op == "add":
            if name not in model:
                model.append(name)
            changed = add_finalizer(obj, name)
        else:
            model = [f for f in model if f != name]
            changed = remove_finalizer(obj, name)
        assert changed == (model != before)
        assert obj["metadata"].get("finalizers", []) == model
        assert contains_finalizer(obj, name) == (name in model)
    # A stored object never carries an empty list: the API server omits it.
    assert obj["metadata"].get("finalizers", None) != []


# -- owner references -------------------------------------------------------------------
def test_controller_reference_has_the_fields_controller_runtime_sets() -> None:
    obj = cm()
    set_controller_reference(owner(), obj, CONFIG_MAP)
    assert obj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert has_controller_reference(obj)
    assert controller_of(obj) == obj["metadata"]["ownerReferences"][0]


def test_controller_reference_without_blocking_owner_deletion() -> None:
    obj = cm()
    set_controller_reference(owner(), obj, CONFIG_MAP, block_owner_deletion=False)
    assert obj["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is False


def test_a_second_controller_is_refused_naming_the_first_and_nothing_changes() -> None:
    obj = cm()
    set_controller_reference(owner(name="first", uid="u-1"), obj, CONFIG_MAP)
    before = copy.deepcopy(obj)
    with pytest.raises(AlreadyOwnedError) as info:
        set_controller_reference(owner(DEPLOYMENT, name="second", uid="u-2"), obj, DEPLOYMENT)
    assert info.value.owner["name"] == "first"
    assert info.value.owner["kind"] == "ConfigMap"
    assert (info.value.namespace, info.value.name) == ("ns", "child")
    assert "ConfigMap first" in str(info.value)
    assert obj == before


def test_the_same_owner_at_another_version_and_uid_is_updated_in_place() -> None:
    """controller-runtime's referSameObject: group, kind and name; a recreated owner (new
    uid) or a new API version replaces the reference at its position."""
    obj = cm()
    set_owner_reference(owner(CONFIG_MAP, name="before"), obj, CONFIG_MAP)
    set_controller_reference(owner(WIDGET_V1, name="w", uid="old"), obj, WIDGET_V1)
    set_owner_reference(owner(CONFIG_MAP, name="after"), obj, CONFIG_MAP)
    set_controller_reference(owner(WIDGET_V2, name="w", uid="new"), obj, WIDGET_V2)
    refs = obj["metadata"]["ownerReferences"]
    assert [r["name"] for r in refs] == ["before", "w", "after"]
    assert refs[1]["apiVersion"] == "example.com/v2"
    assert refs[1]["uid"] == "new"
    assert refs[1]["controller"] is True


def test_owner_reference_is_not_a_controller_and_blocks_only_when_asked() -> None:
    obj = cm()
    set_owner_reference(owner(), obj, CONFIG_MAP)
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1"}
    ]
    assert not has_controller_reference(obj)
    set_owner_reference(owner(), obj, CONFIG_MAP, block_owner_deletion=True)
    assert obj["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True


def test_owner_reference_to_the_controller_replaces_the_controller_reference() -> None:
    # controller-runtime: "it'll be overwritten with the newly provided version".
    obj = cm()
    set_controller_reference(owner(), obj, CONFIG_MAP)
    set_owner_reference(owner(), obj, CONFIG_MAP)
    assert len(obj["metadata"]["ownerReferences"]) == 1
    assert not has_controller_reference(obj)


def test_a_cluster_scoped_owner_may_own_a_namespaced_object() -> None:
    obj = cm()
    set_controller_reference(owner(NAMESPACE, name="ns", ns=None), obj, NAMESPACE)
    assert controller_of(obj) is not None


@pytest.mark.parametrize(
    ("the_owner", "the_type", "obj", "says"),
    [
        (owner(ns="other"), CONFIG_MAP, cm(ns="ns"), "cross-namespace"),
        (owner(ns="ns"), CONFIG_MAP, cm(ns=None), "cluster-scoped resource"),
        (owner(ns=None), CONFIG_MAP, cm(), "no metadata.namespace"),
        (owner(uid=""), CONFIG_MAP, cm(), "no name or uid"),
        (owner(DEPLOYMENT), CONFIG_MAP, cm(), "not a ConfigMap"),
        (owner(WIDGET_V1), DEPLOYMENT, cm(), "not a Deployment"),
    ],
)
def test_invalid_owners_are_refused(
    the_owner: Obj, the_type: ResourceType, obj: Obj, says: str
) -> None:
    for setter in (set_controller_reference, set_owner_reference):
        target = copy.deepcopy(obj)
        with pytest.raises(OwnerReferenceError, match=re.escape(says)):
            setter(the_owner, target, the_type)
        assert target == obj


def test_remove_owner_reference() -> None:
    obj = cm()
    set_owner_reference(owner(name="a"), obj, CONFIG_MAP)
    set_controller_reference(owner(name="b"), obj, CONFIG_MAP)
    assert not remove_owner_reference(owner(name="c"), obj, CONFIG_MAP)
    assert remove_owner_reference(owner(name="b", uid="any"), obj, CONFIG_MAP)
    assert [r["name"] for r in obj["metadata"]["ownerReferences"]] == ["a"]
    assert remove_owner_reference(owner(name="a"), obj, CONFIG_MAP)
    assert "ownerReferences" not in obj["metadata"]


# Owners drawn from a small pool so that "same object" happens often: two groups (one
# with two versions), two kinds, two names.
OWNER_TYPES = [
    CONFIG_MAP,
    DEPLOYMENT,
    WIDGET_V1,
    WIDGET_V2,
    ResourceType("example.com", "v1", "Gadget", "gadgets"),
]


@st.composite
def owner_and_refs(draw: st.DrawFn) -> tuple[Obj, ResourceType, list[Obj]]:
    """An owner, its type, and an object's existing references: distinct objects (the API
    server keeps no two references to one object), at most one controller (it refuses
    more)."""
    identities = draw(
        st.lists(
            st.tuples(st.sampled_from(OWNER_TYPES), st.sampled_from(["a", "b"])),
            max_size=5,
            unique_by=lambda t: (t[0].group, t[0].kind, t[1]),
        )
    )
    controller_at = draw(st.none() | st.integers(0, max(0, len(identities) - 1)))
    refs: list[Obj] = []
    for i, (rt, name) in enumerate(identities):
        ref: Obj = {"apiVersion": rt.api_version, "kind": rt.kind, "name": name, "uid": f"{i}"}
        if i == controller_at:
            ref["controller"] = True
            ref["blockOwnerDeletion"] = True
        elif draw(st.booleans()):
            ref["controller"] = False
        refs.append(ref)
    rt = draw(st.sampled_from(OWNER_TYPES))
    return owner(rt, name=draw(st.sampled_from(["a", "b"])), uid="new"), rt, refs


def same(ref: Obj, the_owner: Obj, rt: ResourceType) -> bool:
    group = ref["apiVersion"].rpartition("/")[0]
    return (group, ref["kind"], ref["name"]) == (rt.group, rt.kind, the_owner["metadata"]["name"])


@given(owner_and_refs(), st.booleans())
def test_set_owner_references_keep_the_others_and_one_reference_to_the_owner(
    case: tuple[Obj, ResourceType, list[Obj]], as_controller: bool
) -> None:
    the_owner, rt, refs = case
    obj = cm(ownerReferences=copy.deepcopy(refs)) if refs else cm()
    existing = next((r for r in refs if r.get("controller") is True), None)
    if as_controller and existing is not None and not same(existing, the_owner, rt):
        with pytest.raises(AlreadyOwnedError) as info:
            set_controller_reference(the_owner, obj, rt)
        assert info.value.owner == existing
        assert obj["metadata"].get("ownerReferences", []) == refs
        return
    if as_controller:
        set_controller_reference(the_owner, obj, rt)
    else:
        set_owner_reference(the_owner, obj, rt)
    after = obj["metadata"]["ownerReferences"]
    # Every other reference stays, in order; the owner's stays at its place or is appended.
    assert [r for r in after if not same(r, the_owner, rt)] == [
        r for r in refs if not same(r, the_owner, rt)
    ]
    ours = [i for i, r in enumerate(after) if same(r, the_owner, rt)]
    assert len(ours) == 1
    old_index = next((i for i, r in enumerate(refs) if same(r, the_owner, rt)), len(refs))
    assert ours == [old_index]
    assert after[old_index]["uid"] == "new"
    assert sum(r.get("controller") is True for r in after) <= 1
    if as_controller:
        assert controller_of(obj) is after[old_index]


# -- merge patch ------------------------------------------------------------------------
def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, as the API server applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def as_json(value: Any) -> str:
    """Equality as JSON sees it (Python's True == 0 is False, but True == 1 holds)."""
    return json.dumps(value, sort_keys=True)


KEYS = st.sampled_from(["a", "b", "c", "metadata", "spec"])
JSON = st.recursive(
    st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
DOCS = st.dictionaries(KEYS, JSON, max_size=4)


@given(DOCS, DOCS)
def test_merge_patch_turns_before_into_after(before: Obj, after: Obj) -> None:
    frozen = copy.deepcopy((before, after))
    patch = _merge_patch(before, after)
    assert as_json(apply_merge_patch(before, patch)) == as_json(after)
    assert as_json((before, after)) == as_json(frozen)
    assert (patch == {}) == (as_json(before) == as_json(after))


def test_merge_patch_sends_lists_whole_and_removals_as_null() -> None:
    before = {"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}}
    after = {"metadata": {"finalizers": ["a", "b", "c"], "labels": {"x": "1"}}}
    assert _merge_patch(before, after) == {
        "metadata": {"finalizers": ["a", "b", "c"], "labels": {"y": None}}
    }


# -- retries and key checks, against a client that always loses -------------------------
class LosingClient:
    """Reads give a fresh version each time; every write answers 409."""

    def __init__(self, exists: bool = True) -> None:
        self.exists = exists
        self.reads = 0
        self.writes: list[str] = []

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        self.reads += 1
        if not self.exists:
            raise NotFound(404, "NotFound", f"{name} not found")
        return cm(name, namespace, resourceVersion=str(self.reads), finalizers=["other"])

    async def _lose(self, verb: str) -> Obj:
        self.writes.append(verb)
        raise Conflict(409, "Conflict", "the object has been modified")

    async def patch(self, *args: Any, **kwargs: Any) -> Obj:
        return await self._lose("patch")

    async def replace(self, *args: Any, **kwargs: Any) -> Obj:
        return await self._lose("replace")

    async def create(self, *args: Any, **kwargs: Any) -> Obj:
        self.writes.append("create")
        raise NotImplementedError


def losing(exists: bool = True) -> tuple[LosingClient, Client]:
    fake = LosingClient(exists)
    return fake, cast(Client, fake)


async def test_ensure_finalizer_gives_up_after_the_attempts_with_the_conflict() -> None:
    fake, client = losing()
    with pytest.raises(Conflict):
        await ensure_finalizer(client, CONFIG_MAP, cm(resourceVersion="0"), "f", attempts=3)
    # The first attempt uses the given object's version; each retry reads again.
    assert fake.writes == ["patch"] * 3
    assert fake.reads == 2


async def test_ensure_finalizer_reads_first_when_the_object_has_no_version() -> None:
    fake, client = losing()
    with pytest.raises(Conflict):
        await ensure_finalizer(client, CONFIG_MAP, cm(), "f", attempts=1)
    assert (fake.reads, fake.writes) == (1, ["patch"])


async def test_no_request_when_the_finalizer_is_already_as_wanted() -> None:
    fake, client = losing()
    obj = cm(resourceVersion="7", finalizers=["f"])
    assert await ensure_finalizer(client, CONFIG_MAP, obj, "f") is obj
    obj = cm(resourceVersion="7")
    assert await ensure_finalizer_removed(client, CONFIG_MAP, obj, "f") is obj
    assert (fake.reads, fake.writes) == (0, [])


async def test_ensure_finalizer_adds_none_to_an_object_being_deleted() -> None:
    fake, client = losing()
    obj = cm(resourceVersion="7", deletionTimestamp="2026-01-01T00:00:00Z")
    assert await ensure_finalizer(client, CONFIG_MAP, obj, "f") is obj
    assert fake.writes == []


async def test_finalize_is_a_no_op_unless_deleting_with_the_finalizer() -> None:
    fake, client = losing()
    calls: list[Obj] = []

    async def cleanup(obj: Obj) -> None:
        calls.append(obj)

    live = cm(resourceVersion="1", finalizers=["f"])
    deleting_without = cm(resourceVersion="1", deletionTimestamp="t", finalizers=["g"])
    assert not await finalize(client, CONFIG_MAP, live, "f", cleanup)
    assert not await finalize(client, CONFIG_MAP, deleting_without, "f", cleanup)
    assert calls == []
    assert fake.writes == []


async def test_finalize_keeps_the_finalizer_when_cleanup_fails() -> None:
    fake, client = losing()

    async def cleanup(obj: Obj) -> None:
        raise RuntimeError("external resource still there")

    obj = cm(resourceVersion="1", deletionTimestamp="t", finalizers=["f"])
    with pytest.raises(RuntimeError, match="still there"):
        await finalize(client, CONFIG_MAP, obj, "f", cleanup)
    assert fake.writes == []


@pytest.mark.parametrize("operation", [create_or_update, create_or_patch])
async def test_create_or_x_gives_up_after_the_attempts(operation: Any) -> None:
    fake, client = losing()
    calls = 0

    def mutate(obj: Obj) -> None:
        nonlocal calls
        calls += 1
        obj["data"] = {"k": "v"}

    with pytest.raises(Conflict):
        await operation(client, CONFIG_MAP, cm(), mutate, attempts=4)
    assert fake.reads == 4
    assert calls == 4  # mutate sees each fresh read
    assert len(fake.writes) == 4


@pytest.mark.parametrize("operation", [create_or_update, create_or_patch])
@pytest.mark.parametrize("exists", [True, False])
@pytest.mark.parametrize(
    "rename",
    [
        lambda o: o["metadata"].update(name="other"),
        lambda o: o["metadata"].update(namespace="other"),
        lambda o: o["metadata"].pop("namespace"),
    ],
)
async def test_mutate_must_not_change_the_key(operation: Any, exists: bool, rename: Any) -> None:
    fake, client = losing(exists)
    with pytest.raises(ObjectKeyChangedError):
        await operation(client, CONFIG_MAP, cm(), rename)
    assert fake.writes == []


@pytest.mark.parametrize("operation", [create_or_update, create_or_patch])
async def test_the_object_must_name_its_key(operation: Any) -> None:
    _, client = losing()
    with pytest.raises(ValueError, match=r"no metadata\.namespace"):
        await operation(client, CONFIG_MAP, cm(ns=None), lambda o: None)
    with pytest.raises(ValueError, match=r"has a metadata\.namespace"):
        await operation(client, NAMESPACE, cm(), lambda o: None)
    with pytest.raises(ValueError, match="attempts"):
        await operation(client, CONFIG_MAP, cm(), lambda o: None, attempts=0)


async def test_unchanged_sends_nothing() -> None:
    for operation in (create_or_update, create_or_patch):
        fake, client = losing()
        result, out = await operation(client, CONFIG_MAP, cm(), lambda o: None)
        assert result is OperationResult.UNCHANGED
        assert out["metadata"]["resourceVersion"] == "1"
        assert fake.writes == []


@pytest.mark.parametrize(
    ("before", "after"),
    [({"a": True}, {"a": 1}), ({"a": [0]}, {"a": [False]}), ({"a": {"b": 1}}, {"a": {"b": True}})],
)
def test_merge_patch_tells_json_types_apart(before: Obj, after: Obj) -> None:
    # Python says True == 1; JSON does not, and neither does the server.
    patch = _merge_patch(before, after)
    assert as_json(apply_merge_patch(before, patch)) == as_json(after)
    assert patch != {}
