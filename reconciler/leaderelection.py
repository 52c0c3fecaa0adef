"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's timing rules.

Invariants, as in client-go's ``tools/leaderelection``:

- A lease held by someone else is valid until the *local monotonic* time at which we
  last saw its record change, plus its ``leaseDurationSeconds``. Wall-clock timestamps
  written by other hosts are never compared with ours, so clock skew cannot make two
  replicas lead at once; only the rate of the clocks matters.
- Every write is a PUT carrying the resourceVersion we last read: of two candidates
  racing for an expired lease, one gets a 409 and stays a follower.
- A leader that has not renewed for ``renew_deadline`` stops leading. Because
  ``renew_deadline < lease_duration``, it stops before any follower can consider the
  lease expired.
- ``leaseTransitions`` grows by one whenever the holder changes.

The guarded work runs inside :meth:`LeaderElector.run`; losing the lease cancels it
and ``run()`` raises :class:`LeadershipLost`, so the process can exit and restart clean.
"""

from __future__ import annotations

import math
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import anyio
import structlog

from reconciler.errors import ApiError, Conflict, NotFound, TransportError
from reconciler.resource import LEASE, Obj, ResourceType

__all__ = [
    "DEFAULT_LEASE_DURATION",
    "DEFAULT_RENEW_DEADLINE",
    "DEFAULT_RETRY_PERIOD",
    "JITTER_FACTOR",
    "LeaderElectionConfig",
    "LeaderElector",
    "LeadershipLost",
    "default_identity",
]


log = structlog.get_logger("reconciler.leaderelection")

# component-base / controller-runtime defaults (seconds).
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2
"""Acquire attempts are spaced ``retry_period * (1 + U[0, 1.2))`` apart, as in client-go."""

# Lease fields that make up client-go's LeaderElectionRecord; a change in any of them is
# what restarts the local validity clock of a lease held by someone else.
_RECORD_FIELDS = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)
# Attempts at the release write when it races with a concurrent update (409).
_RELEASE_ATTEMPTS = 3


def default_identity() -> str:
    """``hostname_uuid``: unique per process even when pods share a hostname."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Which Lease to contend for, and the timing rules (seconds)."""

    lease_name: str
    namespace: str
    identity: str = field(default_factory=default_identity)
    lease_duration: float = DEFAULT_LEASE_DURATION
    """How long followers wait, after last seeing the lease change, before taking it."""
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    """How long the leader keeps trying to renew before it gives up leading."""
    retry_period: float = DEFAULT_RETRY_PERIOD
    """Interval between renewals, and the base interval between acquire attempts."""
    release_on_cancel: bool = True
    """Clear the lease when leading ends without losing it, so a successor need not wait.

    Only safe when the process stops all guarded work once :meth:`LeaderElector.run`
    returns — which the structured ``run()`` guarantees for work started in its callback.
    """

    def __post_init__(self) -> None:
        if not self.lease_name:
            raise ValueError("lease_name must not be empty")
        if not self.namespace:
            raise ValueError("namespace must not be empty")
        if not self.identity:
            raise ValueError("identity must not be empty")
        if not (self.lease_duration > 0 and self.renew_deadline > 0 and self.retry_period > 0):
            raise ValueError("lease_duration, renew_deadline and retry_period must be > 0")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}) must be greater than "
                f"renew_deadline ({self.renew_deadline})"
            )
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}) must be greater than "
                f"{JITTER_FACTOR} * retry_period ({self.retry_period})"
            )

    @property
    def request_timeout(self) -> float:
        """Bound of each API request: ``max(renew_deadline / 2, 1 s)``, as controller-runtime."""
        return max(self.renew_deadline / 2, 1.0)


class LeadershipLost(Exception):
    """The lease could not be renewed within the renew deadline, or another holder took it."""


class _LeaseAPI(Protocol):
    """The three verbs the elector needs; :class:`reconciler.client.Client` provides them."""

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj: ...

    async def create(self, rt: ResourceType, obj: Obj, namespace: str | None = None) -> Obj: ...

    async def replace(self, rt: ResourceType, obj: Obj) -> Obj: ...


class LeaderElector:
    """Contends for one Lease and runs work only while holding it.

    ``on_change`` is called with ``True`` when this process starts leading and ``False``
    when it stops (also once with ``False`` at start, so a follower reports 0); the
    manager points it at the ``leader_election_master_status`` gauge.
    """

    def __init__(
        self,
        client: _LeaseAPI,
        config: LeaderElectionConfig,
        *,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._client = client
        self._config = config
        self._on_change = on_change
        self._lease_seconds = max(1, math.ceil(config.lease_duration))
        self._leading = False
        # The lease as last returned by the server (its resourceVersion guards our writes).
        self._lease: Obj | None = None
        self._observed: Obj = {}
        self._observed_at = 0.0  # monotonic time the observed record last changed
        self._log = log.bind(
            lease=f"{config.namespace}/{config.lease_name}", identity=config.identity
        )

    @property
    def is_leader(self) -> bool:
        """True from acquiring the lease until leading ends (returned, cancelled or lost)."""
        return self._leading

    @property
    def _holder(self) -> str:
        return str(self._observed.get("holderIdentity") or "")

    async def run(self, on_started_leading: Callable[[], Awaitable[None]]) -> None:
        """Acquire the lease, then run ``on_started_leading`` while renewing it.

        Returns when the callback returns; the lease is then released (if
        ``release_on_cancel``). Cancelling ``run()`` cancels the callback and releases the
        lease the same way, shielded and bounded by ``renew_deadline``. If renewal fails,
        the callback is cancelled, the lease is left to expire, and :class:`LeadershipLost`
        is raised. Exceptions from the callback propagate unchanged (after the release).
        """
        self._notify(False)
        lost: str | None = None  # why leadership was lost, if it was
        acquired = False
        failure: Exception | None = None
        try:
            last_renewal = await self._acquire()
            acquired = True
            self._set_leading(True)
            callback_scope = anyio.CancelScope()

            async def keep_renewing() -> None:
                nonlocal lost
                lost = await self._renew_until_lost(last_renewal)
                callback_scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_renewing, name="lease renewal")
                try:
                    with callback_scope:
                        await on_started_leading()
                except Exception as exc:
                    # Re-raised below, outside the task group, so callers see the
                    # callback's own exception rather than an internal ExceptionGroup.
                    failure = exc
                tg.cancel_scope.cancel()
        finally:
            self._set_leading(False)
            if acquired and lost is None and self._config.release_on_cancel:
                await self._release()
        if lost is not None:
            raise LeadershipLost(
                f"lease {self._config.namespace}/{self._config.lease_name}: {lost}"
            ) from failure
        if failure is not None:
            raise failure

    # -- phases -------------------------------------------------------------------------
    async def _acquire(self) -> float:
        """Retry (jittered) until we hold the lease; returns when the winning write began."""
        cfg = self._config
        self._log.info("attempting to acquire leader lease")
        while True:
            started = time.monotonic()
            if await self._try_acquire_or_renew():
                self._log.info("acquired leader lease")
                return started
            await anyio.sleep(cfg.retry_period * (1.0 + random.random() * JITTER_FACTOR))

    async def _renew_until_lost(self, last_renewal: float) -> str:
        """Renew every ``retry_period``; once leadership is lost, returns why."""
        cfg = self._config
        while True:
            await anyio.sleep(cfg.retry_period)
            # The deadline counts from the start of the last successful write: followers
            # cannot have seen that write any earlier, so we stop before they may take over.
            deadline = last_renewal + cfg.renew_deadline
            renewed_at: float | None = None
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                while True:
                    started = time.monotonic()
                    if await self._try_acquire_or_renew():
                        renewed_at = started
                        break
                    if self._holder != cfg.identity:
                        # Someone else already holds it: waiting out the deadline would
                        # only prolong two leaders acting at once.
                        self._log.warning("leader lease taken over", holder=self._holder)
                        return f"taken over by {self._holder}"
                    await anyio.sleep(cfg.retry_period)
            if renewed_at is None:
                self._log.warning("failed to renew leader lease within the renew deadline")
                return f"not renewed within the renew deadline ({cfg.renew_deadline}s)"
            last_renewal = renewed_at

    async def _release(self) -> None:
        """Clear the holder so a successor can take over at once; best effort, bounded."""
        cfg = self._config
        with anyio.move_on_after(cfg.renew_deadline, shield=True) as scope:
            for _ in range(_RELEASE_ATTEMPTS):
                try:
                    with anyio.fail_after(cfg.request_timeout):
                        lease = await self._client.get(LEASE, cfg.lease_name, cfg.namespace)
                    self._observe(lease)
                    if self._holder != cfg.identity:
                        return
                    now = _micro_time()
                    record = {
                        "holderIdentity": "",
                        "leaseDurationSeconds": 1,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseTransitions": self._observed.get("leaseTransitions") or 0,
                    }
                    with anyio.fail_after(cfg.request_timeout):
                        released = await self._client.replace(LEASE, _with_record(lease, record))
                    self._observe(released, force=True)
                    self._log.info("released leader lease")
                    return
                except Conflict:
                    continue
                except (ApiError, TransportError, TimeoutError) as err:
                    self._log.warning("failed to release leader lease", error=str(err))
                    return
            self._log.warning("failed to release leader lease: repeated conflicts")
        if scope.cancelled_caught:
            self._log.warning("failed to release leader lease: timed out")

    # -- one attempt --------------------------------------------------------------------
    async def _try_acquire_or_renew(self) -> bool:
        cfg = self._config
        now = _micro_time()
        record: Obj = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": self._lease_seconds,
            "acquireTime": now,
            "renewTime": now,
        }
        try:
            # Fast path: a leader renews with the resourceVersion of its own last write,
            # one request instead of two.
            if self._lease is not None and self._holder == cfg.identity and self._valid():
                renewal = {
                    **record,
                    "acquireTime": self._observed.get("acquireTime") or now,
                    "leaseTransitions": self._observed.get("leaseTransitions") or 0,
                }
                try:
                    with anyio.fail_after(cfg.request_timeout):
                        lease = await self._client.replace(
                            LEASE, _with_record(self._lease, renewal)
                        )
                except (ApiError, TransportError, TimeoutError) as err:
                    self._log.debug("optimistic renewal failed; re-reading", error=str(err))
                else:
                    self._observe(lease, force=True)
                    return True

            try:
                with anyio.fail_after(cfg.request_timeout):
                    current = await self._client.get(LEASE, cfg.lease_name, cfg.namespace)
            except NotFound:
                new = {
                    "apiVersion": LEASE.api_version,
                    "kind": LEASE.kind,
                    "metadata": {"name": cfg.lease_name, "namespace": cfg.namespace},
                    "spec": {**record, "leaseTransitions": 0},
                }
                with anyio.fail_after(cfg.request_timeout):
                    lease = await self._client.create(LEASE, new, cfg.namespace)
                self._observe(lease, force=True)
                return True

            self._observe(current)
            holder = self._holder
            if holder and holder != cfg.identity and self._valid():
                return False
            transitions = int(self._observed.get("leaseTransitions") or 0)
            if holder == cfg.identity:
                record["acquireTime"] = self._observed.get("acquireTime") or now
                record["leaseTransitions"] = transitions
            else:
                record["leaseTransitions"] = transitions + 1
            with anyio.fail_after(cfg.request_timeout):
                lease = await self._client.replace(LEASE, _with_record(current, record))
            self._observe(lease, force=True)
            return True
        except Conflict:
            # Another candidate wrote first (or created the lease first); it leads.
            self._log.debug("lost the race for the leader lease")
            return False
        except (ApiError, TransportError, TimeoutError) as err:
            self._log.warning("leader lease request failed", error=str(err))
            return False

    def _observe(self, lease: Obj, *, force: bool = False) -> None:
        """Remember the lease; restart the local validity clock if its record changed."""
        spec = lease.get("spec") or {}
        record = {k: spec.get(k) for k in _RECORD_FIELDS}
        previous_holder = self._holder
        self._lease = lease
        if force or record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        holder = self._holder
        if holder != previous_holder and holder and holder != self._config.identity:
            self._log.info("new leader observed", holder=holder)

    def _valid(self) -> bool:
        duration = float(self._observed.get("leaseDurationSeconds") or 0)
        return self._observed_at + duration > time.monotonic()

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if not leading:
            self._log.info("stopped leading")
        self._notify(leading)

    def _notify(self, leading: bool) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(leading)
        except Exception:
            # A broken metrics hook must not decide who leads.
            self._log.exception("leader change hook failed")


def _with_record(lease: Obj, record: Obj) -> Obj:
    """The lease with ``record`` written over its spec (other spec fields kept)."""
    return {**lease, "spec": {**(lease.get("spec") or {}), **record}}


def _micro_time() -> str:
    """Now as a metav1.MicroTime: RFC 3339 in UTC with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
