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
    """One token bucket: bounds the rate of whatever draws from it.

    The bucket holds at most ``burst`` tokens and refills at ``qps`` tokens per second;
    it starts full. Two ways to draw, as golang.org/x/time/rate offers:

    - :meth:`when` (the work-queue retry limiter, shared by all items) reserves one
      token, borrowing against future refills when the bucket is empty, and returns how
      long until that token exists: ``burst`` back-to-back calls return 0, further calls
      are spaced ``1/qps`` apart (``rate.Limiter.Reserve().Delay()``);
    - :meth:`allow` (the event spam filter, one bucket per object) takes a token only if
      one is there now and never borrows, so a refusal costs nothing
      (``rate.Limiter.Allow()``, client-go's ``TokenBucketPassiveRateLimiter.TryAccept``).

    As a retry limiter it keeps no per-item state: :meth:`num_requeues` is always 0 and
    :meth:`forget` does nothing. Pass ``qps=math.inf`` for no limit.
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
        self._interval = 1.0 / qps  # seconds per token; 0 for qps=inf
        self._burst = burst
        self._clock = clock
        # The bucket was last full at ``_full_at``; ``_taken`` tokens were drawn since.
        # At ``now`` it holds burst - _taken + (now - _full_at) / interval tokens
        # (negative when reservations borrowed), until that reaches burst and the bucket
        # is full again. Token k is compared as ``_full_at + k * interval``: one rounding,
        # however many draws, so a 300 s refill is back at exactly +300 s and the burst's
        # reservations wait exactly 0. It starts full.
        self._full_at = -math.inf
        self._taken = 0

    def when(self, item: object) -> float:
        if self._interval == 0.0:
            return 0.0
        now = self._refill()
        self._taken += 1
        return max(0.0, self._available_at(self._taken) - now)

    def allow(self) -> bool:
        """Take a token if the bucket has one now; never borrows."""
        if self._interval == 0.0:
            return True
        now = self._refill()
        if self._available_at(self._taken + 1) > now:
            return False
        self._taken += 1
        return True

    def forget(self, item: object) -> None:
        return None

    def num_requeues(self, item: object) -> int:
        return 0

    def _available_at(self, draws: int) -> float:
        """When the ``draws``-th token since ``_full_at`` exists (past for the burst)."""
        return self._full_at + (draws - self._burst) * self._interval

    def _refill(self) -> float:
        """Restart the count from now if the bucket has filled up; returns now."""
        now = self._clock()
        if self._full_at + self._taken * self._interval <= now:
            self._full_at = now
            self._taken = 0
        return now


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
