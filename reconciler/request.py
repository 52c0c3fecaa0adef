"""What a reconciler is asked to do, what it answers, and the error that stops retries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Request:
    """The key of one object to reconcile.

    Only the key travels through the work queue: the reconciler reads the current state
    from the cache, so several events for one object collapse into one reconcile.
    """

    namespace: str
    """Namespace of the object; ``""`` for cluster-scoped objects."""
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Result:
    """What a successful reconcile asks of the controller.

    ``requeue_after`` (seconds) wins over ``requeue``: a positive value schedules the
    request again after that delay and resets its failure backoff. ``requeue=True`` alone
    re-adds the request through the rate limiter, so repeated requeues back off. The
    default ``Result()`` means "done until the next event".
    """

    requeue_after: float | None = None
    requeue: bool = False

    def __post_init__(self) -> None:
        # A negative delay is a bug in the caller, not a request for "now": say so early.
        if self.requeue_after is not None and self.requeue_after < 0:
            raise ValueError(f"requeue_after must be >= 0 seconds, got {self.requeue_after}")


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix (for example an invalid spec).

    The controller records it and does not requeue the request; the next event for the
    object triggers a new reconcile. Wrap the underlying error (``TerminalError(err)``)
    or give a message (``raise TerminalError("spec.replicas must be >= 0") from err``);
    either way :attr:`cause` is the underlying error, if any.
    """

    def __init__(self, cause: BaseException | str) -> None:
        super().__init__(cause)
        if isinstance(cause, BaseException):
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        return self.__cause__

    def __str__(self) -> str:
        return f"terminal error: {self.args[0]}"
