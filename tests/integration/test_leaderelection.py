"""Leader election between real clients on a real Lease: one leader, handover, partition."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.proxy import ProxyHandle, fault_proxy
from reconciler.leaderelection import (
    JITTER_FACTOR,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLost,
)
from reconciler.resource import LEASE, Obj

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
# Longest wait between two acquire attempts of a follower.
MAX_ATTEMPT_GAP = RETRY_PERIOD * (1 + JITTER_FACTOR)


def config(namespace: str, identity: str) -> LeaderElectionConfig:
    return LeaderElectionConfig(
        "controller-leader",
        namespace,
        identity=identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
    )


class Candidate:
    """An elector plus a record of when its guarded work ran."""

    def __init__(
        self, client: Client, namespace: str, identity: str, anyone_leads: anyio.Event | None = None
    ) -> None:
        self.identity = identity
        self.elector = LeaderElector(client, config(namespace, identity))
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.lost: LeadershipLost | None = None
        self.leading = anyio.Event()
        self.stopped = anyio.Event()  # work cancelled and run() finished
        self.scope = anyio.CancelScope()
        self._anyone_leads = anyone_leads

    async def _work(self) -> None:
        self.started_at = time.monotonic()
        self.leading.set()
        if self._anyone_leads is not None:
            self._anyone_leads.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.stopped_at = time.monotonic()

    async def run(self) -> None:
        try:
            with self.scope:
                await self.elector.run(self._work)
        except LeadershipLost as err:
            self.lost = err
        finally:
            self.stopped.set()


async def lease(k8s: Client, namespace: str) -> Obj:
    return await k8s.get(LEASE, "controller-leader", namespace)


async def holder(k8s: Client, namespace: str) -> str:
    return str((await lease(k8s, namespace))["spec"].get("holderIdentity") or "")


@pytest.fixture
async def second(kubeconfig: Path) -> AsyncIterator[Client]:
    client = await Client.from_config(str(kubeconfig))
    yield client
    await client.close()


@pytest.fixture
def proxy(control_plane: ControlPlane | None) -> Iterator[ProxyHandle]:
    if control_plane is None:
        pytest.skip("needs the local control plane")
    with fault_proxy("127.0.0.1", control_plane.state.apiserver_port) as p:
        yield p


@pytest.fixture
async def proxied(control_plane: ControlPlane, proxy: ProxyHandle) -> AsyncIterator[Client]:
    path = control_plane.admin_kubeconfig_for(proxy.url, f"proxy-{proxy.port}")
    client = await Client.from_config(str(path))
    yield client
    await client.close()


async def test_two_candidates_exactly_one_leads(
    k8s: Client, second: Client, namespace: str
) -> None:
    anyone_leads = anyio.Event()
    a = Candidate(k8s, namespace, "a", anyone_leads)
    b = Candidate(second, namespace, "b", anyone_leads)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        with anyio.fail_after(10):
            await anyone_leads.wait()
        leader, follower = (a, b) if a.leading.is_set() else (b, a)
        first = (await lease(k8s, namespace))["spec"]
        # Over more than a lease duration of renewals, the other never gets in.
        end = time.monotonic() + LEASE_DURATION + MAX_ATTEMPT_GAP
        while time.monotonic() < end:
            assert leader.elector.is_leader
            assert not follower.elector.is_leader
            assert await holder(k8s, namespace) == leader.identity
            await anyio.sleep(0.1)
        last = (await lease(k8s, namespace))["spec"]
        tg.cancel_scope.cancel()
    assert follower.started_at is None
    assert first["leaseDurationSeconds"] == int(LEASE_DURATION)
    assert first["leaseTransitions"] == 0
    assert MICRO_TIME.match(first["acquireTime"])
    assert MICRO_TIME.match(last["renewTime"])
    assert last["acquireTime"] == first["acquireTime"]
    assert last["renewTime"] > first["renewTime"]


async def test_cancelled_leader_releases_and_the_other_takes_over(
    k8s: Client, second: Client, namespace: str
) -> None:
    a, b = Candidate(k8s, namespace, "a"), Candidate(second, namespace, "b")
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        with anyio.fail_after(10):
            await a.leading.wait()
        tg.start_soon(b.run)
        # Let b find the lease held and settle into its retry loop before a steps down.
        await anyio.sleep(MAX_ATTEMPT_GAP)
        assert not b.elector.is_leader
        a.scope.cancel()  # graceful shutdown of a
        with anyio.fail_after(5):
            await a.stopped.wait()  # its run() has released the lease
        released = time.monotonic()
        with anyio.fail_after(5):
            await b.leading.wait()
        tg.cancel_scope.cancel()
    assert b.started_at is not None
    assert a.stopped_at is not None
    assert a.stopped_at <= b.started_at
    # Handed over at b's next attempt, not after the lease would have expired.
    assert b.started_at - released < MAX_ATTEMPT_GAP + 0.5
    assert b.started_at - released < LEASE_DURATION
    spec = (await lease(k8s, namespace))["spec"]
    # b released in turn when its task group was cancelled.
    assert spec["holderIdentity"] == ""
    assert spec["leaseTransitions"] == 1


async def test_leader_returning_releases_the_lease(k8s: Client, namespace: str) -> None:
    elector = LeaderElector(k8s, config(namespace, "a"))
    ran: list[str] = []

    async def work() -> None:
        ran.append(await holder(k8s, namespace))

    with anyio.fail_after(10):
        await elector.run(work)
    assert ran == ["a"]
    spec = (await lease(k8s, namespace))["spec"]
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1


async def test_partitioned_leader_loses_and_the_other_acquires_after_expiry(
    k8s: Client, proxied: Client, proxy: ProxyHandle, namespace: str
) -> None:
    a, b = Candidate(proxied, namespace, "a"), Candidate(k8s, namespace, "b")
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        with anyio.fail_after(10):
            await a.leading.wait()
        tg.start_soon(b.run)
        await anyio.sleep(RETRY_PERIOD)  # a renews at least once through the proxy
        proxy.cut()  # a can no longer reach the API server
        cut_at = time.monotonic()
        with anyio.fail_after(RENEW_DEADLINE + 1):
            await a.stopped.wait()
        lost_at = time.monotonic()
        with anyio.fail_after(LEASE_DURATION + MAX_ATTEMPT_GAP + 2):
            await b.leading.wait()
        tg.cancel_scope.cancel()
    assert a.stopped_at is not None
    assert b.started_at is not None
    assert lost_at - cut_at <= RENEW_DEADLINE + 0.3
    assert a.lost is not None
    assert "renew deadline" in str(a.lost)
    # Never two leaders: a's work was cancelled before b's began, and b waited for the
    # lease a last renewed to expire (no release came through the partition).
    assert a.stopped_at < b.started_at
    assert b.started_at - cut_at >= LEASE_DURATION - RETRY_PERIOD - 0.1
    assert not a.elector.is_leader
