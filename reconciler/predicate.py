"""Event filters: decide which informer events reach a controller's queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.resource import Obj


class Predicate(Protocol):
    def create(self, obj: Obj) -> bool: ...
    def update(self, old: Obj, new: Obj) -> bool: ...
    def delete(self, obj: Obj) -> bool: ...


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


@dataclass(frozen=True)
class Funcs:
    """A predicate from optional functions; an unset function lets everything through."""

    on_create: Callable[[Obj], bool] | None = None
    on_update: Callable[[Obj, Obj], bool] | None = None
    on_delete: Callable[[Obj], bool] | None = None

    def create(self, obj: Obj) -> bool:
        return self.on_create(obj) if self.on_create else True

    def update(self, old: Obj, new: Obj) -> bool:
        return self.on_update(old, new) if self.on_update else True

    def delete(self, obj: Obj) -> bool:
        return self.on_delete(obj) if self.on_delete else True


def new_predicate(keep: Callable[[Obj], bool]) -> Predicate:
    """The same object filter for every event (the new object on updates)."""
    return Funcs(keep, lambda _old, new: keep(new), keep)


def generation_changed() -> Predicate:
    """Updates only when metadata.generation changed: spec edits, not status writes."""
    return Funcs(
        on_update=lambda old, new: _meta(old).get("generation") != _meta(new).get("generation")
    )


def resource_version_changed() -> Predicate:
    """Drops resync updates (same object delivered again)."""
    return Funcs(
        on_update=lambda old, new: (
            _meta(old).get("resourceVersion") != _meta(new).get("resourceVersion")
        )
    )


def labels_changed() -> Predicate:
    return Funcs(on_update=lambda old, new: _meta(old).get("labels") != _meta(new).get("labels"))


def annotations_changed() -> Predicate:
    return Funcs(
        on_update=lambda old, new: _meta(old).get("annotations") != _meta(new).get("annotations")
    )


def and_(*predicates: Predicate) -> Predicate:
    return Funcs(
        lambda o: all(p.create(o) for p in predicates),
        lambda a, b: all(p.update(a, b) for p in predicates),
        lambda o: all(p.delete(o) for p in predicates),
    )


def or_(*predicates: Predicate) -> Predicate:
    return Funcs(
        lambda o: any(p.create(o) for p in predicates),
        lambda a, b: any(p.update(a, b) for p in predicates),
        lambda o: any(p.delete(o) for p in predicates),
    )


def not_(predicate: Predicate) -> Predicate:
    return Funcs(
        lambda o: not predicate.create(o),
        lambda a, b: not predicate.update(a, b),
        lambda o: not predicate.delete(o),
    )
