"""The Workspace status reconciler: cache read → pure ``next_state`` → one status write.

It writes ``status.status`` and its own record condition (``record.py``) on the status
subresource, in one JSON patch that carries the cached object's resourceVersion. A
stale cache therefore cannot write a stale state: the API server answers 409 and the
request is retried at once against the newer object the informer is about to
deliver. KAITO's conditions and every other status field are never sent.

Besides transitions it restores: KAITO's status writes drop ``status.status``, and the
next reconcile writes the remembered state back (no Event: nothing changed).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controllers.workspace.fsm import (
    ConditionSummary,
    Decision,
    Deleting,
    InvalidWorkload,
    WorkspaceState,
    is_legal_transition,
    next_state,
    pending_blockers,
)
from controllers.workspace.model import (
    Workspace,
    WorkspaceParseError,
    _lenient_time,
    parse_workspace,
)
from controllers.workspace.record import RECORD_CONDITION, state_patch
from reconciler import (
    ApiError,
    Client,
    Conflict,
    EventRecorder,
    InformerCache,
    NotFound,
    PatchType,
    Request,
    ResourceType,
    Result,
)
from reconciler.cache import CacheNotSynced
from reconciler.ownwrites import OwnWrites
from reconciler.sharding import Shard

WORKSPACE = ResourceType("kaito.sh", "v1beta1", "Workspace", "workspaces")
FIELD_MANAGER = "workspace-status-controller"
# The proposal's "Pending trap": warn when a workspace has waited this long.
DEFAULT_PENDING_WARNING_AFTER = 15 * 60.0
# Pending durations span seconds (already provisioned) to hours (GPU quota).
PENDING_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200)

log = structlog.get_logger("controllers.workspace")


@dataclass(frozen=True)
class WorkspaceStatusOptions:
    pending_warning_after: float = DEFAULT_PENDING_WARNING_AFTER
    write_status_field: bool = True
    """False: keep the state in the record condition only, never in status.status.
    Beside KAITO's validating webhook the field can never be stored, and a field stored
    while that webhook was away locks KAITO out of the workspace when it comes back."""
    shard: Shard = field(default_factory=Shard)
    """This process's share of the workspaces (``--shard`` of ``--total-shards``): a hash
    shard caches every workspace, and its state gauge counts only its own."""


def _describe(conditions: tuple[ConditionSummary, ...]) -> str:
    parts = []
    for c in conditions:
        reason = c.reason or "no reason given"
        text = f"{c.type}={c.status} ({reason})" if c.reported else f"{c.type} not reported yet"
        if c.message:
            text += f": {c.message[:200]}"
        parts.append(text)
    return "; ".join(parts)


class _StateCollector(Collector):
    """``kaito_workspace_status_workspaces{state}`` and
    ``kaito_workspace_status_stuck_pending``: counted from the cache at scrape time."""

    def __init__(
        self,
        cache: InformerCache,
        shard: Shard,
        *,
        clock: Callable[[], float],
        pending_warning_after: float,
    ) -> None:
        self._cache = cache
        self._shard = shard
        self._clock = clock
        self._pending_warning_after = pending_warning_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kaito_workspace_status_workspaces",
            "Workspaces in the cache by status.status ('' when none is written yet).",
            labels=["state"],
        )
        try:
            # Read-only, and every cached workspace at each scrape: no copies (10,000
            # copies would cost ~170 ms a scrape; reconciler/cache.py measures it).
            objs = self._cache.list_nowait(WORKSPACE, unsafe_disable_deep_copy=True)
        except CacheNotSynced:
            return  # before the first list, zeros would be a false statement
        counts = Counter({s.value: 0 for s in WorkspaceState} | {"": 0})
        pending = WorkspaceState.PENDING.value
        now, stuck = self._clock(), 0
        for obj in objs:
            if self._shard.owns(obj):
                state = _held_state(obj, counts)
                counts[state] += 1
                if state == pending and _stuck(obj, now, self._pending_warning_after):
                    stuck += 1
        for state, n in sorted(counts.items()):
            family.add_metric([state], n)
        yield family
        yield GaugeMetricFamily(
            "kaito_workspace_status_stuck_pending",
            "Workspaces holding Pending that were created at least --pending-warning-after "
            "ago: the rule of the StuckPending Warning Event.",
            value=stuck,
        )


def _stuck(obj: dict[str, Any], now: float, limit: float) -> bool:
    """``_check_stuck``'s rule on a raw cached dict of a workspace holding Pending: not
    being deleted (no decision, so no Event, for those) and created at least ``limit``
    seconds before ``now``; a missing or unreadable creationTimestamp is not stuck."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp") is not None:
        return False
    created = _lenient_time(meta.get("creationTimestamp"))
    return created is not None and now - created.timestamp() >= limit


def _held_state(obj: dict[str, Any], known: Counter[str]) -> str:
    """The state a workspace holds: ``status.status``, or while another writer has
    blanked it, the record's; '' before the first write. Reads the raw dict: this runs
    for every cached workspace at each scrape."""
    status = obj.get("status") or {}
    state = status.get("status")
    if state is None:
        for condition in status.get("conditions") or ():
            if isinstance(condition, dict) and condition.get("type") == RECORD_CONDITION:
                state = condition.get("reason")
                break
    if not state:
        return ""
    return state if isinstance(state, str) and state in known else "<invalid>"


class WorkspaceStatusReconciler:
    """Keeps ``status.status`` of every Workspace equal to what its conditions imply."""

    def __init__(
        self,
        client: Client,
        cache: InformerCache,
        recorder: EventRecorder,
        registry: CollectorRegistry,
        options: WorkspaceStatusOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        own_writes: OwnWrites | None = None,
    ) -> None:
        """``own_writes``: wraps every status write, so that its predicate on the
        Workspace watch can drop the write's echo (a reconcile here depends only on the
        workspace, and a Pending one has already asked for its stuck check)."""
        self._client = client
        self._own_writes = own_writes
        self._cache = cache
        self._events = recorder
        self._options = options or WorkspaceStatusOptions()
        self._clock = clock
        self._pending_seconds = Histogram(
            "kaito_workspace_status_pending_seconds",
            "Seconds from creation until a workspace first left Pending.",
            buckets=PENDING_BUCKETS,
            registry=registry,
        )
        self._restores = CounterMetric(
            "kaito_workspace_status_restores_total",
            "Writes of status.status that only put back the remembered state after "
            "another writer (KAITO's status updates) dropped or changed it.",
            registry=registry,
        )
        registry.register(
            _StateCollector(
                cache,
                self._options.shard,
                clock=clock,
                pending_warning_after=self._options.pending_warning_after,
            )
        )
        # Remembered per object so that a persistent problem is reported once, not on
        # every reconcile; keyed by request, reset when the object changes or goes away.
        self._reported: dict[Request, dict[str, str]] = {}
        self._pruned_at: dict[Request, str] = {}
        # Why status.status cannot be written, when the last attempt showed it could not:
        # the installed CRD lacks the field (the API server prunes it), or an admission
        # webhook refuses it (KAITO's decodes Workspaces strictly). Restoring the field is
        # pointless then, so only transitions (which update the record) are written,
        # and each still tries the field first: the cluster may have been fixed.
        self._field_unwritable: str | None = None

    def after_crd_repair(self, crd: dict[str, Any]) -> list[Request]:
        """Every cached workspace, for a watch on the Workspace CRD: once the CRD has
        status.status again, each workspace's remembered state is written back (the
        API server pruned it from every write meanwhile). Also resumes restores."""
        self._field_unwritable = None
        self._pruned_at.clear()
        try:
            workspaces = self._cache.list_nowait(WORKSPACE)
        except CacheNotSynced:
            return []  # its first list reconciles every workspace anyway
        return [
            Request(obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
            for obj in workspaces
        ]

    async def reconcile(self, request: Request) -> Result:
        obj = await self._cache.get(WORKSPACE, request.name, request.namespace)
        if obj is None:
            self._reported.pop(request, None)
            self._pruned_at.pop(request, None)
            return Result()
        try:
            workspace = parse_workspace(obj)
        except WorkspaceParseError as err:
            self._warn_once(request, obj, "InvalidWorkspace", f"cannot read workspace: {err}")
            return Result()
        outcome = next_state(workspace)
        # The resourceVersion each decision was made on: tests use it as a barrier.
        log.debug(
            "decided",
            resource_version=workspace.metadata.resource_version,
            outcome=(
                outcome.state.value if isinstance(outcome, Decision) else type(outcome).__name__
            ),
        )
        if isinstance(outcome, Deleting):
            if (
                outcome.restore is not None
                and self._options.write_status_field
                and self._field_unwritable is None
            ):
                return await self._restore_while_deleting(request, obj, workspace, outcome.restore)
            return Result()
        if isinstance(outcome, InvalidWorkload):
            self._warn_once(request, obj, "InvalidWorkload", outcome.message)
            return Result()
        return await self._apply(request, obj, workspace, outcome)

    async def _apply(
        self, request: Request, obj: dict[str, Any], ws: Workspace, d: Decision
    ) -> Result:
        if d.previous_was_illegal:
            field = d.raw_previous is not None
            value = d.raw_previous if field else d.raw_record
            where = "status.status" if field else "the recorded state"
            instead = f"using the recorded {d.previous}" if d.previous else "treating it as unset"
            self._warn_once(
                request,
                obj,
                "IllegalPreviousState",
                f"{where} {value!r} is not a {d.workload.value} state; {instead}",
            )
        if d.changed and not is_legal_transition(d.workload, d.previous, d.state):
            # Unreachable by construction (tests prove the machine stays in the table);
            # the writer still refuses rather than trusting it.
            self._warn_once(
                request,
                obj,
                "IllegalTransition",
                f"refusing {d.previous} → {d.state} for a {d.workload.value} workspace",
            )
            return Result()
        if self._options.write_status_field:
            needs_write = d.needs_write
        else:
            needs_write = d.raw_record != d.state.value
        restore_only = needs_write and not d.changed
        if (
            needs_write
            and not (restore_only and self._field_unwritable)
            and self._pruned_at.get(request) != ws.metadata.resource_version
        ):
            written = await self._write(request, obj, ws, d)
            if written is not None:
                return written
        if d.state is WorkspaceState.PENDING:
            return self._check_stuck(request, obj, ws, d)
        return Result()

    async def _write(
        self, request: Request, obj: dict[str, Any], ws: Workspace, d: Decision
    ) -> Result | None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        field = self._options.write_status_field
        try:
            try:
                out = await self._patch(
                    request, obj, state_patch(ws, d.state.value, now, with_field=field)
                )
            except ApiError as err:
                if not field or not _refused_by_admission(err):
                    raise
                self._field_unwritable = "refused"
                self._warn_once(
                    request,
                    obj,
                    "StatusFieldRefused",
                    f"admission refused status.status ({err.message[:300]}); KAITO's "
                    "validating webhook decodes Workspaces strictly and refuses fields its "
                    "Go type lacks. The state is kept in the condition "
                    f"{RECORD_CONDITION} instead; see the README, 'Beside KAITO's webhook'",
                    key=ws.metadata.uid,
                    level="error",
                )
                out = await self._patch(
                    request, obj, state_patch(ws, d.state.value, now, with_field=False)
                )
        except Conflict:
            # Our cached copy is stale; the informer is delivering the newer one.
            log.debug("stale read, retrying", resource_version=ws.metadata.resource_version)
            return Result(requeue=True)
        except NotFound:
            return Result()
        if not field:
            pass
        elif (out.get("status") or {}).get("status") == d.state.value:
            self._field_unwritable = None
        elif self._field_unwritable != "refused":
            self._field_unwritable = "pruned"
            self._pruned_at[request] = str((out.get("metadata") or {}).get("resourceVersion"))
            self._warn_once(
                request,
                obj,
                "StatusFieldPruned",
                "the API server dropped status.status: the installed Workspace CRD has no "
                "such field (KAITO's own CRD calls it status.state). The operator re-adds "
                "it unless --manage-crd=false; or install this operator's CRD from "
                "config/crd. The state is kept in the condition "
                f"{RECORD_CONDITION} meanwhile",
                key=ws.metadata.uid,
                level="error",
            )
        if not d.changed:
            self._restores.inc()
            log.debug("restored", state=d.state.value, dropped=d.raw_previous is None)
            return None
        prev = d.previous.value if d.previous else "none"
        log.info("state changed", previous=prev, state=d.state.value)
        message = f"{prev} → {d.state.value}"
        if d.state in (WorkspaceState.NOT_READY, WorkspaceState.FAILED):
            cause = _describe(d.blocking) or "no False condition reported"
            if d.stale:
                cause += f"; ignored as stale (older observedGeneration): {_describe(d.stale)}"
            self._events.record(obj, "Warning", d.state.value, f"{message}: {cause}")
        else:
            self._events.record(obj, "Normal", "StateChanged", message)
        if d.previous in (WorkspaceState.PENDING, None) and d.state is not WorkspaceState.PENDING:
            created = ws.metadata.creation_timestamp
            if created is not None:
                self._pending_seconds.observe(max(0.0, self._clock() - created.timestamp()))
        return None

    async def _restore_while_deleting(
        self, request: Request, obj: dict[str, Any], ws: Workspace, state: str
    ) -> Result:
        """Show the kept state again on a workspace being deleted; no decision, no Event.
        Any failure ends it: the object is going away."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            await self._patch(request, obj, state_patch(ws, state, now))
        except Conflict:
            return Result(requeue=True)
        except ApiError as err:
            log.debug("not restored on a deleting workspace", error=str(err))
            return Result()
        self._restores.inc()
        return Result()

    async def _patch(
        self, request: Request, read: dict[str, Any], ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """One status write on ``read``, the cached object the patch was made from."""
        own = self._own_writes
        with own.writing(read) if own is not None else nullcontext() as w:
            out = await self._client.patch_status(
                WORKSPACE,
                request.name,
                ops,
                namespace=request.namespace,
                patch_type=PatchType.JSON,
                field_manager=FIELD_MANAGER,
            )
            if w is not None:
                w.answered(out)
        return out

    def _check_stuck(
        self, request: Request, obj: dict[str, Any], ws: Workspace, d: Decision
    ) -> Result:
        created = ws.metadata.creation_timestamp
        if created is None:
            return Result()
        waited = self._clock() - created.timestamp()
        limit = self._options.pending_warning_after
        if waited < limit:
            return Result(requeue_after=limit - waited)
        blockers = _describe(pending_blockers(d)) or "no condition explains it"
        self._warn_once(
            request,
            obj,
            "StuckPending",
            f"Pending for {_duration(waited)} (warning after {_duration(limit)}); "
            f"blocked by: {blockers}",
            key=ws.metadata.uid,
        )
        return Result()

    def _warn_once(
        self,
        request: Request,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        key: str | None = None,
        level: str = "warning",
    ) -> None:
        """One Warning Event (and log line) per object, reason and object version."""
        marker = key or str((obj.get("metadata") or {}).get("resourceVersion"))
        seen = self._reported.setdefault(request, {})
        if seen.get(reason) == marker:
            return
        seen[reason] = marker
        getattr(log, level)(message, reason=reason)
        self._events.record(obj, "Warning", reason, message)


def _refused_by_admission(err: ApiError) -> bool:
    """Whether an admission webhook or policy refused the request (kube-apiserver's
    wording: 'admission webhook "…" denied the request', 'ValidatingAdmissionPolicy …
    denied request')."""
    return not isinstance(err, Conflict | NotFound) and "denied" in err.message


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
