"""The CronJob API, version ``v2``: the kubebuilder book's multi-version tutorial.

The same CronJob as ``v1`` (:mod:`examples.cronjob.api`) but for ``spec.schedule``, which
is an object of the five cron fields instead of one string::

    schedule:            # v1: schedule: "*/5 9-17 * * *"
      minute: "*/5"
      hour: "9-17"

An absent field means ``*``. ``v1`` stays the storage version and the hub: the API server
stores every CronJob as ``v1`` and asks the conversion webhook
(:mod:`examples.cronjob.conversion`) for ``v2`` whenever a client reads or writes that
version. The controller works on ``v1`` only.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from examples.cronjob.api import (
    CRONJOB,
    DEFAULT_CONCURRENCY_POLICY,
    DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
    DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
    DEFAULT_SUSPEND,
    ConcurrencyPolicy,
    CronJobStatus,
)
from reconciler.resource import ResourceType
from reconciler.typed import Kind, KubeModel, KubeObject

CRONJOB_V2 = ResourceType(CRONJOB.group, "v2", CRONJOB.kind, CRONJOB.plural)


class CronSchedule(KubeModel):
    """One cron field each, as written in a five-field expression; None is ``*``."""

    minute: str | None = None
    hour: str | None = None
    day_of_month: str | None = None
    month: str | None = None
    day_of_week: str | None = None


class CronJobSpec(KubeModel):
    """``v1``'s spec with a structured schedule; every other field is the same."""

    schedule: CronSchedule
    starting_deadline_seconds: int | None = None
    concurrency_policy: ConcurrencyPolicy = DEFAULT_CONCURRENCY_POLICY
    suspend: bool = DEFAULT_SUSPEND
    job_template: dict[str, Any] = Field(default_factory=dict)
    successful_jobs_history_limit: int = DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT
    failed_jobs_history_limit: int = DEFAULT_FAILED_JOBS_HISTORY_LIMIT


class CronJob(KubeObject):
    spec: CronJobSpec
    status: CronJobStatus = Field(default_factory=CronJobStatus)


CRONJOBS_V2 = Kind(CRONJOB_V2, CronJob)
