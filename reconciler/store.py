"""A thread-free in-memory object store with indexers.

Only the informer that owns a store writes to it, and it does so from one task,
so no locking is needed: asyncio switches tasks only at awaits, and no method
here awaits. Stored objects are shared, not copied: the store hands out the
objects it holds, and whoever reads them must not change them (the informer's
handlers get them this way). ``InformerCache`` reads are copies by default.

Invariant: for every indexer ``n`` and every stored key ``k``, ``k`` is in
``_indices[n][v]`` exactly for the values ``v`` in ``indexers[n](objects[k])``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias

from reconciler.resource import Obj

IndexFunc: TypeAlias = Callable[[Obj], Iterable[str]]
# Aliases for annotations inside Store, where ``list`` names the method.
_Objs: TypeAlias = list[Obj]
_Strs: TypeAlias = list[str]
_Pairs: TypeAlias = list[tuple[Obj, Obj]]

NAMESPACE_INDEX = "namespace"


def object_key(obj: Obj) -> str:
    """``namespace/name``, or ``name`` for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def namespace_index(obj: Obj) -> _Strs:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


class Store:
    """Objects by key, plus secondary indices (a namespace index is always present)."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self._objects: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: namespace_index}
        self._indices: dict[str, dict[str, set[str]]] = {NAMESPACE_INDEX: {}}
        for name, fn in (indexers or {}).items():
            self.add_indexer(name, fn)

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: str) -> bool:
        return key in self._objects

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        if name in self._indexers and self._indexers[name] is not fn:
            raise ValueError(f"indexer {name!r} already exists")
        self._indexers[name] = fn
        index: dict[str, set[str]] = {}
        for key, obj in self._objects.items():
            for value in fn(obj):
                index.setdefault(value, set()).add(key)
        self._indices[name] = index

    def has_index(self, name: str) -> bool:
        return name in self._indexers

    def get(self, key: str) -> Obj | None:
        return self._objects.get(key)

    def list(self) -> _Objs:
        return list(self._objects.values())

    def keys(self) -> _Strs:
        return list(self._objects)

    def by_index(self, index: str, value: str) -> _Objs:
        """Objects whose ``index`` function returned ``value``; KeyError for an unknown
        index."""
        keys = self._indices[index].get(value, ())
        return [self._objects[k] for k in keys]

    def by_indices(self, wanted: Mapping[str, str]) -> _Objs:
        """Objects that are under ``value`` in every ``index`` of ``wanted``: the
        intersection of the buckets, smallest first. KeyError for an unknown index."""
        buckets = sorted(
            (self._indices[index].get(value, set()) for index, value in wanted.items()), key=len
        )
        if not buckets:
            return self.list()
        keys = buckets[0].intersection(*buckets[1:]) if len(buckets) > 1 else buckets[0]
        return [self._objects[k] for k in keys]

    def upsert(self, obj: Obj) -> Obj | None:
        """Insert or replace; returns the previous object, if any."""
        key = object_key(obj)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        self._index(key, obj)
        return old

    def delete(self, key: str) -> Obj | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[Obj]) -> tuple[_Objs, _Pairs, _Objs]:
        """Swap in a full listing; returns (added, updated (old, new), deleted)."""
        fresh = {object_key(o): o for o in objs}
        added: _Objs = []
        updated: _Pairs = []
        deleted = [self._objects[k] for k in self._objects.keys() - fresh.keys()]
        for key in self._objects.keys() - fresh.keys():
            self.delete(key)
        for obj in fresh.values():
            old = self.upsert(obj)
            if old is None:
                added.append(obj)
            elif _rv(old) != _rv(obj):
                updated.append((old, obj))
        return added, updated, deleted

    def _index(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                bucket = index.get(value)
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del index[value]


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))
