"""The manager's runnables, health checks and cache-sync bounds, with no API server.

The client points at a closed port: informers keep failing to list (so caches never
sync), and nothing else ever talks to the API server. Leader election needs a real
Lease, so the leader-only half of the runnable groups is tested in
tests/integration/test_manager.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

from reconciler._kubeconfig import Configuration
from reconciler.builder import Builder
from reconciler.client import Client
from reconciler.controller import CacheSyncError, ControllerOptions
from reconciler.manager import Manager, ManagerOptions
from reconciler.request import Request, Result
from reconciler.resource import CONFIG_MAP

DEADLINE = 5.0


class Noop:
    async def reconcile(self, request: Request) -> Result:
        return Result()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    # Port 9 (discard) on loopback: connections are refused at once.
    c = Client(Configuration(host="https://127.0.0.1:9"))
    try:
        yield c
    finally:
        await c.close()


def manager(client: Client, **overrides: Any) -> Manager:
    base: dict[str, Any] = {
        "metrics_bind_address": "0",
        "health_probe_bind_address": "0",
        "handle_signals": False,
    }
    return Manager(client, ManagerOptions(**{**base, **overrides}))


class Run:
    """``mgr.run()`` in the background: what it raised and when it returned."""

    def __init__(self, mgr: Manager) -> None:
        self.mgr = mgr
        self.returned = anyio.Event()
        self.error: BaseException | None = None

    async def __call__(self) -> None:
        try:
            await self.mgr.run()
        except Exception as err:
            self.error = err
        finally:
            self.returned.set()

    async def stop(self) -> None:
        self.mgr.shutdown()
        with anyio.fail_after(DEADLINE):
            await self.returned.wait()


class Probe:
    """A runnable that records its start and its cancellation."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = False

    async def __call__(self) -> None:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise

    async def wait_started(self) -> None:
        with anyio.fail_after(DEADLINE):
            await self.started.wait()


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


# -- runnables ----------------------------------------------------------------------------


async def test_runnables_added_before_and_after_start_run_and_are_cancelled_at_shutdown(
    client: Client,
) -> None:
    mgr = manager(client)
    early_leader, early_other = Probe(), Probe()
    mgr.add(early_leader)
    mgr.add(early_other, need_leader_election=False)
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await early_leader.wait_started()
        await early_other.wait_started()
        # Both groups run now: later runnables start at once, in their own group.
        late_leader, late_other = Probe(), Probe()
        mgr.add(late_leader)
        mgr.add(late_other, need_leader_election=False)
        await late_leader.wait_started()
        await late_other.wait_started()
        await run.stop()
    assert run.error is None
    assert all(p.cancelled for p in (early_leader, early_other, late_leader, late_other))


async def test_a_runnable_that_returns_ends_alone(client: Client) -> None:
    mgr = manager(client)
    finished = anyio.Event()
    bystander = Probe()

    async def one_shot() -> None:
        finished.set()

    mgr.add(one_shot)
    mgr.add(bystander)
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(DEADLINE):
            await finished.wait()
        await bystander.wait_started()
        await anyio.sleep(0.1)  # room for a wrong reaction to the return
        assert not run.returned.is_set()
        assert not bystander.cancelled
        await run.stop()
    assert run.error is None


async def test_a_runnable_that_raises_stops_the_manager_with_its_exception(
    client: Client,
) -> None:
    mgr = manager(client)
    boom = RuntimeError("boom")
    others = Probe()

    async def failing() -> None:
        await others.started.wait()
        raise boom

    mgr.add(failing)
    mgr.add(others, need_leader_election=False)
    with pytest.raises(RuntimeError) as info, anyio.fail_after(DEADLINE):
        await mgr.run()
    assert info.value is boom  # itself, not wrapped in an exception group
    assert others.cancelled


async def test_an_error_raised_while_stopping_is_only_logged(client: Client) -> None:
    mgr = manager(client)
    started = anyio.Event()

    async def fails_on_the_way_out() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("cleanup failed")

    mgr.add(fails_on_the_way_out)
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(DEADLINE):
            await started.wait()
        await run.stop()
    assert run.error is None


async def test_shutdown_stops_others_then_leader_runnables_while_probes_still_answer(
    client: Client,
) -> None:
    mgr = manager(client, health_probe_bind_address="127.0.0.1:0")
    steps: list[str] = []
    leader_started = anyio.Event()

    async def other() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                steps.append("other stopping")
                await anyio.sleep(0.2)  # the leader's runnables must wait for this
                steps.append("other stopped")

    async def leader() -> None:
        leader_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                steps.append("leader stopping")
                status, _ = await get(mgr.ports["health"], "/healthz")
                steps.append(f"healthz {status}")

    mgr.add(other, need_leader_election=False)
    mgr.add(leader)
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(DEADLINE):
            await leader_started.wait()
        await run.stop()
    assert run.error is None
    assert steps == ["other stopping", "other stopped", "leader stopping", "healthz 200"]


async def test_adding_during_or_after_shutdown_is_refused(client: Client) -> None:
    mgr = manager(client)
    refused: list[str] = []

    async def adds_on_the_way_out() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            try:
                mgr.add(Probe())
            except RuntimeError as err:
                refused.append(str(err))

    mgr.add(adds_on_the_way_out, need_leader_election=False)
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.1)
        await run.stop()
    assert run.error is None
    assert refused == ["cannot add a runnable: the manager is shutting down"]
    with pytest.raises(RuntimeError, match="shutting down"):
        mgr.add(Probe())


async def test_a_manager_runs_once(client: Client) -> None:
    mgr = manager(client)
    mgr.shutdown()
    with anyio.fail_after(DEADLINE):
        await mgr.run()
    with pytest.raises(RuntimeError, match="already started"):
        await mgr.run()


async def test_duplicate_controller_names_are_refused(client: Client) -> None:
    mgr = manager(client)
    Builder(mgr).for_(CONFIG_MAP).complete(Noop())
    first = mgr.controllers[0]
    with pytest.raises(ValueError, match="already used"):
        mgr.add(first, need_leader_election=False)
    assert mgr.controllers == [first]


# -- health checks ------------------------------------------------------------------------


async def test_user_checks_are_served_beside_the_informers_check(client: Client) -> None:
    mgr = manager(client, health_probe_bind_address="127.0.0.1:0")
    healthy = True

    async def database() -> None:
        if not healthy:
            raise ConnectionError("database unreachable")

    mgr.add_healthz_check("database", database)
    mgr.add_readyz_check("database", database)
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(DEADLINE):
            while "health" not in mgr.ports:
                await anyio.sleep(0.01)
        port = mgr.ports["health"]
        assert await get(port, "/readyz?verbose") == (
            200,
            "[+]database ok\n[+]informers ok\nhealthz check passed\n",
        )
        assert await get(port, "/healthz?verbose") == (
            200,
            "[+]database ok\nhealthz check passed\n",
        )
        healthy = False
        assert await get(port, "/healthz") == (
            500,
            "[-]database failed: reason withheld\nhealthz check failed\n",
        )
        assert await get(port, "/readyz/database") == (
            500,
            "internal server error: ConnectionError: database unreachable\n",
        )
        assert await get(port, "/readyz?exclude=database") == (200, "ok")
        assert await get(port, "/readyz/informers") == (200, "ok")
        with pytest.raises(RuntimeError, match="before the manager runs"):
            mgr.add_readyz_check("late", database)
        await run.stop()
    assert run.error is None


async def test_readyz_fails_while_an_informer_has_not_synced(client: Client) -> None:
    mgr = manager(client, health_probe_bind_address="127.0.0.1:0")
    Builder(mgr).for_(CONFIG_MAP).complete(Noop())
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(DEADLINE):
            while "health" not in mgr.ports:
                await anyio.sleep(0.01)
        port = mgr.ports["health"]
        assert await get(port, "/readyz/informers") == (
            500,
            "internal server error: CachesNotSynced: informers not synced: ConfigMap.v1\n",
        )
        assert (await get(port, "/healthz"))[0] == 200
        await run.stop()
    assert run.error is None


# -- cache sync ---------------------------------------------------------------------------


async def test_a_controller_cache_sync_timeout_below_120s_is_honoured(client: Client) -> None:
    mgr = manager(client)
    Builder(mgr).for_(CONFIG_MAP).with_options(ControllerOptions(cache_sync_timeout=0.5)).complete(
        Noop()
    )
    started = time.monotonic()
    with pytest.raises(CacheSyncError, match=r"controller configmap: .* after 0\.5s"):
        with anyio.fail_after(DEADLINE):
            await mgr.run()
    assert time.monotonic() - started >= 0.5


async def test_the_strictest_controller_timeout_bounds_the_wait(client: Client) -> None:
    mgr = manager(client)
    Builder(mgr).for_(CONFIG_MAP).named("patient").complete(Noop())
    Builder(mgr).for_(CONFIG_MAP).named("hasty").with_options(
        ControllerOptions(cache_sync_timeout=0.3)
    ).complete(Noop())
    with pytest.raises(CacheSyncError, match="controller hasty"), anyio.fail_after(DEADLINE):
        await mgr.run()


async def test_a_controller_added_after_start_waits_with_its_own_timeout(client: Client) -> None:
    mgr = manager(client)
    probe = Probe()
    mgr.add(probe)  # no controllers yet: the manager waits for no informer
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await probe.wait_started()
        Builder(mgr).for_(CONFIG_MAP).with_options(
            ControllerOptions(cache_sync_timeout=0.3)
        ).complete(Noop())
        with anyio.fail_after(DEADLINE):
            await run.returned.wait()
    assert isinstance(run.error, CacheSyncError), repr(run.error)
    assert probe.cancelled


async def test_shutdown_while_caches_sync_is_prompt(client: Client) -> None:
    mgr = manager(client)
    Builder(mgr).for_(CONFIG_MAP).with_options(ControllerOptions(cache_sync_timeout=60)).complete(
        Noop()
    )
    run = Run(mgr)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.2)
        asked = time.monotonic()
        await run.stop()
    assert run.error is None
    assert time.monotonic() - asked < 1.0
