"""Keeps ``status.status`` and the STATUS column in the Workspace CRD.

A controller for one object, the CustomResourceDefinition ``workspaces.kaito.sh``
(what is missing and the patch that re-adds it are computed in ``crd.py``):

* complete → nothing to do;
* incomplete, and patching allowed → one JSON patch carrying the read resourceVersion
  as its precondition, and one info line saying what was re-added and why. A conflict
  (409) means the CRD changed meanwhile: requeue, the informer delivers the newer
  object. A refused patch (422) is logged with the API server's words and retried
  with the controller's backoff;
* incomplete, and patching turned off (``manage=False``) or Forbidden → one error line
  per CRD version saying what to run. Forbidden is retried every ``forbidden_retry``
  seconds, so granting the permission heals without a restart.

``kaito_workspace_status_crd_status_field`` is 1 when the cached CRD is complete, else 0;
it is computed from the cache at scrape time, on every replica, leader or not.

Like every controller of the manager it runs only while holding the leader lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controllers.workspace.crd import (
    CRD_NAME,
    CrdReport,
    helm_release,
    inspect,
    kubectl_patch_command,
    last_writer,
    patch_ops,
    project,
)
from controllers.workspace.reconciler import FIELD_MANAGER
from reconciler import (
    Client,
    Conflict,
    Forbidden,
    InformerCache,
    InformerOptions,
    Invalid,
    NotFound,
    PatchType,
    Request,
    Result,
)
from reconciler.informer import WATCH_IDLE_TIMEOUT
from reconciler.resource import CRD

STATUS_FIELD_METRIC = "kaito_workspace_status_crd_status_field"
# Granting RBAC is an admin's act with no event on the CRD: look again this often.
DEFAULT_FORBIDDEN_RETRY = 300.0
FIX_SCRIPT = "hack/add-status-field"

log = structlog.get_logger("controllers.workspace.crd")


def informer_options(watch_idle_timeout: float = WATCH_IDLE_TIMEOUT) -> InformerOptions:
    """Watch only our CRD (so RBAC ``resourceNames`` suffices) and cache only its
    projection (a few hundred bytes instead of KAITO's whole schema)."""
    return InformerOptions(
        field_selector=f"metadata.name={CRD_NAME}",
        transform=project,
        watch_idle_timeout=watch_idle_timeout,
    )


@dataclass(frozen=True)
class CrdKeeperOptions:
    manage: bool = True
    """Patch the CRD; when False only say what is missing and what to run."""
    forbidden_retry: float = DEFAULT_FORBIDDEN_RETRY
    add_field: bool = True
    """Want status.status in the schema; False with --status-field=false (the column
    reads the record condition and needs no field)."""


class _StatusFieldCollector(Collector):
    def __init__(self, cache: InformerCache, field: bool) -> None:
        self._cache = cache
        self._field = field

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Before the first list there is nothing to say; 0 would be a false alarm.
        if not self._cache.informer_for(CRD).has_synced:
            return
        crd = self._cache.get_nowait(CRD, CRD_NAME, unsafe_disable_deep_copy=True)
        yield GaugeMetricFamily(
            STATUS_FIELD_METRIC,
            f"1 when the {CRD_NAME} CRD has status.status and the STATUS column in every "
            "version, else 0.",
            value=1 if crd is not None and inspect(crd, with_field=self._field).complete else 0,
        )


class WorkspaceCrdReconciler:
    """Re-adds status.status and the STATUS column whenever the Workspace CRD lacks them."""

    def __init__(
        self,
        client: Client,
        cache: InformerCache,
        registry: CollectorRegistry,
        options: CrdKeeperOptions | None = None,
    ) -> None:
        self._client = client
        self._cache = cache
        self._options = options or CrdKeeperOptions()
        registry.register(_StatusFieldCollector(cache, self._options.add_field))
        # The CRD resourceVersion the last error line was about: one line per version.
        self._told: str | None = None

    async def reconcile(self, request: Request) -> Result:
        if request.name != CRD_NAME:
            return Result()
        crd = await self._cache.get(CRD, CRD_NAME)
        if crd is None:
            return Result()  # deleted: the Workspace informers say so loudly enough
        report = inspect(crd, with_field=self._options.add_field)
        if report.complete:
            self._told = None
            return Result()
        ops = patch_ops(crd, with_field=self._options.add_field)
        if not ops:
            self._tell(report, ops, "a version has no openAPIV3Schema to add the field to.")
            return Result()
        if not self._options.manage:
            self._tell(report, ops, "--manage-crd=false: this operator does not patch CRDs.")
            return Result()
        try:
            out = await self._client.patch(
                CRD, CRD_NAME, ops, patch_type=PatchType.JSON, field_manager=FIELD_MANAGER
            )
        except Forbidden as err:
            self._tell(
                report,
                ops,
                f"patching it was forbidden ({err.message}); config/rbac/role.yaml grants "
                f"patch on customresourcedefinitions/{CRD_NAME}.",
            )
            return Result(requeue_after=self._options.forbidden_retry)
        except Conflict:
            log.debug("the CRD changed since it was read; retrying on the newer object")
            return Result(requeue=True)
        except Invalid as err:
            log.error("the API server refused the CRD patch", error=str(err), ops=ops)
            return Result(requeue=True)
        except NotFound:
            return Result()
        self._told = None
        log.info(
            f"re-added to the Workspace CRD what it lacked ({report.describe_missing()}): "
            "it had been replaced by one without them, most likely KAITO's own (a helm "
            "upgrade of KAITO re-applies KAITO's CRD)",
            replaced_by=last_writer(crd),
            helm_release=helm_release(crd),
            crd_resource_version=_resource_version(out),
        )
        return Result()

    def _tell(self, report: CrdReport, ops: list[dict[str, Any]], why_not: str) -> None:
        if self._told == report.resource_version:
            return
        self._told = report.resource_version
        how = (
            f"Run {FIX_SCRIPT} [kubectl flags] from this operator's repository, or: "
            f"{kubectl_patch_command(ops)}"
            if ops
            else "Install this operator's CRD: kubectl apply --server-side -k config/crd"
        )
        log.error(
            f"the Workspace CRD {CRD_NAME} lacks what this operator adds "
            f"({report.describe_missing()}), so the API server drops the status.status it "
            f"writes and `kubectl get workspace` shows no STATUS. Not re-added: {why_not} "
            f"{how}",
            crd_resource_version=report.resource_version,
        )


def _resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
