"""The work queue between event handlers and reconcile workers, with client-go semantics.

Handlers ``add`` keys; workers ``get`` a key, reconcile it, and call ``done``. The queue
guarantees that a key is reconciled by at most one worker at a time, that repeated adds
of a key collapse into one pending reconcile, and that a key added while it is being
reconciled is reconciled once more afterwards. Retries go through ``add_rate_limited``
(backoff from a :class:`~reconciler.ratelimit.RateLimiter`) or ``add_after``.

Delayed items join the queue when due, as client-go's ``waitingLoop`` adds them: the
owner of a queue runs :meth:`RateLimitingQueue.run` in its task group (the controller
does, beside its workers). Without it a due item would wait for the next ``get`` or
``len``, so with every worker busy ``workqueue_depth`` would stay 0 and
``workqueue_queue_duration_seconds`` would start late — just when a backlog alert
should fire. ``get`` and ``len`` also promote what is due, so what they see is exact
even between the loop's wake-ups, and a queue used without the loop still works.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel

from reconciler.ratelimit import RateLimiter, default_controller_rate_limiter

__all__ = ["QueueMetrics", "QueueShutDown", "RateLimitingQueue"]

T = TypeVar("T", bound=Hashable)


# Named like asyncio.QueueShutDown (Python 3.13), which means the same thing.
class QueueShutDown(Exception):
    """Raised by :meth:`RateLimitingQueue.get` once the queue is shut down and empty."""


class QueueMetrics(Protocol):
    """Hooks through which a queue reports to its metrics (client-go's ``queueMetrics``).

    The queue calls them synchronously at the moment the event happens; implementations
    keep whatever per-item timestamps they need.
    """

    def add(self, item: Hashable) -> None:
        """``item`` became dirty (deduplicated adds are not reported)."""
        ...

    def get(self, item: Hashable) -> None:
        """``item`` was handed to a worker."""
        ...

    def done(self, item: Hashable) -> None:
        """The worker holding ``item`` finished with it."""
        ...

    def retry(self) -> None:
        """``add_after`` was called (including rate-limited adds and zero delays)."""
        ...


class _NoMetrics:
    def add(self, item: Hashable) -> None:
        pass

    def get(self, item: Hashable) -> None:
        pass

    def done(self, item: Hashable) -> None:
        pass

    def retry(self) -> None:
        pass


class RateLimitingQueue(Generic[T]):
    """A deduplicating FIFO work queue with delayed and rate-limited adds.

    Invariants, holding between calls and at every await inside them:

    1. Every queued item is dirty and not processing, and is queued once.
    2. Every dirty item that is not processing is queued. (With 1: queued = dirty -
       processing.) Dirty means "needs a reconcile that has not started yet".
    3. An item is processing from the ``get`` that handed it out until its ``done``.
       ``get`` only hands out queued items, so no item ever has two holders.
    4. Adding a dirty item changes nothing (dedupe). Adding a processing item only marks
       it dirty; ``done`` then queues it again, so the change is not missed.
    5. ``_waiting`` maps each delayed item to its earliest ready time; ``add_after`` never
       postpones an item. Delayed items are not dirty: when due they go through ``add``
       and are deduplicated against the dirty set of that moment. Heap entries whose time
       differs from ``_waiting`` are stale and skipped.
    6. After shutdown nothing enters the queue or the delay heap (pending delayed items
       are dropped), except that ``done`` still re-queues a dirty item; ``get`` keeps
       handing out queued items until the queue is empty, then raises
       :class:`QueueShutDown`.
    7. While :meth:`run` runs, a delayed item is added (dirty, queued if not processing,
       reported to the metrics) at its ready time, whether or not anyone calls ``get`` or
       ``len``; only the event loop's scheduling latency separates the two.

    All methods are meant to be called from one event loop; concurrent ``get`` callers
    are safe because state only changes between awaits.
    """

    def __init__(
        self,
        rate_limiter: RateLimiter[T] | None = None,
        *,
        metrics: QueueMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate_limiter: RateLimiter[T] = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter()
        )
        self._metrics: QueueMetrics = metrics if metrics is not None else _NoMetrics()
        self._clock = clock

        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()
        # Item -> clock time at which it was handed out.
        self._processing: dict[T, float] = {}
        # Delayed item -> earliest ready time (invariant 5).
        self._waiting: dict[T, float] = {}
        # (ready_at, insertion number, item); the number keeps items from being compared.
        self._delay_heap: list[tuple[float, int, T]] = []
        self._insertions = itertools.count()

        self._shutting_down = False
        self._draining = False
        # Set and dropped by _notify; created only when someone has to wait.
        self._wakeup: anyio.Event | None = None

    # -- adding ---------------------------------------------------------------------------

    def add(self, item: T) -> None:
        """Mark ``item`` as needing processing. Never blocks; dropped after shutdown."""
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        self._metrics.add(item)
        if item in self._processing:
            return
        self._queue.append(item)
        self._notify()

    def add_after(self, item: T, delay: float) -> None:
        """Add ``item`` once ``delay`` seconds have passed (now if ``delay <= 0``).

        If ``item`` is already waiting, the earlier of the two ready times is kept.
        """
        if self._shutting_down:
            return
        self._metrics.retry()
        if delay <= 0:
            self.add(item)
            return
        ready_at = self._clock() + delay
        current = self._waiting.get(item)
        if current is not None and current <= ready_at:
            return
        self._waiting[item] = ready_at
        heapq.heappush(self._delay_heap, (ready_at, next(self._insertions), item))
        # A getter may be sleeping until a later ready time.
        self._notify()

    def add_rate_limited(self, item: T) -> None:
        """Add ``item`` after the delay its rate limiter asks for (a retry)."""
        if self._shutting_down:
            return
        self.add_after(item, self._rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Clear ``item``'s retry history in the rate limiter. ``done`` is still needed."""
        self._rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        """Rate-limited retries of ``item`` since it was last forgotten."""
        return self._rate_limiter.num_requeues(item)

    # -- processing -----------------------------------------------------------------------

    async def get(self) -> T:
        """Wait for an item and take it; the caller must call :meth:`done` with it.

        Raises :class:`QueueShutDown` once the queue is shut down and empty.
        """
        # Checkpoints come only before an item is taken (here and while waiting), never
        # after: a cancelled get() cannot lose an item.
        await anyio.lowlevel.checkpoint()
        while True:
            self._promote_ready()
            if self._queue:
                item = self._queue.popleft()
                self._dirty.discard(item)
                self._processing[item] = self._clock()
                self._metrics.get(item)
                return item
            if self._shutting_down:
                raise QueueShutDown
            # None means no deadline: nothing is delayed, only _notify() can help.
            with anyio.move_on_after(self._time_until_next_ready()):
                await self._wait()

    def done(self, item: T) -> None:
        """Finish processing ``item``; if it was added meanwhile it is queued again."""
        if item not in self._processing:
            raise ValueError(f"{item!r} is not being processed")
        del self._processing[item]
        self._metrics.done(item)
        if item in self._dirty:
            self._queue.append(item)
            self._notify()
        elif not self._processing:
            # shut_down_with_drain waits for this.
            self._notify()

    def processing_ages(self) -> list[float]:
        """Seconds each item currently held by a worker has been held."""
        now = self._clock()
        return [now - started for started in self._processing.values()]

    def __len__(self) -> int:
        """Number of items ready to be handed out (delayed items due by now included)."""
        self._promote_ready()
        return len(self._queue)

    async def run(self) -> None:
        """Add delayed items when they are due (invariant 7), until shutdown or cancel.

        Run it once per queue, in the task group of whoever owns the queue. It sleeps on
        anyio's clock, so the queue's ``clock`` must be monotonic time (the default).
        """
        await anyio.lowlevel.checkpoint()
        while not self._shutting_down:
            self._promote_ready()
            # None: nothing is delayed; sleep until add_after (or shutdown) notifies.
            # Every add also notifies: one more pass through a cheap loop.
            with anyio.move_on_after(self._time_until_next_ready()):
                await self._wait()

    # -- shutdown -------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shut_down(self) -> None:
        """Stop accepting items and wake every waiting getter.

        Queued items are still handed out; delayed items are dropped. Also ends a
        :meth:`shut_down_with_drain` that is waiting.
        """
        self._draining = False
        self._begin_shutdown()

    async def shut_down_with_drain(self) -> None:
        """Shut down, then wait until no item is being processed.

        Workers must keep calling :meth:`done`. A later :meth:`shut_down` stops the wait.
        """
        self._draining = True
        self._begin_shutdown()
        while self._processing and self._draining:
            await self._wait()

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        self._waiting.clear()
        self._delay_heap.clear()
        self._notify()

    # -- internals ------------------------------------------------------------------------

    def _promote_ready(self) -> None:
        """Add every delayed item whose ready time has come."""
        if not self._delay_heap:
            return
        now = self._clock()
        while self._delay_heap and self._delay_heap[0][0] <= now:
            ready_at, _, item = heapq.heappop(self._delay_heap)
            if self._waiting.get(item) == ready_at:
                del self._waiting[item]
                self.add(item)

    def _time_until_next_ready(self) -> float | None:
        """Seconds until the earliest delayed item is due; None if nothing is delayed."""
        heap = self._delay_heap
        while heap and self._waiting.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            return None
        return max(0.0, heap[0][0] - self._clock())

    async def _wait(self) -> None:
        """Sleep until the next _notify(); callers re-check the state afterwards."""
        if self._wakeup is None:
            self._wakeup = anyio.Event()
        await self._wakeup.wait()

    def _notify(self) -> None:
        """Wake every task in _wait(); later waiters get a fresh event."""
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
