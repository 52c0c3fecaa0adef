"""The informer against a real API server: sync, server-ended watches, bookmarks, 410,
silence, restarts, and where its lists are served from."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.proxy import ProxyHandle, fault_proxy
from reconciler.informer import Informer, InformerOptions
from reconciler.resource import CONFIG_MAP, SECRET, ResourceType

Obj = dict[str, Any]


class WatchRecordingClient(Client):
    """A real client that notes the resourceVersion every watch starts from."""

    watched: list[str | None]

    def watch(  # type: ignore[override]
        self, rt: ResourceType, namespace: str | None = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[Any]:
        self.watched = [*getattr(self, "watched", []), kwargs.get("resource_version")]
        return super().watch(rt, namespace, **kwargs)


def apiserver_metric(plane: ControlPlane, name: str, **labels: str) -> float:
    """The sum of a kube-apiserver metric over the series matching ``labels``."""
    with urllib.request.urlopen(
        f"{plane.server}/metrics", context=plane.admin_ssl_context(), timeout=10
    ) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_add(self, obj: Obj, initial: bool) -> None:
        self.events.append(("add", obj["metadata"]["name"]))

    def on_update(self, old: Obj, new: Obj) -> None:
        self.events.append(("update", new["metadata"]["name"]))

    def on_delete(self, obj: Obj) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.05)


def names(inf: Informer) -> set[str]:
    return {o["metadata"]["name"] for o in inf.store.list()}


async def cm(k8s: Client, ns: str, name: str, data: str = "x") -> Obj:
    return await k8s.create(
        CONFIG_MAP, {"metadata": {"name": name, "namespace": ns}, "data": {"k": data}}
    )


@pytest.fixture
def proxy(control_plane: ControlPlane | None) -> Iterator[ProxyHandle]:
    if control_plane is None:
        pytest.skip("needs the local control plane")
    with fault_proxy("127.0.0.1", control_plane.state.apiserver_port) as p:
        yield p


@pytest.fixture
async def proxied(control_plane: ControlPlane, proxy: ProxyHandle) -> AsyncIterator[Client]:
    path: Path = control_plane.admin_kubeconfig_for(proxy.url, f"proxy-{proxy.port}")
    client = await Client.from_config(str(path))
    yield client
    await client.close()


async def test_lists_then_follows_changes(k8s: Client, namespace: str) -> None:
    await cm(k8s, namespace, "a")
    inf = Informer(k8s, CONFIG_MAP, InformerOptions(namespace=namespace, page_size=1))
    rec = Recorder()
    inf.add_handler(rec)
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        assert names(inf) == {"a"}
        await cm(k8s, namespace, "b")
        await k8s.patch(CONFIG_MAP, "a", {"data": {"k": "y"}}, namespace=namespace)
        await k8s.delete(CONFIG_MAP, "b", namespace)
        await eventually(lambda: ("delete", "b") in rec.events)
        tg.cancel_scope.cancel()
    assert rec.events == [("add", "a"), ("add", "b"), ("update", "a"), ("delete", "b")]
    assert inf.store.get(f"{namespace}/a")["data"] == {"k": "y"}  # type: ignore[index]
    assert "managedFields" not in inf.store.get(f"{namespace}/a")["metadata"]  # type: ignore[index]
    assert inf.stats.lists == 1


async def test_pagination_lists_everything(k8s: Client, namespace: str) -> None:
    for i in range(7):
        await cm(k8s, namespace, f"p{i}")
    inf = Informer(k8s, CONFIG_MAP, InformerOptions(namespace=namespace, page_size=2))
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        tg.cancel_scope.cancel()
    assert names(inf) == {f"p{i}" for i in range(7)}


async def test_survives_watches_the_server_ends(k8s: Client, namespace: str) -> None:
    inf = Informer(k8s, CONFIG_MAP, InformerOptions(namespace=namespace, min_watch_timeout=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        await eventually(lambda: inf.stats.watches >= 3)
        await cm(k8s, namespace, "late")
        await eventually(lambda: "late" in names(inf))
        tg.cancel_scope.cancel()
    assert inf.stats.lists == 1, "a normally ended watch is resumed, not relisted"
    assert inf.stats.relists_on_gone == 0


async def secret(k8s: Client, ns: str, name: str) -> Obj:
    return await k8s.create(SECRET, {"metadata": {"name": name, "namespace": ns}})


# The session's API server keeps no watch cache for ConfigMaps (pyproject.toml's
# envtest_apiserver_args), so that compaction gives real 410s above. The tests below need
# the watch cache, which every other type has by default: they use Secrets.


async def test_resumes_at_the_version_of_a_bookmark(
    kubeconfig: Path, k8s: Client, namespace: str
) -> None:
    """The watch cache sends a bookmark 2 s before a watch's deadline, at its own latest
    version; a write elsewhere moves that past anything this namespace has seen, so only
    the bookmark can carry the informer there."""
    client = await WatchRecordingClient.from_config(str(kubeconfig))
    assert isinstance(client, WatchRecordingClient)
    inf = Informer(client, SECRET, InformerOptions(namespace=namespace, min_watch_timeout=4))
    elsewhere = f"bookmark-{namespace}"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(inf.run)
            with anyio.fail_after(10):
                await inf.wait_synced()
            other = await secret(k8s, "default", elsewhere)
            moved = int(other["metadata"]["resourceVersion"])
            await eventually(lambda: int(inf.resource_version) >= moved, timeout=30)
            await eventually(lambda: int(client.watched[-1] or 0) >= moved, timeout=30)
            tg.cancel_scope.cancel()
    finally:
        await client.close()
        await k8s.delete(SECRET, elsewhere, "default")
    assert len(inf.store) == 0, "nothing happened in this namespace"
    assert inf.stats.lists == 1
    assert inf.stats.relists_on_gone == 0


async def test_lists_are_consistent_reads_served_from_the_watch_cache(
    k8s: Client, namespace: str, control_plane: ControlPlane | None
) -> None:
    """Why lists carry no resourceVersion (reconciler/informer.py): from kube-apiserver
    1.34 a consistent list is answered from the watch cache, pages included; etcd sees one
    small read of its current revision."""
    if control_plane is None:
        pytest.skip("reads the local API server's metrics")
    count, page = 30, 10
    for i in range(count):
        await secret(k8s, namespace, f"s{i}")

    def metrics() -> tuple[float, float, float]:
        def metric(name: str, **labels: str) -> float:
            return apiserver_metric(control_plane, name, resource="secrets", **labels)

        return (
            metric("apiserver_watch_cache_consistent_read_total", success="true", fallback="false"),
            metric("apiserver_storage_list_total"),
            metric("apiserver_storage_list_fetched_objects_total"),
        )

    before = await anyio.to_thread.run_sync(metrics)
    inf = Informer(k8s, SECRET, InformerOptions(namespace=namespace, page_size=page))
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        tg.cancel_scope.cancel()
    after = await anyio.to_thread.run_sync(metrics)
    consistent, etcd_lists, etcd_objects = (a - b for a, b in zip(after, before, strict=True))
    assert len(inf.store) == count
    assert consistent >= 1, "the list was not a consistent read"
    assert etcd_lists <= 1, f"{etcd_lists} lists reached etcd for {count // page} pages"
    assert etcd_objects < count


async def test_relists_on_410_and_converges(
    k8s: Client, namespace: str, control_plane: ControlPlane, proxy: ProxyHandle, proxied: Client
) -> None:
    await cm(k8s, namespace, "keep")
    await cm(k8s, namespace, "doomed")
    # ConfigMaps bypass the watch cache here, so a compacted RV is a real 410 from etcd.
    inf = Informer(
        proxied,
        CONFIG_MAP,
        InformerOptions(namespace=namespace, backoff_initial=0.2, backoff_max=0.5),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        # The watch delivers an event before the cut, so its breaking is a broken stream
        # to resume, not a very short watch (which would back off and relist at once).
        await cm(k8s, namespace, "streaming")
        await eventually(lambda: "streaming" in names(inf))
        proxy.cut()
        await k8s.delete(CONFIG_MAP, "doomed", namespace)
        for i in range(5):
            await cm(k8s, namespace, f"new{i}")
        await k8s.patch(CONFIG_MAP, "keep", {"data": {"k": "changed"}}, namespace=namespace)
        control_plane.compact_etcd()
        proxy.restore()
        await eventually(lambda: inf.stats.relists_on_gone >= 1)
        want = {"keep", "streaming", *(f"new{i}" for i in range(5))}
        await eventually(lambda: names(inf) == want)
        tg.cancel_scope.cancel()
    assert inf.store.get(f"{namespace}/keep")["data"] == {"k": "changed"}  # type: ignore[index]
    # The broken stream and the refused reconnects resumed the watch; only the 410 relisted.
    assert inf.stats.lists == 2


async def test_watchdog_reconnects_a_silent_stream(
    k8s: Client, namespace: str, proxy: ProxyHandle, proxied: Client
) -> None:
    inf = Informer(
        proxied, CONFIG_MAP, InformerOptions(namespace=namespace, watch_idle_timeout=2.0)
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        await cm(k8s, namespace, "before-silence")
        await eventually(lambda: "before-silence" in names(inf))  # the watch is streaming
        proxy.freeze()  # the open watch now delivers nothing, and never closes
        await cm(k8s, namespace, "during-silence")
        start = anyio.current_time()
        await eventually(lambda: inf.stats.watchdog_fired >= 1, timeout=10)
        fired_after = anyio.current_time() - start
        await eventually(lambda: "during-silence" in names(inf))
        tg.cancel_scope.cancel()
    assert fired_after < 2.0 + 1.5
    assert inf.stats.lists == 1


async def test_survives_apiserver_restart(
    k8s: Client, namespace: str, control_plane: ControlPlane | None
) -> None:
    if control_plane is None:
        pytest.skip("needs the local control plane")
    inf = Informer(
        k8s,
        CONFIG_MAP,
        InformerOptions(namespace=namespace, backoff_initial=0.2, backoff_max=1.0),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        with anyio.fail_after(10):
            await inf.wait_synced()
        await anyio.to_thread.run_sync(control_plane.restart_apiserver)
        await cm(k8s, namespace, "after-restart")
        await eventually(lambda: "after-restart" in names(inf), timeout=30)
        tg.cancel_scope.cancel()
    assert inf.stats.errors >= 1 or inf.stats.watches >= 2
