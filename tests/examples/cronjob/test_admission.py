"""Specification of ``examples/cronjob/webhooks.py``: what the defaulting and validating
webhooks answer, as AdmissionReviews (no server; ``test_webhooks.py`` has the API server).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from examples.cronjob.api import CRONJOBS, CronJob
from examples.cronjob.webhooks import CronJobDefaulter, CronJobValidator, validate
from reconciler.resource import Obj
from reconciler.webhook import FieldError, defaulting_handler, validating_handler

TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}


def cronjob(name: str = "backup", schedule: str = "*/5 * * * *", **spec: Any) -> Obj:
    return {
        "apiVersion": "batch.tutorial.kubebuilder.io/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"schedule": schedule, "jobTemplate": TEMPLATE, **spec},
    }


def review(obj: Obj, operation: str = "CREATE", old: Obj | None = None) -> Obj:
    request: Obj = {
        "uid": "req-1",
        "kind": {"group": "batch.tutorial.kubebuilder.io", "version": "v1", "kind": "CronJob"},
        "operation": operation,
        "object": obj,
    }
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


async def default(obj: Obj) -> list[dict[str, Any]]:
    """The JSON patch the defaulting webhook answers for a create of ``obj``."""
    answer = await defaulting_handler(CRONJOBS, CronJobDefaulter())(review(obj))
    response = answer["response"]
    assert response["allowed"] is True
    if "patch" not in response:
        return []
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


# -- defaulting ---------------------------------------------------------------------------
async def test_the_books_defaults_fill_what_is_missing() -> None:
    # concurrencyPolicy is missing here too: the CRD's schema default fills it before
    # the webhook is called, but the webhook does not rely on that.
    patch = await default(cronjob())
    assert sorted(patch, key=lambda op: op["path"]) == [
        {"op": "add", "path": "/spec/concurrencyPolicy", "value": "Allow"},
        {"op": "add", "path": "/spec/failedJobsHistoryLimit", "value": 1},
        {"op": "add", "path": "/spec/successfulJobsHistoryLimit", "value": 3},
        {"op": "add", "path": "/spec/suspend", "value": False},
    ]


async def test_fields_already_set_are_left_alone() -> None:
    full = cronjob(
        concurrencyPolicy="Forbid",
        suspend=True,
        successfulJobsHistoryLimit=0,
        failedJobsHistoryLimit=0,
    )
    assert await default(full) == []
    partial = cronjob(suspend=False, failedJobsHistoryLimit=5)
    assert sorted(op["path"] for op in await default(partial)) == [
        "/spec/concurrencyPolicy",
        "/spec/successfulJobsHistoryLimit",
    ]


async def test_the_defaults_are_the_defaulters_fields() -> None:
    defaulter = CronJobDefaulter(successful_jobs_history_limit=10)
    obj = CRONJOBS.parse(cronjob())
    await defaulter.default(obj)
    assert obj.spec.successful_jobs_history_limit == 10


def test_the_model_reads_a_cronjob_without_the_fields_as_the_webhook_writes_them() -> None:
    """So the controller behaves the same whether or not the webhook ran."""
    spec = CronJob.model_validate(cronjob()).spec
    defaulter = CronJobDefaulter()
    assert (
        spec.concurrency_policy,
        spec.suspend,
        spec.successful_jobs_history_limit,
        spec.failed_jobs_history_limit,
    ) == (
        defaulter.concurrency_policy,
        defaulter.suspend,
        defaulter.successful_jobs_history_limit,
        defaulter.failed_jobs_history_limit,
    )


# -- validation ---------------------------------------------------------------------------
def test_a_name_of_52_characters_passes_and_53_does_not() -> None:
    assert validate(CRONJOBS.parse(cronjob("a" * 52))) == []
    assert validate(CRONJOBS.parse(cronjob("a" * 53))) == [
        FieldError("metadata.name", "must be no more than 52 characters", "a" * 53)
    ]


def test_the_schedule_error_is_the_parsers_and_comes_after_the_names() -> None:
    assert validate(CRONJOBS.parse(cronjob("a" * 60, "* * *"))) == [
        FieldError("metadata.name", "must be no more than 52 characters", "a" * 60),
        FieldError("spec.schedule", "Expected exactly 5 fields, found 3: * * *", "* * *"),
    ]


async def validate_review(body: Obj) -> dict[str, Any]:
    answer = await validating_handler(CRONJOBS, CronJobValidator())(body)
    return dict(answer["response"])


async def test_a_refusal_is_422_invalid_with_the_api_servers_wording() -> None:
    response = await validate_review(review(cronjob(schedule="bad")))
    assert response["allowed"] is False
    status = response["status"]
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'CronJob.batch.tutorial.kubebuilder.io "backup" is invalid: '
        'spec.schedule: Invalid value: "bad": Expected exactly 5 fields, found 1: bad'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "bad": Expected exactly 5 fields, found 1: bad',
            "field": "spec.schedule",
        }
    ]


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
async def test_creates_and_updates_are_validated(operation: str) -> None:
    old = cronjob() if operation == "UPDATE" else None
    refused = await validate_review(review(cronjob(schedule="60 * * * *"), operation, old))
    assert refused["allowed"] is False
    allowed = await validate_review(review(cronjob(), operation, old))
    assert allowed["allowed"] is True


async def test_deletes_pass_even_for_a_cronjob_that_would_be_refused() -> None:
    body = review(cronjob(schedule="bad"), "DELETE")
    body["request"]["oldObject"] = body["request"].pop("object")
    assert (await validate_review(body))["allowed"] is True
