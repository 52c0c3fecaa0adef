"""The CronJob reconciler: read from the cache, decide with :func:`schedule.plan`, write.

:func:`setup` wires it as the book's ``SetupWithManager`` does: reconcile CronJobs,
reconcile a CronJob again whenever a Job it controls changes (``owns``), and find those
Jobs through a field index on their controller, ``.metadata.controller``.

Writes, in order: delete the Jobs a ``Replace`` run replaces, create the Job for the due
run, patch the status (only if it changed, and only over the version it was computed
from), delete finished Jobs beyond the history limits. Each is safe to repeat after a
crash or a stale cache: a run's Job has a fixed name (a second create finds the first),
deletes are conditional on the Job's uid, and the status records the last run before
history pruning may delete its Job (see ``schedule``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from examples.cronjob.api import (
    CRONJOB,
    CRONJOBS,
    JOB,
    JOBS,
    CronJob,
    Job,
    ObjectReference,
    rfc3339,
)
from examples.cronjob.schedule import job_for, plan, started
from reconciler import (
    AlreadyExists,
    ApiError,
    Builder,
    Controller,
    ControllerOptions,
    Invalid,
    Manager,
    NotFound,
    Request,
    Result,
    TerminalError,
)
from reconciler.controllerutil import controller_of
from reconciler.resource import Obj
from reconciler.typed import ParseError, TypedCache

JOB_OWNER_KEY = ".metadata.controller"
"""The field index of Jobs by the name of the CronJob that controls them."""

EVENT_SOURCE = "cronjob-controller"

Clock = Callable[[], datetime]

log = structlog.get_logger("examples.cronjob")


def utc_now() -> datetime:
    return datetime.now(UTC)


def job_owner(job: Obj) -> list[str]:
    """Index function for :data:`JOB_OWNER_KEY`: the controlling CronJob's name, if any."""
    ref = controller_of(job)
    if ref is None or (ref.get("apiVersion"), ref.get("kind")) != (
        CRONJOB.api_version,
        CRONJOB.kind,
    ):
        return []
    return [str(ref["name"])]


def setup(
    mgr: Manager, *, clock: Clock = utc_now, options: ControllerOptions | None = None
) -> Controller:
    """Add the CronJob controller to ``mgr``; ``clock`` is for tests."""
    mgr.cache.index_field(JOB, JOB_OWNER_KEY, job_owner)
    return (
        Builder(mgr)
        .for_(CRONJOB)
        .owns(JOB)
        .with_options(options or ControllerOptions())
        .complete(CronJobReconciler(mgr, clock))
    )


class CronJobReconciler:
    def __init__(self, mgr: Manager, clock: Clock = utc_now) -> None:
        self._client = mgr.client
        self._cache = mgr.cache
        self._jobs = TypedCache(mgr.cache, JOBS)
        self._events = mgr.event_recorder(EVENT_SOURCE)
        self._now = clock

    async def reconcile(self, request: Request) -> Result:
        # The dict, not a model: the Event recorder takes it.
        obj = await self._cache.get(CRONJOB, request.name, request.namespace)
        if obj is None:
            return Result()  # deleted: the garbage collector deletes its Jobs
        try:
            cronjob = CRONJOBS.parse(obj)
        except ParseError as err:
            raise TerminalError(err) from err  # the CRD should have refused it
        owned = await self._jobs.list(request.namespace, fields={JOB_OWNER_KEY: request.name})
        todo = plan(cronjob, owned, self._now())
        log.debug("planned", decision=todo.decision, run=todo.run, jobs=len(owned))

        for event in todo.events:
            self._events.record(obj, event.type, event.reason, event.message)
        for job in todo.replaced:
            await self._delete(obj, job)
        status = todo.status
        if todo.run is not None:
            ref = await self._start(obj, cronjob, todo.run)
            if ref is not None:
                status = started(status, ref, todo.run)
        if (written := status.to_json()) != cronjob.status.to_json():
            patch = {
                "metadata": {"resourceVersion": cronjob.metadata.resource_version},
                "status": written,
            }
            await self._client.patch_status(
                CRONJOB, request.name, patch, namespace=request.namespace
            )
        for job in todo.pruned:
            try:
                await self._delete(obj, job)
            except ApiError as err:  # best effort: the next reconcile tries again
                log.warning("could not delete an old job", job=job.metadata.name, error=str(err))
        return Result(requeue_after=todo.requeue_after)

    async def _start(self, obj: Obj, cronjob: CronJob, run: datetime) -> ObjectReference | None:
        """Create the Job for ``run``; its reference, or None where it cannot exist."""
        job = job_for(cronjob, run)
        name, namespace = job["metadata"]["name"], cronjob.metadata.namespace
        try:
            created = await self._client.create(JOB, job, namespace)
        except AlreadyExists:
            # Created by an earlier reconcile that our cache has not seen yet, or not ours.
            created = await self._client.get(JOB, name, namespace)
            if (controller_of(created) or {}).get("uid") != cronjob.metadata.uid:
                message = f"Job {name} for the run at {rfc3339(run)} exists and is not ours"
                self._events.record(obj, "Warning", "FailedCreate", message)
                return None
        except Invalid as err:  # the template is wrong: no retry helps, an edit will
            self._events.record(obj, "Warning", "FailedCreate", f"Job {name}: {err.message}")
            return None
        else:
            self._events.record(obj, "Normal", "SuccessfulCreate", f"Created job {name}")
        return JOBS.parse(created).reference

    async def _delete(self, obj: Obj, job: Job) -> None:
        name = job.metadata.name
        try:
            # Only the Job we decided about: a newer one of the same name stays.
            await self._client.delete(
                JOB,
                name,
                job.metadata.namespace,
                propagation_policy="Background",
                preconditions={"uid": job.metadata.uid},
            )
        except NotFound:
            return
        self._events.record(obj, "Normal", "SuccessfulDelete", f"Deleted job {name}")
