"""The CronJob API, ``batch.tutorial.kubebuilder.io/v1``, and the parts of a Job it reads.

The schema is the kubebuilder book's (``config/crd.yaml``), declared as
:mod:`reconciler.typed` models: the reconciler reads CronJobs and Jobs through them.
Fields these models do not declare (``status.conditions``, most of a Job) are kept, not
dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from reconciler.resource import ResourceType
from reconciler.typed import Condition, Kind, KubeModel, KubeObject

CRONJOB = ResourceType("batch.tutorial.kubebuilder.io", "v1", "CronJob", "cronjobs")
JOB = ResourceType("batch", "v1", "Job", "jobs")

SCHEDULED_AT = "batch.tutorial.kubebuilder.io/scheduled-at"
"""Annotation on every Job we start: the scheduled time it runs for (RFC 3339)."""

MAX_ACTIVE_REFERENCES = 10
"""The CRD's ``maxItems`` on ``status.active``."""


def rfc3339(t: datetime) -> str:
    """A metav1.Time on the wire: UTC, whole seconds."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    """Start every run, even while earlier ones are still active."""
    FORBID = "Forbid"
    """Skip a run while an earlier one is active (it starts late, if still in time)."""
    REPLACE = "Replace"
    """Delete the active runs, then start the new one."""


DEFAULT_CONCURRENCY_POLICY = ConcurrencyPolicy.ALLOW
DEFAULT_SUSPEND = False
DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT = 3
DEFAULT_FAILED_JOBS_HISTORY_LIMIT = 1
"""The book's defaults, which its defaulting webhook writes into every CronJob (as
Kubernetes' own CronJob defaults its history limits to 3 and 1). The model reads an unset
field as the same value, so a CronJob stored without the webhook behaves as one stored
with it."""


class CronJobSpec(KubeModel):
    schedule: str
    """Checked by :func:`examples.cronjob.cron.parse_cron` (the validating webhook)."""
    starting_deadline_seconds: int | None = None
    concurrency_policy: ConcurrencyPolicy = DEFAULT_CONCURRENCY_POLICY
    suspend: bool = DEFAULT_SUSPEND
    job_template: dict[str, Any] = Field(default_factory=dict)
    """A batch/v1 JobTemplateSpec, copied into each Job as it is."""
    successful_jobs_history_limit: int = DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT
    """Successful finished Jobs to keep, the newest."""
    failed_jobs_history_limit: int = DEFAULT_FAILED_JOBS_HISTORY_LIMIT


class ObjectReference(KubeModel):
    api_version: str = JOB.api_version
    kind: str = JOB.kind
    name: str
    namespace: str
    uid: str


class CronJobStatus(KubeModel):
    active: list[ObjectReference] = Field(default_factory=list)
    """The running Jobs, oldest first; at most :data:`MAX_ACTIVE_REFERENCES`, the newest."""
    last_schedule_time: datetime | None = None
    """The latest scheduled time a Job was started for; never goes back."""

    def to_json(self) -> dict[str, Any]:
        """The fields this controller owns, as a merge patch: empty ones are ``null``,
        which deletes them (the CRD wants ``active`` absent rather than empty)."""
        t = self.last_schedule_time
        return {
            "active": [
                ref.model_dump(include={"api_version", "kind", "name", "namespace", "uid"})
                for ref in self.active
            ]
            or None,
            "lastScheduleTime": rfc3339(t) if t else None,
        }


class CronJob(KubeObject):
    spec: CronJobSpec
    status: CronJobStatus = Field(default_factory=CronJobStatus)


class JobStatus(KubeModel):
    conditions: list[Condition] = Field(default_factory=list)
    start_time: datetime | None = None


class Job(KubeObject):
    status: JobStatus = Field(default_factory=JobStatus)

    @property
    def finished(self) -> Literal["Complete", "Failed"] | None:
        """How the Job ended, or None while it runs (a terminal condition is True)."""
        for c in self.status.conditions:
            if c.status == "True" and c.type == "Complete":
                return "Complete"
            if c.status == "True" and c.type == "Failed":
                return "Failed"
        return None

    @property
    def scheduled_time(self) -> datetime | None:
        """The run this Job is for; None when the annotation is absent or unreadable."""
        raw = self.metadata.annotations.get(SCHEDULED_AT)
        try:
            return datetime.fromisoformat(raw) if raw else None
        except ValueError:
            return None

    @property
    def reference(self) -> ObjectReference:
        m = self.metadata
        return ObjectReference(name=m.name, namespace=m.namespace, uid=m.uid)


CRONJOBS = Kind(CRONJOB, CronJob)
JOBS = Kind(JOB, Job)
