"""Every decision the CronJob controller makes, as pure functions of (CronJob, its Jobs,
now): no I/O, no clock of its own, so each rule is a unit test.

The rules are the kubebuilder book's, with changes that fix what a test here shows
going wrong in the original:

- **No run starts twice.** The last run is the later of ``status.lastScheduleTime`` and
  the newest Job's scheduled time, and a finished Job is pruned only once the status
  read in the same reconcile already records its run. The book reconstructs the last run
  from the Jobs alone: once a history limit has deleted them all, every run since the
  CronJob's creation counts as missed again and the latest one runs a second time. The
  pruning rule keeps that true under a stale cache too: status only moves forward, so
  every later read also records the run.
- A run missed by more than ``startingDeadlineSeconds`` is reported (``MissSchedule``);
  the book only looks for runs inside the deadline, so its "too late" branch never
  fires and such a run passes in silence.
- More than :data:`MAX_MISSED_RUNS` missed runs start the latest one, with a warning;
  the book starts nothing, for good, until someone edits the CronJob.
- ``status.active`` names at most 10 Jobs (the CRD's limit), the newest.
- An unset history limit keeps 3 successful or 1 failed Job, the values the book's
  defaulting webhook writes; the book's controller keeps every Job for an unset limit,
  which there happens only while its webhook is off.

Schedules are read and run as the book's cron library reads and runs them (``cron``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from examples.cronjob.api import (
    CRONJOB,
    JOB,
    MAX_ACTIVE_REFERENCES,
    SCHEDULED_AT,
    ConcurrencyPolicy,
    CronJob,
    CronJobStatus,
    Job,
    ObjectReference,
    rfc3339,
)
from examples.cronjob.cron import Schedule, ScheduleError
from reconciler.controllerutil import set_controller_reference
from reconciler.events import EventType

MAX_MISSED_RUNS = 100
"""More missed runs than this means a stopped controller or a skewed clock."""


def most_recent_schedule(schedule: Schedule, since: datetime, now: datetime) -> datetime | None:
    """The latest scheduled time in ``(since, now]``: the run that is due, if any."""
    latest = schedule.latest_until(now)
    return latest if latest > since else None


def count_runs(schedule: Schedule, since: datetime, now: datetime) -> int:
    """How many scheduled times lie in ``(since, now]``; stops counting past the limit."""
    count, t = 0, since
    while count <= MAX_MISSED_RUNS and (t := schedule.next_after(t)) <= now:
        count += 1
    return count


class Decision(StrEnum):
    """What one reconcile does about starting a Job."""

    START = "Start"
    NOT_DUE = "NotDue"
    TOO_LATE = "TooLate"
    """The due run is older than ``startingDeadlineSeconds``: skipped."""
    FORBIDDEN = "Forbidden"
    """``Forbid``, and a Job is still active: the due run waits for it."""
    SUSPENDED = "Suspended"
    DELETING = "Deleting"
    INVALID_SCHEDULE = "InvalidSchedule"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """One reconcile's work, in this order: delete ``replaced`` (must succeed), start a
    Job for ``run``, write ``status``, delete ``pruned`` (best effort), requeue."""

    decision: Decision
    status: CronJobStatus
    """The status once ``replaced`` are gone, without the Job for ``run``: see
    :func:`started`."""
    run: datetime | None = None
    replaced: tuple[Job, ...] = ()
    pruned: tuple[Job, ...] = ()
    requeue_after: float | None = None
    """Seconds until the next scheduled time; None when only a change can matter."""
    events: tuple[Event, ...] = ()


def plan(cronjob: CronJob, jobs: Sequence[Job], now: datetime) -> Plan:
    """Decide one reconcile of ``cronjob``, given the Jobs it controls and the time."""
    spec = cronjob.spec
    active = sorted((j for j in jobs if j.finished is None), key=_by_schedule)
    recorded = cronjob.status.last_schedule_time
    last = _latest(recorded, *(j.scheduled_time for j in jobs))
    pruned = _beyond_limit(jobs, "Complete", spec.successful_jobs_history_limit, recorded)
    pruned += _beyond_limit(jobs, "Failed", spec.failed_jobs_history_limit, recorded)
    status = CronJobStatus(active=_references(active), last_schedule_time=last)
    base = Plan(Decision.NOT_DUE, status, pruned=pruned)

    if cronjob.metadata.deletion_timestamp is not None:
        return replace(base, decision=Decision.DELETING)
    if spec.suspend:
        return replace(base, decision=Decision.SUSPENDED)
    deadline = spec.starting_deadline_seconds
    since = last or cronjob.metadata.creation_timestamp or now
    try:
        schedule = Schedule.parse(spec.schedule)
        due = most_recent_schedule(schedule, since, now)
        base = replace(base, requeue_after=(schedule.next_after(now) - now).total_seconds())
        # As the book: runs beyond the deadline do not count as missed.
        window = since if deadline is None else max(since, now - timedelta(seconds=deadline))
        missed = count_runs(schedule, window, now)
    except ScheduleError as err:
        event = Event("Warning", "UnparseableSchedule", str(err))
        return replace(base, decision=Decision.INVALID_SCHEDULE, events=(event,))

    if due is None:
        return base
    if deadline is not None and due + timedelta(seconds=deadline) < now:
        event = Event("Warning", "MissSchedule", f"Missed scheduled time {rfc3339(due)}")
        return replace(base, decision=Decision.TOO_LATE, events=(event,))
    events: tuple[Event, ...] = ()
    if missed > MAX_MISSED_RUNS:
        message = (
            f"More than {MAX_MISSED_RUNS} missed start times; starting the latest, "
            f"{rfc3339(due)}. Set or decrease .spec.startingDeadlineSeconds or check clock skew."
        )
        events += (Event("Warning", "TooManyMissedTimes", message),)
    policy = spec.concurrency_policy
    if policy == ConcurrencyPolicy.FORBID and active:
        message = f"Run at {rfc3339(due)} waits: concurrency policy Forbid, {len(active)} active"
        events += (Event("Normal", "JobAlreadyActive", message),)
        return replace(base, decision=Decision.FORBIDDEN, events=events)
    if policy == ConcurrencyPolicy.REPLACE:
        base = replace(base, replaced=tuple(active), status=CronJobStatus(last_schedule_time=last))
    return replace(base, decision=Decision.START, run=due, events=events)


def started(status: CronJobStatus, job: ObjectReference, run: datetime) -> CronJobStatus:
    """``status`` once the Job for ``run`` exists: the newest active Job, the last run."""
    active = [*(r for r in status.active if r.name != job.name), job][-MAX_ACTIVE_REFERENCES:]
    return CronJobStatus(active=active, last_schedule_time=_latest(status.last_schedule_time, run))


def job_name(cronjob: str, run: datetime) -> str:
    """One name per (CronJob, scheduled time): a second create for a run fails."""
    return f"{cronjob}-{int(run.timestamp())}"


def job_for(cronjob: CronJob, run: datetime) -> dict[str, Any]:
    """The Job that runs ``cronjob``'s template for ``run``, controlled by ``cronjob``."""
    template = cronjob.spec.job_template
    meta = template.get("metadata") or {}
    job: dict[str, Any] = {
        "apiVersion": JOB.api_version,
        "kind": JOB.kind,
        "metadata": {
            "name": job_name(cronjob.metadata.name, run),
            "namespace": cronjob.metadata.namespace,
            "labels": dict(meta.get("labels") or {}),
            "annotations": {**(meta.get("annotations") or {}), SCHEDULED_AT: rfc3339(run)},
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
    }
    owner = {"metadata": cronjob.metadata.model_dump(include={"name", "namespace", "uid"})}
    set_controller_reference(owner, job, CRONJOB)
    return job


def _latest(*times: datetime | None) -> datetime | None:
    return max((t for t in times if t is not None), default=None)


def _by_schedule(job: Job) -> tuple[bool, datetime | None, str]:
    # Jobs without a scheduled time (not started by us) sort first, as the oldest.
    t = job.scheduled_time
    return (t is not None, t, job.metadata.name)


def _references(active: Sequence[Job]) -> list[ObjectReference]:
    return [j.reference for j in active[-MAX_ACTIVE_REFERENCES:]]


def _beyond_limit(
    jobs: Iterable[Job], how: str, limit: int, recorded: datetime | None
) -> tuple[Job, ...]:
    """The oldest Jobs that finished ``how`` (by start time; none sorts first) beyond
    ``limit``, less those whose run ``recorded`` does not cover yet (next time)."""
    done = sorted(
        (j for j in jobs if j.finished == how),
        key=lambda j: (j.status.start_time is not None, j.status.start_time, j.metadata.name),
    )
    return tuple(j for j in done[: max(0, len(done) - limit)] if _covered(j, recorded))


def _covered(job: Job, recorded: datetime | None) -> bool:
    t = job.scheduled_time
    return t is None or (recorded is not None and t <= recorded)
