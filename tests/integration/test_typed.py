"""Typed objects against a real API server: what a typed write keeps, cached typed reads,
and the read-only Workspace model on its own CRD."""

from __future__ import annotations

import anyio
import pytest
from pydantic import Field

from controllers.workspace.model import Workspace
from controllers.workspace.reconciler import WORKSPACE
from e2e.harness import condition, create_workspace, eventually
from reconciler.cache import InformerCache
from reconciler.client import Client
from reconciler.errors import Conflict
from reconciler.informer import InformerOptions
from reconciler.resource import CONFIG_MAP
from reconciler.typed import Kind, KubeObject, ObjectMeta, TypedCache, TypedClient


class ConfigMap(KubeObject):
    """Only ``data``: ``binaryData`` and ``immutable`` are left undeclared on purpose."""

    data: dict[str, str] = Field(default_factory=dict)


CONFIG_MAPS = Kind(CONFIG_MAP, ConfigMap)


async def test_a_typed_replace_keeps_what_the_model_does_not_declare(
    k8s: Client, namespace: str
) -> None:
    maps = TypedClient(k8s, CONFIG_MAPS)
    new = ConfigMap(metadata=ObjectMeta(name="a", namespace=namespace), data={"k": "v"})
    created = await maps.create(new, field_manager="typed-test")
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    # Another writer sets fields this model does not declare.
    await k8s.patch(
        CONFIG_MAP,
        "a",
        {"binaryData": {"b": "AAE="}, "immutable": False, "metadata": {"labels": {"x": "y"}}},
        namespace=namespace,
    )

    cm = await maps.get("a", namespace)
    cm.data["k2"] = "v2"
    replaced = await maps.replace(cm)

    assert replaced.data == {"k": "v", "k2": "v2"}
    stored = await k8s.get(CONFIG_MAP, "a", namespace)
    assert stored["data"] == {"k": "v", "k2": "v2"}
    assert stored["binaryData"] == {"b": "AAE="}
    assert stored["immutable"] is False
    assert stored["metadata"]["labels"] == {"x": "y"}
    # The object read before the other writer's patch carries an older resourceVersion.
    created.data["k3"] = "v3"
    with pytest.raises(Conflict):
        await maps.replace(created)


async def test_the_typed_cache_follows_the_informer_and_shares_nothing_with_it(
    k8s: Client, namespace: str
) -> None:
    maps = TypedClient(k8s, CONFIG_MAPS)
    await maps.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=namespace)))
    await k8s.patch(CONFIG_MAP, "a", {"binaryData": {"b": "AAE="}}, namespace=namespace)
    cache = InformerCache(k8s, InformerOptions(namespace=namespace))
    cached = TypedCache(cache, CONFIG_MAPS)
    async with anyio.create_task_group() as tg:
        cache.informer_for(CONFIG_MAP)
        tg.start_soon(cache.run)
        await cache.wait_for_sync(timeout=20)
        first = await cached.get("a", namespace)
        assert first is not None
        assert first.data == {}
        # Changing what a read returned, undeclared fields included, leaves the cache be.
        first.data["mine"] = "x"
        assert first.model_extra is not None
        first.model_extra["binaryData"]["b"] = "changed"

        await maps.patch("a", {"data": {"k": "v"}}, namespace=namespace)

        async def updated() -> bool:
            cm = await cached.get("a", namespace)
            return cm is not None and cm.data == {"k": "v"}

        await eventually(updated, what="the typed cache to show the patch")
        (listed,) = await cached.list(namespace)
        assert listed.data == {"k": "v"}
        assert listed.model_extra == {"binaryData": {"b": "AAE="}}
        tg.cancel_scope.cancel()


async def test_the_workspace_model_reads_its_crd_and_refuses_to_write_it(
    k8s: Client, namespace: str
) -> None:
    workspaces = TypedClient(k8s, Kind(WORKSPACE, Workspace))
    await create_workspace(k8s, namespace, "ws")

    patched = await workspaces.patch(
        "ws",
        {"status": {"conditions": [condition("ResourceReady", "True", "Ok")]}},
        namespace=namespace,
        subresource="status",
    )

    assert patched.has_inference
    assert patched.metadata.name == "ws"
    assert [(c.type, c.status, c.reason) for c in patched.status.conditions] == [
        ("ResourceReady", "True", "Ok")
    ]
    assert (await workspaces.get("ws", namespace)) == patched
    # Its models ignore what they do not declare: a whole-object write would erase it.
    with pytest.raises(TypeError, match="drops fields"):
        await workspaces.replace(patched)
