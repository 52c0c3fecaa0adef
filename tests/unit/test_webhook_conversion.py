"""Conversion through a hub: round trips, same-version passthrough, metadata kept, errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from reconciler.resource import Obj, ResourceType
from reconciler.typed import Kind, KubeModel, KubeObject, ObjectMeta
from reconciler.webhook.conversion import (
    ConversionError,
    ConversionHandler,
    Conversions,
    Spoke,
)
from reconciler.webhook.server import BadRequest, PanicRecovered

GROUP = "batch.tutorial.kubebuilder.io"


def rt(version: str, kind: str = "CronJob") -> ResourceType:
    return ResourceType(GROUP, version, kind, kind.lower() + "s")


# v1 (the hub) spells the schedule as one cron string; v2 splits it into fields.
class SpecV1(KubeModel):
    schedule: str = ""
    suspend: bool = False


class CronJobV1(KubeObject):
    spec: SpecV1 = Field(default_factory=SpecV1)


class ScheduleV2(KubeModel):
    minute: str = "*"
    hour: str = "*"
    day_of_month: str = "*"
    month: str = "*"
    day_of_week: str = "*"


class SpecV2(KubeModel):
    schedule: ScheduleV2 = Field(default_factory=ScheduleV2)
    paused: bool = False


class CronJobV2(KubeObject):
    spec: SpecV2 = Field(default_factory=SpecV2)


# v3 keeps the string but renames the field.
class SpecV3(KubeModel):
    cron: str = ""
    suspend: bool = False


class CronJobV3(KubeObject):
    spec: SpecV3 = Field(default_factory=SpecV3)


V1, V2, V3 = Kind(rt("v1"), CronJobV1), Kind(rt("v2"), CronJobV2), Kind(rt("v3"), CronJobV3)


def v2_to_v1(obj: CronJobV2) -> CronJobV1:
    s = obj.spec.schedule
    cron = " ".join([s.minute, s.hour, s.day_of_month, s.month, s.day_of_week])
    # The metadata a spoke function sets is ignored: the webhook keeps what came.
    return CronJobV1(
        metadata=ObjectMeta(name="renamed"), spec=SpecV1(schedule=cron, suspend=obj.spec.paused)
    )


def v1_to_v2(obj: CronJobV1) -> CronJobV2:
    parts = obj.spec.schedule.split()
    if len(parts) != 5:
        raise ValueError(f"schedule {obj.spec.schedule!r} has no 5 fields")
    minute, hour, dom, month, dow = parts
    schedule = ScheduleV2(minute=minute, hour=hour, day_of_month=dom, month=month, day_of_week=dow)
    return CronJobV2(spec=SpecV2(schedule=schedule, paused=obj.spec.suspend))


def v3_to_v1(obj: CronJobV3) -> CronJobV1:
    return CronJobV1(spec=SpecV1(schedule=obj.spec.cron, suspend=obj.spec.suspend))


def v1_to_v3(obj: CronJobV1) -> CronJobV3:
    return CronJobV3(spec=SpecV3(cron=obj.spec.schedule, suspend=obj.spec.suspend))


def conversions() -> Conversions:
    c = Conversions()
    c.add(V1, Spoke(V2, v2_to_v1, v1_to_v2))
    c.add(V1, Spoke(V3, v3_to_v1, v1_to_v3))  # more spokes for the same hub are fine
    return c


METADATA = {
    "name": "nightly",
    "namespace": "default",
    "uid": "u-1",
    "resourceVersion": "42",
    "creationTimestamp": "2024-01-01T00:00:00Z",
    "labels": {"team": "a"},
    "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
}


def v1(schedule: str = "*/5 1 * * 0", suspend: bool = True) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CronJob",
        "metadata": copy.deepcopy(METADATA),
        "spec": {"schedule": schedule, "suspend": suspend},
    }


def v2(minute: str = "*/5", paused: bool = True) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v2",
        "kind": "CronJob",
        "metadata": copy.deepcopy(METADATA),
        "spec": {
            "schedule": {
                "minute": minute,
                "hour": "1",
                "dayOfMonth": "*",
                "month": "*",
                "dayOfWeek": "0",
            },
            "paused": paused,
        },
    }


def review(desired: str, *objects: Obj, api_version: str = "apiextensions.k8s.io/v1") -> Obj:
    return {
        "apiVersion": api_version,
        "kind": "ConversionReview",
        "request": {"uid": "conv-1", "desiredAPIVersion": desired, "objects": list(objects)},
    }


async def convert(desired: str, *objects: Obj) -> Any:
    answer = await conversions().handler()(review(desired, *objects))
    assert answer["apiVersion"] == "apiextensions.k8s.io/v1"
    assert answer["kind"] == "ConversionReview"
    assert answer["response"]["uid"] == "conv-1"
    return answer["response"]


async def test_spoke_to_hub_and_back() -> None:
    resp = await convert(f"{GROUP}/v1", v2())
    assert resp["result"] == {"status": "Success"}
    assert resp["convertedObjects"] == [v1()]
    back = await convert(f"{GROUP}/v2", v1())
    assert back["convertedObjects"] == [v2()]


async def test_spoke_to_spoke_goes_through_the_hub_and_keeps_order() -> None:
    resp = await convert(f"{GROUP}/v3", v2(minute="1"), v1(schedule="2 1 * * 0"), v2(minute="3"))
    crons = [o["spec"]["cron"] for o in resp["convertedObjects"]]
    assert crons == ["1 1 * * 0", "2 1 * * 0", "3 1 * * 0"]
    assert {o["apiVersion"] for o in resp["convertedObjects"]} == {f"{GROUP}/v3"}


async def test_same_version_is_returned_unchanged() -> None:
    odd = v2()
    odd["spec"]["unknownToTheModel"] = {"kept": None}
    resp = await convert(f"{GROUP}/v2", odd)
    assert resp["convertedObjects"] == [odd]


async def test_metadata_is_kept_as_it_came() -> None:
    resp = await convert(f"{GROUP}/v1", v2())
    assert resp["convertedObjects"][0]["metadata"] == METADATA  # not "renamed"


async def test_a_value_error_fails_the_review_with_its_message() -> None:
    resp = await convert(f"{GROUP}/v2", v1(), v1(schedule="@daily"))
    assert resp["result"] == {
        "status": "Failure",
        "message": "schedule '@daily' has no 5 fields",
    }
    assert "convertedObjects" not in resp


@pytest.mark.parametrize(
    ("desired", "obj", "message"),
    [
        (f"{GROUP}/v9", v1(), "no version v9 of CronJob.batch.tutorial.kubebuilder.io"),
        ("apps/v1", v1(), "to group 'apps'"),
        (f"{GROUP}/v1", {**v1(), "kind": "Job"}, "no conversion is registered for Job."),
        (f"{GROUP}/v2", {"kind": "CronJob"}, "object has no apiVersion or kind"),
        (f"{GROUP}/v2", {**v1(), "spec": {"suspend": "maybe"}}, "spec.suspend"),
    ],
)
async def test_what_cannot_be_converted_fails_with_a_reason(
    desired: str, obj: Obj, message: str
) -> None:
    resp = await convert(desired, obj)
    assert resp["result"]["status"] == "Failure"
    assert message in resp["result"]["message"]


async def test_a_bug_in_a_spoke_is_a_recovered_panic() -> None:
    def broken(obj: CronJobV1) -> CronJobV3:
        raise ZeroDivisionError

    c = Conversions()
    c.add(V1, Spoke(V3, v3_to_v1, broken))
    with pytest.raises(PanicRecovered) as caught:
        await c.handler()(review(f"{GROUP}/v3", v1()))
    assert caught.value.webhook == "conversion"
    assert caught.value.review["response"] == {
        "uid": "conv-1",
        "result": {"status": "Failure", "message": "internal error occurred during conversion"},
    }


async def test_a_spoke_returning_the_wrong_model_is_a_bug() -> None:
    c = Conversions()
    c.add(V1, Spoke(V3, v3_to_v1, lambda obj: obj))
    with pytest.raises(PanicRecovered) as caught:
        await c.handler()(review(f"{GROUP}/v3", v1()))
    assert isinstance(caught.value.__cause__, TypeError)


@pytest.mark.parametrize(
    "body",
    [
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview"},
        review(f"{GROUP}/v1", v1()) | {"apiVersion": "apiextensions.k8s.io/v2"},
        {**review(f"{GROUP}/v1"), "request": {"uid": "u", "desiredAPIVersion": "v1"}},
        {**review(f"{GROUP}/v1"), "request": {"uid": "u", "desiredAPIVersion": 1, "objects": []}},
        {
            **review(f"{GROUP}/v1"),
            "request": {"uid": "u", "desiredAPIVersion": "v", "objects": [1]},
        },
    ],
)
async def test_a_body_that_is_no_conversion_review_is_a_bad_request(body: Obj) -> None:
    with pytest.raises(BadRequest):
        await conversions().handler()(body)


def test_one_hub_per_kind_and_each_version_once() -> None:
    c = conversions()
    with pytest.raises(ValueError, match="already has hub version v1"):
        c.add(V2)
    with pytest.raises(ValueError, match="version v2 of CronJob"):
        c.add(V1, Spoke(V2, v2_to_v1, v1_to_v2))
    with pytest.raises(ValueError, match="version v1 of"):
        Conversions().add(V1, Spoke(Kind(rt("v1"), CronJobV3), v3_to_v1, v1_to_v3))
    other = Kind(rt("v2", "Job"), CronJobV2)
    with pytest.raises(ValueError, match="is not a version of CronJob"):
        Conversions().add(V1, Spoke(other, v2_to_v1, v1_to_v2))
    # A refused add changes nothing: v3 was not half-registered.
    fresh = Conversions()
    with pytest.raises(ValueError):
        fresh.add(V1, Spoke(V3, v3_to_v1, v1_to_v3), Spoke(V3, v3_to_v1, v1_to_v3))
    with pytest.raises(ConversionError, match="no conversion is registered for CronJob"):
        fresh.convert(v1(), f"{GROUP}/v3")


def test_handler_serves_kinds_added_after_it_was_made() -> None:
    c = Conversions()
    handler = c.handler()
    assert isinstance(handler, ConversionHandler)
    assert handler.conversions is c
    c.add(V1, Spoke(V3, v3_to_v1, v1_to_v3))
    assert c.convert(v1(), f"{GROUP}/v3")["spec"] == {"cron": "*/5 1 * * 0", "suspend": True}


field = st.text(alphabet="0123456789*/,-", min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(field, min_size=5, max_size=5), suspend=st.booleans())
def test_round_trips_through_every_version(fields: list[str], suspend: bool) -> None:
    c = conversions()
    start = v1(schedule=" ".join(fields), suspend=suspend)
    for first in ("v2", "v3"):
        for second in ("v2", "v3", "v1"):
            there = c.convert(start, f"{GROUP}/{first}")
            assert there["apiVersion"] == f"{GROUP}/{first}"
            via = c.convert(there, f"{GROUP}/{second}")
            assert c.convert(via, f"{GROUP}/v1") == start
