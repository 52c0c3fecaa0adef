"""The CronJob's webhooks: defaulting, validation, and conversion to ``v2``.

The kubebuilder book's ``internal/webhook/v1/cronjob_webhook.go``, and its ``cmd/main.go``
wiring (``SetupCronJobWebhookWithManager``), on :mod:`reconciler.webhook`:

- :class:`CronJobDefaulter` fills what the user left out: ``concurrencyPolicy: Allow``,
  ``suspend: false``, ``successfulJobsHistoryLimit: 3``, ``failedJobsHistoryLimit: 1``
  (the book's values; the model reads an unset field as the same, see
  :data:`examples.cronjob.api.DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT`);
- :class:`CronJobValidator` refuses, on create and update, a name longer than 52
  characters (a Job is named ``<cronjob>-<unix time>``, 11 more, and the Job controller
  puts a Job's name in a label of its Pods, at most 63) and a schedule the book's cron
  parser refuses, with the book's field paths and messages; deletes pass;
- :func:`setup_webhooks` registers both for ``v1`` and the ``v2`` conversion.

The book registers a second pair for ``v2`` (``internal/webhook/v2``). Ours serve ``v1``
only: a webhook configuration's ``matchPolicy: Equivalent`` (admissionregistration/v1's
default) makes the API server convert a ``v2`` request to ``v1`` through the conversion
webhook, call these, and convert the defaulted object back. One set of rules, one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from examples.cronjob import conversion
from examples.cronjob.api import (
    CRONJOBS,
    DEFAULT_CONCURRENCY_POLICY,
    DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
    DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
    DEFAULT_SUSPEND,
    ConcurrencyPolicy,
    CronJob,
)
from examples.cronjob.cron import ScheduleError, parse_cron
from reconciler import Manager
from reconciler.webhook import FieldError, Invalid, Warnings, WebhookBuilder

__all__ = [
    "MAX_NAME_LENGTH",
    "CronJobDefaulter",
    "CronJobValidator",
    "setup_webhooks",
    "validate",
]

log = structlog.get_logger("examples.cronjob.webhooks")

MAX_NAME_LENGTH = 63 - 11
"""The book's ``validationutils.DNS1035LabelMaxLength - 11``: a Job's name, the CronJob's
and ``-<unix time>``, must fit a label value. Only the length is checked, as there."""


@dataclass(frozen=True)
class CronJobDefaulter:
    """Sets each of these fields the CronJob does not have (the book's defaults)."""

    concurrency_policy: ConcurrencyPolicy = DEFAULT_CONCURRENCY_POLICY
    suspend: bool = DEFAULT_SUSPEND
    successful_jobs_history_limit: int = DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT
    failed_jobs_history_limit: int = DEFAULT_FAILED_JOBS_HISTORY_LIMIT

    async def default(self, obj: CronJob) -> None:
        log.info("defaulting", name=obj.metadata.name, namespace=obj.metadata.namespace)
        spec, unset = obj.spec, set(type(obj.spec).model_fields) - obj.spec.model_fields_set
        # Assigning marks a field set, so the patch writes it even where the value is the
        # model's default: the point is that the stored object says it.
        if "concurrency_policy" in unset:
            spec.concurrency_policy = self.concurrency_policy
        if "suspend" in unset:
            spec.suspend = self.suspend
        if "successful_jobs_history_limit" in unset:
            spec.successful_jobs_history_limit = self.successful_jobs_history_limit
        if "failed_jobs_history_limit" in unset:
            spec.failed_jobs_history_limit = self.failed_jobs_history_limit


def validate(cronjob: CronJob) -> list[FieldError]:
    """What is wrong with ``cronjob``, as the book's ``validateCronJob`` finds it: the
    name first, then the schedule."""
    errors = []
    name = cronjob.metadata.name
    if len(name) > MAX_NAME_LENGTH:
        errors.append(
            FieldError("metadata.name", f"must be no more than {MAX_NAME_LENGTH} characters", name)
        )
    schedule = cronjob.spec.schedule
    try:
        parse_cron(schedule)
    except ScheduleError as err:
        errors.append(FieldError("spec.schedule", str(err), schedule))
    return errors


class CronJobValidator:
    """Refuses a CronJob :func:`validate` finds fault with (422 ``Invalid``)."""

    async def validate_create(self, obj: CronJob) -> Warnings:
        log.info("validating create", name=obj.metadata.name, namespace=obj.metadata.namespace)
        _refuse_if_invalid(obj)
        return []

    async def validate_update(self, old: CronJob, new: CronJob) -> Warnings:
        log.info("validating update", name=new.metadata.name, namespace=new.metadata.namespace)
        _refuse_if_invalid(new)
        return []

    async def validate_delete(self, obj: CronJob) -> Warnings:
        return []


def _refuse_if_invalid(cronjob: CronJob) -> None:
    errors = validate(cronjob)
    if errors:
        raise Invalid(CRONJOBS, cronjob.metadata.name, errors)


def setup_webhooks(mgr: Manager) -> None:
    """Serve the CronJob's webhooks from ``mgr``'s webhook server (the book's
    ``SetupCronJobWebhookWithManager``): defaulting and validation of ``v1``, and
    conversion between ``v1`` (the hub) and ``v2``."""
    (
        WebhookBuilder(mgr)
        .for_(CRONJOBS)
        .with_defaulter(CronJobDefaulter())
        .with_validator(CronJobValidator())
        .with_conversion(conversion.V2)
        .complete()
    )
