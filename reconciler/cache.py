"""The shared informer cache: one informer (one watch) per resource type per process.

Every controller in a manager asks this cache for its informers, so two
controllers watching Workspaces share one list+watch and one store. Reads from
the cache return the shared stored objects: treat them as read-only.
"""

from __future__ import annotations

import builtins
from typing import Any

import anyio
from anyio.abc import TaskGroup

from reconciler.client import Client
from reconciler.informer import Informer, InformerOptions
from reconciler.resource import ResourceType
from reconciler.store import NAMESPACE_INDEX

Obj = dict[str, Any]

# controller-runtime's default CacheSyncTimeout.
CACHE_SYNC_TIMEOUT = 120.0


class CacheSyncTimeout(Exception):
    """Informers did not finish their initial list in time."""


class InformerCache:
    """Creates informers on demand and runs them inside its own task group."""

    def __init__(self, client: Client, default_options: InformerOptions | None = None) -> None:
        self.client = client
        self.default_options = default_options or InformerOptions()
        self._options: dict[str, InformerOptions] = {}
        self._informers: dict[str, Informer] = {}
        self._tg: TaskGroup | None = None

    def configure(self, rt: ResourceType, options: InformerOptions) -> None:
        """Per-type options (e.g. a transform); must come before the first informer_for."""
        if rt.key in self._informers:
            raise RuntimeError(f"informer for {rt} already exists; configure it earlier")
        self._options[rt.key] = options

    def informer_for(self, rt: ResourceType) -> Informer:
        inf = self._informers.get(rt.key)
        if inf is None:
            inf = Informer(self.client, rt, self._options.get(rt.key, self.default_options))
            self._informers[rt.key] = inf
            if self._tg is not None:
                self._tg.start_soon(inf.run, name=f"informer {rt}")
        return inf

    @property
    def informers(self) -> builtins.list[Informer]:
        return list(self._informers.values())

    async def run(self) -> None:
        """Run every informer (including ones created later) until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                for inf in list(self._informers.values()):
                    tg.start_soon(inf.run, name=f"informer {inf.resource}")
                await anyio.sleep_forever()
            finally:
                self._tg = None

    async def wait_for_sync(self, timeout: float = CACHE_SYNC_TIMEOUT) -> None:
        with anyio.move_on_after(timeout):
            for inf in list(self._informers.values()):
                await inf.wait_synced()
            return
        pending = [str(i.resource) for i in self._informers.values() if not i.has_synced]
        raise CacheSyncTimeout(f"caches not synced after {timeout}s: {pending}")

    @property
    def synced(self) -> bool:
        return all(i.has_synced for i in self._informers.values())

    # -- cached reads -------------------------------------------------------------------
    def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj | None:
        key = f"{namespace}/{name}" if rt.namespaced and namespace else name
        return self.informer_for(rt).store.get(key)

    def list(self, rt: ResourceType, namespace: str | None = None) -> builtins.list[Obj]:
        store = self.informer_for(rt).store
        if namespace:
            return store.by_index(NAMESPACE_INDEX, namespace)
        return store.list()
