"""Fluent wiring of a controller into a manager (controller-runtime's builder).

``Builder(mgr).for_(T).complete(reconciler)`` is controller-runtime's
``builder.ControllerManagedBy(mgr).For(&T{}).Complete(r)``. As there, the builder depends
on the manager and never the reverse: the manager runs controllers, it does not build
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.controller import Controller, ControllerOptions, Reconciler
from reconciler.handler import Mapper, enqueue_for_object, enqueue_for_owner
from reconciler.manager import Manager
from reconciler.predicate import Predicate
from reconciler.resource import ResourceType


class BuilderError(Exception):
    """The builder was wired inconsistently (e.g. owns() without for_())."""


@dataclass
class _Watch:
    resource: ResourceType
    mapper: Mapper
    predicates: list[Predicate] = field(default_factory=list)


class Builder:
    """``Builder(mgr).for_(T).owns(U).watches(V, mapper).complete(reconciler)``."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager
        self._for: _Watch | None = None
        self._watches: list[_Watch] = []
        self._global: list[Predicate] = []
        self._options = ControllerOptions()
        self._name: str | None = None

    def for_(self, rt: ResourceType, *predicates: Predicate) -> Builder:
        """The type this controller reconciles; its events enqueue the object itself."""
        if self._for is not None:
            raise BuilderError("for_() may only be called once")
        self._for = _Watch(rt, enqueue_for_object, list(predicates))
        return self

    def owns(
        self, rt: ResourceType, *predicates: Predicate, only_controller: bool = True
    ) -> Builder:
        """Objects owned by the ``for_`` type; their events enqueue the owner."""
        if self._for is None:
            raise BuilderError("owns() can only be used together with for_(); call for_ first")
        mapper = enqueue_for_owner(self._for.resource, only_controller=only_controller)
        self._watches.append(_Watch(rt, mapper, list(predicates)))
        return self

    def watches(self, rt: ResourceType, mapper: Mapper, *predicates: Predicate) -> Builder:
        """Any type, mapped to requests by ``mapper``."""
        self._watches.append(_Watch(rt, mapper, list(predicates)))
        return self

    def with_event_filter(self, predicate: Predicate) -> Builder:
        """A predicate applied to every watch of this controller."""
        self._global.append(predicate)
        return self

    def with_options(self, options: ControllerOptions) -> Builder:
        self._options = options
        return self

    def named(self, name: str) -> Builder:
        self._name = name
        return self

    def complete(self, reconciler: Reconciler) -> Controller:
        watches = ([self._for] if self._for else []) + self._watches
        if not watches:
            raise BuilderError("there are no watches configured; the controller would never run")
        name = self._name or (self._for.resource.kind.lower() if self._for else None)
        if not name:
            raise BuilderError("a controller without for_() needs named()")
        if any(c.name == name for c in self._manager.controllers):
            raise BuilderError(f"controller name {name!r} is already used")
        controller = Controller(name, reconciler, self._options, metrics=self._manager.metrics)
        for w in watches:
            informer = self._manager.cache.informer_for(w.resource)
            controller.watch(informer, w.mapper, [*self._global, *w.predicates])
        self._manager.add(controller)
        return controller
