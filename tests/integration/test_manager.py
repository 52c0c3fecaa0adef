"""The manager against a real API server: shared watches, leader election, runnables
on the leader and on every replica, graceful shutdown, readiness, cache-sync bounds, and
owner mapping.

Every wait has a deadline; negative claims ("X never reconciled Y") are checked only
once a later event that must come after Y has been seen.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.builder import Builder
from reconciler.cache import InformerCache
from reconciler.client import Client
from reconciler.controller import Controller, ControllerOptions
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.proxy import ProxyHandle, fault_proxy
from reconciler.informer import Informer, InformerOptions
from reconciler.leaderelection import JITTER_FACTOR, LeaderElectionConfig, LeadershipLost
from reconciler.manager import Manager, ManagerOptions
from reconciler.request import Request, Result
from reconciler.resource import CONFIG_MAP, LEASE, SECRET, ResourceType

Obj = dict[str, Any]
DEADLINE = 20.0

LEASE_NAME = "manager-test"
LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
MAX_ATTEMPT_GAP = RETRY_PERIOD * (1 + JITTER_FACTOR)


# -- helpers ------------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)


async def eventually_async(
    check: Callable[[], Awaitable[bool]], timeout: float = DEADLINE, interval: float = 0.1
) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(interval)


class Recorder:
    """A reconciler that records every request; ``hook`` may block or fail."""

    def __init__(self, hook: Callable[[Request], Awaitable[None]] | None = None) -> None:
        self.calls: list[Request] = []
        self.finished: list[Request] = []
        self.cancelled: list[Request] = []
        self._hook = hook

    def names(self) -> set[str]:
        return {r.name for r in self.calls}

    def count(self, name: str) -> int:
        return sum(1 for r in self.calls if r.name == name)

    async def reconcile(self, request: Request) -> Result:
        self.calls.append(request)
        try:
            if self._hook is not None:
                await self._hook(request)
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(request)
            raise
        self.finished.append(request)
        return Result()


class Probe:
    """A plain runnable that records its start and its cancellation."""

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False

    async def __call__(self) -> None:
        self.started = True
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


def options(**overrides: Any) -> ManagerOptions:
    base: dict[str, Any] = {
        "metrics_bind_address": "0",
        "health_probe_bind_address": "0",
        "handle_signals": False,
        "graceful_shutdown_timeout": 10.0,
    }
    return ManagerOptions(**{**base, **overrides})


def watch_namespace(mgr: Manager, namespace: str, *types: ResourceType, **kw: Any) -> None:
    for rt in types:
        mgr.cache.configure(rt, InformerOptions(namespace=namespace, **kw))


class Running:
    """A manager whose run() is going on in the background."""

    def __init__(self, mgr: Manager) -> None:
        self.mgr = mgr
        self.returned = anyio.Event()
        self.returned_at: float | None = None
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            await self.mgr.run()
        except Exception as err:  # ExceptionGroup included; inspected by the test
            self.error = err
        finally:
            self.returned_at = time.monotonic()
            self.returned.set()

    async def stop(self, timeout: float = DEADLINE) -> None:
        self.mgr.shutdown()
        with anyio.fail_after(timeout):
            await self.returned.wait()


@asynccontextmanager
async def running(*managers: Manager) -> AsyncIterator[list[Running]]:
    """Run managers for the block; afterwards shut down any still running (bounded)."""
    runs = [Running(m) for m in managers]
    async with anyio.create_task_group() as tg:
        for r in runs:
            tg.start_soon(r.run)
        try:
            yield runs
        finally:
            with anyio.CancelScope(shield=True):
                for r in runs:
                    await r.stop()
    for r in runs:
        assert r.error is None, f"manager failed: {r.error!r}"


async def create_cm(k8s: Client, namespace: str, name: str, **meta: Any) -> Obj:
    body = {"metadata": {"name": name, "namespace": namespace, **meta}, "data": {"k": "v"}}
    return await k8s.create(CONFIG_MAP, body)


def only_informer(mgr: Manager) -> Informer:
    (inf,) = mgr.cache.informers
    return inf


@pytest.fixture
async def second(kubeconfig: Path) -> AsyncIterator[Client]:
    client = await Client.from_config(str(kubeconfig))
    yield client
    await client.close()


@pytest.fixture
def plane(control_plane: ControlPlane | None) -> ControlPlane:
    if control_plane is None:
        pytest.skip("needs the local control plane")
    return control_plane


def configmap_watches(plane: ControlPlane) -> float:
    """Open WATCH requests on configmaps, from the API server's own gauge."""
    with urllib.request.urlopen(
        f"{plane.server}/metrics", context=plane.admin_ssl_context(), timeout=10
    ) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_longrunning_requests":
            continue
        for s in family.samples:
            if s.labels.get("verb") == "WATCH" and s.labels.get("resource") == "configmaps":
                total += s.value
    return total


async def apiserver_watches(plane: ControlPlane) -> float:
    return await anyio.to_thread.run_sync(configmap_watches, plane)


# -- (a) one watch per type, shared by controllers ----------------------------------------


async def test_two_controllers_of_one_type_share_one_watch(
    k8s: Client, namespace: str, plane: ControlPlane
) -> None:
    for i in range(3):
        await create_cm(k8s, namespace, f"early-{i}")
    before = await apiserver_watches(plane)

    mgr = Manager(k8s, options())
    watch_namespace(mgr, namespace, CONFIG_MAP)
    first, second = Recorder(), Recorder()
    Builder(mgr).for_(CONFIG_MAP).named("first").complete(first)
    Builder(mgr).for_(CONFIG_MAP).named("second").complete(second)
    assert len(mgr.cache.informers) == 1

    async with running(mgr):
        early = {f"early-{i}" for i in range(3)}
        await eventually(lambda: first.names() == early and second.names() == early)
        for i in range(2):
            await create_cm(k8s, namespace, f"late-{i}")
        everything = early | {"late-0", "late-1"}
        await eventually(lambda: first.names() == everything and second.names() == everything)

        # One list and one watch for both controllers, seen from our side...
        inf = only_informer(mgr)
        assert (inf.stats.lists, inf.stats.watches) == (1, 1)
        # ...and from the API server's: one more open configmap watch, not two.
        await eventually_async(lambda: _watches_are(plane, before + 1))
        print(
            f"\nconfigmap watches on the API server: {before:.0f} before, {before + 1:.0f} running"
        )
        # The gauge does see a second watch when there is one.
        async with k8s.watch(CONFIG_MAP, namespace, timeout_seconds=60) as _:
            await eventually_async(lambda: _watches_are(plane, before + 2))
        await eventually_async(lambda: _watches_are(plane, before + 1))
        assert inf.stats.watches == 1
    # Shutdown closed the shared watch.
    await eventually_async(lambda: _watches_are(plane, before))


async def _watches_are(plane: ControlPlane, want: float) -> bool:
    return await apiserver_watches(plane) == want


# -- (b) leader election ------------------------------------------------------------------


def leader_options(namespace: str, identity: str, **overrides: Any) -> ManagerOptions:
    return options(
        leader_election=LeaderElectionConfig(
            lease_name=LEASE_NAME,
            namespace=namespace,
            identity=identity,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
        ),
        health_probe_bind_address="127.0.0.1:0",
        **overrides,
    )


def master_status(mgr: Manager) -> float | None:
    """leader_election_master_status: None before the elector exists, then 0 or 1."""
    return mgr.registry.get_sample_value("leader_election_master_status", {"name": LEASE_NAME})


async def lease_holder(k8s: Client, namespace: str) -> str:
    lease = await k8s.get(LEASE, LEASE_NAME, namespace)
    return str(lease["spec"].get("holderIdentity") or "")


def queue_depth(mgr: Manager) -> float:
    """workqueue_depth summed over the manager's controllers."""
    return sum(
        sample.value
        for family in mgr.registry.collect()
        if family.name == "workqueue_depth"
        for sample in family.samples
    )


async def test_only_the_leader_reconciles_and_shutdown_hands_over(
    k8s: Client, second: Client, namespace: str
) -> None:
    await create_cm(k8s, namespace, "before")
    managers: dict[str, Manager] = {}
    recorders: dict[str, Recorder] = {}
    for identity, client in (("mgr-a", k8s), ("mgr-b", second)):
        mgr = Manager(client, leader_options(namespace, identity))
        watch_namespace(mgr, namespace, CONFIG_MAP)
        recorders[identity] = Recorder()
        Builder(mgr).for_(CONFIG_MAP).complete(recorders[identity])
        managers[identity] = mgr

    async with running(*managers.values()) as runs:
        # Both synced and contending: one leads, the other reports 0.
        await eventually(
            lambda: (
                sorted(master_status(m) or 0 for m in managers.values()) == [0, 1]
                and all(master_status(m) is not None for m in managers.values())
            )
        )
        leader_id = next(i for i, m in managers.items() if master_status(m) == 1)
        follower_id = next(i for i in managers if i != leader_id)
        leader, follower = managers[leader_id], managers[follower_id]
        assert await lease_holder(k8s, namespace) == leader_id
        assert leader.is_leader
        assert not follower.is_leader
        for mgr in managers.values():
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{mgr.ports['health']}/readyz"
                async with http.get(url) as resp:
                    assert resp.status == 200, "a standby replica is ready too (warm cache)"

        await create_cm(k8s, namespace, "while-a-leads")
        await eventually(lambda: recorders[leader_id].names() == {"before", "while-a-leads"})
        # The follower's informer has seen the same objects, but nothing was reconciled.
        await eventually(lambda: len(follower.cache.list_nowait(CONFIG_MAP, namespace)) == 2)
        assert recorders[follower_id].calls == []
        # ...and not queued either: its controller takes events only once it runs.
        assert queue_depth(follower) == 0

        leader_run = next(r for r in runs if r.mgr is leader)
        stepped_down = time.monotonic()
        await leader_run.stop()
        await eventually(lambda: follower.is_leader and master_status(follower) == 1)
        handover = time.monotonic() - stepped_down
        print(f"\nleader handover took {handover:.2f}s (lease {LEASE_DURATION}s)")
        # The lease was released, so no need to wait for it to expire.
        assert handover < LEASE_DURATION + MAX_ATTEMPT_GAP
        assert await lease_holder(k8s, namespace) == follower_id

        # The new leader reconciles what it saw while standing by, and new objects.
        await create_cm(k8s, namespace, "after-handover")
        await eventually(
            lambda: recorders[follower_id].names() == {"before", "while-a-leads", "after-handover"}
        )
    assert "after-handover" not in recorders[leader_id].names()
    # The last leader released the lease on its way out.
    assert await lease_holder(k8s, namespace) == ""


async def test_leader_runnables_run_on_the_leader_and_the_others_on_every_replica(
    k8s: Client, second: Client, namespace: str
) -> None:
    await create_cm(k8s, namespace, "cm")
    managers: dict[str, Manager] = {}
    leader_only: dict[str, Probe] = {}
    everywhere: dict[str, Probe] = {}
    replicated: dict[str, Recorder] = {}
    for identity, client in (("mgr-a", k8s), ("mgr-b", second)):
        mgr = Manager(client, leader_options(namespace, identity))
        watch_namespace(mgr, namespace, CONFIG_MAP)
        leader_only[identity], everywhere[identity] = Probe(), Probe()
        mgr.add(leader_only[identity])
        mgr.add(everywhere[identity], need_leader_election=False)
        # A controller can run on every replica too (controller-runtime's
        # NeedLeaderElection() == false).
        replicated[identity] = Recorder()
        controller = Controller("replicated", replicated[identity], metrics=mgr.metrics)
        controller.watch(mgr.cache.informer_for(CONFIG_MAP))
        mgr.add(controller, need_leader_election=False)
        managers[identity] = mgr

    async with running(*managers.values()) as runs:
        await eventually(lambda: sorted(master_status(m) or 0 for m in managers.values()) == [0, 1])
        leader_id = next(i for i, m in managers.items() if master_status(m) == 1)
        follower_id = next(i for i in managers if i != leader_id)
        await eventually(lambda: leader_only[leader_id].started)
        await eventually(lambda: all(p.started for p in everywhere.values()))
        await eventually(lambda: all(r.names() == {"cm"} for r in replicated.values()))

        # Added while running: at once on the leader; on the follower only once it leads.
        late = {identity: Probe() for identity in managers}
        for identity, mgr in managers.items():
            mgr.add(late[identity])
        await eventually(lambda: late[leader_id].started)
        assert not managers[follower_id].is_leader
        assert not leader_only[follower_id].started
        assert not late[follower_id].started

        leader_run = next(r for r in runs if r.mgr is managers[leader_id])
        await leader_run.stop()
        assert leader_only[leader_id].cancelled
        assert late[leader_id].cancelled
        assert everywhere[leader_id].cancelled
        await eventually(lambda: leader_only[follower_id].started and late[follower_id].started)
        assert managers[follower_id].is_leader
        assert not everywhere[follower_id].cancelled


async def test_a_standby_manager_shuts_down_promptly(
    k8s: Client, second: Client, namespace: str
) -> None:
    grace = 6.0
    leader = Manager(k8s, leader_options(namespace, "leader"))
    standby = Manager(second, leader_options(namespace, "standby", graceful_shutdown_timeout=grace))
    for mgr in (leader, standby):
        watch_namespace(mgr, namespace, CONFIG_MAP)
        Builder(mgr).for_(CONFIG_MAP).complete(Recorder())
    async with running(leader):
        await eventually(lambda: master_status(leader) == 1)
        async with running(standby) as (run,):
            await eventually(lambda: master_status(standby) == 0)
            started = time.monotonic()
            await run.stop()
            took = time.monotonic() - started
    print(f"\nstandby shutdown took {took:.2f}s (graceful_shutdown_timeout {grace}s)")
    assert took < 2.0


async def steal_lease_from_a_busy_leader(
    k8s: Client, namespace: str
) -> tuple[Running, Recorder, float]:
    """Run a leader with a reconcile in flight, then overwrite its lease's holder.

    Returns the (finished) run, the reconciler and the time the lease was stolen.
    """
    blocked = anyio.Event()

    async def block(request: Request) -> None:
        blocked.set()
        await anyio.sleep_forever()

    rec = Recorder(block)
    mgr = Manager(k8s, leader_options(namespace, "victim"))
    watch_namespace(mgr, namespace, CONFIG_MAP)
    Builder(mgr).for_(CONFIG_MAP).complete(rec)
    run = Running(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.run)
        await eventually(lambda: master_status(mgr) == 1)
        await create_cm(k8s, namespace, "busy")
        with anyio.fail_after(DEADLINE):
            await blocked.wait()
        lease = await k8s.get(LEASE, LEASE_NAME, namespace)
        lease["spec"]["holderIdentity"] = "usurper"
        await k8s.replace(LEASE, lease)
        stolen = time.monotonic()
        with anyio.fail_after(RENEW_DEADLINE + MAX_ATTEMPT_GAP + 2):
            await run.returned.wait()
    return run, rec, stolen


async def test_losing_the_lease_stops_at_once_without_grace(k8s: Client, namespace: str) -> None:
    run, rec, stolen = await steal_lease_from_a_busy_leader(k8s, namespace)
    assert run.returned_at is not None
    print(f"\nlease loss noticed after {run.returned_at - stolen:.2f}s")
    # Not graceful (the grace period is 10 s): the in-flight reconcile was cancelled.
    assert run.returned_at - stolen < RENEW_DEADLINE + MAX_ATTEMPT_GAP
    assert rec.cancelled == [Request(namespace, "busy")]
    err = run.error
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    assert isinstance(err, LeadershipLost), repr(run.error)
    assert master_status(run.mgr) == 0
    # Nobody released the usurper's lease.
    assert await lease_holder(k8s, namespace) == "usurper"


async def test_losing_the_lease_raises_leadership_lost_itself(k8s: Client, namespace: str) -> None:
    run, _, _ = await steal_lease_from_a_busy_leader(k8s, namespace)
    assert isinstance(run.error, LeadershipLost), repr(run.error)


async def test_a_manager_with_leader_election_does_not_lead_before_it_wins(
    k8s: Client, namespace: str
) -> None:
    mgr = Manager(k8s, leader_options(namespace, "not-yet"))
    assert not mgr.is_leader


# -- (c) graceful shutdown; controllers added while running --------------------------------


async def test_a_controller_added_while_running_gets_its_informer_and_reconciles(
    k8s: Client, namespace: str
) -> None:
    await create_cm(k8s, namespace, "cm")
    await create_secret(k8s, namespace, "secret")
    mgr = Manager(k8s, options())
    watch_namespace(mgr, namespace, CONFIG_MAP, SECRET)
    first = Recorder()
    Builder(mgr).for_(CONFIG_MAP).complete(first)
    async with running(mgr):
        await eventually(lambda: first.names() == {"cm"})
        # A type no informer watched yet: the running cache starts one, and the new
        # controller waits for it before reconciling.
        late = Recorder()
        Builder(mgr).for_(SECRET).complete(late)
        await eventually(lambda: late.names() == {"secret"})
        await create_secret(k8s, namespace, "another")
        await eventually(lambda: late.names() == {"secret", "another"})
    assert first.names() == {"cm"}


# -- (c) graceful shutdown ----------------------------------------------------------------


async def test_shutdown_lets_the_in_flight_reconcile_finish(k8s: Client, namespace: str) -> None:
    release = anyio.Event()
    started = anyio.Event()

    async def hold_first(request: Request) -> None:
        if request.name == "slow":
            started.set()
            await release.wait()

    rec = Recorder(hold_first)
    mgr = Manager(k8s, options(graceful_shutdown_timeout=30.0))
    watch_namespace(mgr, namespace, CONFIG_MAP)
    Builder(mgr).for_(CONFIG_MAP).complete(rec)  # one worker
    run = Running(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.run)
        await create_cm(k8s, namespace, "slow")
        with anyio.fail_after(DEADLINE):
            await started.wait()
        await create_cm(k8s, namespace, "queued")
        await eventually(lambda: mgr.cache.get_nowait(CONFIG_MAP, "queued", namespace) is not None)

        mgr.shutdown()
        # Seen by the informer after shutdown began: must not be reconciled either.
        await create_cm(k8s, namespace, "late")
        await eventually(lambda: mgr.cache.get_nowait(CONFIG_MAP, "late", namespace) is not None)
        assert not run.returned.is_set()

        released = time.monotonic()
        release.set()
        with anyio.fail_after(DEADLINE):
            await run.returned.wait()
    assert run.error is None
    assert run.returned_at is not None
    # Returned because the reconcile finished, long before the 30 s grace period.
    assert run.returned_at - released < 5.0
    assert rec.finished == [Request(namespace, "slow")]
    assert rec.cancelled == []
    assert rec.calls == [Request(namespace, "slow")]


async def test_shutdown_cancels_a_reconcile_that_outlives_the_grace_period(
    k8s: Client, namespace: str
) -> None:
    grace = 1.0
    started = anyio.Event()

    async def hang(request: Request) -> None:
        started.set()
        await anyio.sleep_forever()

    rec = Recorder(hang)
    mgr = Manager(k8s, options(graceful_shutdown_timeout=grace))
    watch_namespace(mgr, namespace, CONFIG_MAP)
    Builder(mgr).for_(CONFIG_MAP).complete(rec)
    await create_cm(k8s, namespace, "stuck")
    run = Running(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.run)
        with anyio.fail_after(DEADLINE):
            await started.wait()
        asked = time.monotonic()
        mgr.shutdown()
        with anyio.fail_after(grace + 5):
            await run.returned.wait()
    assert run.error is None
    assert run.returned_at is not None
    took = run.returned_at - asked
    assert grace <= took < grace + 2.0
    assert rec.cancelled == [Request(namespace, "stuck")]
    assert rec.finished == []


# -- (d) readiness ------------------------------------------------------------------------


@pytest.fixture
def proxy(plane: ControlPlane) -> Iterator[ProxyHandle]:
    with fault_proxy("127.0.0.1", plane.state.apiserver_port) as p:
        yield p


@pytest.fixture
async def proxied(plane: ControlPlane, proxy: ProxyHandle) -> AsyncIterator[Client]:
    client = await Client.from_config(
        str(plane.admin_kubeconfig_for(proxy.url, f"proxy-{proxy.port}"))
    )
    yield client
    await client.close()


async def probe(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def test_readyz_fails_until_caches_sync(
    k8s: Client, proxied: Client, proxy: ProxyHandle, namespace: str
) -> None:
    await create_cm(k8s, namespace, "x")
    rec = Recorder()
    mgr = Manager(proxied, options(health_probe_bind_address="127.0.0.1:0"))
    watch_namespace(mgr, namespace, CONFIG_MAP, backoff_initial=0.1, backoff_max=0.2)
    Builder(mgr).for_(CONFIG_MAP).complete(rec)
    proxy.cut()  # the list cannot get through
    async with running(mgr):
        await eventually(lambda: "health" in mgr.ports)
        port = mgr.ports["health"]
        inf = only_informer(mgr)
        await eventually(lambda: inf.stats.errors >= 2)  # it tried, and is retrying
        status, body = await probe(port, "/readyz?verbose")
        assert status == 500
        assert "[-]informers failed" in body
        assert (await probe(port, "/healthz"))[0] == 200, "alive while not ready"
        assert not inf.has_synced
        assert rec.calls == []

        proxy.restore()
        await eventually_async(lambda: _status_is(port, "/readyz", 200))
        assert inf.has_synced
        await eventually(lambda: rec.names() == {"x"})


async def test_a_controller_may_wait_longer_for_caches_than_the_default(
    k8s: Client,
    proxied: Client,
    proxy: ProxyHandle,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The manager used to wait for caches for InformerCache.wait_for_sync's default
    # (120 s) whatever the controllers allowed. That default is shrunk here so that a
    # wait beyond it is quick; this controller allows DEADLINE.
    fixed = 0.5
    monkeypatch.setattr(InformerCache.wait_for_sync, "__defaults__", (fixed,))
    await create_cm(k8s, namespace, "x")
    rec = Recorder()
    mgr = Manager(proxied, options())
    watch_namespace(mgr, namespace, CONFIG_MAP, backoff_initial=0.1, backoff_max=0.2)
    Builder(mgr).for_(CONFIG_MAP).with_options(
        ControllerOptions(cache_sync_timeout=DEADLINE)
    ).complete(rec)
    proxy.cut()
    started = time.monotonic()
    async with running(mgr) as (run,):
        inf = only_informer(mgr)
        await eventually(lambda: time.monotonic() - started > 2 * fixed and inf.stats.errors >= 2)
        assert not run.returned.is_set()
        proxy.restore()
        await eventually(lambda: rec.names() == {"x"})


async def _status_is(port: int, path: str, want: int) -> bool:
    return (await probe(port, path))[0] == want


# -- (e) owns -----------------------------------------------------------------------------


def owner_ref(owner: Obj, *, controller: bool) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
    }


async def create_secret(k8s: Client, namespace: str, name: str, *refs: Obj) -> Obj:
    body = {
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": list(refs)},
        "stringData": {"v": "0"},
    }
    return await k8s.create(SECRET, body)


async def test_owned_object_changes_enqueue_the_controller_owner(
    k8s: Client, namespace: str
) -> None:
    parent = await create_cm(k8s, namespace, "parent")
    bystander = await create_cm(k8s, namespace, "bystander")
    await create_secret(k8s, namespace, "child", owner_ref(parent, controller=True))
    await create_secret(k8s, namespace, "stranger", owner_ref(bystander, controller=False))

    rec = Recorder()
    mgr = Manager(k8s, options())
    watch_namespace(mgr, namespace, CONFIG_MAP, SECRET)
    Builder(mgr).for_(CONFIG_MAP).owns(SECRET).complete(rec)
    async with running(mgr):
        await eventually(lambda: rec.names() == {"parent", "bystander"})
        await eventually(lambda: mgr.cache.get_nowait(SECRET, "child", namespace) is not None)
        await eventually(lambda: len(rec.finished) == len(rec.calls))
        seen = Counter(r.name for r in rec.calls)

        # The stranger's event is handled first; had it mapped to its (non-controller)
        # owner, the bystander would be reconciled before the parent.
        await k8s.patch(SECRET, "stranger", {"stringData": {"v": "1"}}, namespace=namespace)
        await k8s.patch(SECRET, "child", {"stringData": {"v": "1"}}, namespace=namespace)
        await eventually(lambda: rec.count("parent") == seen["parent"] + 1)
        assert rec.count("bystander") == seen["bystander"]

        await k8s.delete(SECRET, "child", namespace)
        await eventually(lambda: rec.count("parent") == seen["parent"] + 2)
    # Only owners were ever requested, never the secrets themselves.
    assert rec.names() == {"parent", "bystander"}
    assert {r.namespace for r in rec.calls} == {namespace}


async def test_controller_options_reach_the_running_controller(k8s: Client, namespace: str) -> None:
    in_flight: set[str] = set()
    peak = 0
    gate = anyio.Event()

    async def hold(request: Request) -> None:
        nonlocal peak
        in_flight.add(request.name)
        peak = max(peak, len(in_flight))
        try:
            await gate.wait()
        finally:
            in_flight.discard(request.name)

    rec = Recorder(hold)
    mgr = Manager(k8s, options())
    watch_namespace(mgr, namespace, CONFIG_MAP)
    Builder(mgr).for_(CONFIG_MAP).with_options(
        ControllerOptions(max_concurrent_reconciles=3)
    ).complete(rec)
    for i in range(5):
        await create_cm(k8s, namespace, f"cm-{i}")
    async with running(mgr):
        await eventually(lambda: len(in_flight) == 3)
        assert (
            mgr.registry.get_sample_value(
                "controller_runtime_active_workers", {"controller": "configmap"}
            )
            == 3
        )
        gate.set()
        await eventually(lambda: len(rec.finished) == 5)
    assert peak == 3
    assert (
        mgr.registry.get_sample_value(
            "controller_runtime_active_workers", {"controller": "configmap"}
        )
        == 0
    )
