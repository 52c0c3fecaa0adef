"""Specification of ``examples/cronjob/conversion.py``: v1 (hub) ↔ v2 (spoke).

Pure functions, so the round trips are properties: v1 → v2 → v1 and v2 → v1 → v2 give
back the object they started from, whenever the schedule has a form in both versions;
and every schedule the webhook accepts keeps its meaning through v2.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.cronjob.api import CRONJOBS
from examples.cronjob.api_v2 import CRONJOBS_V2, CronSchedule
from examples.cronjob.conversion import V2, from_hub, schedule_to_v1, schedule_to_v2, to_hub
from examples.cronjob.cron import DESCRIPTORS, go_fields, parse_cron
from reconciler.resource import Obj
from reconciler.webhook import ConversionError, Conversions
from tests.examples.cronjob.test_cron import expressions

TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
METADATA = {"name": "backup", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}


def v1(schedule: str, **extra: Any) -> Obj:
    spec = {"schedule": schedule, "jobTemplate": TEMPLATE, **extra.pop("spec", {})}
    return {"apiVersion": "batch.tutorial.kubebuilder.io/v1", "kind": "CronJob"} | {
        "metadata": METADATA,
        "spec": spec,
        **extra,
    }


def v2(schedule: dict[str, str], **extra: Any) -> Obj:
    spec = {"schedule": schedule, "jobTemplate": TEMPLATE, **extra.pop("spec", {})}
    return {"apiVersion": "batch.tutorial.kubebuilder.io/v2", "kind": "CronJob"} | {
        "metadata": METADATA,
        "spec": spec,
        **extra,
    }


def v1_to_v2(obj: Obj) -> Obj:
    return CRONJOBS_V2.dump(from_hub(CRONJOBS.parse(obj)))


def v2_to_v1(obj: Obj) -> Obj:
    return CRONJOBS.dump(to_hub(CRONJOBS_V2.parse(obj)))


# -- the schedule -----------------------------------------------------------------------
def test_the_books_sample_converts_both_ways() -> None:
    assert v2_to_v1(v2({"minute": "*/1"}))["spec"]["schedule"] == "*/1 * * * *"
    assert v1_to_v2(v1("*/1 * * * *"))["spec"]["schedule"] == {"minute": "*/1"}
    assert v1_to_v2(v1("0 9-17 1,15 jan mon-fri"))["spec"]["schedule"] == {
        "minute": "0",
        "hour": "9-17",
        "dayOfMonth": "1,15",
        "month": "jan",
        "dayOfWeek": "mon-fri",
    }


def test_everything_but_the_schedule_is_carried_over_as_it_came() -> None:
    status = {
        "active": [{"kind": "Job", "name": "j", "namespace": "ns", "uid": "u-2"}],
        "lastScheduleTime": "2026-03-02T09:00:00Z",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    spec = {"startingDeadlineSeconds": 60, "concurrencyPolicy": "Forbid", "futureField": [1]}
    obj = v1("0 * * * *", spec=spec, status=status, extra={"kept": True})
    converted = v1_to_v2(obj)
    assert converted == v2({"minute": "0"}, spec=spec, status=status, extra={"kept": True})


def test_conversion_adds_no_defaults() -> None:
    """An unset suspend or history limit stays unset: the webhook defaults, not this."""
    assert set(v1_to_v2(v1("* * * * *"))["spec"]) == {"schedule", "jobTemplate"}
    assert set(v2_to_v1(v2({}))["spec"]) == {"schedule", "jobTemplate"}


@pytest.mark.parametrize("descriptor", sorted(DESCRIPTORS))
def test_a_descriptor_becomes_the_fields_it_stands_for(descriptor: str) -> None:
    fields = schedule_to_v2(descriptor)
    assert schedule_to_v1(fields) == DESCRIPTORS[descriptor]
    assert parse_cron(schedule_to_v1(fields)) == parse_cron(descriptor)


@pytest.mark.parametrize("schedule", ["bad", "@every 5m", "", "* * * * * *", "@reboot", " @hourly"])
def test_a_schedule_without_five_fields_is_refused(schedule: str) -> None:
    with pytest.raises(ConversionError) as refused:
        schedule_to_v2(schedule)
    assert str(refused.value) == (
        f"cannot convert spec.schedule {schedule!r} to v2: "
        "v2 holds five cron fields, or a descriptor such as @hourly"
    )


@pytest.mark.parametrize("field", ["1 2", "", "\u00a05"])
def test_a_v2_field_that_is_not_one_cron_field_is_refused(field: str) -> None:
    with pytest.raises(ConversionError) as refused:
        schedule_to_v1(CronSchedule(day_of_month=field))
    assert str(refused.value) == (
        f"spec.schedule.dayOfMonth: {field!r} is not one cron field "
        "(it must not be empty or hold white space)"
    )


# -- round trips ------------------------------------------------------------------------
# One cron field: any text Go's strings.Fields keeps whole.
field_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8
).filter(lambda t: go_fields(t) == [t])
optional_spec = st.fixed_dictionaries(
    {},
    optional={
        "startingDeadlineSeconds": st.integers(0, 10**6),
        "concurrencyPolicy": st.sampled_from(["Allow", "Forbid", "Replace"]),
        "suspend": st.booleans(),
        "successfulJobsHistoryLimit": st.integers(0, 10),
        "failedJobsHistoryLimit": st.integers(0, 10),
        "unknownToBoth": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    },
)
optional_status = st.fixed_dictionaries(
    {},
    optional={
        "lastScheduleTime": st.sampled_from(["2026-03-02T09:00:00Z", "2030-12-31T23:59:59Z"]),
        "active": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(max_size=5),
                    "namespace": st.just("ns"),
                    "uid": st.uuids().map(str),
                }
            ),
            max_size=2,
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(field_text, min_size=5, max_size=5),
    spec=optional_spec,
    status=st.none() | optional_status,
)
def test_v1_to_v2_to_v1_is_the_same_object(
    fields: list[str], spec: dict[str, Any], status: dict[str, Any] | None
) -> None:
    """For every schedule of five fields separated by single spaces, valid or not."""
    obj = v1(" ".join(fields), spec=spec, **({} if status is None else {"status": status}))
    assert v2_to_v1(v1_to_v2(obj)) == obj


@settings(max_examples=300, deadline=None)
@given(
    schedule=st.dictionaries(
        st.sampled_from(["minute", "hour", "dayOfMonth", "month", "dayOfWeek"]),
        field_text.filter(lambda t: t != "*"),
    ),
    spec=optional_spec,
    status=st.none() | optional_status,
)
def test_v2_to_v1_to_v2_is_the_same_object(
    schedule: dict[str, str], spec: dict[str, Any], status: dict[str, Any] | None
) -> None:
    """For every v2 schedule whose fields are single cron fields other than ``*`` (an
    explicit ``*`` comes back absent: the same schedule)."""
    obj = v2(schedule, spec=spec, **({} if status is None else {"status": status}))
    assert v1_to_v2(v2_to_v1(obj)) == obj


@settings(max_examples=200, deadline=None)
@given(schedule=expressions | st.sampled_from(sorted(DESCRIPTORS)))
def test_a_valid_schedule_means_the_same_after_a_trip_through_v2(schedule: str) -> None:
    assert parse_cron(v2_to_v1(v1_to_v2(v1(schedule)))["spec"]["schedule"]) == parse_cron(schedule)


# -- through the webhook's handler (no server) -------------------------------------------
async def convert(objects: list[Obj], desired: str) -> dict[str, Any]:
    conversions = Conversions()
    conversions.add(CRONJOBS, V2)
    review = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "r-1", "desiredAPIVersion": desired, "objects": objects},
    }
    answer = await conversions.handler()(review)
    return dict(answer["response"])


async def test_a_review_converts_every_object_and_keeps_metadata() -> None:
    objects = [v1("*/5 9-17 * * *"), v2({"minute": "0"})]
    response = await convert(objects, "batch.tutorial.kubebuilder.io/v2")
    assert response["result"] == {"status": "Success"}
    assert response["convertedObjects"] == [v2({"minute": "*/5", "hour": "9-17"}), objects[1]]


async def test_one_object_v2_cannot_express_fails_the_whole_review() -> None:
    objects = [v1("0 * * * *"), v1("bad")]
    response = await convert(objects, "batch.tutorial.kubebuilder.io/v2")
    assert "convertedObjects" not in response
    assert response["result"] == {
        "status": "Failure",
        "message": "cannot convert spec.schedule 'bad' to v2: "
        "v2 holds five cron fields, or a descriptor such as @hourly",
    }
