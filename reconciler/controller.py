"""The controller: a work queue of requests and the workers that reconcile them.

Branch order per reconcile (as controller-runtime's reconcileHandler):
- a failure → ``TerminalError``: counted, not requeued; anything else:
  rate-limited requeue (the per-item backoff grows until the reconcile succeeds);
- ``Result(requeue_after=d)`` → forget the backoff, requeue after ``d``;
- ``Result(requeue=True)`` → rate-limited requeue;
- otherwise → forget the backoff; done until the next event.

A failure is an exception out of the reconciler, a reconcile cut off by
``reconcile_timeout``, or an answer that is not a :class:`Result` (say, a forgotten
``return``). Go's compiler rules the last one out, so controller-runtime has no rule for
it; here it is what it would be if the reconciler had raised ``TypeError``: a failure
and a programming error. No exception ever ends a worker.

Every failure counts in ``controller_runtime_reconcile_errors_total``. Two more counters
say what kind it was:

- ``…_reconcile_panics_total``: a programming error. controller-runtime counts the
  panics it recovers; Go panics where code is wrong (nil dereference, index out of
  range, failed type assertion, division by zero, ``panic()``), while a failure the code
  expects is a returned ``error``. Python raises both, so the type decides: the
  exceptions Python itself raises for such bugs — ``TypeError``, ``AttributeError``,
  ``NameError``, ``LookupError`` (``KeyError``, ``IndexError``), ``ArithmeticError``,
  ``AssertionError``, ``RecursionError`` — and a non-``Result`` answer are panics,
  also inside an exception group. Anything else (``ApiError``, ``TransportError``,
  ``OSError``/``TimeoutError``, ``ValueError``, ``RuntimeError``, the reconciler's own
  exception classes, ``TerminalError``) is the reconciler returning an error.
- ``…_reconcile_timeouts_total``: ``reconcile_timeout`` expired during the reconcile
  (controller-runtime's ``ReconciliationTimeout``, v0.24.1). A ``TimeoutError`` the
  reconciler raises on its own is an ordinary error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from reconciler.handler import EnqueueHandler, Mapper, enqueue_for_object
from reconciler.informer import Informer
from reconciler.metrics import Metrics, ReconcileResult
from reconciler.predicate import Predicate
from reconciler.ratelimit import RateLimiter, default_controller_rate_limiter
from reconciler.request import Request, Result, TerminalError
from reconciler.workqueue import QueueShutDown, RateLimitingQueue

log = structlog.get_logger("reconciler.controller")

# controller-runtime defaults.
MAX_CONCURRENT_RECONCILES = 1
CACHE_SYNC_TIMEOUT = 120.0


class Reconciler(Protocol):
    """Makes the world match the object named by ``request``; must be idempotent."""

    async def reconcile(self, request: Request) -> Result: ...


@dataclass(frozen=True)
class ControllerOptions:
    max_concurrent_reconciles: int = MAX_CONCURRENT_RECONCILES
    cache_sync_timeout: float = CACHE_SYNC_TIMEOUT
    rate_limiter: RateLimiter[Request] | None = None
    # Seconds one reconcile may take before it is cancelled and retried with backoff
    # (controller-runtime's ReconciliationTimeout). None: as long as it needs (its default).
    reconcile_timeout: float | None = None


class CacheSyncError(Exception):
    """A controller's informers did not sync within ``cache_sync_timeout``."""


class Controller:
    """Runs ``reconciler`` for requests produced by the informers it watches."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        options: ControllerOptions | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self.options = options or ControllerOptions()
        if self.options.max_concurrent_reconciles < 1:
            raise ValueError("max_concurrent_reconciles must be >= 1")
        self._metrics = metrics
        self.queue: RateLimitingQueue[Request] = RateLimitingQueue(
            self.options.rate_limiter or default_controller_rate_limiter(),
            metrics=metrics.queue_metrics(name) if metrics else None,
        )
        self._informers: list[Informer] = []
        # Handlers wait for run(): a controller that is not running (a standby replica's,
        # before it leads) must not queue every change meanwhile. The informer replays
        # its store to a late handler, so nothing is missed.
        self._pending_handlers: list[tuple[Informer, EnqueueHandler]] = []
        self._running = False
        self._stopping = False
        self._log = log.bind(controller=name)
        if metrics:
            metrics.init_controller(name, self.options.max_concurrent_reconciles)

    def watch(
        self,
        informer: Informer,
        mapper: Mapper = enqueue_for_object,
        predicates: Sequence[Predicate] = (),
    ) -> None:
        """Feed events from ``informer`` through ``predicates`` and ``mapper`` into the queue,
        from when the controller runs (at once if it already does): then the objects the
        informer holds come first, as adds."""
        self._informers.append(informer)
        handler = EnqueueHandler(self.queue, mapper, predicates)
        if self._running:
            informer.add_handler(handler)
        else:
            self._pending_handlers.append((informer, handler))

    def stop(self) -> None:
        """Stop taking work: queued requests stay unprocessed, in-flight ones finish."""
        self._stopping = True
        self.queue.shut_down()

    async def run(self) -> None:
        """Start taking events from the informers, wait for them to sync, then reconcile
        until stopped or cancelled."""
        self._start_watching()
        with anyio.move_on_after(self.options.cache_sync_timeout) as scope:
            for inf in self._informers:
                await inf.wait_synced()
        if scope.cancelled_caught:
            raise CacheSyncError(
                f"controller {self.name}: caches not synced after "
                f"{self.options.cache_sync_timeout}s"
            )
        self._log.info("starting workers", workers=self.options.max_concurrent_reconciles)
        async with anyio.create_task_group() as tg:
            # Ends when stop() shuts the queue down, else is cancelled below.
            tg.start_soon(self.queue.run)
            if self._metrics:
                tg.start_soon(self._metrics.run_unfinished_work_updates, self.queue, self.name)
            async with anyio.create_task_group() as workers:
                for _ in range(self.options.max_concurrent_reconciles):
                    workers.start_soon(self._worker)
            tg.cancel_scope.cancel()
        self._log.info("workers stopped")

    def _start_watching(self) -> None:
        """Add the handlers ``watch`` held back: from now on events reach the queue."""
        self._running = True
        pending, self._pending_handlers = self._pending_handlers, []
        for informer, handler in pending:
            informer.add_handler(handler)

    async def _worker(self) -> None:
        while not self._stopping:
            try:
                request = await self.queue.get()
            except QueueShutDown:
                return
            try:
                if self._stopping:  # woken for an item just as stop() was called
                    return
                await self._process(request)
            finally:
                self.queue.done(request)

    async def _process(self, request: Request) -> None:
        m = self._metrics
        if m:
            m.active_workers.labels(self.name).inc()
        start = time.monotonic()
        reconcile_id = uuid.uuid4().hex
        try:
            with structlog.contextvars.bound_contextvars(
                controller=self.name,
                namespace=request.namespace,
                name=request.name,
                reconcile_id=reconcile_id,
            ):
                outcome = await self._reconcile(request)
        finally:
            if m:
                m.active_workers.labels(self.name).dec()
        if m:
            m.reconcile_time_seconds.labels(self.name).observe(time.monotonic() - start)
            m.reconcile_total.labels(self.name, outcome.value).inc()

    async def _reconcile(self, request: Request) -> ReconcileResult:
        timeout = self.options.reconcile_timeout
        scope = anyio.move_on_after(timeout)  # None: no deadline
        result: object = None
        try:
            with scope:
                result = await self.reconciler.reconcile(request)
        except Exception as caught:
            self._count_timeout(scope)
            return self._failed(request, caught)
        self._count_timeout(scope)
        if scope.cancelled_caught:
            return self._failed(request, TimeoutError(f"reconcile timed out after {timeout}s"))
        if not isinstance(result, Result):
            returned = type(result).__name__
            err = TypeError(f"reconcile() returned {returned}, not Result (a missing return?)")
            return self._failed(request, err, returned=returned)
        if result.requeue_after:
            self.queue.forget(request)
            self.queue.add_after(request, result.requeue_after)
            return ReconcileResult.REQUEUE_AFTER
        if result.requeue:
            self.queue.add_rate_limited(request)
            return ReconcileResult.REQUEUE
        self.queue.forget(request)
        return ReconcileResult.SUCCESS

    def _count_timeout(self, scope: anyio.CancelScope) -> None:
        # Like controller-runtime: the deadline passed while the reconcile ran, whatever
        # the reconciler then did (raised, or returned without reaching a checkpoint).
        if self._metrics and anyio.current_time() >= scope.deadline:
            self._metrics.reconcile_timeouts_total.labels(self.name).inc()

    def _failed(
        self, request: Request, err: Exception, *, returned: str | None = None
    ) -> ReconcileResult:
        panic = returned is not None or _is_programming_error(err)
        terminal = _terminal(err)
        if self._metrics:
            self._metrics.reconcile_errors_total.labels(self.name).inc()
            if panic:
                self._metrics.reconcile_panics_total.labels(self.name).inc()
            if terminal is not None:
                self._metrics.terminal_reconcile_errors_total.labels(self.name).inc()
        details: dict[str, object] = {"panic": True} if panic else {}
        if returned is not None:
            details["returned"] = returned
        if terminal is not None:
            # Raised on purpose, with its reason in the message: no traceback.
            self._log.error(
                "reconciler error (terminal, not requeued)", error=str(terminal), **details
            )
            return ReconcileResult.ERROR
        self.queue.add_rate_limited(request)
        self._log.error(
            "reconciler error",
            error=f"{type(err).__name__}: {err}",
            requeues=self.queue.num_requeues(request),
            # A traceback where there is one: not for a timeout or a wrong answer.
            exc_info=err if err.__traceback__ is not None else False,
            **details,
        )
        return ReconcileResult.ERROR


# What Python raises where code is wrong: the counterpart of a Go runtime panic.
_PROGRAMMING_ERRORS = (
    TypeError,
    AttributeError,
    NameError,
    LookupError,
    ArithmeticError,
    AssertionError,
    RecursionError,
)


def _is_programming_error(err: BaseException) -> bool:
    """Whether ``err``, or any exception a task group wrapped in it, is a bug."""
    if isinstance(err, BaseExceptionGroup):
        return any(_is_programming_error(inner) for inner in err.exceptions)
    return isinstance(err, _PROGRAMMING_ERRORS)


def _terminal(err: BaseException) -> TerminalError | None:
    """The TerminalError in ``err``, also when a task group wrapped it (like errors.Is)."""
    if isinstance(err, TerminalError):
        return err
    if isinstance(err, BaseExceptionGroup):
        for inner in err.exceptions:
            found = _terminal(inner)
            if found is not None:
                return found
    return None
