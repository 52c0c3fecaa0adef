"""The Workspace CRD keeper against a fake API server holding one CRD.

The fake behaves like kube-apiserver for what the keeper uses: list and watch honour the
``metadata.name`` field selector, every write bumps the resourceVersion and is delivered
to the watch, a JSON patch is applied by RFC 6902 (a stale resourceVersion is a 409),
and an RBAC denial is a 403 Forbidden.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from jsonpatch import JsonPatchException, apply_patch
from jsonpointer import JsonPointerException
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from controllers.workspace import crd
from controllers.workspace.crd_keeper import (
    STATUS_FIELD_METRIC,
    CrdKeeperOptions,
    WorkspaceCrdReconciler,
    informer_options,
)
from reconciler import Conflict, Forbidden, InformerCache, Invalid, PatchType, Request
from reconciler.client import WatchEvent
from reconciler.resource import CRD

ROOT = Path(__file__).resolve().parents[2]
KAITO = ROOT / "tests" / "fixtures" / "kaito" / "kaito.sh_workspaces.yaml"
OURS = ROOT / "config" / "crd" / "kaito.sh_workspaces.yaml"
REQUEST = Request("", crd.CRD_NAME)

Obj = dict[str, Any]


class FakeApi:
    """One CustomResourceDefinition, listed, watched and patched like the API server does."""

    def __init__(self, doc: Obj) -> None:
        self.rv = 100
        self.crd = self._stamp(copy.deepcopy(doc))
        self.patches: list[tuple[list[Obj], PatchType, str | None]] = []
        self.fail_next: list[Exception] = []
        self._send, self._recv = anyio.create_memory_object_stream[WatchEvent](100)

    def _stamp(self, doc: Obj) -> Obj:
        self.rv += 1
        doc["metadata"]["resourceVersion"] = str(self.rv)
        return doc

    def delete(self) -> None:
        self._stamp(self.crd)
        self._send.send_nowait(WatchEvent("DELETED", copy.deepcopy(self.crd)))

    def replace(self, doc: Obj) -> None:
        """A whole-object write from someone else (helm upgrade, kubectl replace)."""
        self.crd = self._stamp(copy.deepcopy(doc))
        self._send.send_nowait(WatchEvent("MODIFIED", copy.deepcopy(self.crd)))

    async def list_all(
        self,
        rt: Any,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> tuple[list[Obj], str]:
        assert rt == CRD
        assert field_selector == f"metadata.name={crd.CRD_NAME}"
        item = copy.deepcopy(self.crd)
        return [transform(item) if transform else item], str(self.rv)

    @asynccontextmanager
    async def watch(
        self, rt: Any, namespace: str | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        assert kwargs["field_selector"] == f"metadata.name={crd.CRD_NAME}"
        yield self._recv

    async def patch(
        self,
        rt: Any,
        name: str,
        patch: list[Obj],
        *,
        patch_type: PatchType,
        field_manager: str | None = None,
        **kwargs: Any,
    ) -> Obj:
        assert (rt, name) == (CRD, crd.CRD_NAME)
        self.patches.append((copy.deepcopy(patch), patch_type, field_manager))
        if self.fail_next:
            raise self.fail_next.pop(0)
        try:
            new = apply_patch(self.crd, patch)
        except (JsonPatchException, JsonPointerException) as err:
            raise Invalid(422, "Invalid", str(err)) from err
        # The patched object's resourceVersion is the update's precondition.
        if new["metadata"].get("resourceVersion") != self.crd["metadata"].get("resourceVersion"):
            raise Conflict(409, "Conflict", "the object has been modified")
        self.replace(new)
        return copy.deepcopy(self.crd)


def load(path: Path) -> Obj:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


class Harness:
    def __init__(self, api: FakeApi, cache: InformerCache, registry: CollectorRegistry) -> None:
        self.api = api
        self.cache = cache
        self.registry = registry

    def gauge(self) -> float | None:
        return self.registry.get_sample_value(STATUS_FIELD_METRIC)

    async def settle(self) -> None:
        """Until the cache holds the API's current resourceVersion."""
        with anyio.fail_after(5):
            while True:
                cached = self.cache.get_nowait(CRD, crd.CRD_NAME)
                rv = (cached or {}).get("metadata", {}).get("resourceVersion")
                if rv == str(self.api.rv):
                    return
                await anyio.sleep(0.01)


@asynccontextmanager
async def running(
    doc: Obj, options: CrdKeeperOptions | None = None
) -> AsyncIterator[tuple[Harness, WorkspaceCrdReconciler]]:
    api = FakeApi(doc)
    cache = InformerCache(api)  # type: ignore[arg-type]
    cache.configure(CRD, informer_options())
    registry = CollectorRegistry()
    keeper = WorkspaceCrdReconciler(api, cache, registry, options)  # type: ignore[arg-type]
    harness = Harness(api, cache, registry)
    assert harness.gauge() is None  # nothing said before the first list
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.run)
        await cache.wait_for_sync(5)
        yield harness, keeper
        tg.cancel_scope.cancel()


async def test_a_complete_crd_is_left_alone() -> None:
    async with running(load(OURS)) as (h, keeper):
        with capture_logs() as logs:
            assert (await keeper.reconcile(REQUEST)).requeue is False
        assert h.api.patches == []
        assert logs == []
        assert h.gauge() == 1


async def test_kaitos_crd_is_patched_once_with_the_ops_and_said_why() -> None:
    kaito = load(KAITO)
    async with running(kaito) as (h, keeper):
        assert h.gauge() == 0
        before = copy.deepcopy(h.api.crd)
        with capture_logs() as logs:
            result = await keeper.reconcile(REQUEST)
        assert (result.requeue, result.requeue_after) == (False, None)
        assert h.api.patches == [
            (crd.patch_ops(before), PatchType.JSON, "workspace-status-controller")
        ]
        assert crd.inspect(h.api.crd).complete
        [line] = logs
        assert line["log_level"] == "info"
        assert line["event"].startswith(
            "re-added to the Workspace CRD what it lacked (v1alpha1: status.status, STATUS "
            "column; v1beta1: status.status, STATUS column)"
        )
        assert "helm upgrade of KAITO" in line["event"]
        assert line["crd_resource_version"] == h.api.crd["metadata"]["resourceVersion"]
        await h.settle()
        assert h.gauge() == 1
        # The keeper's own write comes back through the watch: nothing more to do.
        with capture_logs() as logs:
            await keeper.reconcile(REQUEST)
        assert len(h.api.patches) == 1
        assert logs == []


async def test_a_reapply_between_read_and_patch_is_not_clobbered() -> None:
    async with running(load(KAITO)) as (h, keeper):
        # KAITO's chart is applied again (same content, new version) after the cache
        # read: the stale precondition is a 409, the keeper requeues and wins on the newer object.
        original_patch = h.api.patch

        async def reapply_first(*args: Any, **kwargs: Any) -> Obj:
            h.api.patch = original_patch  # type: ignore[method-assign]
            h.api.replace(load(KAITO))
            return await original_patch(*args, **kwargs)

        h.api.patch = reapply_first  # type: ignore[method-assign]
        result = await keeper.reconcile(REQUEST)
        assert result.requeue is True
        assert not crd.inspect(h.api.crd).complete  # the failed patch changed nothing
        await h.settle()
        assert (await keeper.reconcile(REQUEST)).requeue is False
        assert crd.inspect(h.api.crd).complete
        assert len(h.api.patches) == 2


@pytest.mark.parametrize("error", [Conflict(409, "Conflict", "x"), Invalid(422, "Invalid", "x")])
async def test_conflict_and_invalid_requeue(error: Exception) -> None:
    async with running(load(KAITO)) as (h, keeper):
        h.api.fail_next = [error]
        assert (await keeper.reconcile(REQUEST)).requeue is True


def the_error_line(logs: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1, logs
    return errors[0]


def the_command(line: dict[str, Any]) -> list[Obj]:
    """The ops of the kubectl command the error line gives (it ends the line)."""
    words = shlex.split(line["event"][line["event"].index("kubectl patch") :])
    assert words[:6] == ["kubectl", "patch", "crd", crd.CRD_NAME, "--type=json", "-p"]
    ops = json.loads(words[6])
    assert isinstance(ops, list)
    return ops


async def test_turned_off_it_says_what_to_run_once_per_crd_version() -> None:
    async with running(load(KAITO), CrdKeeperOptions(manage=False)) as (h, keeper):
        with capture_logs() as logs:
            assert (await keeper.reconcile(REQUEST)).requeue is False
            await keeper.reconcile(REQUEST)
        assert h.api.patches == []
        line = the_error_line(logs)
        assert "--manage-crd=false" in line["event"]
        assert "hack/add-status-field" in line["event"]
        # The command works: applied to the CRD it makes it complete.
        assert crd.inspect(apply_patch(h.api.crd, the_command(line))).complete
        assert h.gauge() == 0
        # A new version of the CRD (another re-apply) is said again.
        h.api.replace(load(KAITO))
        await h.settle()
        with capture_logs() as logs:
            await keeper.reconcile(REQUEST)
        the_error_line(logs)
        # Fixed by hand: the gauge says so, and a later loss is reported anew.
        h.api.replace(apply_patch(h.api.crd, crd.patch_ops(h.api.crd)))
        await h.settle()
        assert h.gauge() == 1
        with capture_logs() as logs:
            await keeper.reconcile(REQUEST)
        assert logs == []


async def test_forbidden_says_what_to_run_and_retries_later() -> None:
    options = CrdKeeperOptions(forbidden_retry=123.0)
    async with running(load(KAITO), options) as (h, keeper):
        denial = Forbidden(403, "Forbidden", 'cannot patch resource "customresourcedefinitions"')
        h.api.fail_next = [denial, denial]
        with capture_logs() as logs:
            assert (await keeper.reconcile(REQUEST)).requeue_after == 123.0
            assert (await keeper.reconcile(REQUEST)).requeue_after == 123.0
        line = the_error_line(logs)  # once, although it was refused twice
        assert "forbidden" in line["event"]
        assert "config/rbac/role.yaml" in line["event"]
        assert h.gauge() == 0
        # Permission granted meanwhile: the periodic retry heals it.
        assert (await keeper.reconcile(REQUEST)).requeue_after is None
        assert crd.inspect(h.api.crd).complete


async def test_a_deleted_crd_or_another_name_is_left_alone() -> None:
    async with running(load(KAITO)) as (h, keeper):
        assert (await keeper.reconcile(Request("", "other.example.com"))).requeue is False
        h.api.delete()
        with anyio.fail_after(5):
            while h.cache.get_nowait(CRD, crd.CRD_NAME) is not None:
                await anyio.sleep(0.01)
        assert (await keeper.reconcile(REQUEST)).requeue is False
        assert h.api.patches == []
        assert h.gauge() == 0
