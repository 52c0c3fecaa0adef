"""Rate limiters: the retry delays a controller applies, as a specification."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.ratelimit import (
    DEFAULT_BUCKET_BURST,
    DEFAULT_BUCKET_QPS,
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    ItemFastSlowRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- per-item exponential -----------------------------------------------------------------


def test_exponential_doubles_from_5ms() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(5)]
    assert delays == pytest.approx([0.005, 0.010, 0.020, 0.040, 0.080])
    assert limiter.num_requeues("a") == 5


def test_exponential_caps_at_1000s_after_18_failures() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(20)]
    # The call after 17 failures waits 5 ms * 2**17 = 655.36 s; after 18, the cap.
    assert delays[17] == pytest.approx(655.36)
    assert delays[18] == 1000.0
    assert delays[19] == 1000.0


def test_exponential_survives_float_overflow() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    for _ in range(3000):  # 2**3000 does not fit in a float
        delay = limiter.when("a")
    assert delay == 1000.0
    assert limiter.num_requeues("a") == 3000


def test_exponential_forget_restarts_backoff() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    for _ in range(4):
        limiter.when("a")
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_exponential_counts_each_item_separately() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    limiter.when("a")
    limiter.when("a")
    assert limiter.when("b") == pytest.approx(0.005)
    assert (limiter.num_requeues("a"), limiter.num_requeues("b")) == (2, 1)
    limiter.forget("a")
    assert limiter.num_requeues("b") == 1


@given(
    base=st.floats(min_value=1e-6, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=1e6),
    failures=st.integers(min_value=1, max_value=80),
)
def test_exponential_is_min_of_doubling_and_cap(base: float, cap: float, failures: int) -> None:
    limiter: ItemExponentialFailureRateLimiter[int] = ItemExponentialFailureRateLimiter(base, cap)
    delays = [limiter.when(0) for _ in range(failures)]
    assert delays == pytest.approx([min(base * 2**n, cap) for n in range(failures)])
    assert all(a <= b for a, b in itertools.pairwise(delays))


def test_exponential_rejects_negative_delays() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        ItemExponentialFailureRateLimiter(-1.0, 10.0)


# -- fast/slow ----------------------------------------------------------------------------


def test_fast_slow_switches_after_max_fast_attempts() -> None:
    limiter: ItemFastSlowRateLimiter[str] = ItemFastSlowRateLimiter(0.1, 30.0, 3)
    assert [limiter.when("a") for _ in range(5)] == [0.1, 0.1, 0.1, 30.0, 30.0]
    assert limiter.when("b") == 0.1
    assert limiter.num_requeues("a") == 5
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.1


# -- token bucket -------------------------------------------------------------------------


def test_bucket_allows_burst_then_spaces_by_one_over_qps() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10, burst=100, clock=clock)
    assert [limiter.when(i) for i in range(100)] == [0.0] * 100
    # Each further reservation waits for a token the refill has not produced yet.
    assert [limiter.when(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_refills_at_qps_up_to_burst() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.when("x")
    assert limiter.when("x") == pytest.approx(0.5)  # borrowed: 1 token owed
    clock.advance(1.5)  # +3 tokens, minus the one owed
    assert [limiter.when("x") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    clock.advance(3600)  # a long idle period refills no more than burst
    assert [limiter.when("x") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.when("x") == pytest.approx(0.5)


def test_bucket_has_no_per_item_state() -> None:
    limiter = BucketRateLimiter(qps=1, burst=1, clock=FakeClock())
    limiter.when("a")
    assert limiter.num_requeues("a") == 0
    limiter.forget("a")  # no-op: the shared bucket is not refunded
    assert limiter.when("a") == pytest.approx(1.0)


def test_bucket_with_infinite_qps_never_delays() -> None:
    limiter = BucketRateLimiter(qps=math.inf, burst=1, clock=FakeClock())
    assert [limiter.when(i) for i in range(1000)] == [0.0] * 1000


def test_allow_takes_a_token_only_when_one_is_there_and_never_borrows() -> None:
    # The spam filter's use: burst 25, one token back every 300 s (client-go's
    # TokenBucketPassiveRateLimiter.TryAccept, i.e. rate.Limiter.Allow).
    clock = FakeClock()
    bucket = BucketRateLimiter(qps=1 / 300, burst=25, clock=clock)
    assert [bucket.allow() for _ in range(26)] == [True] * 25 + [False]
    for _ in range(100):
        assert not bucket.allow()  # refusals cost nothing: nothing is owed
    clock.advance(299)
    assert not bucket.allow()
    clock.advance(1)  # exactly one interval after the bucket ran dry
    assert bucket.allow()
    assert not bucket.allow()
    clock.advance(10 * 300)
    assert [bucket.allow() for _ in range(11)] == [True] * 10 + [False]
    clock.advance(1e6)  # a long idle period refills no more than burst
    assert [bucket.allow() for _ in range(26)] == [True] * 25 + [False]


def test_allow_and_when_draw_from_one_bucket() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(qps=2, burst=2, clock=clock)
    assert bucket.allow()
    assert bucket.when("x") == 0.0
    assert bucket.when("x") == pytest.approx(0.5)  # borrowed
    clock.advance(0.5)
    assert not bucket.allow()  # the refilled token is already promised
    clock.advance(0.5)
    assert bucket.allow()


def test_allow_with_infinite_qps_always_allows() -> None:
    bucket = BucketRateLimiter(qps=math.inf, burst=1, clock=FakeClock())
    assert all(bucket.allow() for _ in range(1000))


@pytest.mark.parametrize(("qps", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bucket_rejects_settings_that_cannot_grant_a_token(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        BucketRateLimiter(qps=qps, burst=burst)


@given(
    qps=st.floats(min_value=0.1, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_bucket_never_grants_more_than_burst_plus_refill(
    qps: float, burst: int, gaps: list[float]
) -> None:
    """The k-th reservation (from 0) is never ready before start + (k + 1 - burst) / qps."""
    clock = FakeClock(0.0)
    limiter = BucketRateLimiter(qps=qps, burst=burst, clock=clock)
    ready_times = []
    for gap in gaps:
        clock.advance(gap)
        delay = limiter.when(None)
        assert delay >= 0.0
        ready_times.append(clock.now + delay)
    for k, ready in enumerate(ready_times):
        assert ready >= (k + 1 - burst) / qps - 1e-9
    # Reservations are honoured in order: a later call never gets an earlier token.
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(ready_times))


# -- max-of and the default ---------------------------------------------------------------


class RecordingLimiter:
    def __init__(self, delay: float, requeues: int) -> None:
        self.delay = delay
        self.requeues = requeues
        self.calls: list[tuple[str, str]] = []

    def when(self, item: str) -> float:
        self.calls.append(("when", item))
        return self.delay

    def forget(self, item: str) -> None:
        self.calls.append(("forget", item))

    def num_requeues(self, item: str) -> int:
        return self.requeues


def test_max_of_takes_the_strictest_and_informs_every_limiter() -> None:
    low, high = RecordingLimiter(0.5, 7), RecordingLimiter(2.0, 1)
    limiter: RateLimiter[str] = MaxOfRateLimiter(low, high)
    assert limiter.when("a") == 2.0
    assert limiter.num_requeues("a") == 7
    limiter.forget("a")
    assert low.calls == high.calls == [("when", "a"), ("forget", "a")]


def test_max_of_needs_a_limiter() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MaxOfRateLimiter[str]()


def test_default_controller_limiter_is_exponential_per_item() -> None:
    limiter: RateLimiter[str] = default_controller_rate_limiter()
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_default_controller_limiter_bounds_overall_retry_rate() -> None:
    limiter: RateLimiter[int] = default_controller_rate_limiter()
    # Distinct items each get the 5 ms first backoff while the burst lasts ...
    first = [limiter.when(i) for i in range(DEFAULT_BUCKET_BURST - 4)]
    assert first == pytest.approx([0.005] * len(first))
    # ... then the shared bucket dominates: 1/qps spacing, whatever the item. The test
    # runs on the real clock, so allow for the milliseconds the loop above took.
    for i in range(4):
        limiter.when(1000 + i)
    spaced = [limiter.when(2000 + i) for i in range(3)]
    for n, delay in enumerate(spaced, start=1):
        assert delay == pytest.approx(n / DEFAULT_BUCKET_QPS, abs=0.05)
