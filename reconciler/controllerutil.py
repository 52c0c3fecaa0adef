"""Finalizers, owner references and create-or-update for dict objects.

controller-runtime's ``pkg/controller/controllerutil`` (read at 86a0d40e, pre-v0.25),
on our :class:`Client` and JSON dicts. Three groups:

- **Pure edits** of one object, no I/O: ``add_finalizer`` / ``remove_finalizer`` /
  ``contains_finalizer``; ``set_controller_reference`` / ``set_owner_reference`` /
  ``remove_owner_reference`` / ``controller_of`` / ``has_controller_reference``. They
  edit the dict they are given, so never hand them an object from the informer cache
  (the cache's objects are shared); copy it first.
- **Persisted finalizers**: ``ensure_finalizer``, ``ensure_finalizer_removed`` and
  ``finalize`` (run a cleanup on an object being deleted, then drop its finalizer).
- **Create or update**: ``create_or_update`` (PUT) and ``create_or_patch`` (merge patch,
  status through the status subresource), returning an :class:`OperationResult`.

Conflicts. Every write carries the ``resourceVersion`` it was computed from, so a
concurrent writer makes it fail with 409 instead of being overwritten; the helper then
reads the object again, recomputes and retries, at most ``attempts`` times (client-go's
``retry.DefaultRetry``: 5 attempts about 10 ms apart), and raises the last
:class:`Conflict` after that. This matters most for finalizers: ``metadata.finalizers``
is a list, and a merge patch replaces lists whole, so a blind patch would erase a
finalizer another controller added in between.

What the API server does, measured against kube-apiserver 1.36 (tests/integration/
test_controllerutil.py): a write that changes nothing (a no-op PUT or PATCH, also one
that only drops a field the server defaults again) keeps the ``resourceVersion``; a
finalizer cannot be added to an object being deleted (422); removing the last finalizer
of such an object answers 200 with the object and deletes it.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import anyio

from reconciler.client import Client, PatchType
from reconciler.errors import Conflict, NotFound
from reconciler.resource import Obj, ResourceType

# client-go util/retry.DefaultRetry: Steps 5, Duration 10 ms, Factor 1.0, Jitter 0.1.
DEFAULT_CONFLICT_ATTEMPTS = 5
_RETRY_DELAY = 0.010
_RETRY_JITTER = 0.1

Mutate = Callable[[Obj], None]
"""Edits the object in place into its desired state. It runs once per attempt, each time
on a freshly read object, so it must set values rather than accumulate them."""

Cleanup = Callable[[Obj], Awaitable[None]]
"""Releases what a finalizer guards; raising keeps the finalizer (and the object)."""


class OperationResult(StrEnum):
    """What ``create_or_update`` / ``create_or_patch`` did ("ConfigMap a/b has been …").

    The values are controller-runtime's. ``UNCHANGED`` is also the answer when a write
    was sent but the API server stored nothing new (its ``resourceVersion`` stayed).
    """

    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"
    UPDATED_STATUS = "updatedStatus"
    """``create_or_patch`` only: the object and its status subresource were patched."""
    UPDATED_STATUS_ONLY = "updatedStatusOnly"
    """``create_or_patch`` only: only the status subresource was patched."""


class AlreadyOwnedError(Exception):
    """The object already has a controller reference to another owner.

    ``owner`` is that existing reference (a dict as in ``metadata.ownerReferences``).
    """

    def __init__(self, namespace: str, name: str, owner: Obj) -> None:
        where = f"{namespace}/{name}" if namespace else name
        super().__init__(
            f"{where} is already controlled by {owner.get('kind')} {owner.get('name')} "
            f"(uid {owner.get('uid')})"
        )
        self.namespace = namespace
        self.name = name
        self.owner = owner


class OwnerReferenceError(ValueError):
    """The owner cannot own the object: wrong scope or namespace, or not a stored object."""


class ObjectKeyChangedError(ValueError):
    """A mutate function changed the object's name or namespace."""


# -- finalizers: pure ---------------------------------------------------------------------
def contains_finalizer(obj: Obj, name: str) -> bool:
    return name in _finalizers(obj)


def add_finalizer(obj: Obj, name: str) -> bool:
    """Append ``name`` unless present; whether the object changed."""
    current = _finalizers(obj)
    if name in current:
        return False
    obj.setdefault("metadata", {})["finalizers"] = [*current, name]
    return True


def remove_finalizer(obj: Obj, name: str) -> bool:
    """Remove every occurrence of ``name`` (as controller-runtime does), keeping the order
    of the others; whether the object changed. An emptied list is dropped, as the API
    server serialises it."""
    current = _finalizers(obj)
    kept = [f for f in current if f != name]
    if len(kept) == len(current):
        return False
    meta = obj["metadata"]
    if kept:
        meta["finalizers"] = kept
    else:
        del meta["finalizers"]
    return True


def _finalizers(obj: Obj) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def _being_deleted(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


# -- finalizers: persisted ----------------------------------------------------------------
async def ensure_finalizer(
    client: Client,
    rt: ResourceType,
    obj: Obj,
    name: str,
    *,
    field_manager: str | None = None,
    attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
) -> Obj:
    """Make sure the stored object carries finalizer ``name``; return the object as stored.

    ``obj`` (e.g. from the cache) is not modified. The first attempt patches against its
    ``resourceVersion`` (it reads first if there is none); a conflict re-reads. No request
    is sent when the finalizer is already there (``obj`` itself is returned). An object
    being deleted gets no new finalizer (the API server forbids it): the returned object
    then shows a ``deletionTimestamp`` and no ``name``, so check it. Raises
    :class:`NotFound` if the object does not exist.
    """

    def edit(current: Obj) -> list[str] | None:
        if contains_finalizer(current, name) or _being_deleted(current):
            return None
        return [*_finalizers(current), name]

    out = await _patch_finalizers(client, rt, obj, edit, field_manager, attempts, missing_ok=False)
    assert out is not None  # missing_ok=False: a 404 is raised
    return out


async def ensure_finalizer_removed(
    client: Client,
    rt: ResourceType,
    obj: Obj,
    name: str,
    *,
    field_manager: str | None = None,
    attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
) -> Obj | None:
    """Make sure the stored object no longer carries ``name``; keep every other finalizer.

    Returns the object as stored, or ``None`` when it no longer exists (which is what
    happens, at once, when the last finalizer leaves an object being deleted: the
    returned object is then its final state).
    """

    def edit(current: Obj) -> list[str] | None:
        if not contains_finalizer(current, name):
            return None
        return [f for f in _finalizers(current) if f != name]

    return await _patch_finalizers(client, rt, obj, edit, field_manager, attempts, missing_ok=True)


async def finalize(
    client: Client,
    rt: ResourceType,
    obj: Obj,
    name: str,
    cleanup: Cleanup,
    *,
    field_manager: str | None = None,
    attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
) -> bool:
    """On an object being deleted that carries ``name``: ``await cleanup(obj)``, then
    remove ``name``. Returns whether it did; ``False`` (nothing called) on an object not
    being deleted or without the finalizer.

    An exception from ``cleanup`` propagates and the finalizer stays, so the object stays
    and the reconcile is retried. ``cleanup`` must be idempotent: a stale ``obj`` or a
    crash between the cleanup and the removal runs it again.
    """
    if not _being_deleted(obj) or not contains_finalizer(obj, name):
        return False
    await cleanup(obj)
    await ensure_finalizer_removed(
        client, rt, obj, name, field_manager=field_manager, attempts=attempts
    )
    return True


async def _patch_finalizers(
    client: Client,
    rt: ResourceType,
    obj: Obj,
    edit: Callable[[Obj], list[str] | None],
    field_manager: str | None,
    attempts: int,
    *,
    missing_ok: bool,
) -> Obj | None:
    """Apply ``edit`` (the new finalizer list, or None for "nothing to do") with a merge
    patch that carries the resourceVersion it was computed from; on 409 re-read and
    recompute. Returns the stored object, or None on 404 when ``missing_ok``."""
    _check_attempts(attempts)
    name, namespace = _key(rt, obj)
    # Without a resourceVersion the patch would not be conditional: read first.
    current: Obj | None = obj if _resource_version(obj) else None
    for attempt in range(attempts):
        try:
            if current is None:
                current = await client.get(rt, name, namespace)
            finalizers = edit(current)
            if finalizers is None:
                return current
            patch = {"metadata": {"finalizers": finalizers}}
            return await _patch_at(
                client, rt, name, namespace, patch, _resource_version(current), field_manager
            )
        except NotFound:
            if missing_ok:
                return None
            raise
        except Conflict:
            if attempt + 1 >= attempts:
                raise
            current = None
            await _backoff()
    raise AssertionError("unreachable: the last attempt returns or raises")


# -- owner references: pure ---------------------------------------------------------------
def set_controller_reference(
    owner: Obj,
    obj: Obj,
    owner_type: ResourceType,
    *,
    block_owner_deletion: bool = True,
) -> None:
    """Make ``owner`` the controller of ``obj`` (``controller: true``), for garbage
    collection and for ``enqueue_for_owner``.

    As controller-runtime: ``blockOwnerDeletion`` is true unless told otherwise (a
    foreground deletion of the owner then waits for ``obj``); an existing reference to the
    same owner (same API group, kind and name; the version and uid may differ) is
    replaced in place, not duplicated. Raises :class:`AlreadyOwnedError` if another owner
    is the controller, and :class:`OwnerReferenceError` for an owner that cannot own
    ``obj`` (see :func:`set_owner_reference`).
    """
    _validate_owner(owner, obj, owner_type)
    ref = _reference(owner, owner_type, block_owner_deletion)
    ref["controller"] = True
    existing = controller_of(obj)
    if existing is not None and not _same_object(existing, ref):
        meta = obj.get("metadata") or {}
        raise AlreadyOwnedError(
            str(meta.get("namespace") or ""), str(meta.get("name") or ""), dict(existing)
        )
    _upsert(obj, ref)


def set_owner_reference(
    owner: Obj,
    obj: Obj,
    owner_type: ResourceType,
    *,
    block_owner_deletion: bool | None = None,
) -> None:
    """Add ``owner`` to ``obj``'s owner references without making it the controller.

    An existing reference to the same owner is replaced by this one (so a controller
    reference to it stops being one, as in controller-runtime). ``owner`` must be a stored
    object (name and uid) of ``owner_type``. As controller-runtime's ``validateOwner``:
    a namespaced owner must be in ``obj``'s namespace, and cannot own a cluster-scoped
    object; a cluster-scoped owner can own anything. ``obj`` must carry its
    ``metadata.namespace`` (also before it is created).
    """
    _validate_owner(owner, obj, owner_type)
    _upsert(obj, _reference(owner, owner_type, block_owner_deletion))


def remove_owner_reference(owner: Obj, obj: Obj, owner_type: ResourceType) -> bool:
    """Drop every reference to ``owner`` (controller or not); whether ``obj`` changed."""
    target = _reference(owner, owner_type, None, need_uid=False)
    refs = _owner_references(obj)
    kept = [r for r in refs if not _same_object(r, target)]
    if len(kept) == len(refs):
        return False
    if kept:
        obj["metadata"]["ownerReferences"] = kept
    else:
        del obj["metadata"]["ownerReferences"]
    return True


def controller_of(obj: Obj) -> Obj | None:
    """The first owner reference with ``controller: true`` (metav1.GetControllerOf)."""
    for ref in _owner_references(obj):
        if ref.get("controller") is True:
            return ref
    return None


def has_controller_reference(obj: Obj) -> bool:
    return controller_of(obj) is not None


def _owner_references(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def _reference(
    owner: Obj, owner_type: ResourceType, block_owner_deletion: bool | None, need_uid: bool = True
) -> Obj:
    meta = owner.get("metadata") or {}
    name, uid = meta.get("name"), meta.get("uid")
    if not name or (need_uid and not uid):
        # The API server refuses a reference without uid (422 "must not be empty").
        raise OwnerReferenceError(
            f"owner {owner_type.kind} {name or '<unnamed>'} has no name or uid: "
            "pass the object as the API server returned it"
        )
    kind, api_version = owner.get("kind"), owner.get("apiVersion")
    if (kind and kind != owner_type.kind) or (
        api_version and _group(str(api_version)) != owner_type.group
    ):
        raise OwnerReferenceError(f"owner is a {kind} ({api_version}), not a {owner_type}")
    ref: Obj = {
        "apiVersion": owner_type.api_version,
        "kind": owner_type.kind,
        "name": name,
        "uid": uid,
    }
    if block_owner_deletion is not None:
        ref["blockOwnerDeletion"] = block_owner_deletion
    return ref


def _validate_owner(owner: Obj, obj: Obj, owner_type: ResourceType) -> None:
    owner_ns = (owner.get("metadata") or {}).get("namespace") or ""
    obj_ns = (obj.get("metadata") or {}).get("namespace") or ""
    if owner_type.namespaced and not owner_ns:
        raise OwnerReferenceError(f"namespaced owner {owner_type.kind} has no metadata.namespace")
    if not owner_ns:
        return
    if not obj_ns:
        raise OwnerReferenceError(
            f"cluster-scoped resource must not have a namespace-scoped owner "
            f"(owner's namespace {owner_ns})"
        )
    if owner_ns != obj_ns:
        # The garbage collector treats such a reference as an absent owner and would
        # delete the object.
        raise OwnerReferenceError(
            f"cross-namespace owner references are disallowed "
            f"(owner's namespace {owner_ns}, object's namespace {obj_ns})"
        )


def _upsert(obj: Obj, ref: Obj) -> None:
    refs = _owner_references(obj)
    for i, existing in enumerate(refs):
        if _same_object(existing, ref):
            refs[i] = ref
            break
    else:
        refs.append(ref)
    obj.setdefault("metadata", {})["ownerReferences"] = refs


def _same_object(a: Obj, b: Obj) -> bool:
    """controller-runtime's referSameObject: API group, kind and name; not version, uid."""
    return (
        _group(str(a.get("apiVersion") or "")) == _group(str(b.get("apiVersion") or ""))
        and a.get("kind") == b.get("kind")
        and a.get("name") == b.get("name")
    )


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


# -- create or update ---------------------------------------------------------------------
async def create_or_update(
    client: Client,
    rt: ResourceType,
    obj: Obj,
    mutate: Mutate,
    *,
    field_manager: str | None = None,
    attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
) -> tuple[OperationResult, Obj]:
    """Read the object ``obj`` names, let ``mutate`` edit it, and write it back with a PUT
    if it changed; create it (from a copy of ``obj``, edited by ``mutate``) if absent.

    Returns what happened and the object as stored. ``obj`` is not modified: only its
    name and namespace matter when the object exists, its other fields only seed a
    creation, so ``mutate`` must set everything you care about. Changes to ``status`` are
    dropped by the API server on types with a status subresource (the write then reports
    ``UNCHANGED`` if nothing else changed); use :func:`create_or_patch` for those.

    The PUT carries the read ``resourceVersion``: on a conflict, on a create that lost a
    race (AlreadyExists) or on an object deleted in between, it reads again and calls
    ``mutate`` again, at most ``attempts`` times. ``mutate`` changing the name or
    namespace raises :class:`ObjectKeyChangedError`; its own exceptions propagate.
    """
    _check_attempts(attempts)
    name, namespace = _key(rt, obj)
    for attempt in range(attempts):
        try:
            current = await _get_or_none(client, rt, name, namespace)
            if current is None:
                return OperationResult.CREATED, await _create(
                    client, rt, obj, mutate, name, namespace, field_manager
                )
            before = copy.deepcopy(current)
            _mutate(mutate, current, name, namespace)
            if current == before:
                return OperationResult.UNCHANGED, before
            out = await client.replace(rt, current, field_manager=field_manager)
            changed = _resource_version(out) != _resource_version(before)
            return (OperationResult.UPDATED if changed else OperationResult.UNCHANGED), out
        except (Conflict, NotFound):
            if attempt + 1 >= attempts:
                raise
            await _backoff()
    raise AssertionError("unreachable: the last attempt returns or raises")


async def create_or_patch(
    client: Client,
    rt: ResourceType,
    obj: Obj,
    mutate: Mutate,
    *,
    field_manager: str | None = None,
    attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
) -> tuple[OperationResult, Obj]:
    """As :func:`create_or_update`, but writes only what ``mutate`` changed, as JSON merge
    patches, and writes changes to ``status`` through the status subresource.

    Everything but ``status`` goes in one merge patch, then ``status`` in a second one on
    ``/status`` (as controller-runtime; a type without a status subresource answers that
    one with :class:`NotFound`). Each patch carries the ``resourceVersion`` it was
    computed from, so a merge patch replacing a list whole cannot erase a concurrent
    edit: a conflict re-reads and retries, at most ``attempts`` times. A status set by
    ``mutate`` on creation is dropped by the API server (types with a status subresource):
    requeue on ``CREATED`` to set it.

    Results: ``UPDATED`` (object only), ``UPDATED_STATUS`` (object and status),
    ``UPDATED_STATUS_ONLY``, ``UNCHANGED``, ``CREATED``; a patch the API server stores as
    a no-op (same ``resourceVersion``) does not count as an update.
    """
    _check_attempts(attempts)
    name, namespace = _key(rt, obj)
    # Survives retries: an object patch that succeeded before a status conflict counts.
    object_updated = False
    for attempt in range(attempts):
        writing_status = False
        try:
            current = await _get_or_none(client, rt, name, namespace)
            if current is None:
                return OperationResult.CREATED, await _create(
                    client, rt, obj, mutate, name, namespace, field_manager
                )
            before = copy.deepcopy(current)
            _mutate(mutate, current, name, namespace)
            out, version = before, _resource_version(before)
            object_patch = _merge_patch(_without_status(before), _without_status(current))
            if object_patch:
                out = await _patch_at(
                    client, rt, name, namespace, object_patch, version, field_manager
                )
                object_updated |= _resource_version(out) != version
                version = _resource_version(out)
            status_patch = _merge_patch(
                {"status": before.get("status")}, {"status": current.get("status")}
            )
            if not status_patch:
                return _patch_result(object_updated, False), out
            writing_status = True
            out = await _patch_at(
                client, rt, name, namespace, status_patch, version, field_manager, "status"
            )
            return _patch_result(object_updated, _resource_version(out) != version), out
        except (Conflict, NotFound) as err:
            # A 404 from /status is no race to retry: most likely the type has no status
            # subresource.
            if attempt + 1 >= attempts or (writing_status and isinstance(err, NotFound)):
                raise
            await _backoff()
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _patch_at(
    client: Client,
    rt: ResourceType,
    name: str,
    namespace: str | None,
    patch: Obj,
    resource_version: str,
    field_manager: str | None,
    subresource: str | None = None,
) -> Obj:
    """A merge patch made conditional on ``resource_version`` (409 if the object moved)."""
    patch.setdefault("metadata", {})["resourceVersion"] = resource_version
    return await client.patch(
        rt,
        name,
        patch,
        namespace=namespace,
        patch_type=PatchType.MERGE,
        subresource=subresource,
        field_manager=field_manager,
    )


def _merge_patch(before: Obj, after: Obj) -> Obj:
    """The JSON merge patch (RFC 7386) that turns ``before`` into ``after``: changed and
    new keys with their new values, removed keys as ``None``, nested objects recursively,
    lists whole. Empty when they are equal. Neither argument is modified."""
    patch: Obj = {}
    for key, value in after.items():
        if key in before and _json_equal(before[key], value):
            continue
        old = before.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            patch[key] = _merge_patch(old, value)
        else:
            patch[key] = copy.deepcopy(value)
    for key in before.keys() - after.keys():
        patch[key] = None
    return patch


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: Python's ``True == 1`` is not (numbers compare by
    value, so 1 and 1.0 are equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _patch_result(object_updated: bool, status_updated: bool) -> OperationResult:
    if object_updated:
        return OperationResult.UPDATED_STATUS if status_updated else OperationResult.UPDATED
    return OperationResult.UPDATED_STATUS_ONLY if status_updated else OperationResult.UNCHANGED


def _without_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


async def _get_or_none(
    client: Client, rt: ResourceType, name: str, namespace: str | None
) -> Obj | None:
    try:
        return await client.get(rt, name, namespace)
    except NotFound:
        return None


async def _create(
    client: Client,
    rt: ResourceType,
    seed: Obj,
    mutate: Mutate,
    name: str,
    namespace: str | None,
    field_manager: str | None,
) -> Obj:
    new = copy.deepcopy(seed)
    # The same shape mutate sees on an object read from the server.
    new.setdefault("apiVersion", rt.api_version)
    new.setdefault("kind", rt.kind)
    _mutate(mutate, new, name, namespace)
    return await client.create(rt, new, namespace, field_manager=field_manager)


def _mutate(mutate: Mutate, obj: Obj, name: str, namespace: str | None) -> None:
    mutate(obj)
    meta = obj.get("metadata") or {}
    if meta.get("name") != name or (meta.get("namespace") or None) != namespace:
        raise ObjectKeyChangedError(
            f"mutate must not change the object's name or namespace "
            f"({namespace}/{name} became {meta.get('namespace')}/{meta.get('name')})"
        )


# -- shared ---------------------------------------------------------------------------
def _key(rt: ResourceType, obj: Obj) -> tuple[str, str | None]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    namespace = meta.get("namespace") or None
    if not name:
        raise ValueError(f"{rt.kind} object has no metadata.name")
    if rt.namespaced and namespace is None:
        raise ValueError(f"namespaced {rt.kind} {name} has no metadata.namespace")
    if not rt.namespaced and namespace is not None:
        raise ValueError(f"cluster-scoped {rt.kind} {name} has a metadata.namespace")
    return str(name), namespace


def _resource_version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _check_attempts(attempts: int) -> None:
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")


async def _backoff() -> None:
    await anyio.sleep(_RETRY_DELAY * (1 + random.uniform(0, _RETRY_JITTER)))
