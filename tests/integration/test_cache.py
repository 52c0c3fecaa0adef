"""InformerCache against a real API server: reads right after start wait for the first
list, label selectors mean what they mean to kube-apiserver, field indexes follow the
watch, and a changed read can be sent back without touching the cache."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from reconciler.cache import CacheNotSynced, InformerCache
from reconciler.client import Client
from reconciler.errors import BadRequest
from reconciler.informer import InformerOptions
from reconciler.labels import SelectorError
from reconciler.resource import CONFIG_MAP, SECRET, Obj, ResourceType

DEADLINE = 20.0

LABELS: dict[str, dict[str, str]] = {
    "none": {},
    "web": {"app": "web"},
    "db-front": {"app": "db", "tier": "front"},
    "empty-back": {"app": "", "tier": "back"},
    "inference": {"kaito.sh/workload": "inference", "app": "web"},
    "ten": {"n": "10"},
    "zero-ten": {"n": "010", "tier": "front"},
    "seven": {"n": "7"},
    "keywords": {"in": "notin"},
}


async def create(k8s: Client, ns: str, name: str, labels: dict[str, str], **data: str) -> Obj:
    meta = {"name": name, "namespace": ns, "labels": labels}
    return await k8s.create(CONFIG_MAP, {"metadata": meta, "data": data})


@asynccontextmanager
async def running(cache: InformerCache) -> AsyncIterator[InformerCache]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.run)
        await anyio.lowlevel.checkpoint()  # let run() take its task group
        yield cache
        tg.cancel_scope.cancel()


async def test_reads_right_after_start_wait_for_the_first_list(k8s: Client, namespace: str) -> None:
    for name in ("a", "b", "c"):
        await create(k8s, namespace, name, {"app": name})
    await k8s.create(SECRET, {"metadata": {"name": "s", "namespace": namespace}})
    cache = InformerCache(k8s, InformerOptions(namespace=namespace))
    cache.informer_for(CONFIG_MAP)
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            # No wait_for_sync: the read itself waits (an informer's first list takes a
            # round trip, so an answer now would be "not found" if it did not).
            got = await cache.get(CONFIG_MAP, "a", namespace)
            assert got is not None
            assert got["metadata"]["labels"] == {"app": "a"}
            listed = await cache.list(CONFIG_MAP, namespace)
            assert sorted(o["metadata"]["name"] for o in listed) == ["a", "b", "c"]
            # A type nobody declared: the read starts its informer and waits for it.
            secrets = await cache.list(SECRET, namespace)
            assert [o["metadata"]["name"] for o in secrets] == ["s"]
            assert {i.resource for i in cache.informers} == {CONFIG_MAP, SECRET}


async def test_a_type_the_server_does_not_serve_raises_cache_not_synced(
    k8s: Client, namespace: str
) -> None:
    nope = ResourceType("example.com", "v1", "Nope", "nopes")
    cache = InformerCache(k8s, InformerOptions(namespace=namespace))
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            with pytest.raises(
                CacheNotSynced, match=r"Nope.example.com/v1: no complete list after 1\.0s"
            ):
                await cache.get(nope, "x", namespace, sync_timeout=1.0)
            with pytest.raises(CacheNotSynced):
                cache.list_nowait(nope)


# Selectors written by hand for the grammar's corners, then random ones; each must
# select exactly what kube-apiserver selects, or be refused where it answers 400.
HAND_PICKED = [
    "",
    "app",
    "!app",
    "app=web",
    "app==web",
    "app!=web",
    "app=",
    "app in (web,db)",
    "app in ()",
    "app in (,web)",
    "app notin (web)",
    "app notin ()",
    "tier,app=db",
    "kaito.sh/workload=inference",
    "kaito.sh/workload",
    "n>9",
    "n<10",
    "n>7,tier",
    "in in (notin)",
    "in",
    "app=web,app=db",
    " app = web ",
    "app=web,",
    "app in web",
    "n>x",
    "n>-1",
    "Bad.Prefix/app",
    "app=" + "v" * 64,
    "!app=web",
    "a/b/c",
]
KEYS = ["app", "tier", "n", "in", "kaito.sh/workload", "absent", "Bad.Prefix/x", "-x"]
VALUES = ["web", "db", "", "front", "10", "9", "010", "-1", "notin", "x_", "inference"]
OPS = ["=", "==", "!=", " in ", " notin ", "", "!", ">", "<", "=(", " in "]


def random_selector(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 3)):
        key, op = rng.choice(KEYS), rng.choice(OPS)
        sp = rng.choice(["", " "])
        if op == "":
            parts.append(key)
        elif op == "!":
            parts.append(f"!{sp}{key}")
        elif op.strip() in ("in", "notin"):
            values = ",".join(rng.sample(VALUES, rng.randint(0, 3)))
            parts.append(f"{key}{op}({values}){sp}")
        else:
            parts.append(f"{key}{sp}{op}{sp}{rng.choice(VALUES)}")
    return rng.choice([",", ", ", ",,"]).join(parts)


async def test_label_selectors_select_what_the_api_server_selects(
    k8s: Client, namespace: str
) -> None:
    for name, labels in LABELS.items():
        await create(k8s, namespace, name, labels)
    rng = random.Random(20261201)
    selectors = HAND_PICKED + [random_selector(rng) for _ in range(250)]
    cache = InformerCache(k8s, InformerOptions(namespace=namespace))
    refused = 0
    with anyio.fail_after(60):
        async with running(cache):
            for selector in selectors:
                try:
                    page = await k8s.list(CONFIG_MAP, namespace, label_selector=selector)
                except BadRequest:
                    with pytest.raises(SelectorError):
                        await cache.list(CONFIG_MAP, namespace, label_selector=selector)
                    refused += 1
                    continue
                want = sorted(o["metadata"]["name"] for o in page["items"])
                got = await cache.list(CONFIG_MAP, namespace, label_selector=selector)
                assert sorted(o["metadata"]["name"] for o in got) == want, selector
    # Both kinds of answer were exercised, not one.
    assert 20 < refused < len(selectors) - 20, refused


def by_owner(obj: Obj) -> list[str]:
    owner = (obj.get("data") or {}).get("owner")
    return [owner] if owner else []


async def test_a_field_index_follows_the_watch(k8s: Client, namespace: str) -> None:
    await create(k8s, namespace, "a", {"app": "web"}, owner="x")
    await create(k8s, namespace, "b", {"app": "db"}, owner="x")
    await create(k8s, namespace, "c", {}, owner="y")
    cache = InformerCache(k8s, InformerOptions(namespace=namespace))
    cache.index_field(CONFIG_MAP, "data.owner", by_owner)

    async def owned(owner: str, selector: str | None = None) -> set[str]:
        objs = await cache.list(
            CONFIG_MAP, namespace, label_selector=selector, fields={"data.owner": owner}
        )
        return {o["metadata"]["name"] for o in objs}

    with anyio.fail_after(DEADLINE):
        async with running(cache):
            assert await owned("x") == {"a", "b"}
            assert await owned("x", "app=db") == {"b"}
            await k8s.patch(CONFIG_MAP, "a", {"data": {"owner": "y"}}, namespace=namespace)
            await k8s.delete(CONFIG_MAP, "b", namespace)
            while await owned("x"):
                await anyio.sleep(0.02)
            assert await owned("y") == {"a", "c"}
            with pytest.raises(RuntimeError, match="already running"):
                cache.index_field(CONFIG_MAP, "data.other", by_owner)


async def test_a_read_changed_and_sent_back_leaves_the_cache_as_the_server_has_it(
    k8s: Client, namespace: str
) -> None:
    await create(k8s, namespace, "a", {"app": "web"}, k="v")
    cache = InformerCache(k8s, InformerOptions(namespace=namespace))
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            obj = await cache.get(CONFIG_MAP, "a", namespace)
            assert obj is not None
            old_rv = obj["metadata"]["resourceVersion"]
            obj["data"]["k"] = "changed"
            obj["metadata"]["labels"]["app"] = "db"
            # The caller's edits are its own until the server has them ...
            cached = cache.get_nowait(CONFIG_MAP, "a", namespace)
            assert cached is not None
            assert (cached["data"], cached["metadata"]["labels"]) == ({"k": "v"}, {"app": "web"})
            written = await k8s.replace(CONFIG_MAP, obj)
            # ... and then the cache has them because the watch delivered them.
            while True:
                cached = cache.get_nowait(CONFIG_MAP, "a", namespace)
                assert cached is not None
                if cached["metadata"]["resourceVersion"] != old_rv:
                    break
                await anyio.sleep(0.02)
            assert cached["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
            assert (cached["data"], cached["metadata"]["labels"]) == (
                {"k": "changed"},
                {"app": "db"},
            )
