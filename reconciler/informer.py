"""Informer: a reflector (list, then watch) feeding a store and event handlers.

The reflector lists every object (paginated), then watches from the list's
resourceVersion with bookmarks. Each event, a BOOKMARK included, moves the
*resume point*: the resourceVersion the next watch starts from. What happens
when a watch stops is a table, :data:`NEXT_STEP`, over the ways it can stop
(:class:`WatchEnd`); it follows client-go's reflector (tools/cache/reflector.go,
v0.36.3) except where noted:

- the server ended the stream, or the connection broke after it had opened:
  watch again at once from the resume point, no relist (client-go treats EOF,
  resets and timeouts on an open stream as a normal end);
- it ended within 1 s with no event ("very short"): back off, then relist;
- 410 Gone / Expired: relist — at once, unless nothing has arrived since the
  last list (a fresh list's version expiring at once would otherwise spin), then
  after a backoff. client-go always backs off first; we relist at once because a
  410 after a healthy watch is routine and a relist is cheap (below);
- 429: back off, watch again from the resume point;
- no HTTP answer to the watch request (refused, reset, TLS, timeout): back off,
  watch again from the resume point. client-go does this only for "connection
  refused" and relists otherwise; but the server never judged our version, so
  the resumed watch is exactly as safe — it continues, or answers 410 — while a
  relist of 10,000 Workspaces moves 11.7 MB and, with the notifications below,
  queues 10,000 requests in a controller without predicates (measured);
- any other error answer (an ERROR event or a non-2xx response: "too large
  resource version", 5xx, 4xx): back off, then relist. Watching again from the
  same version could loop forever on a version the server will never serve
  (after an etcd restore its revisions are lower than ours);
- the watchdog (our addition; client-go has none): a stream that has delivered
  nothing, not even a bookmark, for ``watch_idle_timeout`` seconds is dropped.
  If it had delivered something, it went dead (a half-open connection): watch
  again at once. If it never delivered anything, the server may be holding a
  watch at a version it has not reached — kube-apiserver 1.36 accepts such a
  watch and keeps it silent instead of answering "too large" (measured) — so the
  informer first asks with a one-item list *at* the resume point (the server
  answers 504 "Too large resource version" or 410 if it cannot serve it, in
  which case we relist; otherwise we watch again). A quiet resource also gets
  here, since bookmarks are not guaranteed every minute (measured up to 120 s).

Backoff: exponential with jitter, 0.8 s ×2 capped at 30 s, each delay drawn from
[d, 2d); the sequence restarts when 2 min have passed since the previous delay
(client-go's stated intent, "if we don't backoff for 2min, assume API server is
healthy"; its code counts the 2 min from the start of the sequence instead).

Every list is a consistent read (no resourceVersion), where client-go lists
from the watch cache (resourceVersion "0" first, then its last version) or, from
1.35, streams the list (WatchList). Why: since kube-apiserver 1.34
ConsistentListFromCache is GA and locked on, so a consistent list is served from
the watch cache after one cheap read of etcd's current revision, and with
ListFromCacheSnapshot (beta, on in 1.34+) so are its continuation pages.
Measured on 1.36.3 (2,000 ConfigMaps, 500 a page): 4 pages, one etcd list
request, no objects fetched from etcd. The cost over "0" is one etcd read (on
servers before 1.31, or with an etcd too old for progress requests, a quorum
read of every page from etcd: accepted, since relists are rare); the
gain is that a (re)list never shows state older than what was already seen,
never needs a version the server may not have, and so after any failure the
next watch starts from a version the server can serve. WatchList mainly saves
the API server the memory of building one list response; pages from the cache
already bound that, and it would be a second sync path to keep correct.

A relist notifies every listed object that was already cached as an update
(old, new), even with an unchanged resourceVersion, as client-go's Replace does;
vanished objects are deletes and new ones adds (deletes first, then the list in
order). A relist happens because events may have been missed, and an unchanged
resourceVersion does not prove an unchanged object (resourceVersions repeat
after an etcd restore; an aggregated API may not set them). Handlers that want
only real changes filter with ``predicate.resource_version_changed()``, as the
Workspace controller does: a relist of 10,000 unchanged Workspaces then costs
63 ms of CPU and queues nothing (measured).

Handlers are plain (non-async) callables run inline, in event order; they must
not block — enqueueing a request is the intended use. A handler that raises is
logged and does not stop the informer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import anyio
import structlog

from reconciler.client import Client, WatchEvent
from reconciler.errors import ApiError, Gone, TooManyRequests, TransportError
from reconciler.resource import Obj, ResourceType
from reconciler.store import IndexFunc, Store, object_key

Transform = Callable[[Obj], Obj]

log = structlog.get_logger("reconciler.informer")

# client-go reflector defaults.
MIN_WATCH_TIMEOUT = 300  # seconds; each watch asks the server for [min, 2*min]
BACKOFF_INITIAL = 0.8
BACKOFF_MAX = 30.0
BACKOFF_FACTOR = 2.0
BACKOFF_RESET = 120.0
VERY_SHORT_WATCH = 1.0  # seconds; a watch ending sooner with no event is a failure
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
    probes: int = 0
    errors: int = 0
    events: int = 0


class Backoff:
    """The reflector's retry delays: ``initial`` ×2 up to ``maximum``, jittered to [d, 2d).

    Pure: time and randomness come in as functions, so the sequence is testable.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._max = maximum
        self._next = initial
        self._last: float | None = None
        self._clock = clock
        self._rand = rand

    def next_delay(self) -> float:
        now = self._clock()
        if self._last is not None and now - self._last > BACKOFF_RESET:
            self._next = self._initial
        self._last = now
        delay = self._next
        self._next = min(self._next * BACKOFF_FACTOR, self._max)
        return delay * (1.0 + self._rand())


class WatchEnd(Enum):
    """How one watch stopped."""

    ENDED = "ended"  # closed by the server, or broke once open; not very short
    VERY_SHORT = "very short"  # closed or broke within VERY_SHORT_WATCH, no event
    SILENT = "silent"  # the watchdog fired after the stream had delivered events
    SILENT_FROM_START = "silent from start"  # the watchdog fired; nothing ever came
    EXPIRED = "expired"  # 410: the resume point is older than the server keeps
    THROTTLED = "throttled"  # 429
    UNREACHABLE = "unreachable"  # the watch request got no HTTP answer
    FAILED = "failed"  # any other error answer, as a response or an ERROR event


class Step(Enum):
    """What the reflector does next."""

    REWATCH = "rewatch"
    BACKOFF_REWATCH = "back off, rewatch"
    RELIST = "relist"
    BACKOFF_RELIST = "back off, relist"
    PROBE = "probe"  # ask whether the server can serve the resume point

    @property
    def backoff(self) -> bool:
        return self in (Step.BACKOFF_REWATCH, Step.BACKOFF_RELIST)

    @property
    def relist(self) -> bool:
        return self in (Step.RELIST, Step.BACKOFF_RELIST)


NEXT_STEP: dict[WatchEnd, Step] = {
    WatchEnd.ENDED: Step.REWATCH,
    WatchEnd.VERY_SHORT: Step.BACKOFF_RELIST,
    WatchEnd.SILENT: Step.REWATCH,
    WatchEnd.SILENT_FROM_START: Step.PROBE,
    WatchEnd.EXPIRED: Step.RELIST,
    WatchEnd.THROTTLED: Step.BACKOFF_REWATCH,
    WatchEnd.UNREACHABLE: Step.BACKOFF_REWATCH,
    WatchEnd.FAILED: Step.BACKOFF_RELIST,
}


def classify(error: BaseException | None, *, opened: bool, events: int, seconds: float) -> WatchEnd:
    """How a watch stopped, from what it raised (None: the server closed it), whether
    its response had arrived, how many events it delivered and how long it lasted."""
    if isinstance(error, Gone):
        return WatchEnd.EXPIRED
    if isinstance(error, TooManyRequests):
        return WatchEnd.THROTTLED
    if isinstance(error, ApiError):
        return WatchEnd.FAILED
    if not opened:
        return WatchEnd.UNREACHABLE
    if isinstance(error, TimeoutError):
        return WatchEnd.SILENT if events else WatchEnd.SILENT_FROM_START
    if events == 0 and seconds < VERY_SHORT_WATCH:
        return WatchEnd.VERY_SHORT
    return WatchEnd.ENDED


def next_step(end: WatchEnd, *, seen_since_list: bool) -> Step:
    """:data:`NEXT_STEP`, except that a 410 before anything arrived since the last list
    backs off first: the server could not serve the version it had just listed at."""
    if end is WatchEnd.EXPIRED and not seen_since_list:
        return Step.BACKOFF_RELIST
    return NEXT_STEP[end]


class Informer:
    """Keeps a store in sync with the API server for one resource type."""

    def __init__(
        self,
        client: Client,
        rt: ResourceType,
        options: InformerOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.client = client
        self.resource = rt
        self.options = options or InformerOptions()
        self.store = Store(self.options.indexers)
        self.stats = InformerStats()
        self._handlers: list[EventHandler] = []
        self._synced = False
        self._synced_event: anyio.Event | None = None  # created on demand (needs a loop)
        # The resume point: the list's resourceVersion, then each event's.
        self._rv = ""
        # Whether any watch event arrived since the last list (see next_step).
        self._seen_since_list = False
        self._clock = clock
        self._sleep = sleep
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
        o = self.options
        backoff = Backoff(o.backoff_initial, o.backoff_max, clock=self._clock)
        step = Step.RELIST
        while True:
            if step.relist:
                try:
                    await self._list()
                except (ApiError, TransportError) as err:
                    self.stats.errors += 1
                    delay = backoff.next_delay()
                    self._log.warning("list failed", error=str(err), retry_in=round(delay, 2))
                    await self._sleep(delay)
                    continue
            if step is Step.PROBE:
                step = await self._probe()
                delay = backoff.next_delay() if step.backoff else 0.0
            else:
                end, error = await self._watch()
                step = next_step(end, seen_since_list=self._seen_since_list)
                delay = backoff.next_delay() if step.backoff else 0.0
                self._report(end, error, step, delay)
            if step.backoff:
                await self._sleep(delay)

    def _report(self, end: WatchEnd, err: BaseException | None, step: Step, delay: float) -> None:
        fields: dict[str, Any] = {"error": str(err)} if err is not None else {}
        if step.backoff:
            fields["retry_in"] = round(delay, 2)
        if end is WatchEnd.EXPIRED:
            self.stats.relists_on_gone += 1
            self._log.info("watch expired, relisting", then=step.value, **fields)
        elif end in (WatchEnd.SILENT, WatchEnd.SILENT_FROM_START):
            self.stats.watchdog_fired += 1
            self._log.warning(
                "watch stream silent, reconnecting",
                idle_timeout=self.options.watch_idle_timeout,
                then=step.value,
            )
        elif end is WatchEnd.ENDED:
            if err is not None:
                self._log.info("watch stream broke, resuming", **fields)
        else:
            self.stats.errors += 1
            self._log.warning("watch failed", end=end.value, then=step.value, **fields)

    async def _list(self) -> None:
        o = self.options
        self.stats.lists += 1
        # No resourceVersion: a consistent read (see the module docstring).
        objs, rv = await self.client.list_all(
            self.resource,
            o.namespace,
            label_selector=o.label_selector,
            field_selector=o.field_selector,
            page_size=o.page_size,
            transform=o.transform,
        )
        initial = not self.has_synced
        before = {object_key(o): o for o in self.store.list()}
        _, _, deleted = self.store.replace(objs)
        self._rv = rv
        self._seen_since_list = False
        self._synced = True
        if self._synced_event is not None:
            self._synced_event.set()
        for h in list(self._handlers):
            for obj in deleted:
                self._call(h.on_delete, obj)
            for obj in objs:
                old = before.get(object_key(obj))
                if old is None:
                    self._call(h.on_add, obj, initial)
                else:
                    self._call(h.on_update, old, obj)
        self._log.debug("listed", count=len(objs), resource_version=rv)

    async def _watch(self) -> tuple[WatchEnd, BaseException | None]:
        """One watch from the resume point, applied as it streams; how it stopped."""
        o = self.options
        timeout = random.randint(o.min_watch_timeout, 2 * o.min_watch_timeout)
        self.stats.watches += 1
        started = self._clock()
        opened = False
        count = 0
        error: BaseException | None = None
        try:
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
                opened = True
                async for event in events:
                    count += 1
                    self._apply(event)
        except (ApiError, TransportError, TimeoutError) as err:
            error = err
        end = classify(error, opened=opened, events=count, seconds=self._clock() - started)
        return end, error

    async def _probe(self) -> Step:
        """Can the server serve the resume point? A one-item list at exactly that version
        answers 410 or 504 "Too large resource version" if not."""
        o = self.options
        self.stats.probes += 1
        try:
            await self.client.list(
                self.resource,
                o.namespace,
                label_selector=o.label_selector,
                field_selector=o.field_selector,
                limit=1,
                resource_version=self._rv,
            )
        except Gone as err:
            step = next_step(WatchEnd.EXPIRED, seen_since_list=self._seen_since_list)
            self.stats.relists_on_gone += 1
            self._log.info("watch expired, relisting", error=str(err), then=step.value)
            return step
        except TooManyRequests as err:
            self._log.warning("probe throttled", error=str(err))
            return Step.BACKOFF_REWATCH
        except ApiError as err:
            self.stats.errors += 1
            self._log.warning("resource version not served, relisting", error=str(err))
            return Step.RELIST
        except TransportError as err:
            self.stats.errors += 1
            self._log.warning("probe failed", error=str(err))
            return Step.BACKOFF_REWATCH
        return Step.REWATCH

    def _apply(self, event: WatchEvent) -> None:
        self.stats.events += 1
        self._seen_since_list = True
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
            await self._sleep(period)
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
