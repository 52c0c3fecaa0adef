"""Event recorder: core/v1 Events written in the background, aggregated like client-go.

Reconcilers call :meth:`EventRecorder.record`, which is synchronous and never waits on
the network: it applies a per-object spam filter and appends to a bounded buffer. The
recorder's :meth:`~EventRecorder.run` task writes the buffer out.

What reaches the API server follows client-go's ``EventCorrelator``:

- identical occurrences (same object, type, reason, message, action) within
  ``aggregation_window`` update one Event — a merge patch of ``count`` and
  ``lastTimestamp`` — instead of creating a new object each time;
- each object and event type gets a token bucket (burst 25, one token back every 5
  minutes), so one object stuck in a hot loop cannot flood the API server or etcd, and
  its Normal events cannot crowd out its Warnings;
- a full buffer drops the new occurrence and counts it, rather than block a reconciler.

Events are best effort: a write that fails (403 without RBAC, 404 when the namespace
is gone, a timeout) is logged once per namespace and cause, and dropped; it is never
raised to the caller and never retried.

core/v1 rather than events.k8s.io/v1: ``kubectl describe`` and ``kubectl get events``
show core/v1 Events on every cluster version. The API server requires such an Event
to live in its object's namespace, and in ``default`` for cluster-scoped objects.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import anyio
import structlog

from reconciler.errors import ApiError, NotFound, TransportError
from reconciler.ratelimit import BucketRateLimiter
from reconciler.resource import CORE_EVENT, Obj, ResourceType

__all__ = [
    "AGGREGATION_WINDOW",
    "DEFAULT_BUFFER_SIZE",
    "MAX_MESSAGE_BYTES",
    "SPAM_BURST",
    "SPAM_REFILL_INTERVAL",
    "EventRecorder",
    "EventRecorderStats",
    "EventType",
]

EventType = Literal["Normal", "Warning"]

log = structlog.get_logger("reconciler.events")

MAX_MESSAGE_BYTES = 1024
"""Messages are cut to this many UTF-8 bytes (client-go's limit for an Event note)."""
DEFAULT_BUFFER_SIZE = 1000
"""Occurrences waiting to be written; client-go's broadcaster queue holds as many."""
SPAM_BURST = 25
"""Occurrences of one type (Normal, Warning) one object may produce back to back before
the spam filter applies (client-go's defaultSpamBurst)."""
SPAM_REFILL_INTERVAL = 300.0
"""Seconds for the spam filter to give an object and type one occurrence back (client-go:
defaultSpamQPS = 1/300)."""
AGGREGATION_WINDOW = 600.0
"""An identical occurrence within this many seconds of the previous one bumps its count."""
REQUEST_TIMEOUT = 10.0
"""Bound of each Event write (seconds); a slow API server must not stall the queue."""

# LRU bounds of the per-object and per-series state (client-go's maxLruCacheEntries).
_CACHE_SIZE = 4096
# Event names are DNS subdomains: at most 253 characters, 17 of them for ".<16 hex>".
_MAX_NAME = 253
_NAME_SUFFIX_HEX = 8
_MAX_INSTANCE = 128


@dataclass
class EventRecorderStats:
    """What happened to recorded occurrences; read by tests and logs."""

    sent: int = 0
    """Events created."""
    aggregated: int = 0
    """Occurrences folded into an existing Event (its count patched)."""
    dropped: int = 0
    """Occurrences dropped because the buffer was full."""
    filtered: int = 0
    """Occurrences dropped by the per-object spam filter."""
    failed: int = 0
    """Occurrences whose write failed (logged and dropped)."""


class _EventAPI(Protocol):
    """The verbs the recorder needs; :class:`reconciler.client.Client` provides them."""

    async def create(self, rt: ResourceType, obj: Obj, namespace: str | None = None) -> Obj: ...

    async def patch(
        self, rt: ResourceType, name: str, patch: Obj, *, namespace: str | None = None
    ) -> Obj: ...


@dataclass(frozen=True, slots=True)
class _Occurrence:
    ref: Obj
    namespace: str
    type: str
    reason: str
    message: str
    action: str | None
    timestamp: str  # metav1.Time of the record() call
    at: float  # monotonic time of the record() call

    @property
    def series_key(self) -> tuple[str, ...]:
        return (*_object_key(self.ref), self.type, self.reason, self.message, self.action or "")


@dataclass(slots=True)
class _Series:
    """An Event already on the server, and how many occurrences it counts."""

    name: str
    count: int
    last_at: float


class EventRecorder:
    """Records Events about objects on behalf of one component (``source.component``)."""

    def __init__(
        self,
        client: _EventAPI,
        component: str,
        *,
        instance: str | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        spam_burst: int = SPAM_BURST,
        spam_refill_interval: float = SPAM_REFILL_INTERVAL,
        aggregation_window: float = AGGREGATION_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not component:
            raise ValueError("component must not be empty")
        if buffer_size < 1 or spam_burst < 1:
            raise ValueError("buffer_size and spam_burst must be >= 1")
        if not (spam_refill_interval > 0 and aggregation_window >= 0):
            raise ValueError("spam_refill_interval must be > 0 and aggregation_window >= 0")
        self._client = client
        self._component = component
        self._instance = (instance or socket.gethostname())[:_MAX_INSTANCE]
        self._buffer_size = buffer_size
        self._spam_burst = spam_burst
        self._spam_refill_interval = spam_refill_interval
        self._window = aggregation_window
        self._clock = clock
        self.stats = EventRecorderStats()
        self._queue: deque[_Occurrence] = deque()
        self._wakeup: anyio.Event | None = None  # created by run(): needs an event loop
        self._idle: anyio.Event | None = None  # set while run() has nothing to write
        self._buckets: OrderedDict[tuple[str, ...], BucketRateLimiter] = OrderedDict()
        self._series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self._logged_failures: set[tuple[str, str]] = set()
        self._log = log.bind(component=component)

    def record(
        self,
        obj: Obj,
        type: EventType,
        reason: str,
        message: str,
        action: str | None = None,
    ) -> None:
        """Queue an Event about ``obj``; never blocks, never raises for I/O reasons.

        Call it from the event loop's thread (a reconciler), not from worker threads.
        """
        meta = obj.get("metadata") or {}
        if type not in ("Normal", "Warning") or not meta.get("name") or not reason:
            self._log.error(
                "invalid event dropped", type=type, reason=reason, object=meta.get("name")
            )
            return
        fields = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}
        fields.update({f: meta.get(f) for f in ("name", "namespace", "uid", "resourceVersion")})
        ref = {f: v for f, v in fields.items() if v}
        if not self._allow(ref, type):
            self.stats.filtered += 1
            return
        if len(self._queue) >= self._buffer_size:
            if self.stats.dropped == 0:
                self._log.warning("event buffer full; dropping events", size=self._buffer_size)
            self.stats.dropped += 1
            return
        self._queue.append(
            _Occurrence(
                ref=ref,
                namespace=str(ref.get("namespace") or "default"),
                type=type,
                reason=reason,
                message=_truncate(message, MAX_MESSAGE_BYTES),
                action=action,
                timestamp=_time(),
                at=self._clock(),
            )
        )
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        """Write queued occurrences until cancelled (what is still queued then is lost)."""
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        while True:
            # Invariant: an occurrence appended after the queue was seen empty has set
            # the current wakeup event, so waiting on it cannot miss work.
            while self._queue:
                if self._idle.is_set():
                    self._idle = anyio.Event()
                await self._write(self._queue.popleft())
            self._idle.set()
            await self._wakeup.wait()
            self._wakeup = anyio.Event()

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (for graceful shutdown).

        Bound it with a timeout: a write may hang as long as the request timeout.
        """
        while self._idle is not None and (self._queue or not self._idle.is_set()):
            await self._idle.wait()

    # -- internals ----------------------------------------------------------------------
    def _allow(self, ref: Obj, type: str) -> bool:
        # client-go's spam key is the source, the involved object and the event type
        # (tools/record/events_cache.go, getSpamKey): a flood of Normal events about an
        # object cannot use up the budget of its Warnings. The source is this recorder.
        key = (*_object_key(ref), type)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = BucketRateLimiter(
                1.0 / self._spam_refill_interval, self._spam_burst, clock=self._clock
            )
            if len(self._buckets) > _CACHE_SIZE:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow()

    async def _write(self, occ: _Occurrence) -> None:
        key = occ.series_key
        series = self._series.get(key)
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                if series is not None and occ.at - series.last_at <= self._window:
                    try:
                        await self._client.patch(
                            CORE_EVENT,
                            series.name,
                            {"count": series.count + 1, "lastTimestamp": occ.timestamp},
                            namespace=occ.namespace,
                        )
                    except NotFound:
                        pass  # expired (the server's event TTL): start a new series below
                    else:
                        series.count += 1
                        series.last_at = occ.at
                        self._series.move_to_end(key)
                        self.stats.aggregated += 1
                        return
                name = await self._create(occ)
        except (ApiError, TransportError, TimeoutError) as err:
            self.stats.failed += 1
            self._log_failure(occ, err)
            return
        self._series[key] = _Series(name=name, count=1, last_at=occ.at)
        self._series.move_to_end(key)
        if len(self._series) > _CACHE_SIZE:
            self._series.popitem(last=False)
        self.stats.sent += 1

    async def _create(self, occ: _Occurrence) -> str:
        prefix = str(occ.ref["name"])[: _MAX_NAME - 1 - 2 * _NAME_SUFFIX_HEX]
        name = f"{prefix}.{secrets.token_hex(_NAME_SUFFIX_HEX)}"
        event: Obj = {
            "apiVersion": CORE_EVENT.api_version,
            "kind": CORE_EVENT.kind,
            "metadata": {"name": name, "namespace": occ.namespace},
            "involvedObject": occ.ref,
            "reason": occ.reason,
            "message": occ.message,
            "type": occ.type,
            "source": {"component": self._component},
            "firstTimestamp": occ.timestamp,
            "lastTimestamp": occ.timestamp,
            "count": 1,
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
        }
        if occ.action:
            event["action"] = occ.action
        await self._client.create(CORE_EVENT, event, occ.namespace)
        return name

    def _log_failure(self, occ: _Occurrence, err: Exception) -> None:
        cause = str(err.status) if isinstance(err, ApiError) else type(err).__name__
        seen = (occ.namespace, cause)
        if seen in self._logged_failures:
            self._log.debug("event write failed", namespace=occ.namespace, error=str(err))
            return
        if len(self._logged_failures) >= _CACHE_SIZE:
            self._logged_failures.clear()
        self._logged_failures.add(seen)
        self._log.warning(
            "event write failed; dropping it (further such failures logged at debug)",
            namespace=occ.namespace,
            reason=occ.reason,
            object=occ.ref.get("name"),
            error=str(err),
        )


def _object_key(ref: Obj) -> tuple[str, ...]:
    uid = ref.get("uid")
    if uid:
        return (str(uid),)
    return tuple(str(ref.get(f) or "") for f in ("apiVersion", "kind", "namespace", "name"))


def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    # Cut on a character boundary: drop a partial multi-byte sequence at the end.
    return data[:limit].decode(errors="ignore")


def _time() -> str:
    """Now as a metav1.Time: RFC 3339 in UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
