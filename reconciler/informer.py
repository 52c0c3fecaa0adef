"""Informer: a reflector (list, then watch) feeding a store and event handlers.

Semantics follow client-go's reflector: a paginated consistent list, then a
watch from the list's resourceVersion with bookmarks; a watch that the server
ends normally is reopened from the last seen resourceVersion without a relist;
a 410 (resourceVersion expired) relists; other failures back off exponentially
with jitter (0.8 s ×2 → 30 s, reset after 2 min of health). Unlike
kubernetes_asyncio's ``Watch``, no read is ever unbounded: a watchdog reopens
a stream that has delivered nothing (not even a bookmark) for
``watch_idle_timeout`` seconds.

Handlers are plain (non-async) callables run inline, in event order; they must
not block — enqueueing a request is the intended use. A handler that raises is
logged and does not stop the informer.
"""

from __future__ import annotations

import builtins
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog

from reconciler.client import Client, WatchEvent
from reconciler.errors import ApiError, Gone, TransportError
from reconciler.resource import ResourceType
from reconciler.store import IndexFunc, Store, object_key

Obj = dict[str, Any]
Transform = Callable[[Obj], Obj]

log = structlog.get_logger("reconciler.informer")

# client-go reflector defaults.
MIN_WATCH_TIMEOUT = 300  # seconds; each watch asks the server for [min, 2*min)
BACKOFF_INITIAL = 0.8
BACKOFF_MAX = 30.0
BACKOFF_FACTOR = 2.0
BACKOFF_RESET = 120.0
# Bookmarks arrive about once a minute from the watch cache; a stream silent for
# 1.5× that is treated as dead.
WATCH_IDLE_TIMEOUT = 90.0
PAGE_SIZE = 500


def strip_managed_fields(obj: Obj) -> Obj:
    """Default transform: managedFields are a quarter of a typical object and never read."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


class EventHandler(Protocol):
    def on_add(self, obj: Obj, initial: bool) -> None: ...
    def on_update(self, old: Obj, new: Obj) -> None: ...
    def on_delete(self, obj: Obj) -> None: ...


@dataclass(frozen=True)
class InformerOptions:
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    resync_period: float | None = None
    page_size: int = PAGE_SIZE
    watch_idle_timeout: float = WATCH_IDLE_TIMEOUT
    min_watch_timeout: int = MIN_WATCH_TIMEOUT
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    transform: Transform | None = strip_managed_fields
    indexers: dict[str, IndexFunc] = field(default_factory=dict)


@dataclass
class InformerStats:
    """Counters tests and metrics read to prove behaviour (e.g. one watch per type)."""

    lists: int = 0
    watches: int = 0
    relists_on_gone: int = 0
    watchdog_fired: int = 0
    errors: int = 0
    events: int = 0


class _Backoff:
    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._max = maximum
        self._next = initial
        self._last_failure = 0.0

    def next_delay(self) -> float:
        now = time.monotonic()
        if now - self._last_failure > BACKOFF_RESET:
            self._next = self._initial
        self._last_failure = now
        delay = self._next
        self._next = min(self._next * BACKOFF_FACTOR, self._max)
        # Jitter factor 1.0 as in client-go: delay in [d, 2d).
        return delay * (1.0 + random.random())


class Informer:
    """Keeps a store in sync with the API server for one resource type."""

    def __init__(
        self, client: Client, rt: ResourceType, options: InformerOptions | None = None
    ) -> None:
        self.client = client
        self.resource = rt
        self.options = options or InformerOptions()
        self.store = Store(self.options.indexers)
        self.stats = InformerStats()
        self._handlers: builtins.list[EventHandler] = []
        self._synced = False
        self._synced_event: anyio.Event | None = None  # created on demand (needs a loop)
        self._rv = ""
        self._log = log.bind(resource=str(rt))

    @property
    def has_synced(self) -> bool:
        return self._synced

    @property
    def resource_version(self) -> str:
        return self._rv

    async def wait_synced(self) -> None:
        if self._synced:
            return
        if self._synced_event is None:
            self._synced_event = anyio.Event()
        await self._synced_event.wait()

    def add_handler(self, handler: EventHandler) -> None:
        """Register a handler; if the store already holds objects, replay them as adds."""
        self._handlers.append(handler)
        for obj in self.store.list():
            self._call(handler.on_add, obj, True)

    async def run(self) -> None:
        """List and watch until cancelled."""
        async with anyio.create_task_group() as tg:
            if self.options.resync_period:
                tg.start_soon(self._resync_loop, self.options.resync_period)
            await self._list_and_watch()

    async def _list_and_watch(self) -> None:
        backoff = _Backoff(self.options.backoff_initial, self.options.backoff_max)
        need_list = True
        while True:
            if need_list:
                try:
                    await self._list()
                    need_list = False
                except (ApiError, TransportError) as err:
                    self.stats.errors += 1
                    delay = backoff.next_delay()
                    self._log.warning("list failed", error=str(err), retry_in=round(delay, 2))
                    await anyio.sleep(delay)
                    continue
            try:
                await self._watch()
            except Gone as err:
                self.stats.relists_on_gone += 1
                self._log.info("watch expired, relisting", error=err.message)
                need_list = True
            except TimeoutError:
                self.stats.watchdog_fired += 1
                self._log.warning(
                    "watch stream silent, reconnecting",
                    idle_timeout=self.options.watch_idle_timeout,
                )
            except (ApiError, TransportError) as err:
                self.stats.errors += 1
                delay = backoff.next_delay()
                self._log.warning("watch failed", error=str(err), retry_in=round(delay, 2))
                await anyio.sleep(delay)

    async def _list(self) -> None:
        o = self.options
        self.stats.lists += 1
        objs, rv = await self.client.list_all(
            self.resource,
            o.namespace,
            label_selector=o.label_selector,
            field_selector=o.field_selector,
            page_size=o.page_size,
            transform=o.transform,
        )
        initial = not self.has_synced
        added, updated, deleted = self.store.replace(objs)
        self._rv = rv
        self._synced = True
        if self._synced_event is not None:
            self._synced_event.set()
        for h in list(self._handlers):
            for obj in added:
                self._call(h.on_add, obj, initial)
            for old, new in updated:
                self._call(h.on_update, old, new)
            for obj in deleted:
                self._call(h.on_delete, obj)
        self._log.debug("listed", count=len(objs), resource_version=rv)

    async def _watch(self) -> None:
        o = self.options
        timeout = random.randint(o.min_watch_timeout, 2 * o.min_watch_timeout)
        self.stats.watches += 1
        started = time.monotonic()
        count = 0
        async with self.client.watch(
            self.resource,
            o.namespace,
            resource_version=self._rv,
            timeout_seconds=timeout,
            allow_bookmarks=True,
            label_selector=o.label_selector,
            field_selector=o.field_selector,
            idle_timeout=o.watch_idle_timeout,
        ) as events:
            async for event in events:
                count += 1
                self._apply(event)
        if count == 0 and time.monotonic() - started < 1.0:
            # A watch that ends at once with nothing in it means trouble upstream;
            # do not spin.
            raise TransportError("very short watch")

    def _apply(self, event: WatchEvent) -> None:
        self.stats.events += 1
        obj = event.object
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if event.type == "BOOKMARK":
            if rv:
                self._rv = rv
            return
        obj = self._transform(obj)
        if event.type == "DELETED":
            self.store.delete(object_key(obj))
            for h in list(self._handlers):
                self._call(h.on_delete, obj)
        else:
            prev = self.store.upsert(obj)
            for h in list(self._handlers):
                if prev is None:
                    self._call(h.on_add, obj, False)
                else:
                    self._call(h.on_update, prev, obj)
        if rv:
            self._rv = rv

    async def _resync_loop(self, period: float) -> None:
        while True:
            await anyio.sleep(period)
            for obj in self.store.list():
                for h in list(self._handlers):
                    self._call(h.on_update, obj, obj)

    def _transform(self, obj: Obj) -> Obj:
        t = self.options.transform
        return t(obj) if t is not None else obj

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self._log.exception("event handler failed", handler=getattr(fn, "__qualname__", fn))
