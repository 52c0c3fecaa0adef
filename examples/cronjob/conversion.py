"""Conversion between the CronJob's versions: ``v1`` is the hub, ``v2`` a spoke.

:data:`V2` pairs two pure functions, as the book's ``ConvertTo``/``ConvertFrom`` of
``api/v2/cronjob_conversion.go``:

- ``to_hub`` (v2 → v1) joins the five fields with single spaces, ``*`` for each one
  absent: ``{minute: "*/5", hour: "9-17"}`` → ``"*/5 9-17 * * *"``; a field that is empty
  or holds white space is refused (the book would join ``"1 2"`` into six fields);
- ``from_hub`` (v1 → v2) splits the schedule where the book's cron parser splits it
  (Go's ``strings.Fields``) and leaves out each ``*``.

Everything else (spec fields, status, fields neither model declares) is carried over as
it came, and a field the object did not have is not added: conversion never writes
defaults. The webhook keeps metadata as it came.

**Round trips.** v1 → v2 → v1 returns the same object when the schedule is five fields
separated by single spaces; v2 → v1 → v2 does when no field is ``*`` (absent and ``*``
are one thing in v2). A v1 schedule that is a descriptor becomes the five fields it
stands for (``@hourly`` → ``{minute: "0"}``, read back in v1 as ``"0 * * * *"``, the same
schedule), where the book's ``ConvertFrom`` fails on anything but five fields.

**What v2 cannot express**: a v1 schedule that is neither five fields nor one of the
descriptors. The validating webhook refuses such a schedule, so only a CronJob stored
while the webhook was off can have one; reading it as v2 fails, and the API server
answers that read with the message (``conversion webhook for
batch.tutorial.kubebuilder.io/v1, Kind=CronJob failed: …``). Reading it as v1 works.
"""

from __future__ import annotations

from typing import Any

from examples.cronjob import api, api_v2
from examples.cronjob.cron import DESCRIPTORS, go_fields
from reconciler.typed import KubeModel
from reconciler.webhook.conversion import ConversionError, Spoke

FIELDS = ("minute", "hour", "day_of_month", "month", "day_of_week")
"""v2's schedule fields, in the order of a five-field expression."""


def schedule_to_v1(schedule: api_v2.CronSchedule) -> str:
    """The five fields joined; :class:`ConversionError` for a field that is not one cron
    field (empty, or white space inside), which would shift the fields after it."""
    fields = []
    for name in FIELDS:
        value = getattr(schedule, name)
        if value is not None and go_fields(value) != [value]:
            path = api_v2.CronSchedule.model_fields[name].alias
            raise ConversionError(
                f"spec.schedule.{path}: {value!r} is not one cron field "
                "(it must not be empty or hold white space)"
            )
        fields.append("*" if value is None else value)
    return " ".join(fields)


def schedule_to_v2(schedule: str) -> api_v2.CronSchedule:
    """``schedule`` as v2 fields; :class:`ConversionError` when it has no such form."""
    fields = go_fields(DESCRIPTORS.get(schedule, schedule))
    if len(fields) != len(FIELDS):
        raise ConversionError(
            f"cannot convert spec.schedule {schedule!r} to v2: "
            "v2 holds five cron fields, or a descriptor such as @hourly"
        )
    return api_v2.CronSchedule.model_validate(
        {name: field for name, field in zip(FIELDS, fields, strict=True) if field != "*"}
    )


def to_hub(cronjob: api_v2.CronJob) -> api.CronJob:
    body = _dump(cronjob)
    body["spec"]["schedule"] = schedule_to_v1(cronjob.spec.schedule)
    body["apiVersion"] = api.CRONJOB.api_version
    return api.CronJob.model_validate(body)


def from_hub(cronjob: api.CronJob) -> api_v2.CronJob:
    body = _dump(cronjob)
    body["spec"]["schedule"] = _dump(schedule_to_v2(cronjob.spec.schedule))
    body["apiVersion"] = api_v2.CRONJOB_V2.api_version
    return api_v2.CronJob.model_validate(body)


def _dump(model: KubeModel) -> dict[str, Any]:
    # What the object had, unknown fields included, and no default it did not have.
    out: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return out


V2 = Spoke(api_v2.CRONJOBS_V2, to_hub=to_hub, from_hub=from_hub)
"""``v2`` as a spoke of the ``v1`` hub, for ``WebhookBuilder.with_conversion``."""
