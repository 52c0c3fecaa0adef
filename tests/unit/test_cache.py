"""InformerCache reads: copies nobody can corrupt, no answer before the first list, and
queries by namespace, label selector and field index.

The informers here are real; only the API server is a fake that serves a fixed list
(held back until a test lets it through) and watches that never deliver.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cache import CacheNotStarted, CacheNotSynced, InformerCache
from reconciler.errors import Forbidden
from reconciler.informer import InformerOptions
from reconciler.labels import SelectorError, parse_selector
from reconciler.resource import CONFIG_MAP, NAMESPACE, SECRET, Obj, ResourceType

DEADLINE = 5.0


def cm(name: str, namespace: str = "ns", labels: dict[str, str] | None = None, **data: str) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "resourceVersion": "1"}
    if labels is not None:
        meta["labels"] = labels
    return {"kind": "ConfigMap", "metadata": meta, "data": dict(data)}


class FakeApi:
    """Lists ``objects[rt.key]`` once ``released`` (every type at first, or the ones a
    test names), or answers 403 for the ``forbidden`` types; watches stay silent."""

    def __init__(self, objects: dict[ResourceType, list[Obj]], *, hold: bool = False) -> None:
        self.objects = {rt.key: objs for rt, objs in objects.items()}
        self.forbidden: set[str] = set()
        self.released = anyio.Event()
        self.lists = 0
        if not hold:
            self.released.set()

    async def list_all(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        transform: Callable[[Obj], Obj] | None = None,
        **_: Any,
    ) -> tuple[list[Obj], str]:
        await self.released.wait()
        self.lists += 1
        if rt.key in self.forbidden:
            raise Forbidden(403, "Forbidden", f"{rt.plural} is forbidden", {})
        objs = [copy.deepcopy(o) for o in self.objects.get(rt.key, [])]
        return [transform(o) for o in objs] if transform else objs, "10"

    @asynccontextmanager
    async def watch(
        self, rt: ResourceType, namespace: str | None = None, **_: Any
    ) -> AsyncIterator[Any]:
        yield _silence()

    async def list(self, rt: ResourceType, namespace: str | None = None, **_: Any) -> Obj:
        return {"items": [], "metadata": {"resourceVersion": "10"}}


async def _silence() -> AsyncIterator[Any]:
    await anyio.sleep_forever()
    yield  # pragma: no cover  (makes this an async generator)


def new_cache(api: FakeApi) -> InformerCache:
    return InformerCache(api)  # type: ignore[arg-type]


@asynccontextmanager
async def running(cache: InformerCache) -> AsyncIterator[InformerCache]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.run)
        await anyio.lowlevel.checkpoint()  # let run() take its task group
        yield cache
        tg.cancel_scope.cancel()


async def synced(api: FakeApi, *types: ResourceType) -> InformerCache:
    """A cache whose informers for ``types`` have synced, then stopped: reads of synced
    types need no running cache."""
    cache = new_cache(api)
    for rt in types:
        cache.informer_for(rt)
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            await cache.wait_for_sync()
    return cache


def names(objs: Iterable[Obj]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


# -- results nobody can corrupt ------------------------------------------------------------


async def test_changing_what_get_returned_changes_nothing_in_the_cache() -> None:
    cache = await synced(FakeApi({CONFIG_MAP: [cm("a", labels={"app": "web"}, k="v")]}), CONFIG_MAP)
    got = await cache.get(CONFIG_MAP, "a", "ns")
    assert got is not None
    got["data"]["k"] = "changed"
    got["metadata"]["labels"]["app"] = "db"
    got["metadata"]["labels"].clear()
    del got["metadata"]
    again = cache.get_nowait(CONFIG_MAP, "a", "ns")
    assert again == cm("a", labels={"app": "web"}, k="v")
    assert (await cache.list(CONFIG_MAP, label_selector="app=web")) == [again]


async def test_changing_what_list_returned_changes_nothing_in_the_cache() -> None:
    cache = await synced(FakeApi({CONFIG_MAP: [cm("a", k="v"), cm("b", k="v")]}), CONFIG_MAP)
    for obj in await cache.list(CONFIG_MAP):
        obj["data"]["k"] = "changed"
        obj["metadata"]["name"] = "renamed"
    for obj in cache.list_nowait(CONFIG_MAP, "ns"):
        obj["data"].clear()
    assert names(await cache.list(CONFIG_MAP)) == {"a", "b"}
    assert [o["data"] for o in cache.list_nowait(CONFIG_MAP)] == [{"k": "v"}] * 2


async def test_the_unsafe_read_returns_the_stored_objects_themselves() -> None:
    cache = await synced(FakeApi({CONFIG_MAP: [cm("a")]}), CONFIG_MAP)
    stored = cache.informer_for(CONFIG_MAP).store.get("ns/a")
    assert stored is not None
    assert await cache.get(CONFIG_MAP, "a", "ns", unsafe_disable_deep_copy=True) is stored
    assert cache.get_nowait(CONFIG_MAP, "a", "ns", unsafe_disable_deep_copy=True) is stored
    [listed] = await cache.list(CONFIG_MAP, unsafe_disable_deep_copy=True)
    assert listed is stored
    [listed] = cache.list_nowait(CONFIG_MAP, "ns", unsafe_disable_deep_copy=True)
    assert listed is stored
    # The default is a copy: equal, not the same, all the way down.
    copied = await cache.get(CONFIG_MAP, "a", "ns")
    assert copied == stored
    assert copied is not stored
    assert copied["metadata"] is not stored["metadata"]


JSON_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3)
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=15,
)
MUTATIONS = st.lists(
    st.tuples(st.integers(0, 1000), st.sampled_from(["set", "delete", "append", "clear"]), JSON),
    max_size=6,
)


def containers(value: Any) -> list[Any]:
    """Every dict and list inside ``value``, itself included, outermost first."""
    found: list[Any] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            found.append(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            found.append(v)
            stack.extend(v)
    return found


def mutate(value: Any, mutations: list[tuple[int, str, Any]]) -> None:
    """Change ``value`` in place, anywhere inside it, in every way dicts and lists allow."""
    for pick, how, drawn in mutations:
        new = copy.deepcopy(drawn)  # never the same object twice: no cycles
        found = containers(value)
        target = found[pick % len(found)]
        if isinstance(target, dict):
            key = next(iter(target), "k") if pick % 2 else "k"
            if how == "delete":
                target.pop(key, None)
            elif how == "clear":
                target.clear()
            else:
                target[key] = new
        elif how == "append":
            target.append(new)
        elif how == "clear":
            target.clear()
        elif target and how == "delete":
            del target[pick % len(target)]
        elif target:
            target[pick % len(target)] = new


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["data", "spec", "status", "x"]), JSON, max_size=4),
    st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["web", "db"]), max_size=2),
    MUTATIONS,
    MUTATIONS,
)
def test_a_caller_mutating_a_result_never_changes_what_the_next_reader_sees(
    body: Obj, labels: dict[str, str], get_mutations: list[Any], list_mutations: list[Any]
) -> None:
    obj = {**body, "metadata": {"name": "a", "namespace": "ns", "labels": labels}}
    cache = anyio.run(synced, FakeApi({CONFIG_MAP: [obj]}), CONFIG_MAP)
    want = copy.deepcopy(cache.informer_for(CONFIG_MAP).store.get("ns/a"))
    first = cache.get_nowait(CONFIG_MAP, "a", "ns")
    mutate(first, get_mutations)
    listed = cache.list_nowait(CONFIG_MAP, "ns", label_selector=",".join(labels))
    for o in list(listed):
        mutate(o, list_mutations)
    mutate(listed, list_mutations)
    assert cache.get_nowait(CONFIG_MAP, "a", "ns") == want
    assert cache.list_nowait(CONFIG_MAP) == [want]


# -- no answer before the first list -------------------------------------------------------


async def test_get_waits_for_an_informer_that_has_not_synced() -> None:
    api = FakeApi({CONFIG_MAP: [cm("a")]}, hold=True)
    cache = new_cache(api)
    cache.informer_for(CONFIG_MAP)
    got: list[Obj | None] = []
    with anyio.fail_after(DEADLINE):
        async with running(cache), anyio.create_task_group() as readers:
            readers.start_soon(lambda: _append(got, cache.get(CONFIG_MAP, "a", "ns")))
            await anyio.wait_all_tasks_blocked()
            assert got == []  # waiting, not answering "not found"
            api.released.set()
    assert got == [cm("a")]


async def test_list_waits_for_an_informer_that_has_not_synced() -> None:
    api = FakeApi({CONFIG_MAP: [cm("a"), cm("b")]}, hold=True)
    cache = new_cache(api)
    cache.informer_for(CONFIG_MAP)
    got: list[list[Obj]] = []
    with anyio.fail_after(DEADLINE):
        async with running(cache), anyio.create_task_group() as readers:
            readers.start_soon(lambda: _append(got, cache.list(CONFIG_MAP)))
            await anyio.wait_all_tasks_blocked()
            assert got == []
            api.released.set()
    assert [names(objs) for objs in got] == [{"a", "b"}]


async def test_a_read_of_a_type_without_an_informer_starts_one_and_waits_for_it() -> None:
    api = FakeApi({CONFIG_MAP: [], SECRET: [cm("s")]})
    cache = new_cache(api)
    cache.informer_for(CONFIG_MAP)
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            await cache.wait_for_sync()
            assert [i.resource for i in cache.informers] == [CONFIG_MAP]
            assert await cache.get(SECRET, "s", "ns") == cm("s")
            assert names(await cache.list(SECRET)) == {"s"}
    assert [i.resource for i in cache.informers] == [CONFIG_MAP, SECRET]


async def test_a_read_right_after_scheduling_the_cache_waits_for_it() -> None:
    cache = new_cache(FakeApi({CONFIG_MAP: [cm("a")]}))
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cache.run)  # scheduled, not yet begun: no checkpoint before the read
            assert await cache.get(CONFIG_MAP, "a", "ns") == cm("a")
            tg.cancel_scope.cancel()


async def test_a_read_that_cannot_sync_in_time_raises_cache_not_synced() -> None:
    api = FakeApi({CONFIG_MAP: []})
    api.forbidden.add(SECRET.key)
    cache = new_cache(api)
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            with pytest.raises(
                CacheNotSynced, match=r"Secret\.v1: no complete list after 0\.2s"
            ) as err:
                await cache.get(SECRET, "s", "ns", sync_timeout=0.2)
            assert err.value.resource == SECRET
            with pytest.raises(CacheNotSynced):
                await cache.list(SECRET, sync_timeout=0.1)
            assert not isinstance(err.value, CacheNotStarted)
    assert api.lists >= 1  # it did try: the informer exists and was started


async def test_a_read_that_would_wait_on_a_stopped_cache_raises_cache_not_started() -> None:
    cache = new_cache(FakeApi({CONFIG_MAP: [cm("a")]}))
    with anyio.fail_after(DEADLINE):  # at once: no waiting for a sync that cannot come
        with pytest.raises(CacheNotStarted, match="not running"):
            await cache.get(CONFIG_MAP, "a", "ns")
        with pytest.raises(CacheNotStarted):
            await cache.list(CONFIG_MAP, sync_timeout=60)


async def test_nowait_reads_of_an_unsynced_type_raise_at_once() -> None:
    api = FakeApi({CONFIG_MAP: [cm("a")]}, hold=True)
    cache = new_cache(api)
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            with pytest.raises(CacheNotSynced, match="has not finished its first list"):
                cache.get_nowait(CONFIG_MAP, "a", "ns")
            with pytest.raises(CacheNotSynced):
                cache.list_nowait(CONFIG_MAP)
            # The read started the informer, so a later read succeeds.
            api.released.set()
            await cache.wait_for_sync()
            assert cache.get_nowait(CONFIG_MAP, "a", "ns") == cm("a")


async def test_synced_data_stays_readable_after_the_cache_stops() -> None:
    cache = await synced(FakeApi({CONFIG_MAP: [cm("a")]}), CONFIG_MAP)
    assert await cache.get(CONFIG_MAP, "a", "ns") == cm("a")
    assert await cache.get(CONFIG_MAP, "absent", "ns") is None


async def test_wait_for_sync_raises_cache_not_synced_naming_the_pending_types() -> None:
    cache = new_cache(FakeApi({}, hold=True))
    cache.informer_for(CONFIG_MAP)
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            with pytest.raises(
                CacheNotSynced, match=r"caches not synced after 0\.1s: ConfigMap\.v1"
            ):
                await cache.wait_for_sync(0.1)


# -- queries --------------------------------------------------------------------------------

OBJECTS = [
    cm("web-a", "a", {"app": "web", "tier": "front"}, owner="x"),
    cm("web-b", "b", {"app": "web"}, owner="y"),
    cm("db-a", "a", {"app": "db", "tier": "back"}, owner="x"),
    cm("bare-b", "b"),
]


def by_owner(obj: Obj) -> list[str]:
    owner = (obj.get("data") or {}).get("owner")
    return [owner] if owner else []


def by_data_keys(obj: Obj) -> list[str]:
    return sorted(obj.get("data") or {})


async def indexed_cache() -> InformerCache:
    cache = new_cache(FakeApi({CONFIG_MAP: OBJECTS}))
    cache.index_field(CONFIG_MAP, "data.owner", by_owner)
    cache.informer_for(CONFIG_MAP)
    cache.index_field(CONFIG_MAP, "data.keys", by_data_keys)  # created, not started: fine
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            await cache.wait_for_sync()
    return cache


@pytest.mark.parametrize(
    ("namespace", "selector", "fields", "want"),
    [
        (None, None, None, {"web-a", "web-b", "db-a", "bare-b"}),
        ("", None, None, {"web-a", "web-b", "db-a", "bare-b"}),
        ("a", None, None, {"web-a", "db-a"}),
        (None, "app=web", None, {"web-a", "web-b"}),
        (None, "app!=web", None, {"db-a", "bare-b"}),
        (None, "app in (web,db),tier", None, {"web-a", "db-a"}),
        (None, "app notin (web)", None, {"db-a", "bare-b"}),
        (None, "!app", None, {"bare-b"}),
        ("b", "app", None, {"web-b"}),
        (None, None, {"data.owner": "x"}, {"web-a", "db-a"}),
        ("b", None, {"data.owner": "x"}, set()),
        ("b", None, {"data.owner": "y"}, {"web-b"}),
        (None, "tier=back", {"data.owner": "x"}, {"db-a"}),
        (None, None, {"data.owner": "x", "data.keys": "owner"}, {"web-a", "db-a"}),
        (None, None, {"data.owner": "nobody"}, set()),
        (None, "", None, {"web-a", "web-b", "db-a", "bare-b"}),
    ],
)
async def test_list_by_namespace_label_selector_and_field_index(
    namespace: str | None, selector: str | None, fields: dict[str, str] | None, want: set[str]
) -> None:
    cache = await indexed_cache()
    got = await cache.list(CONFIG_MAP, namespace, label_selector=selector, fields=fields)
    assert names(got) == want
    assert len(got) == len(want)
    nowait = cache.list_nowait(CONFIG_MAP, namespace, label_selector=selector, fields=fields)
    assert names(nowait) == want
    if selector is not None:
        parsed = parse_selector(selector)
        assert (
            names(await cache.list(CONFIG_MAP, namespace, label_selector=parsed, fields=fields))
            == want
        )


async def test_a_field_index_follows_updates_and_deletes() -> None:
    cache = await indexed_cache()
    store = cache.informer_for(CONFIG_MAP).store
    store.upsert(cm("web-a", "a", {"app": "web"}, owner="z"))
    store.delete("a/db-a")
    assert names(await cache.list(CONFIG_MAP, fields={"data.owner": "x"})) == set()
    assert names(await cache.list(CONFIG_MAP, fields={"data.owner": "z"})) == {"web-a"}


async def test_an_unknown_field_index_is_a_clear_error() -> None:
    cache = await indexed_cache()
    with pytest.raises(
        ValueError, match=r"ConfigMap\.v1 has no field index 'spec\.nodeName'; register it"
    ):
        await cache.list(CONFIG_MAP, fields={"spec.nodeName": "n"})


async def test_a_malformed_selector_is_refused_before_any_wait() -> None:
    cache = new_cache(FakeApi({}, hold=True))
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            with pytest.raises(SelectorError):
                await cache.list(CONFIG_MAP, label_selector="app in web")


async def test_a_field_index_must_be_registered_before_its_informer_runs() -> None:
    cache = new_cache(FakeApi({CONFIG_MAP: []}))
    cache.index_field(SECRET, "x", by_owner)  # no informer yet: kept for when it comes
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            cache.informer_for(CONFIG_MAP)
            with pytest.raises(
                RuntimeError,
                match=r"'data\.owner' for ConfigMap\.v1: the informer is already running",
            ):
                cache.index_field(CONFIG_MAP, "data.owner", by_owner)
            assert cache.informer_for(SECRET).store.has_index("field:x")


def test_a_field_index_name_is_registered_once() -> None:
    cache = new_cache(FakeApi({}))
    cache.index_field(CONFIG_MAP, "data.owner", by_owner)
    cache.index_field(CONFIG_MAP, "data.owner", by_owner)  # the same function: harmless
    with pytest.raises(ValueError, match="already exists"):
        cache.index_field(CONFIG_MAP, "data.owner", by_data_keys)
    cache.informer_for(CONFIG_MAP)
    with pytest.raises(ValueError, match="already exists"):
        cache.index_field(CONFIG_MAP, "data.owner", by_data_keys)


async def test_a_cluster_scoped_type_ignores_the_namespace() -> None:
    ns = {"kind": "Namespace", "metadata": {"name": "ns", "resourceVersion": "1"}}
    cache = await synced(FakeApi({NAMESPACE: [ns]}), NAMESPACE)
    assert await cache.get(NAMESPACE, "ns", "anything") == ns
    assert await cache.list(NAMESPACE, "anything") == [ns]


async def test_the_transform_applies_before_the_copy() -> None:
    cache = new_cache(FakeApi({CONFIG_MAP: [cm("a", k="v")]}))
    cache.configure(CONFIG_MAP, InformerOptions(transform=lambda o: {**o, "data": {"t": "1"}}))
    with anyio.fail_after(DEADLINE):
        async with running(cache):
            assert (await cache.get(CONFIG_MAP, "a", "ns") or {}).get("data") == {"t": "1"}


async def _append(into: list[Any], read: Any) -> None:
    into.append(await read)
