"""LeaderElector timing edge cases against an in-memory Lease API.

Only what a real API server cannot easily stage lives here: foreign wall clocks far in
the past or future, requests that hang, exact attempt spacing. The behaviour between
real processes is proven in tests/integration/test_leaderelection.py.
"""

from __future__ import annotations

import copy
import itertools
import re
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from reconciler.errors import AlreadyExists, Conflict, NotFound
from reconciler.leaderelection import (
    JITTER_FACTOR,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLost,
)
from reconciler.resource import LEASE, Obj, ResourceType

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DEADLINE = 10.0


class FakeLeaseAPI:
    """One namespace's Leases with resourceVersion checks, like the API server."""

    def __init__(self) -> None:
        self.leases: dict[str, Obj] = {}
        self.hang = False
        self.calls: list[tuple[str, float]] = []
        self._rv = 0

    async def _enter(self, verb: str) -> None:
        self.calls.append((verb, time.monotonic()))
        if self.hang:
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()

    def _store(self, obj: Obj) -> Obj:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.leases[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        await self._enter("get")
        if name not in self.leases:
            raise NotFound(404, "NotFound", f"leases {name!r} not found")
        return copy.deepcopy(self.leases[name])

    async def create(self, rt: ResourceType, obj: Obj, namespace: str | None = None) -> Obj:
        await self._enter("create")
        assert rt == LEASE
        if obj["metadata"]["name"] in self.leases:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        return self._store(obj)

    async def replace(self, rt: ResourceType, obj: Obj) -> Obj:
        await self._enter("replace")
        current = self.leases[obj["metadata"]["name"]]
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        return self._store(obj)

    def put_foreign(self, holder: str, renew_time: str, duration: int = 1) -> None:
        """Another process's lease, stamped with that process's (possibly wrong) clock."""
        self._store(
            {
                "metadata": {"name": "lock", "namespace": "ns"},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": duration,
                    "acquireTime": renew_time,
                    "renewTime": renew_time,
                    "leaseTransitions": 4,
                },
            }
        )

    def spec(self) -> Obj:
        spec: Obj = self.leases["lock"]["spec"]
        return spec


def config(identity: str, **overrides: Any) -> LeaderElectionConfig:
    timing: dict[str, Any] = {"lease_duration": 1.0, "renew_deadline": 0.5, "retry_period": 0.1}
    timing.update(overrides)
    return LeaderElectionConfig("lock", "ns", identity=identity, **timing)


async def lead_until_cancelled(started: anyio.Event) -> None:
    started.set()
    await anyio.sleep_forever()


# -- configuration ---------------------------------------------------------------------
def test_defaults_match_controller_runtime() -> None:
    cfg = LeaderElectionConfig("lock", "ns")
    assert (cfg.lease_duration, cfg.renew_deadline, cfg.retry_period) == (15.0, 10.0, 2.0)
    assert cfg.request_timeout == 5.0
    assert cfg.release_on_cancel is True
    host, _, uid = cfg.identity.rpartition("_")
    assert host
    assert len(uid) == 36
    assert LeaderElectionConfig("lock", "ns").identity != cfg.identity


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "message"),
    [
        (10.0, 10.0, 2.0, "lease_duration"),
        (15.0, 2.4, 2.0, "renew_deadline"),
        (15.0, 10.0, 0.0, "> 0"),
        (0.0, -1.0, 2.0, "> 0"),
    ],
)
def test_config_validated_like_client_go(
    lease: float, renew: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LeaderElectionConfig(
            "lock", "ns", lease_duration=lease, renew_deadline=renew, retry_period=retry
        )


def test_request_timeout_is_at_least_one_second() -> None:
    assert config("a").request_timeout == 1.0


# -- acquiring -------------------------------------------------------------------------
async def test_creates_the_lease_with_micro_times() -> None:
    api = FakeLeaseAPI()
    elector = LeaderElector(api, config("a"))
    started = anyio.Event()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(elector.run, lambda: lead_until_cancelled(started))
            await started.wait()
            assert elector.is_leader
            spec = api.spec()
            assert spec["holderIdentity"] == "a"
            assert spec["leaseDurationSeconds"] == 1
            assert spec["leaseTransitions"] == 0
            assert MICRO_TIME.match(spec["acquireTime"])
            assert MICRO_TIME.match(spec["renewTime"])
            tg.cancel_scope.cancel()
    assert not elector.is_leader


@pytest.mark.parametrize("foreign_clock", ["2001-01-01T00:00:00.000000Z", "2999-01-01T00:00:00Z"])
async def test_foreign_lease_expires_by_local_observation_not_its_timestamps(
    foreign_clock: str,
) -> None:
    # Whether the holder's clock is decades behind or ahead, a lease that stops changing
    # is taken exactly one leaseDurationSeconds after we first saw it, by our clock.
    api = FakeLeaseAPI()
    api.put_foreign("other", foreign_clock, duration=1)
    elector = LeaderElector(api, config("a"))
    started = anyio.Event()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(elector.run, lambda: lead_until_cancelled(started))
            await started.wait()
            tg.cancel_scope.cancel()
    first_read = next(t for verb, t in api.calls if verb == "get")
    took_over = next(t for verb, t in api.calls if verb == "replace")
    assert 1.0 <= took_over - first_read < 1.0 + 0.1 * (1 + JITTER_FACTOR) + 0.2
    assert api.spec()["leaseTransitions"] == 5


async def test_a_lease_that_keeps_changing_is_never_taken() -> None:
    # The holder renews (its record changes) more often than the lease duration, with
    # a clock stuck in the past: it stays valid because we keep observing changes.
    api = FakeLeaseAPI()
    api.put_foreign("other", "2001-01-01T00:00:00.000000Z", duration=1)
    elector = LeaderElector(api, config("a"))
    started = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(elector.run, lambda: lead_until_cancelled(started))
        for i in range(10):  # 2.5 lease durations
            await anyio.sleep(0.25)
            api.put_foreign("other", f"2001-01-01T00:00:{i:02d}.000000Z", duration=1)
            assert not started.is_set()
        tg.cancel_scope.cancel()
    assert api.spec()["holderIdentity"] == "other"
    assert not elector.is_leader


async def test_acquire_attempts_are_jittered_retry_periods() -> None:
    api = FakeLeaseAPI()
    api.put_foreign("other", "2001-01-01T00:00:00.000000Z", duration=60)
    elector = LeaderElector(api, config("a"))
    with anyio.move_on_after(1.5):
        await elector.run(anyio.sleep_forever)
    gets = [t for verb, t in api.calls if verb == "get"]
    gaps = [b - a for a, b in itertools.pairwise(gets)]
    assert len(gaps) >= 5
    assert all(0.1 <= g < 0.1 * (1 + JITTER_FACTOR) + 0.05 for g in gaps), gaps
    # Jittered, not a fixed period: the spread covers a good part of [0.1, 0.22).
    assert max(gaps) - min(gaps) > 0.02


# -- holding ---------------------------------------------------------------------------
async def test_leader_whose_requests_hang_stops_within_renew_deadline() -> None:
    api = FakeLeaseAPI()
    elector = LeaderElector(api, config("a"))
    started = anyio.Event()
    cancelled_at: list[float] = []

    async def lead() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled_at.append(time.monotonic())

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                with pytest.raises(LeadershipLost, match="renew deadline"):
                    await elector.run(lead)

            tg.start_soon(run)
            await started.wait()
            last_write = max(t for verb, t in api.calls if verb in ("create", "replace"))
            api.hang = True
    # The deadline counts from the start of the last successful write.
    assert cancelled_at
    assert cancelled_at[0] - last_write <= 0.5 + 0.1
    assert not elector.is_leader
    # A leader that lost the lease does not write to it again (no release).
    assert api.spec()["holderIdentity"] == "a"


async def test_leader_stops_at_once_when_another_holder_appears() -> None:
    # Someone overwrote the lease (a second replica with a bad config, a manual edit):
    # waiting out the renew deadline would only prolong two leaders acting at once.
    api = FakeLeaseAPI()
    elector = LeaderElector(api, config("a", lease_duration=10.0, renew_deadline=5.0))
    started = anyio.Event()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                with pytest.raises(LeadershipLost, match="taken over by intruder"):
                    await elector.run(lambda: lead_until_cancelled(started))

            tg.start_soon(run)
            await started.wait()
            api.put_foreign("intruder", "2001-01-01T00:00:00.000000Z", duration=10)
            overwritten = time.monotonic()
    assert time.monotonic() - overwritten < 0.1 * (1 + JITTER_FACTOR) + 0.3
    assert not elector.is_leader
    assert api.spec()["holderIdentity"] == "intruder"


async def test_renews_every_retry_period_keeping_acquire_time() -> None:
    api = FakeLeaseAPI()
    elector = LeaderElector(api, config("a"))
    started = anyio.Event()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(elector.run, lambda: lead_until_cancelled(started))
            await started.wait()
            first = dict(api.spec())
            # Polls the fake's call log, which has no event to wait on.
            while sum(verb == "replace" for verb, _ in api.calls) < 3:
                await anyio.sleep(0.02)
            renewed = dict(api.spec())
            tg.cancel_scope.cancel()
    renewals = [t for verb, t in api.calls if verb == "replace"][:3]
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    assert all(0.1 <= g < 0.25 for g in gaps), gaps
    # The fast path renews with one request, no re-read.
    assert [verb for verb, _ in api.calls[:4]] == ["get", "create", "replace", "replace"]
    assert renewed["acquireTime"] == first["acquireTime"]
    assert renewed["renewTime"] > first["renewTime"]
    assert renewed["leaseTransitions"] == 0


async def test_callback_error_propagates_and_lease_is_released() -> None:
    api = FakeLeaseAPI()
    changes: list[bool] = []
    elector = LeaderElector(api, config("a"), on_change=changes.append)

    async def broken() -> None:
        raise RuntimeError("reconciler bug")

    with anyio.fail_after(DEADLINE), pytest.raises(RuntimeError, match="reconciler bug"):
        await elector.run(broken)
    assert changes == [False, True, False]
    spec = api.spec()
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0


async def test_no_release_when_disabled() -> None:
    api = FakeLeaseAPI()
    elector = LeaderElector(api, config("a", release_on_cancel=False))

    async def done() -> None:
        return None

    with anyio.fail_after(DEADLINE):
        await elector.run(done)
    assert api.spec()["holderIdentity"] == "a"


async def test_broken_change_hook_does_not_stop_election() -> None:
    api = FakeLeaseAPI()

    def hook(leading: bool) -> None:
        raise ValueError("metrics down")

    elector = LeaderElector(api, config("a"), on_change=hook)
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    with anyio.fail_after(DEADLINE):
        await elector.run(work)
    assert ran == [True]
