"""Composable rate limiters that decide how long a failed item waits before its retry.

A limiter answers one question per retry, :meth:`RateLimiter.when`, and keeps whatever
state it needs to answer the next one (per-item failure counts, a shared token bucket).
``forget`` ends an item's retry history once it has succeeded. Limiters compose with
:class:`MaxOfRateLimiter`; the controller default combines per-item exponential backoff
with an overall token bucket, as client-go's ``DefaultControllerRateLimiter`` does.

All delays are in seconds. Limiters are used from one event loop and are not thread-safe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = [
    "DEFAULT_BUCKET_BURST",
    "DEFAULT_BUCKET_QPS",
    "DEFAULT_EXPONENTIAL_BASE_DELAY",
    "DEFAULT_EXPONENTIAL_MAX_DELAY",
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "ItemFastSlowRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "default_controller_rate_limiter",
]

T = TypeVar("T", bound=Hashable)
_T_contra = TypeVar("_T_contra", bound=Hashable, contravariant=True)

DEFAULT_EXPONENTIAL_BASE_DELAY = 0.005
"""First retry delay of a failing item (seconds); doubles with every further failure."""
DEFAULT_EXPONENTIAL_MAX_DELAY = 1000.0
"""Ceiling of the per-item backoff (seconds); every retry after 18 failures waits this."""
DEFAULT_BUCKET_QPS = 10.0
"""Overall retry rate across all items once the burst is spent (retries per second)."""
DEFAULT_BUCKET_BURST = 100
"""Retries that may happen back to back before the overall rate applies."""


class RateLimiter(Protocol[_T_contra]):
    """Decides the delay before an item is retried."""

    def when(self, item: _T_contra) -> float:
        """Record one more retry of ``item`` and return how long it must wait (seconds)."""
        ...

    def forget(self, item: _T_contra) -> None:
        """Drop the retry history of ``item`` (it succeeded, or is no longer tracked)."""
        ...

    def num_requeues(self, item: _T_contra) -> int:
        """How many retries of ``item`` have been recorded since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[T]):
    """Per-item backoff: ``base_delay * 2**failures``, capped at ``max_delay``.

    The n-th call of :meth:`when` for an item (counting from 0) returns
    ``min(base_delay * 2**n, max_delay)``; with the defaults that is 5 ms, 10 ms, 20 ms, …,
    655.36 s for n = 17, and 1000 s from n = 18 on. Counts live until :meth:`forget`.
    """

    def __init__(
        self,
        base_delay: float = DEFAULT_EXPONENTIAL_BASE_DELAY,
        max_delay: float = DEFAULT_EXPONENTIAL_MAX_DELAY,
    ) -> None:
        if base_delay < 0 or max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0 seconds")
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        exponent = self._failures.get(item, 0)
        self._failures[item] = exponent + 1
        try:
            backoff = math.ldexp(self._base_delay, exponent)
        except OverflowError:
            # Enough failures that the delay no longer fits in a float: it is past any cap.
            return self._max_delay
        return min(backoff, self._max_delay)

    def forget(self, item: T) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: T) -> int:
        return self._failures.get(item, 0)


class ItemFastSlowRateLimiter(Generic[T]):
    """Per-item: ``fast_delay`` for the first ``max_fast_attempts`` retries, then ``slow_delay``."""

    def __init__(self, fast_delay: float, slow_delay: float, max_fast_attempts: int) -> None:
        if fast_delay < 0 or slow_delay < 0 or max_fast_attempts < 0:
            raise ValueError("delays and max_fast_attempts must be >= 0")
        self._fast_delay = fast_delay
        self._slow_delay = slow_delay
        self._max_fast_attempts = max_fast_attempts
        self._attempts: dict[T, int] = {}

    def when(self, item: T) -> float:
        attempts = self._attempts.get(item, 0) + 1
        self._attempts[item] = attempts
        return self._fast_delay if attempts <= self._max_fast_attempts else self._slow_delay

    def forget(self, item: T) -> None:
        self._attempts.pop(item, None)

    def num_requeues(self, item: T) -> int:
        return self._attempts.get(item, 0)


class BucketRateLimiter:
    """One token bucket shared by all items: bounds the overall retry rate.

    The bucket holds at most ``burst`` tokens and refills at ``qps`` tokens per second;
    it starts full. Every :meth:`when` reserves one token, borrowing against future
    refills when the bucket is empty, and returns how long until that token exists. So
    ``burst`` back-to-back calls return 0, and further calls are spaced ``1/qps`` apart.
    This is the behaviour of ``rate.Limiter.Reserve().Delay()`` in golang.org/x/time/rate.

    It keeps no per-item state: :meth:`num_requeues` is always 0 and :meth:`forget` does
    nothing. Pass ``qps=math.inf`` for no limit.
    """

    def __init__(
        self,
        qps: float = DEFAULT_BUCKET_QPS,
        burst: int = DEFAULT_BUCKET_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not qps > 0:
            raise ValueError(f"qps must be > 0, got {qps}")
        if burst < 1:
            # With no room for even one token a reservation could never be honoured.
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._qps = qps
        self._burst = burst
        self._clock = clock
        # Invariant: _tokens <= _burst. Negative means tokens already promised to earlier
        # reservations that the refill has not produced yet.
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, item: object) -> float:
        if math.isinf(self._qps):
            return 0.0
        now = self._clock()
        if self._last is not None:
            refill = max(0.0, now - self._last) * self._qps
            self._tokens = min(float(self._burst), self._tokens + refill)
        self._last = now
        self._tokens -= 1.0
        return -self._tokens / self._qps if self._tokens < 0 else 0.0

    def forget(self, item: object) -> None:
        return None

    def num_requeues(self, item: object) -> int:
        return 0


class MaxOfRateLimiter(Generic[T]):
    """Combines limiters: waits as long as the strictest of them asks.

    Every limiter sees every call, so each keeps its own history up to date.
    """

    def __init__(self, *limiters: RateLimiter[T]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: T) -> float:
        return max(limiter.when(item) for limiter in self._limiters)

    def forget(self, item: T) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter() -> MaxOfRateLimiter[T]:
    """The retry limiter of a controller unless configured otherwise.

    Per-item exponential backoff from 5 ms to 1000 s, and at most 10 retries per second
    overall after a burst of 100: a single failing object backs off on its own, and a
    mass failure cannot turn into a retry storm against the API server.
    """
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(
            DEFAULT_EXPONENTIAL_BASE_DELAY, DEFAULT_EXPONENTIAL_MAX_DELAY
        ),
        BucketRateLimiter(DEFAULT_BUCKET_QPS, DEFAULT_BUCKET_BURST),
    )
