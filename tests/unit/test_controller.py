"""The reconcile loop: result/error/terminal handling, concurrency, stop, metrics, logging.

No API server: requests reach ``controller.queue`` directly or through a stub informer
that offers what ``Controller.run`` waits for (``wait_synced``) and what
``Controller.watch`` registers with (``add_handler``). Awaits have deadlines; "nothing
else will happen" is detected with ``anyio.wait_all_tasks_blocked``, not by sleeping.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pytest
import structlog
from prometheus_client import CollectorRegistry

from reconciler.controller import CacheSyncError, Controller, ControllerOptions
from reconciler.errors import ServerError, TransportError
from reconciler.handler import enqueue_for_owner
from reconciler.informer import EventHandler, Informer
from reconciler.metrics import Metrics
from reconciler.predicate import Funcs
from reconciler.ratelimit import ItemExponentialFailureRateLimiter
from reconciler.request import Request, Result, TerminalError
from reconciler.resource import CONFIG_MAP

Obj = dict[str, Any]
DEADLINE = 5.0
NAME = "widget"

A, B, C = Request("ns", "a"), Request("ns", "b"), Request("ns", "c")


class RecordingLimiter:
    """A rate limiter with a fixed delay that records what the controller asked of it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.failures: Counter[Request] = Counter()
        self.whens: list[Request] = []
        self.forgets: list[Request] = []

    def when(self, item: Request) -> float:
        self.whens.append(item)
        self.failures[item] += 1
        return self.delay

    def forget(self, item: Request) -> None:
        self.forgets.append(item)
        self.failures.pop(item, None)

    def num_requeues(self, item: Request) -> int:
        return self.failures[item]


Step = Callable[[Request, int], Awaitable[Result]]


class Scripted:
    """A reconciler whose answer depends on the request and how often it was seen."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.calls: list[Request] = []
        self.started_at: list[tuple[Request, float]] = []
        self.finished_at: list[tuple[Request, float]] = []

    def count(self, request: Request) -> int:
        return self.calls.count(request)

    async def reconcile(self, request: Request) -> Result:
        self.calls.append(request)
        self.started_at.append((request, time.monotonic()))
        try:
            return await self.step(request, self.count(request))
        finally:
            self.finished_at.append((request, time.monotonic()))


async def succeed(request: Request, attempt: int) -> Result:
    return Result()


class StubInformer:
    """The part of an Informer a controller uses, with a sync switch and event injection."""

    def __init__(self, synced: bool = True) -> None:
        self.handlers: list[EventHandler] = []
        self.store: list[Obj] = []
        self._synced = anyio.Event()
        if synced:
            self._synced.set()

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    def mark_synced(self) -> None:
        self._synced.set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def add_handler(self, handler: EventHandler) -> None:
        # As the informer does: a late handler first gets what the store holds.
        self.handlers.append(handler)
        for obj in self.store:
            handler.on_add(obj, True)

    def emit_add(self, obj: Obj) -> None:
        self.store.append(obj)
        for h in self.handlers:
            h.on_add(obj, False)

    def emit_update(self, old: Obj, new: Obj) -> None:
        for h in self.handlers:
            h.on_update(old, new)


def as_informer(stub: StubInformer) -> Informer:
    return cast(Informer, stub)


def cm(name: str, *owner: str) -> Obj:
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o, "uid": o, "controller": True}
        for o in owner
    ]
    return {"metadata": {"name": name, "namespace": "ns", "ownerReferences": refs}}


@asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[anyio.Event]:
    """Run ``controller`` for the block; on exit stop it and wait (bounded) for run().

    Yields an event that is set once ``run()`` has returned.
    """
    returned = anyio.Event()

    async def run() -> None:
        await controller.run()
        returned.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        yield returned
        controller.stop()
        with anyio.fail_after(DEADLINE):
            await returned.wait()


async def wait_until(check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.005)


async def settle() -> None:
    """Every task is blocked: nothing more happens until a timer fires or we act.

    On asyncio this sees wake-ups by events, not a task group noticing that its last
    child ended; wait for such endings explicitly.
    """
    with anyio.fail_after(DEADLINE):
        await anyio.wait_all_tasks_blocked()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# -- result handling ----------------------------------------------------------------------


async def test_success_forgets_the_backoff_and_does_not_requeue() -> None:
    limiter = RecordingLimiter()
    rec = Scripted(succeed)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=limiter))
    async with running(controller):
        controller.queue.add(A)
        await settle()
        assert rec.calls == [A]
        assert limiter.forgets == [A]
        assert limiter.whens == []
        assert len(controller.queue) == 0


async def test_exception_is_retried_with_growing_backoff_and_the_worker_survives() -> None:
    base = 0.02

    async def step(request: Request, attempt: int) -> Result:
        if request == A and attempt <= 3:
            raise RuntimeError(f"attempt {attempt} fails")
        return Result()

    rec = Scripted(step)
    limiter: ItemExponentialFailureRateLimiter[Request] = ItemExponentialFailureRateLimiter(
        base, 10.0
    )
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=limiter))
    async with running(controller):
        controller.queue.add(A)
        controller.queue.add(B)
        await wait_until(lambda: rec.count(A) == 4)
        await settle()
    # One worker: it kept going after each failure, and B was not starved by A's retries.
    assert rec.count(B) == 1
    starts = [t for r, t in rec.started_at if r == A]
    ends = [t for r, t in rec.finished_at if r == A]
    for i in range(3):
        assert starts[i + 1] - ends[i] >= base * 2**i, f"retry {i + 1} came too early"
    # Success forgot the failures.
    assert controller.queue.num_requeues(A) == 0


async def test_requeue_counter_seen_by_retries_grows_then_resets() -> None:
    seen: list[int] = []
    controller: Controller

    async def step(request: Request, attempt: int) -> Result:
        seen.append(controller.queue.num_requeues(request))
        if attempt <= 2:
            raise ValueError("not yet")
        return Result()

    rec = Scripted(step)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=RecordingLimiter()))
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 3)
        await settle()
    assert seen == [0, 1, 2]
    assert controller.queue.num_requeues(A) == 0


async def test_terminal_error_is_counted_and_not_requeued() -> None:
    registry = CollectorRegistry()

    async def step(request: Request, attempt: int) -> Result:
        if request == A:
            raise TerminalError(ValueError("spec.replicas must be >= 0"))
        return Result()

    limiter = RecordingLimiter(delay=0.0)
    rec = Scripted(step)
    controller = Controller(
        NAME, rec, ControllerOptions(rate_limiter=limiter), metrics=Metrics(registry)
    )
    async with running(controller):
        controller.queue.add(A)
        controller.queue.add(B)
        await settle()
    # A zero-delay retry of A would have been queued ahead of B's completion; there is none.
    assert rec.calls == [A, B]
    assert limiter.whens == []
    assert (
        sample(registry, "controller_runtime_terminal_reconcile_errors_total", controller=NAME) == 1
    )
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller=NAME) == 1
    assert (
        sample(registry, "controller_runtime_reconcile_total", controller=NAME, result="error") == 1
    )


async def test_terminal_error_raised_inside_a_task_group_is_still_terminal() -> None:
    async def step(request: Request, attempt: int) -> Result:
        async with anyio.create_task_group():
            raise TerminalError("bad spec")
        return Result()  # not reached: the group re-raises, wrapped

    limiter = RecordingLimiter(delay=0.0)
    rec = Scripted(step)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=limiter))
    async with running(controller):
        controller.queue.add(A)
        await settle()
    assert rec.calls == [A]
    assert limiter.whens == []


async def test_requeue_after_waits_the_delay_and_forgets_the_backoff() -> None:
    delay = 0.2
    seen: list[int] = []
    controller: Controller

    async def step(request: Request, attempt: int) -> Result:
        seen.append(controller.queue.num_requeues(request))
        if attempt <= 2:
            raise RuntimeError("flaky")
        if attempt == 3:
            return Result(requeue_after=delay)
        return Result()

    rec = Scripted(step)
    limiter = RecordingLimiter(delay=0.0)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=limiter))
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 3)
        # Scheduled, not queued: nothing is ready before the delay.
        assert len(controller.queue) == 0
        await wait_until(lambda: rec.count(A) == 4)
        await settle()
    # Two failures were on the books when requeue_after came back; it reset them.
    assert seen == [0, 1, 2, 0]
    assert limiter.whens == [A, A]
    third_end = rec.finished_at[2][1]
    fourth_start = rec.started_at[3][1]
    assert fourth_start - third_end >= delay


async def test_requeue_true_goes_through_the_rate_limiter() -> None:
    async def step(request: Request, attempt: int) -> Result:
        return Result(requeue=attempt <= 2)

    limiter = RecordingLimiter(delay=0.0)
    rec = Scripted(step)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=limiter))
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 3)
        await settle()
    assert rec.count(A) == 3
    assert limiter.whens == [A, A]
    # Only the final plain Result() forgets.
    assert limiter.forgets == [A]


async def test_requeue_after_wins_over_requeue() -> None:
    async def step(request: Request, attempt: int) -> Result:
        return Result(requeue_after=0.05, requeue=True) if attempt == 1 else Result()

    limiter = RecordingLimiter()
    rec = Scripted(step)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=limiter))
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 2)
    assert limiter.whens == []


# -- concurrency --------------------------------------------------------------------------


async def test_max_concurrent_reconciles_runs_n_at_once_never_one_request_twice() -> None:
    workers = 3
    in_flight: set[Request] = set()
    overlaps: list[Request] = []
    peak = 0
    gate = anyio.Event()

    async def step(request: Request, attempt: int) -> Result:
        nonlocal peak
        if request in in_flight:
            overlaps.append(request)
        in_flight.add(request)
        peak = max(peak, len(in_flight))
        try:
            await gate.wait()
        finally:
            in_flight.discard(request)
        return Result()

    rec = Scripted(step)
    controller = Controller(NAME, rec, ControllerOptions(max_concurrent_reconciles=workers))
    requests = [Request("ns", f"r{i}") for i in range(6)]
    async with running(controller):
        for r in requests:
            controller.queue.add(r)
        await settle()
        assert len(in_flight) == workers
        first = set(in_flight)
        # Events for requests that are being reconciled right now: they must wait.
        for r in first:
            controller.queue.add(r)
        await settle()
        assert in_flight == first
        gate.set()
        await wait_until(lambda: len(rec.calls) == len(requests) + workers)
        await settle()
    assert peak == workers
    assert overlaps == []
    assert Counter(rec.calls) == Counter(requests) + Counter(first)


async def test_max_concurrent_reconciles_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_concurrent_reconciles"):
        Controller(NAME, Scripted(succeed), ControllerOptions(max_concurrent_reconciles=0))


# -- stop ---------------------------------------------------------------------------------


async def test_stop_lets_the_in_flight_reconcile_finish_and_takes_nothing_new() -> None:
    release = anyio.Event()
    cancelled = False

    async def step(request: Request, attempt: int) -> Result:
        nonlocal cancelled
        if request == A:
            try:
                await release.wait()
            except anyio.get_cancelled_exc_class():
                cancelled = True
                raise
        return Result()

    rec = Scripted(step)
    controller = Controller(NAME, rec)
    done = anyio.Event()

    async def run() -> None:
        await controller.run()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        controller.queue.add(A)
        controller.queue.add(B)
        await settle()
        assert rec.calls == [A]
        controller.stop()
        controller.queue.add(C)  # after stop: dropped
        await settle()
        assert not done.is_set(), "run() returned while a reconcile was in flight"
        release.set()
        with anyio.fail_after(DEADLINE):
            await done.wait()
    assert not cancelled
    assert [r for r, _ in rec.finished_at] == [A]
    assert rec.calls == [A]


async def test_stop_with_idle_workers_returns_at_once() -> None:
    controller = Controller(NAME, Scripted(succeed), ControllerOptions(max_concurrent_reconciles=4))
    async with running(controller) as returned:
        await settle()
        assert not returned.is_set()
        started = time.monotonic()
        controller.stop()
        with anyio.fail_after(DEADLINE):
            await returned.wait()
        assert time.monotonic() - started < 0.5


async def test_request_queued_in_the_same_tick_as_stop_is_not_reconciled() -> None:
    rec = Scripted(succeed)
    controller = Controller(NAME, rec)
    async with anyio.create_task_group() as tg:
        tg.start_soon(controller.run)
        await settle()  # the worker waits in queue.get()
        controller.queue.add(A)  # wakes it...
        controller.stop()  # ...but before it runs, the controller is stopped
    assert rec.calls == []


# -- informers ----------------------------------------------------------------------------


async def test_run_waits_for_its_informers_to_sync_before_reconciling() -> None:
    stub = StubInformer(synced=False)
    rec = Scripted(succeed)
    controller = Controller(NAME, rec)
    controller.watch(as_informer(stub))
    async with running(controller):
        stub.emit_add(cm("a"))
        await settle()
        assert rec.calls == []
        assert len(controller.queue) == 1
        stub.mark_synced()
        await wait_until(lambda: rec.calls == [A])


async def test_a_controller_queues_nothing_until_it_runs_then_starts_from_the_store() -> None:
    """A standby replica (not the leader) does not run its controllers: their queues must
    not fill with every change meanwhile. When the controller starts, the informer hands
    it what it holds, as controller-runtime starts a controller's sources."""
    stub = StubInformer()
    rec = Scripted(succeed)
    controller = Controller(NAME, rec)
    controller.watch(as_informer(stub))
    stub.emit_add(cm("a"))
    assert len(controller.queue) == 0
    async with running(controller):
        await wait_until(lambda: rec.calls == [A])
        stub.emit_add(cm("b"))
        await wait_until(lambda: rec.calls == [A, B])


async def test_a_watch_added_to_a_running_controller_takes_effect_at_once() -> None:
    stub = StubInformer()
    rec = Scripted(succeed)
    controller = Controller(NAME, rec)
    async with running(controller):
        await settle()
        stub.emit_add(cm("a"))
        controller.watch(as_informer(stub))
        await wait_until(lambda: rec.calls == [A])


async def test_informer_that_never_syncs_fails_the_controller() -> None:
    controller = Controller(NAME, Scripted(succeed), ControllerOptions(cache_sync_timeout=0.05))
    controller.watch(as_informer(StubInformer(synced=False)))
    with anyio.fail_after(DEADLINE), pytest.raises(CacheSyncError, match=NAME):
        await controller.run()


async def test_watch_applies_predicates_and_mapper_to_informer_events() -> None:
    stub = StubInformer()
    rec = Scripted(succeed)
    controller = Controller(NAME, rec)
    only_labelled = Funcs(
        on_create=lambda o: "ownerReferences" in o["metadata"],
        on_update=lambda old, new: False,
    )
    controller.watch(as_informer(stub), enqueue_for_owner(CONFIG_MAP), [only_labelled])
    async with running(controller):
        stub.emit_add(cm("child", "parent"))
        stub.emit_add({"metadata": {"name": "plain", "namespace": "ns"}})
        stub.emit_update(cm("child", "parent"), cm("child", "other"))
        await wait_until(lambda: len(rec.calls) == 1)
        await settle()
    assert rec.calls == [Request("ns", "parent")]


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_count_every_outcome_and_workers_return_to_zero() -> None:
    registry = CollectorRegistry()
    ok, boom, term, again, later = (
        Request("ns", n) for n in ("ok", "boom", "term", "again", "later")
    )

    async def step(request: Request, attempt: int) -> Result:
        if attempt == 1:
            if request == boom:
                raise RuntimeError("boom")
            if request == term:
                raise TerminalError("bad spec")
            if request == again:
                return Result(requeue=True)
            if request == later:
                return Result(requeue_after=0.05)
        return Result()

    rec = Scripted(step)
    controller = Controller(
        NAME,
        rec,
        ControllerOptions(max_concurrent_reconciles=2, rate_limiter=RecordingLimiter()),
        metrics=Metrics(registry),
    )

    def total(result: str) -> float | None:
        return sample(
            registry, "controller_runtime_reconcile_total", controller=NAME, result=result
        )

    # Exported at zero before the first reconcile.
    for result in ("success", "error", "requeue", "requeue_after"):
        assert total(result) == 0
    assert sample(registry, "controller_runtime_max_concurrent_reconciles", controller=NAME) == 2
    assert sample(registry, "controller_runtime_active_workers", controller=NAME) == 0

    async with running(controller):
        for r in (ok, boom, term, again, later):
            controller.queue.add(r)
        await wait_until(lambda: len(rec.calls) == 8)
        await settle()

    assert total("success") == 4  # ok, and the second attempt of boom, again, later
    assert total("error") == 2  # boom's first attempt and the terminal one
    assert total("requeue") == 1
    assert total("requeue_after") == 1
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller=NAME) == 2
    assert (
        sample(registry, "controller_runtime_terminal_reconcile_errors_total", controller=NAME) == 1
    )
    assert sample(registry, "controller_runtime_active_workers", controller=NAME) == 0
    assert sample(registry, "controller_runtime_reconcile_time_seconds_count", controller=NAME) == 8
    q = {"name": NAME, "controller": NAME}
    assert registry.get_sample_value("workqueue_adds_total", q) == 8
    assert registry.get_sample_value("workqueue_retries_total", q) == 3
    assert registry.get_sample_value("workqueue_depth", {**q, "priority": ""}) == 0
    assert registry.get_sample_value("workqueue_work_duration_seconds_count", q) == 8


async def test_active_workers_counts_reconciles_in_flight() -> None:
    registry = CollectorRegistry()
    gate = anyio.Event()

    async def step(request: Request, attempt: int) -> Result:
        await gate.wait()
        return Result()

    controller = Controller(
        NAME,
        Scripted(step),
        ControllerOptions(max_concurrent_reconciles=3),
        metrics=Metrics(registry),
    )
    async with running(controller):
        controller.queue.add(A)
        controller.queue.add(B)
        await settle()
        assert sample(registry, "controller_runtime_active_workers", controller=NAME) == 2
        gate.set()
        await settle()
        assert sample(registry, "controller_runtime_active_workers", controller=NAME) == 0


async def test_active_workers_returns_to_zero_when_a_reconcile_is_cancelled() -> None:
    registry = CollectorRegistry()

    async def step(request: Request, attempt: int) -> Result:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    controller = Controller(NAME, Scripted(step), metrics=Metrics(registry))
    async with anyio.create_task_group() as tg:
        tg.start_soon(controller.run)
        controller.queue.add(A)
        await settle()
        assert sample(registry, "controller_runtime_active_workers", controller=NAME) == 1
        tg.cancel_scope.cancel()
    assert sample(registry, "controller_runtime_active_workers", controller=NAME) == 0


# -- log context --------------------------------------------------------------------------


async def test_each_reconcile_runs_with_its_own_log_context() -> None:
    contexts: list[dict[str, Any]] = []

    async def step(request: Request, attempt: int) -> Result:
        contexts.append(structlog.contextvars.get_contextvars())
        return Result()

    controller = Controller(NAME, Scripted(step))
    async with running(controller):
        controller.queue.add(A)
        controller.queue.add(Request("", "cluster-scoped"))
        await wait_until(lambda: len(contexts) == 2)
    first, second = contexts
    assert {k: first[k] for k in ("controller", "namespace", "name")} == {
        "controller": NAME,
        "namespace": "ns",
        "name": "a",
    }
    assert {k: second[k] for k in ("controller", "namespace", "name")} == {
        "controller": NAME,
        "namespace": "",
        "name": "cluster-scoped",
    }
    for ctx in contexts:
        assert len(ctx["reconcile_id"]) == 32
        int(ctx["reconcile_id"], 16)
    assert first["reconcile_id"] != second["reconcile_id"]
    # The same worker served both: nothing of the first reconcile leaked into the second.
    assert set(second) == {"controller", "namespace", "name", "reconcile_id"}


async def test_reconciler_error_log_carries_the_reconcile_context() -> None:
    ids: list[str] = []

    async def step(request: Request, attempt: int) -> Result:
        structlog.get_logger("user").info("inside", step="one")
        ids.append(structlog.contextvars.get_contextvars()["reconcile_id"])
        if attempt == 1:
            raise RuntimeError("kaboom")
        return Result()

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        controller = Controller(
            NAME, Scripted(step), ControllerOptions(rate_limiter=RecordingLimiter())
        )
        async with running(controller):
            controller.queue.add(A)
            await wait_until(lambda: len(ids) == 2)
    inside = [e for e in logs if e["event"] == "inside"]
    errors = [e for e in logs if e["event"] == "reconciler error"]
    assert [e["reconcile_id"] for e in inside] == ids
    assert len(errors) == 1
    err = errors[0]
    assert err["log_level"] == "error"
    assert (err["controller"], err["namespace"], err["name"]) == (NAME, "ns", "a")
    assert err["reconcile_id"] == ids[0]
    assert "RuntimeError: kaboom" in err["error"]
    # Outside a reconcile the context is gone.
    assert "reconcile_id" not in structlog.contextvars.get_contextvars()


# -- reconcile_timeout --------------------------------------------------------------------


async def test_reconcile_timeout_cancels_the_reconcile_and_retries_it() -> None:
    registry = CollectorRegistry()
    cancelled: list[int] = []

    async def step(request: Request, attempt: int) -> Result:
        if attempt == 1:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(attempt)
                raise
        return Result()

    limiter = RecordingLimiter()
    rec = Scripted(step)
    controller = Controller(
        NAME,
        rec,
        ControllerOptions(reconcile_timeout=0.1, rate_limiter=limiter),
        metrics=Metrics(registry),
    )
    started = time.monotonic()
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 2)
        await settle()
    assert cancelled == [1]
    assert limiter.whens == [A]
    first_duration = rec.finished_at[0][1] - rec.started_at[0][1]
    assert 0.1 <= first_duration < 0.1 + DEADLINE
    assert time.monotonic() - started < DEADLINE
    assert (
        sample(registry, "controller_runtime_reconcile_total", controller=NAME, result="error") == 1
    )
    assert (
        sample(registry, "controller_runtime_reconcile_total", controller=NAME, result="success")
        == 1
    )


async def test_without_reconcile_timeout_a_slow_reconcile_is_left_alone() -> None:
    async def step(request: Request, attempt: int) -> Result:
        await anyio.sleep(0.2)
        return Result()

    rec = Scripted(step)
    controller = Controller(NAME, rec, ControllerOptions(rate_limiter=RecordingLimiter()))
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: len(rec.finished_at) == 1)
    assert rec.calls == [A]


# -- a reconciler that breaks its contract ------------------------------------------------


@pytest.mark.parametrize("returned", [None, {"requeue_after": 5}], ids=["None", "dict"])
async def test_a_non_result_answer_is_a_retried_error_and_the_worker_survives(
    returned: object,
) -> None:
    registry = CollectorRegistry()

    async def step(request: Request, attempt: int) -> Result:
        if request == A and attempt == 1:
            return cast(Result, returned)  # e.g. a forgotten ``return``
        return Result()

    limiter = RecordingLimiter(delay=0.0)
    rec = Scripted(step)
    controller = Controller(
        NAME, rec, ControllerOptions(rate_limiter=limiter), metrics=Metrics(registry)
    )
    with structlog.testing.capture_logs() as logs:
        async with running(controller) as returned_event:
            controller.queue.add(A)
            controller.queue.add(B)
            await wait_until(lambda: rec.count(A) == 2 and rec.count(B) == 1)
            await settle()
            assert not returned_event.is_set(), "the controller stopped"
    # Retried through the rate limiter like an exception, then succeeded.
    assert limiter.whens == [A]
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller=NAME) == 1
    assert (
        sample(registry, "controller_runtime_reconcile_total", controller=NAME, result="error") == 1
    )
    # A wrong return type is a bug in the reconciler, like a TypeError it raised.
    assert sample(registry, "controller_runtime_reconcile_panics_total", controller=NAME) == 1
    [error] = [e for e in logs if e["event"] == "reconciler error"]
    assert error["returned"] == type(returned).__name__


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "panic"),
    [
        (KeyError("spec"), True),
        (AttributeError("'NoneType' object has no attribute 'get'"), True),
        (TypeError("unsupported operand"), True),
        (IndexError("list index out of range"), True),
        (ZeroDivisionError("division by zero"), True),
        (AssertionError("cannot happen"), True),
        (ExceptionGroup("task group", [ConnectionError("reset"), KeyError("x")]), True),
        (ServerError(503, "ServiceUnavailable", "etcd is down"), False),
        (TransportError("connection refused"), False),
        (TimeoutError("model server did not answer"), False),
        (RuntimeError("model not ready yet"), False),
        (ValueError("bad replica count"), False),
        (Boom("a user-defined error"), False),
        (TerminalError("invalid spec"), False),
        (ExceptionGroup("task group", [ConnectionError("reset")]), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
async def test_panics_total_counts_exceptions_that_are_programming_errors(
    error: Exception, panic: bool
) -> None:
    registry = CollectorRegistry()

    async def step(request: Request, attempt: int) -> Result:
        if attempt == 1:
            raise error
        return Result()

    rec = Scripted(step)
    controller = Controller(
        NAME,
        rec,
        ControllerOptions(rate_limiter=RecordingLimiter()),
        metrics=Metrics(registry),
    )
    async with running(controller):
        controller.queue.add(A)
        await wait_until(
            lambda: len(rec.finished_at) == (1 if isinstance(error, TerminalError) else 2)
        )
        await settle()
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller=NAME) == 1
    panics = sample(registry, "controller_runtime_reconcile_panics_total", controller=NAME)
    assert panics == (1 if panic else 0)


async def test_a_reconcile_timeout_is_counted_in_timeouts_total_not_in_panics() -> None:
    registry = CollectorRegistry()

    async def step(request: Request, attempt: int) -> Result:
        if attempt == 1:
            await anyio.sleep_forever()
        if attempt == 2:
            # Its own timeout, not the controller's: an error, but not a controller timeout.
            raise TimeoutError("the model server did not answer")
        return Result()

    metrics = Metrics(registry)
    rec = Scripted(step)
    controller = Controller(
        NAME,
        rec,
        ControllerOptions(reconcile_timeout=0.05, rate_limiter=RecordingLimiter()),
        metrics=metrics,
    )
    assert sample(registry, "controller_runtime_reconcile_timeouts_total", controller=NAME) == 0
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 3)
        await settle()
    assert sample(registry, "controller_runtime_reconcile_timeouts_total", controller=NAME) == 1
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller=NAME) == 2
    assert sample(registry, "controller_runtime_reconcile_panics_total", controller=NAME) == 0


async def test_a_reconcile_that_returns_within_its_timeout_is_not_a_timeout() -> None:
    registry = CollectorRegistry()
    rec = Scripted(succeed)
    controller = Controller(
        NAME, rec, ControllerOptions(reconcile_timeout=5.0), metrics=Metrics(registry)
    )
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 1)
        await settle()
    assert sample(registry, "controller_runtime_reconcile_timeouts_total", controller=NAME) == 0
    assert (
        sample(registry, "controller_runtime_reconcile_total", controller=NAME, result="success")
        == 1
    )


# -- delayed requests while every worker is busy ------------------------------------------


async def test_a_due_requeue_counts_in_depth_while_every_worker_is_busy() -> None:
    """client-go promotes delayed items when due; a backlog alert must see them then."""
    registry = CollectorRegistry()
    release = anyio.Event()
    delay, hold = 0.05, 0.1

    async def step(request: Request, attempt: int) -> Result:
        if request == A and attempt == 1:
            return Result(requeue_after=delay)
        if request == B:
            await release.wait()
        return Result()

    rec = Scripted(step)
    controller = Controller(NAME, rec, metrics=Metrics(registry))
    depth = {"name": NAME, "controller": NAME, "priority": ""}
    async with running(controller):
        controller.queue.add(A)
        await wait_until(lambda: rec.count(A) == 1)
        controller.queue.add(B)  # the only worker is now stuck on B
        await wait_until(lambda: rec.count(B) == 1)
        requeued_at = rec.finished_at[0][1]
        # Nobody calls get() or len(): the queue itself must notice that A is due.
        await wait_until(lambda: registry.get_sample_value("workqueue_depth", depth) == 1)
        assert time.monotonic() - requeued_at >= delay
        # Keep the worker busy a while longer: A's wait in the queue must show it.
        await anyio.sleep(hold)
        release.set()
        await wait_until(lambda: rec.count(A) == 2)
    # Measured from A's due time, not from when a worker came back for it.
    waited = registry.get_sample_value(
        "workqueue_queue_duration_seconds_sum", {"name": NAME, "controller": NAME}
    )
    assert waited is not None
    assert waited >= hold
