"""RateLimitingQueue: client-go work queue semantics, written as a specification.

Awaiting tests put a deadline on every await (``anyio.fail_after``) and detect "this task
is blocked" with ``anyio.wait_all_tasks_blocked`` rather than by sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.ratelimit import ItemExponentialFailureRateLimiter
from reconciler.request import Request, Result, TerminalError
from reconciler.workqueue import QueueShutDown, RateLimitingQueue

DEADLINE = 5.0


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingMetrics:
    events: list[tuple[str, Hashable | None]] = field(default_factory=list)

    def add(self, item: Hashable) -> None:
        self.events.append(("add", item))

    def get(self, item: Hashable) -> None:
        self.events.append(("get", item))

    def done(self, item: Hashable) -> None:
        self.events.append(("done", item))

    def retry(self) -> None:
        self.events.append(("retry", None))

    def count(self, kind: str) -> int:
        return sum(1 for event, _ in self.events if event == kind)


class FixedLimiter:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.failures: dict[str, int] = {}

    def when(self, item: str) -> float:
        self.failures[item] = self.failures.get(item, 0) + 1
        return self.delay

    def forget(self, item: str) -> None:
        self.failures.pop(item, None)

    def num_requeues(self, item: str) -> int:
        return self.failures.get(item, 0)


def make_queue(
    clock: FakeClock | None = None, metrics: RecordingMetrics | None = None
) -> RateLimitingQueue[str]:
    return RateLimitingQueue(
        FixedLimiter(1.0), metrics=metrics, clock=clock if clock is not None else FakeClock()
    )


async def get(queue: RateLimitingQueue[str]) -> str:
    with anyio.fail_after(DEADLINE):
        return await queue.get()


# -- basic add / get / done ---------------------------------------------------------------


async def test_items_come_out_in_insertion_order() -> None:
    queue = make_queue()
    for item in ["a", "b", "c"]:
        queue.add(item)
    assert len(queue) == 3
    assert [await get(queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_adding_a_queued_item_again_is_a_no_op() -> None:
    metrics = RecordingMetrics()
    queue = make_queue(metrics=metrics)
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert [await get(queue) for _ in range(2)] == ["a", "b"]
    assert metrics.count("add") == 2


async def test_adding_a_processing_item_only_marks_it_dirty_and_done_requeues_it() -> None:
    metrics = RecordingMetrics()
    queue = make_queue(metrics=metrics)
    queue.add("a")
    assert await get(queue) == "a"
    queue.add("a")
    queue.add("a")
    # Not handed out while the first holder still has it.
    assert len(queue) == 0
    queue.done("a")
    assert len(queue) == 1
    assert await get(queue) == "a"
    queue.done("a")
    assert len(queue) == 0
    # Both the first add and the dirty-while-processing add are reported, once each.
    assert metrics.count("add") == 2


async def test_done_without_a_new_add_does_not_requeue() -> None:
    queue = make_queue()
    queue.add("a")
    queue.done(await get(queue))
    assert len(queue) == 0


async def test_done_of_an_item_not_being_processed_is_an_error() -> None:
    queue = make_queue()
    queue.add("a")
    with pytest.raises(ValueError, match="not being processed"):
        queue.done("a")
    assert len(queue) == 1


async def test_get_blocks_until_an_item_is_added() -> None:
    queue = make_queue()
    received: list[str] = []

    async def worker() -> None:
        received.append(await queue.get())

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            assert received == []
            queue.add("a")
    assert received == ["a"]


async def test_each_item_goes_to_exactly_one_of_many_waiting_getters() -> None:
    queue = make_queue()
    received: list[str] = []

    async def worker() -> None:
        received.append(await queue.get())

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            queue.add("a")
            await anyio.wait_all_tasks_blocked()
            assert received == ["a"]
            for item in ["b", "c", "d", "e"]:
                queue.add(item)
    assert sorted(received) == ["a", "b", "c", "d", "e"]


async def test_cancelled_get_loses_no_item() -> None:
    queue = make_queue()
    with anyio.move_on_after(0) as scope:
        await queue.get()
    assert scope.cancelled_caught
    queue.add("a")
    # Cancelled while an item is available: the item stays queued.
    with anyio.CancelScope() as scope:
        scope.cancel()
        await queue.get()
    assert len(queue) == 1
    assert await get(queue) == "a"


async def test_processing_ages_report_how_long_each_holder_has_held() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add("a")
    queue.add("b")
    await get(queue)
    clock.advance(3)
    await get(queue)
    clock.advance(1)
    assert sorted(queue.processing_ages()) == [1.0, 4.0]
    queue.done("a")
    assert queue.processing_ages() == [1.0]


# -- delayed adds -------------------------------------------------------------------------


async def test_add_after_holds_an_item_until_its_ready_time() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 10)
    assert len(queue) == 0
    clock.advance(9.5)
    assert len(queue) == 0
    clock.advance(0.5)
    assert len(queue) == 1
    assert await get(queue) == "a"


@pytest.mark.parametrize("delay", [0.0, -5.0])
async def test_add_after_without_positive_delay_adds_now(delay: float) -> None:
    queue = make_queue()
    queue.add_after("a", delay)
    assert len(queue) == 1


async def test_add_after_keeps_the_earliest_ready_time() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 10)
    queue.add_after("a", 5)  # sooner: wins
    queue.add_after("a", 20)  # later: ignored
    clock.advance(5)
    assert len(queue) == 1
    queue.done(await get(queue))
    # The superseded entries do not fire again.
    clock.advance(100)
    assert len(queue) == 0


async def test_delayed_items_come_out_in_ready_time_order() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("late", 3)
    queue.add_after("early", 1)
    queue.add_after("middle", 2)
    clock.advance(3)
    assert [await get(queue) for _ in range(3)] == ["early", "middle", "late"]


async def test_a_due_delayed_item_is_deduplicated_against_dirty_items() -> None:
    clock = FakeClock()
    metrics = RecordingMetrics()
    queue = make_queue(clock, metrics)
    queue.add_after("a", 1)
    queue.add("a")
    clock.advance(1)
    assert len(queue) == 1
    assert metrics.count("add") == 1


async def test_a_waiting_getter_wakes_when_a_delayed_item_is_due() -> None:
    # Real clock: the getter sleeps until the ready time, then promotes the item itself.
    queue: RateLimitingQueue[str] = RateLimitingQueue(FixedLimiter(0.0))
    queue.add_after("a", 0.05)
    start = anyio.current_time()
    assert await get(queue) == "a"
    assert anyio.current_time() - start >= 0.04


async def test_a_getter_blocked_on_an_empty_queue_notices_a_new_delayed_item() -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue(FixedLimiter(0.0))
    received: list[str] = []

    async def worker() -> None:
        received.append(await queue.get())

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()  # blocked with no deadline
            queue.add_after("a", 0.02)
    assert received == ["a"]


async def test_a_sooner_delayed_item_shortens_a_getters_sleep() -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue(FixedLimiter(0.0))
    queue.add_after("far", 3600)
    received: list[str] = []

    async def worker() -> None:
        received.append(await queue.get())

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            queue.add_after("near", 0.02)
    assert received == ["near"]


# -- the waiting loop (invariant 7) --------------------------------------------------------


async def wait_for(check: Callable[[], bool]) -> None:
    """Poll ``check`` until true; it must not call ``len``/``get``, which promote too."""
    with anyio.fail_after(DEADLINE):
        while not check():
            await anyio.sleep(0.002)


async def test_run_adds_a_due_item_while_nobody_calls_get_or_len() -> None:
    # Real clock: the runner sleeps on anyio's clock until the ready time.
    metrics = RecordingMetrics()
    queue: RateLimitingQueue[str] = RateLimitingQueue(FixedLimiter(0.0), metrics=metrics)
    queue.add("busy")
    assert await get(queue) == "busy"  # every worker (here: the only one) is busy
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run)
        start = anyio.current_time()
        queue.add_after("a", 0.05)
        await wait_for(lambda: ("add", "a") in metrics.events)
        assert anyio.current_time() - start >= 0.05
        tg.cancel_scope.cancel()
    # Now dirty and queued: the depth a metrics scrape would see is 1.
    assert metrics.count("add") - metrics.count("get") == 1
    assert len(queue) == 1


async def test_run_wakes_early_for_a_sooner_item() -> None:
    metrics = RecordingMetrics()
    queue: RateLimitingQueue[str] = RateLimitingQueue(FixedLimiter(0.0), metrics=metrics)
    queue.add_after("far", 3600)
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run)
        await settle()  # the runner sleeps until "far" is due
        queue.add_after("near", 0.02)
        await wait_for(lambda: ("add", "near") in metrics.events)
        tg.cancel_scope.cancel()
    assert ("add", "far") not in metrics.events


async def test_run_returns_once_the_queue_shuts_down() -> None:
    queue = make_queue()
    queue.add_after("a", 3600)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.run)
            await settle()
            queue.shut_down()
    assert len(queue) == 0


async def test_run_on_a_queue_already_shut_down_returns_at_once() -> None:
    queue = make_queue()
    queue.shut_down()
    with anyio.fail_after(DEADLINE):
        await queue.run()


async def settle() -> None:
    with anyio.fail_after(DEADLINE):
        await anyio.wait_all_tasks_blocked()


# -- rate-limited adds --------------------------------------------------------------------


async def test_add_rate_limited_waits_for_the_limiter_delay() -> None:
    clock = FakeClock()
    limiter = FixedLimiter(2.0)
    queue: RateLimitingQueue[str] = RateLimitingQueue(limiter, clock=clock)
    queue.add_rate_limited("a")
    assert len(queue) == 0
    assert queue.num_requeues("a") == 1
    clock.advance(2)
    assert len(queue) == 1
    queue.forget("a")
    assert queue.num_requeues("a") == 0


async def test_rate_limited_retries_back_off_exponentially() -> None:
    clock = FakeClock()
    queue: RateLimitingQueue[str] = RateLimitingQueue(
        ItemExponentialFailureRateLimiter(1.0, 100.0), clock=clock
    )
    for expected_delay in [1.0, 2.0, 4.0]:
        queue.add_rate_limited("a")
        clock.advance(expected_delay - 0.5)
        assert len(queue) == 0
        clock.advance(0.5)
        assert len(queue) == 1
        queue.done(await get(queue))


def test_default_limiter_is_the_controller_default() -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue(clock=FakeClock())
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 2


# -- metric hooks -------------------------------------------------------------------------


async def test_metric_hooks_follow_client_go() -> None:
    clock = FakeClock()
    metrics = RecordingMetrics()
    queue = make_queue(clock, metrics)
    queue.add("a")
    queue.add("a")  # deduplicated: not an add
    queue.add_after("b", 0)  # a retry, and an add
    queue.add_after("c", 5)  # a retry; the add comes when it is due
    queue.add_rate_limited("d")  # a retry
    assert metrics.events == [("add", "a"), ("retry", None), ("add", "b")] + [("retry", None)] * 2
    metrics.events.clear()

    item = await get(queue)
    queue.add(item)  # newly dirty while processing: an add
    queue.done(item)
    assert metrics.events == [("get", "a"), ("add", "a"), ("done", "a")]


async def test_depth_equals_the_number_of_dirty_items() -> None:
    metrics = RecordingMetrics()
    queue = make_queue(metrics=metrics)
    queue.add("a")
    queue.add("b")
    await get(queue)  # a
    queue.add("a")  # dirty again while processing
    depth = metrics.count("add") - metrics.count("get")
    assert depth == 2  # b queued, a dirty-while-processing


# -- shutdown -----------------------------------------------------------------------------


async def test_shutdown_hands_out_queued_items_then_raises() -> None:
    queue = make_queue()
    queue.add("a")
    queue.add("b")
    queue.shut_down()
    assert queue.shutting_down
    queue.add("c")  # dropped
    assert [await get(queue), await get(queue)] == ["a", "b"]
    with pytest.raises(QueueShutDown):
        await get(queue)


async def test_shutdown_drops_delayed_items() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 1)
    queue.shut_down()
    queue.add_after("b", 1)
    queue.add_rate_limited("c")
    clock.advance(10)
    assert len(queue) == 0
    with pytest.raises(QueueShutDown):
        await get(queue)


async def test_shutdown_wakes_every_waiting_getter() -> None:
    queue = make_queue()
    outcomes: list[str] = []

    async def worker() -> None:
        try:
            await queue.get()
        except QueueShutDown:
            outcomes.append("shut down")

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            queue.shut_down()
    assert outcomes == ["shut down"] * 3


async def test_done_after_shutdown_still_requeues_a_dirty_item() -> None:
    queue = make_queue()
    queue.add("a")
    await get(queue)
    queue.add("a")
    queue.shut_down()
    queue.done("a")
    assert await get(queue) == "a"


async def test_shut_down_with_drain_waits_for_items_in_processing() -> None:
    queue = make_queue()
    queue.add("a")
    queue.add("b")
    await get(queue)
    await get(queue)
    drained = anyio.Event()

    async def drain() -> None:
        await queue.shut_down_with_drain()
        drained.set()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            await anyio.wait_all_tasks_blocked()
            assert queue.shutting_down
            queue.done("a")
            await anyio.wait_all_tasks_blocked()
            assert not drained.is_set()
            queue.done("b")
    assert drained.is_set()


async def test_shut_down_with_drain_returns_at_once_when_idle() -> None:
    queue = make_queue()
    with anyio.fail_after(DEADLINE):
        await queue.shut_down_with_drain()
    assert queue.shutting_down


async def test_shut_down_ends_a_waiting_drain() -> None:
    queue = make_queue()
    queue.add("a")
    await get(queue)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.shut_down_with_drain)
            await anyio.wait_all_tasks_blocked()
            queue.shut_down()


# -- request keys -------------------------------------------------------------------------


async def test_requests_deduplicate_by_value() -> None:
    queue: RateLimitingQueue[Request] = RateLimitingQueue(clock=FakeClock())
    queue.add(Request("ns", "a"))
    queue.add(Request("ns", "a"))
    queue.add(Request("other", "a"))
    assert len(queue) == 2


def test_request_string_form_and_order() -> None:
    assert str(Request("ns", "name")) == "ns/name"
    assert str(Request("", "node-1")) == "node-1"
    assert sorted([Request("b", "a"), Request("a", "z")]) == [Request("a", "z"), Request("b", "a")]


def test_result_defaults_to_done_and_rejects_negative_delays() -> None:
    assert Result() == Result(requeue_after=None, requeue=False)
    with pytest.raises(ValueError, match="requeue_after"):
        Result(requeue_after=-1)


def test_terminal_error_wraps_its_cause() -> None:
    cause = ValueError("spec.replicas must be >= 0")
    error = TerminalError(cause)
    assert error.cause is cause
    assert str(error) == "terminal error: spec.replicas must be >= 0"
    assert TerminalError("bad spec").cause is None
    with pytest.raises(TerminalError) as raised:
        try:
            raise cause
        except ValueError as err:
            raise TerminalError("invalid spec") from err
    assert raised.value.cause is cause


# -- properties ---------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), KEYS),
        st.tuples(st.just("add_after"), KEYS, st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.5, 7.0])),
        st.tuples(st.just("add_rate_limited"), KEYS),
        st.tuples(st.just("forget"), KEYS),
        st.tuples(st.just("advance"), st.sampled_from([0.25, 1.0, 3.0])),
        st.tuples(st.just("get")),
        st.tuples(st.just("done"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("shut_down")),
    ),
    max_size=60,
)


class QueueModel:
    """The specification as plain sets: queued = dirty - processing."""

    def __init__(self) -> None:
        self.now = 0.0
        self.dirty: set[str] = set()
        self.processing: set[str] = set()
        self.waiting: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.shut = False
        self.retries = 0

    def add(self, key: str) -> None:
        if not self.shut:
            self.dirty.add(key)

    def add_after(self, key: str, delay: float) -> None:
        if self.shut:
            return
        self.retries += 1
        if delay <= 0:
            self.add(key)
        else:
            self.waiting[key] = min(self.waiting.get(key, math.inf), self.now + delay)

    def rate_limit_delay(self, key: str) -> float:
        failures = self.failures.get(key, 0)
        self.failures[key] = failures + 1
        return min(2.0**failures, 8.0)

    def promote(self) -> None:
        for key, ready in sorted(self.waiting.items(), key=lambda kv: kv[1]):
            if ready <= self.now:
                del self.waiting[key]
                self.add(key)

    def queued(self) -> set[str]:
        return self.dirty - self.processing


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_queue_matches_its_specification(operations: list[tuple[object, ...]]) -> None:
    anyio.run(_check_against_model, operations)


async def _check_against_model(operations: list[tuple[object, ...]]) -> None:
    model = QueueModel()
    clock = FakeClock(0.0)
    metrics = RecordingMetrics()
    queue: RateLimitingQueue[str] = RateLimitingQueue(
        ItemExponentialFailureRateLimiter(1.0, 8.0), metrics=metrics, clock=clock
    )
    held: list[str] = []

    for operation in operations:
        match operation:
            case ("add", str(key)):
                queue.add(key)
                model.add(key)
            case ("add_after", str(key), float(delay)):
                queue.add_after(key, delay)
                model.add_after(key, delay)
            case ("add_rate_limited", str(key)):
                queue.add_rate_limited(key)
                if not model.shut:
                    model.add_after(key, model.rate_limit_delay(key))
            case ("forget", str(key)):
                queue.forget(key)
                model.failures.pop(key, None)
            case ("advance", float(seconds)):
                clock.advance(seconds)
                model.now += seconds
            case ("get",):
                model.promote()
                if model.queued():
                    item = await get(queue)
                    assert item in model.queued()
                    assert item not in held, "an item was handed to a second holder"
                    held.append(item)
                    model.processing.add(item)
                    model.dirty.discard(item)
                elif model.shut:
                    with pytest.raises(QueueShutDown):
                        await get(queue)
            case ("done", int(index)):
                if held:
                    item = held.pop(index % len(held))
                    queue.done(item)
                    model.processing.discard(item)
            case ("shut_down",):
                queue.shut_down()
                model.shut = True
                model.waiting.clear()
        model.promote()
        assert len(queue) == len(model.queued())
        assert queue.num_requeues("a") == model.failures.get("a", 0)
        # Depth as the metrics see it: items newly dirtied minus items handed out.
        assert metrics.count("add") - metrics.count("get") == len(model.dirty)
        assert metrics.count("retry") == model.retries

    # No item is lost: everything dirty or waiting is handed out exactly once more.
    expected = model.dirty | set(model.waiting)
    clock.advance(1e6)
    for item in held:
        queue.done(item)
    handed_out: list[str] = []
    while len(queue):
        item = await get(queue)
        handed_out.append(item)
        queue.done(item)
        assert len(handed_out) <= len(expected), f"handed out more than once: {handed_out}"
    assert sorted(handed_out) == sorted(expected)
    queue.shut_down()
    with pytest.raises(QueueShutDown):
        await get(queue)


@given(
    delays=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8),
    processing_time=st.integers(min_value=0, max_value=3),
)
def test_repeated_add_after_fires_once_at_the_earliest_time(
    delays: list[int], processing_time: int
) -> None:
    anyio.run(_collect_firings, delays, processing_time)


async def _collect_firings(delays: list[int], processing_time: int) -> None:
    clock = FakeClock(0.0)
    queue = make_queue(clock)
    for delay in delays:
        queue.add_after("a", delay)
    fired_at: list[float] = []
    for _ in range(25):
        clock.advance(1)
        if len(queue):
            fired_at.append(clock.now)
            await get(queue)
            clock.advance(processing_time)
            queue.done("a")
    assert fired_at == [min(delays)]


@settings(max_examples=100, deadline=None)
@given(
    workers=st.integers(min_value=1, max_value=4),
    adds=st.lists(st.tuples(KEYS, st.integers(min_value=0, max_value=3)), min_size=1, max_size=40),
    work_steps=st.integers(min_value=0, max_value=3),
)
def test_concurrent_workers_never_share_an_item_and_miss_no_add(
    workers: int, adds: list[tuple[str, int]], work_steps: int
) -> None:
    anyio.run(_run_workers, workers, adds, work_steps)


async def _run_workers(workers: int, adds: list[tuple[str, int]], work_steps: int) -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue()
    holders: set[str] = set()
    # Global sequence numbers: every add must be followed by a processing start.
    tick = 0
    last_add: dict[str, int] = {}
    last_start: dict[str, int] = {}

    async def worker() -> None:
        nonlocal tick
        while True:
            try:
                item = await queue.get()
            except QueueShutDown:
                return
            assert item not in holders, f"{item} held twice"
            holders.add(item)
            tick += 1
            last_start[item] = tick
            for _ in range(work_steps):
                await anyio.lowlevel.checkpoint()
            holders.discard(item)
            queue.done(item)

    async def producer() -> None:
        nonlocal tick
        for key, pause in adds:
            queue.add(key)
            tick += 1
            last_add[key] = tick
            for _ in range(pause):
                await anyio.lowlevel.checkpoint()
        queue.shut_down()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
            tg.start_soon(producer)

    for key, added in last_add.items():
        assert last_start[key] > added, f"the last add of {key} was never processed"
    assert not holders
