"""Event handlers: turn informer events into reconcile requests on a queue."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from reconciler.predicate import Predicate
from reconciler.request import Request
from reconciler.resource import Obj, ResourceType
from reconciler.workqueue import RateLimitingQueue

Mapper = Callable[[Obj], Iterable[Request]]


def request_for(obj: Obj) -> Request:
    meta = obj.get("metadata") or {}
    return Request(meta.get("namespace") or "", meta["name"])


def enqueue_for_object(obj: Obj) -> list[Request]:
    """The object itself (the ``for_`` type of a controller)."""
    return [request_for(obj)]


def enqueue_for_owner(owner: ResourceType, *, only_controller: bool = True) -> Mapper:
    """The owner named in ``metadata.ownerReferences`` (for ``owns``)."""

    def mapper(obj: Obj) -> list[Request]:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or ""
        out: list[Request] = []
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") != owner.kind:
                continue
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            if group != owner.group:
                continue
            if only_controller and not ref.get("controller"):
                continue
            out.append(Request(ns if owner.namespaced else "", ref["name"]))
        return out

    return mapper


class EnqueueHandler:
    """An informer handler: filter with predicates, map to requests, add to the queue."""

    def __init__(
        self,
        queue: RateLimitingQueue[Request],
        mapper: Mapper = enqueue_for_object,
        predicates: Sequence[Predicate] = (),
    ) -> None:
        self._queue = queue
        self._mapper = mapper
        self._predicates = tuple(predicates)

    def on_add(self, obj: Obj, initial: bool) -> None:
        if all(p.create(obj) for p in self._predicates):
            self._enqueue(self._mapper(obj))

    def on_update(self, old: Obj, new: Obj) -> None:
        if all(p.update(old, new) for p in self._predicates):
            # Both sides: an owner reference that moved must wake the old owner too.
            self._enqueue({*self._mapper(old), *self._mapper(new)})

    def on_delete(self, obj: Obj) -> None:
        if all(p.delete(obj) for p in self._predicates):
            self._enqueue(self._mapper(obj))

    def _enqueue(self, requests: Iterable[Request]) -> None:
        for req in requests:
            self._queue.add(req)
