"""Specification of reconciler.typed: models over the dict path, and what a round trip keeps."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from controllers.workspace.model import Workspace
from reconciler.client import PatchType
from reconciler.resource import Obj, ResourceType
from reconciler.typed import (
    Condition,
    Kind,
    KubeModel,
    KubeObject,
    ObjectMeta,
    ParseError,
    TypedCache,
    TypedClient,
    parse,
)

RT = ResourceType("batch.example.io", "v1", "CronJob", "cronjobs")


class JobTemplate(KubeModel):
    image: str
    args: list[str] = Field(default_factory=list)


class CronJobSpec(KubeModel):
    schedule: str
    suspend: bool = False
    template: JobTemplate | None = None
    pod_ip: str = Field(default="", alias="podIP")


class CronJobStatus(KubeModel):
    active: int = 0
    last_schedule_time: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)


class CronJob(KubeObject):
    spec: CronJobSpec
    status: CronJobStatus = Field(default_factory=CronJobStatus)


CRON_JOBS = Kind(RT, CronJob)


def stored() -> Obj:
    """A CronJob as the API server returns it, with fields the model does not declare at
    every level (top, metadata, spec, a nested model, list items, status)."""
    return {
        "apiVersion": "batch.example.io/v1",
        "kind": "CronJob",
        "metadata": {
            "name": "nightly",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2026-01-01T10:00:00Z",
            "labels": {"app": "x"},
            "annotations": {"note": "n"},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "o",
                    "uid": "u-0",
                    "controller": True,
                    "futureRefField": 1,
                }
            ],
            "finalizers": ["example.io/f"],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "schedule": "0 1 * * *",
            "podIP": "10.0.0.1",
            "template": {"image": "busybox", "args": ["a"], "resources": {"cpu": "1"}},
            "concurrencyPolicy": "Forbid",
        },
        "status": {
            "active": 1,
            "lastScheduleTime": "2026-01-02T01:00:00.123456Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ok",
                    "message": "",
                    "lastTransitionTime": "2026-01-02T01:00:01Z",
                    "severity": "Info",
                }
            ],
            "lastSuccessfulTime": "2026-01-02T01:00:05Z",
        },
        "futureTopLevel": {"a": [1, None, {"b": None}]},
    }


# -- reading --------------------------------------------------------------------------
def test_reads_declared_fields_by_their_camel_case_names() -> None:
    job = CRON_JOBS.parse(stored())
    assert job.metadata.name == "nightly"
    assert job.metadata.resource_version == "42"
    assert job.metadata.creation_timestamp == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert job.metadata.owner_references[0].controller is True
    assert job.spec.schedule == "0 1 * * *"
    assert job.spec.pod_ip == "10.0.0.1"  # an explicit alias where camelCase is wrong
    assert job.spec.template is not None
    assert job.spec.template.image == "busybox"
    assert job.status.conditions[0].reason == "Ok"
    assert not job.metadata.is_deleting


def test_models_are_built_by_field_name() -> None:
    # (A field with an explicit alias takes the alias as its keyword for mypy.)
    status = CronJobStatus(last_schedule_time=datetime(2026, 1, 1, tzinfo=UTC))
    job = CronJob(spec=CronJobSpec(schedule="@daily", podIP="1.2.3.4"), status=status)
    assert job.spec.pod_ip == "1.2.3.4"
    assert job.model_dump(mode="json", exclude_unset=True) == {
        "spec": {"schedule": "@daily", "podIP": "1.2.3.4"},
        "status": {"lastScheduleTime": "2026-01-01T00:00:00Z"},
    }


def test_a_json_null_reads_as_unset() -> None:
    raw = {"spec": {"schedule": "s", "suspend": None, "template": None}, "status": None}
    job = CRON_JOBS.parse(raw)
    assert job.spec.suspend is False
    assert job.spec.template is None
    assert job.status == CronJobStatus()
    assert CRON_JOBS.dump(job) == {
        "apiVersion": RT.api_version,
        "kind": RT.kind,
        "spec": {"schedule": "s"},
    }


def test_a_missing_condition_status_is_unknown() -> None:
    assert Condition.model_validate({"type": "Ready"}).status == "Unknown"


# -- round trips ------------------------------------------------------------------------
def test_a_round_trip_keeps_every_field_the_model_does_not_declare() -> None:
    raw = stored()
    assert CRON_JOBS.dump(CRON_JOBS.parse(raw)) == raw


def test_a_changed_object_keeps_the_fields_the_model_does_not_declare() -> None:
    job = CRON_JOBS.parse(stored())
    job.spec.suspend = True
    job.metadata.labels["tier"] = "batch"
    job.status.conditions[0].status = "False"

    out = CRON_JOBS.dump(job)

    expected = stored()
    expected["spec"]["suspend"] = True
    expected["metadata"]["labels"]["tier"] = "batch"
    expected["status"]["conditions"][0]["status"] = "False"
    assert out == expected


def test_a_round_trip_invents_no_defaults() -> None:
    raw: Obj = {"apiVersion": RT.api_version, "kind": RT.kind, "spec": {"schedule": "s"}}
    assert CRON_JOBS.dump(CRON_JOBS.parse(raw)) == raw


def test_a_default_changed_in_place_is_written() -> None:
    # Left at their defaults, then changed without assignment: still written (rule 4).
    job = CronJob(metadata=ObjectMeta(name="j"), spec=CronJobSpec(schedule="s"))
    job.metadata.labels["app"] = "x"
    job.status.conditions.append(Condition(type="Ready", status="True"))
    out = CRON_JOBS.dump(job)
    assert out["metadata"] == {"name": "j", "labels": {"app": "x"}}
    assert out["status"] == {"conditions": [{"type": "Ready", "status": "True"}]}
    assert "suspend" not in out["spec"]  # untouched defaults stay unwritten


def test_dump_fills_in_api_version_and_kind_but_never_overrides_them() -> None:
    job = CronJob(spec=CronJobSpec(schedule="s"))
    assert CRON_JOBS.dump(job)["apiVersion"] == "batch.example.io/v1"
    other = CronJob(api_version="batch.example.io/v2", spec=CronJobSpec(schedule="s"))
    assert CRON_JOBS.dump(other)["apiVersion"] == "batch.example.io/v2"


def test_timestamps_are_written_as_rfc3339() -> None:
    job = CronJob(spec=CronJobSpec(schedule="s"))
    job.status.last_schedule_time = datetime(2026, 3, 1, 2, 3, 4, tzinfo=UTC)
    assert CRON_JOBS.dump(job)["status"] == {"lastScheduleTime": "2026-03-01T02:03:04Z"}


JSON = st.recursive(
    st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
# Unknown keys: anything but a declared field's JSON name (or its Python name).
DECLARED: set[str | None] = {
    name
    for model in (CronJob, ObjectMeta, CronJobSpec, JobTemplate)
    for field, info in model.model_fields.items()
    for name in (field, info.alias)
}
UNKNOWN: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda key: key not in DECLARED), JSON, max_size=3
)


@settings(max_examples=200, deadline=None)
@given(top=UNKNOWN, meta=UNKNOWN, spec=UNKNOWN, template=UNKNOWN)
def test_unknown_fields_anywhere_survive_a_round_trip(
    top: Obj, meta: Obj, spec: Obj, template: Obj
) -> None:
    raw: Obj = {
        **top,
        "apiVersion": RT.api_version,
        "kind": RT.kind,
        "metadata": {**meta, "name": "n"},
        "spec": {**spec, "schedule": "s", "template": {**template, "image": "i"}},
    }
    assert CRON_JOBS.dump(CRON_JOBS.parse(copy.deepcopy(raw))) == raw


# -- models that would lose fields -------------------------------------------------------
class Plain(BaseModel):  # pydantic's default: unknown fields ignored
    x: int = 0


class LossySpec(KubeModel):
    schedule: str = ""
    extra: list[Plain] = Field(default_factory=list)


class Lossy(KubeObject):
    spec: LossySpec = Field(default_factory=LossySpec)


def test_a_kind_whose_model_drops_unknown_fields_refuses_to_write() -> None:
    kind = Kind(RT, Lossy)
    assert kind.lossy_parts == ("spec.extra: Plain",)
    obj = kind.parse({"spec": {"extra": [{"x": 1, "y": 2}]}})  # reading is fine
    assert obj.spec.extra == [Plain(x=1)]
    with pytest.raises(TypeError, match=r"Lossy drops fields it does not declare \(spec.extra"):
        kind.dump(obj)


def test_the_read_only_workspace_model_cannot_be_written() -> None:
    kind = Kind(ResourceType("kaito.sh", "v1beta1", "Workspace", "workspaces"), Workspace)
    assert "<object>: Workspace" in kind.lossy_parts
    assert "metadata: ObjectMeta" in kind.lossy_parts
    with pytest.raises(TypeError, match="send a patch"):
        kind.dump(kind.parse({"metadata": {"name": "w"}}))


def test_a_well_formed_kind_is_lossless() -> None:
    assert CRON_JOBS.lossy_parts == ()


# -- errors ---------------------------------------------------------------------------
def test_an_object_that_does_not_fit_raises_a_clear_error() -> None:
    raw = stored()
    del raw["spec"]["schedule"]
    raw["spec"]["suspend"] = "sometimes"
    raw["metadata"]["labels"] = {"app": 5}
    with pytest.raises(ParseError) as caught:
        CRON_JOBS.parse(raw)
    message = str(caught.value)
    assert message.startswith("cannot read CronJob ns/nightly: ")
    assert "metadata.labels.app: Input should be a valid string" in message
    assert "spec.schedule: Field required" in message
    assert "spec.suspend: Input should be a valid boolean" in message


def test_an_unnamed_object_is_named_by_its_model() -> None:
    with pytest.raises(ParseError, match=r"^cannot read CronJob: spec: Field required$"):
        parse(CronJob, {})


@pytest.mark.parametrize("raw", [[], "CronJob", None, 3])
def test_a_non_object_raises(raw: Any) -> None:
    with pytest.raises(ParseError, match="expected a JSON object"):
        CRON_JOBS.parse(raw)


def test_an_error_lists_a_bounded_number_of_problems() -> None:
    raw = {"spec": {"schedule": "s"}, "status": {"conditions": [{}] * 9}}
    with pytest.raises(ParseError, match=r"\(and 4 more\)$"):
        CRON_JOBS.parse(raw)


# -- typed reads and writes over the dict path --------------------------------------------
class FakeCache:
    """Answers as InformerCache does: copies of what it stores."""

    def __init__(self, *objs: Obj) -> None:
        self.objs = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}
        self.queries: list[tuple[str | None, str | None, Mapping[str, str] | None]] = []

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj | None:
        assert rt is RT
        obj = self.objs.get((namespace, name))
        return copy.deepcopy(obj)

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        assert rt is RT
        self.queries.append((namespace, label_selector, fields))
        return [copy.deepcopy(o) for (ns, _), o in self.objs.items() if namespace in (None, ns)]


async def test_the_typed_cache_reads_models() -> None:
    other = {"metadata": {"name": "other", "namespace": "b"}, "spec": {"schedule": "s"}}
    fake = FakeCache(stored(), other)
    cache = TypedCache(fake, CRON_JOBS)
    job = await cache.get("nightly", "ns")
    assert isinstance(job, CronJob)
    assert job.spec.schedule == "0 1 * * *"
    assert await cache.get("missing", "ns") is None
    assert [j.metadata.name for j in await cache.list()] == ["nightly", "other"]
    listed = await cache.list("b", label_selector="app", fields={"spec.schedule": "s"})
    assert [j.metadata.name for j in listed] == ["other"]
    assert fake.queries[-1] == ("b", "app", {"spec.schedule": "s"})


async def test_the_typed_cache_names_an_object_that_does_not_fit() -> None:
    cache = TypedCache(FakeCache({"metadata": {"name": "bad", "namespace": "ns"}}), CRON_JOBS)
    with pytest.raises(ParseError, match=r"^cannot read CronJob ns/bad: spec: Field required"):
        await cache.get("bad", "ns")


class FakeClient:
    """Records each call and answers with the body it was sent, as the server stores it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def _stored(self, body: Obj) -> Obj:
        out = copy.deepcopy(body)
        out["metadata"]["resourceVersion"] = "43"
        return out

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        self.calls.append(("get", name, {"namespace": namespace}))
        return stored()

    async def list_all(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        self.calls.append(("list_all", namespace, {"label_selector": label_selector}))
        return [stored(), stored()], "50"

    async def create(
        self,
        rt: ResourceType,
        obj: Obj,
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
    ) -> Obj:
        self.calls.append(("create", obj, {"field_manager": field_manager}))
        return self._stored(obj)

    async def replace(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        self.calls.append(("replace", obj, {"subresource": subresource}))
        return self._stored(obj)

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        patch: Obj | list[Obj],
        *,
        namespace: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        self.calls.append(("patch", patch, {"patch_type": patch_type, "subresource": subresource}))
        return stored()


async def test_the_typed_client_reads_models() -> None:
    fake = FakeClient()
    jobs = TypedClient(fake, CRON_JOBS)
    assert (await jobs.get("nightly", "ns")).metadata.uid == "u-1"
    listed = await jobs.list("ns", label_selector="app=x")
    assert [j.metadata.name for j in listed] == ["nightly", "nightly"]
    assert fake.calls == [
        ("get", "nightly", {"namespace": "ns"}),
        ("list_all", "ns", {"label_selector": "app=x"}),
    ]


async def test_the_typed_client_writes_the_whole_object_it_read() -> None:
    fake = FakeClient()
    jobs = TypedClient(fake, CRON_JOBS)
    job = await jobs.get("nightly", "ns")
    job.spec.suspend = True

    replaced = await jobs.replace(job)
    status = await jobs.replace_status(job)

    expected = stored()
    expected["spec"]["suspend"] = True
    assert fake.calls[1] == ("replace", expected, {"subresource": None})
    assert fake.calls[2] == ("replace", expected, {"subresource": "status"})
    assert replaced.metadata.resource_version == status.metadata.resource_version == "43"
    assert replaced.spec.suspend


async def test_the_typed_client_creates_from_a_new_model() -> None:
    fake = FakeClient()
    job = CronJob(metadata=ObjectMeta(name="j", namespace="ns"), spec=CronJobSpec(schedule="s"))
    created = await TypedClient(fake, CRON_JOBS).create(job, field_manager="me")
    body = {
        "apiVersion": "batch.example.io/v1",
        "kind": "CronJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": {"schedule": "s"},
    }
    assert fake.calls == [("create", body, {"field_manager": "me"})]
    assert created.metadata.resource_version == "43"


async def test_the_typed_client_sends_patches_as_given() -> None:
    fake = FakeClient()
    patch = [{"op": "replace", "path": "/spec/suspend", "value": True}]
    out = await TypedClient(fake, CRON_JOBS).patch(
        "nightly", patch, namespace="ns", patch_type=PatchType.JSON, subresource="status"
    )
    assert fake.calls == [
        ("patch", patch, {"patch_type": PatchType.JSON, "subresource": "status"}),
    ]
    assert isinstance(out, CronJob)


async def test_the_typed_client_refuses_to_write_a_lossy_model() -> None:
    fake = FakeClient()
    with pytest.raises(TypeError, match="drops fields"):
        await TypedClient(fake, Kind(RT, Lossy)).create(Lossy())
    assert fake.calls == []
