"""Admission handlers as controller-runtime answers: paths, operations, denials, patches.

Handlers are called directly with review bodies (no HTTP); the server's side is in
tests/integration/test_webhook_server.py.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, Field

from reconciler.resource import POD, Obj, ResourceType
from reconciler.typed import Kind, KubeModel, KubeObject
from reconciler.webhook.admission import (
    Denied,
    FieldError,
    Invalid,
    Warnings,
    defaulting_handler,
    defaulting_path,
    json_patch,
    validating_handler,
    validating_path,
)
from reconciler.webhook.server import BadRequest, PanicRecovered

GROUP = "batch.tutorial.kubebuilder.io"
RT = ResourceType(GROUP, "v1", "CronJob", "cronjobs")


class CronJobSpec(KubeModel):
    schedule: str = ""
    suspend: bool | None = None
    concurrency_policy: str | None = None
    starting_deadline_seconds: int | None = None


class CronJob(KubeObject):
    spec: CronJobSpec = Field(default_factory=CronJobSpec)


CRON_JOBS = Kind(RT, CronJob)


def cronjob(name: str = "nightly", **spec: Any) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default", "uid": "u-1"},
        "spec": {"schedule": "*/5 * * * *", **spec},
    }


def review(
    operation: str,
    obj: Obj | None = None,
    old: Obj | None = None,
    *,
    api_version: str = "admission.k8s.io/v1",
    gvk: dict[str, str] | None = None,
) -> Obj:
    request: Obj = {
        "uid": "req-1",
        "kind": gvk or {"group": GROUP, "version": "v1", "kind": "CronJob"},
        "resource": {"group": GROUP, "version": "v1", "resource": "cronjobs"},
        "operation": operation,
        "name": "nightly",
        "namespace": "default",
        "userInfo": {"username": "alice"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def response(answer: Any) -> Obj:
    assert answer["kind"] == "AdmissionReview"
    out: Obj = answer["response"]
    assert out["uid"] == "req-1"
    return out


def patch_of(resp: Obj) -> list[Obj]:
    assert resp["patchType"] == "JSONPatch"
    ops: list[Obj] = orjson.loads(base64.b64decode(resp["patch"]))
    return ops


# -- paths --------------------------------------------------------------------------------


def test_paths_follow_kubebuilder() -> None:
    assert defaulting_path(RT) == "/mutate-batch-tutorial-kubebuilder-io-v1-cronjob"
    assert validating_path(RT) == "/validate-batch-tutorial-kubebuilder-io-v1-cronjob"
    # The core group is empty: controller-runtime's generateMutatePath keeps both dashes.
    assert defaulting_path(POD) == "/mutate--v1-pod"
    assert validating_path(POD) == "/validate--v1-pod"


# -- defaulting ---------------------------------------------------------------------------


class SuspendDefaulter:
    def __init__(self) -> None:
        self.seen: list[CronJob] = []

    async def default(self, obj: CronJob) -> None:
        self.seen.append(obj)
        if obj.spec.suspend is None:
            obj.spec.suspend = False
        if obj.spec.concurrency_policy is None:
            obj.spec.concurrency_policy = "Allow"


async def test_defaulter_answers_with_a_json_patch_of_what_it_set() -> None:
    handler = defaulting_handler(CRON_JOBS, SuspendDefaulter())
    resp = response(await handler(review("CREATE", cronjob())))
    assert resp["allowed"] is True
    assert resp["status"] == {"code": 200}
    ops = patch_of(resp)
    assert sorted(ops, key=lambda op: op["path"]) == [
        {"op": "add", "path": "/spec/concurrencyPolicy", "value": "Allow"},
        {"op": "add", "path": "/spec/suspend", "value": False},
    ]


async def test_defaulter_that_changes_nothing_sends_no_patch() -> None:
    handler = defaulting_handler(CRON_JOBS, SuspendDefaulter())
    obj = cronjob(suspend=True, concurrencyPolicy="Forbid")
    resp = response(await handler(review("UPDATE", obj, obj)))
    assert resp == {"uid": "req-1", "allowed": True, "status": {"code": 200}}


async def test_patch_leaves_fields_the_model_does_not_declare_alone() -> None:
    obj = cronjob(jobTemplate={"spec": {"template": {"x": [1, None, {"y": "z"}]}}})
    obj["metadata"]["managedFields"] = [{"manager": "kubectl", "time": "2024-01-01T00:00:00Z"}]
    obj["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    obj["metadata"]["labels"] = None  # a null the model reads as unset
    obj["status"] = {"active": [{"name": "j-1"}]}
    handler = defaulting_handler(CRON_JOBS, SuspendDefaulter())
    ops = patch_of(response(await handler(review("CREATE", obj))))
    assert {op["path"] for op in ops} == {"/spec/suspend", "/spec/concurrencyPolicy"}
    # The API server applies the patch to the object it sent: everything else survives.
    patched = jsonpatch.apply_patch(obj, ops)
    assert patched == {
        **obj,
        "spec": {**obj["spec"], "suspend": False, "concurrencyPolicy": "Allow"},
    }


async def test_defaulter_is_not_called_on_delete_or_connect() -> None:
    defaulter = SuspendDefaulter()
    handler = defaulting_handler(CRON_JOBS, defaulter)
    for op in ("DELETE", "CONNECT"):
        resp = response(await handler(review(op, None, cronjob())))
        assert resp == {"uid": "req-1", "allowed": True, "status": {"code": 200}}
    assert defaulter.seen == []


async def test_defaulter_may_refuse() -> None:
    class Refusing:
        async def default(self, obj: CronJob) -> None:
            raise Denied("no defaults for you")

    resp = response(await defaulting_handler(CRON_JOBS, Refusing())(review("CREATE", cronjob())))
    assert resp["allowed"] is False
    assert resp["status"] == {"code": 403, "reason": "Forbidden", "message": "no defaults for you"}
    assert "patch" not in resp


def test_a_model_that_drops_unknown_fields_cannot_default() -> None:
    class Strict(KubeObject):
        model_config = ConfigDict(extra="ignore")

    class AnyDefaulter:
        async def default(self, obj: KubeObject) -> None:
            return None

    with pytest.raises(TypeError, match="drops fields"):
        defaulting_handler(Kind(RT, Strict), AnyDefaulter())


async def test_answer_has_the_review_version_of_the_request() -> None:
    handler = defaulting_handler(CRON_JOBS, SuspendDefaulter())
    answer = await handler(review("CREATE", cronjob(), api_version="admission.k8s.io/v1beta1"))
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"


# -- validating ---------------------------------------------------------------------------


class RecordingValidator:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def validate_create(self, obj: CronJob) -> Warnings:
        self.calls.append(("create", obj.spec.schedule))
        if obj.spec.schedule == "bad":
            raise Invalid(
                CRON_JOBS,
                obj.metadata.name,
                [FieldError("spec.schedule", "not a cron expression", "bad")],
                warnings=["checked by a test"],
            )
        return ["schedule is every 5 minutes"]

    async def validate_update(self, old: CronJob, new: CronJob) -> Warnings:
        self.calls.append(("update", old.spec.schedule, new.spec.schedule))
        return []

    async def validate_delete(self, obj: CronJob) -> Warnings:
        self.calls.append(("delete", obj.metadata.name))
        raise Denied("nightly jobs stay")


async def test_validator_gets_each_operation_s_objects() -> None:
    v = RecordingValidator()
    handler = validating_handler(CRON_JOBS, v)
    created = response(await handler(review("CREATE", cronjob())))
    assert created == {
        "uid": "req-1",
        "allowed": True,
        "status": {"code": 200},
        "warnings": ["schedule is every 5 minutes"],
    }
    old, new = cronjob(), cronjob()
    new["spec"]["schedule"] = "0 * * * *"
    updated = response(await handler(review("UPDATE", new, old)))
    assert updated == {"uid": "req-1", "allowed": True, "status": {"code": 200}}
    # DELETE: the object being deleted comes as oldObject.
    deleted = response(await handler(review("DELETE", None, cronjob("doomed"))))
    assert deleted["allowed"] is False
    assert deleted["status"] == {"code": 403, "reason": "Forbidden", "message": "nightly jobs stay"}
    assert v.calls == [
        ("create", "*/5 * * * *"),
        ("update", "*/5 * * * *", "0 * * * *"),
        ("delete", "doomed"),
    ]


async def test_connect_is_allowed_unvalidated_and_unknown_operations_are_bad() -> None:
    v = RecordingValidator()
    handler = validating_handler(CRON_JOBS, v)
    assert response(await handler(review("CONNECT")))["allowed"] is True
    bad = response(await handler(review("PATCH", cronjob())))
    assert bad == {
        "uid": "req-1",
        "allowed": False,
        "status": {"code": 400, "message": 'unknown operation "PATCH"'},
    }
    assert v.calls == []


async def test_invalid_is_a_422_status_with_causes_and_keeps_warnings() -> None:
    handler = validating_handler(CRON_JOBS, RecordingValidator())
    resp = response(await handler(review("CREATE", cronjob(schedule="bad"))))
    assert resp["allowed"] is False
    assert resp["warnings"] == ["checked by a test"]
    assert resp["status"] == {
        "status": "Failure",
        "code": 422,
        "reason": "Invalid",
        "message": (
            'CronJob.batch.tutorial.kubebuilder.io "nightly" is invalid: '
            'spec.schedule: Invalid value: "bad": not a cron expression'
        ),
        "details": {
            "name": "nightly",
            "group": GROUP,
            "kind": "CronJob",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": 'Invalid value: "bad": not a cron expression',
                    "field": "spec.schedule",
                }
            ],
        },
    }


def test_denied_with_a_code_is_a_whole_status() -> None:
    assert Denied("taken", code=409, reason="Conflict").status() == {
        "status": "Failure",
        "code": 409,
        "reason": "Conflict",
        "message": "taken",
    }


# -- bad requests and failures ------------------------------------------------------------


async def test_an_object_of_another_kind_or_shape_is_a_400_answer() -> None:
    handler = validating_handler(CRON_JOBS, RecordingValidator())
    other = {"group": "apps", "version": "v1", "kind": "Deployment"}
    wrong = response(await handler(review("CREATE", cronjob(), gvk=other)))
    assert wrong["allowed"] is False
    assert wrong["status"]["code"] == 400
    assert "CronJob.batch.tutorial.kubebuilder.io/v1" in wrong["status"]["message"]
    v2 = {"group": GROUP, "version": "v2", "kind": "CronJob"}
    assert response(await handler(review("CREATE", cronjob(), gvk=v2)))["status"]["code"] == 400
    unparsable = cronjob()
    unparsable["spec"]["startingDeadlineSeconds"] = "soon"
    resp = response(await handler(review("CREATE", unparsable)))
    assert resp["status"]["code"] == 400
    assert "spec.startingDeadlineSeconds" in resp["status"]["message"]
    missing = response(await handler(review("CREATE", None)))
    assert missing["status"] == {"code": 400, "message": "the request has no object"}


@pytest.mark.parametrize(
    "body",
    [
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "request": {}},
        {"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 1}},
    ],
)
async def test_a_body_that_is_no_admission_review_is_a_bad_request(body: Obj) -> None:
    with pytest.raises(BadRequest):
        await validating_handler(CRON_JOBS, RecordingValidator())(body)


async def test_an_unexpected_exception_is_a_recovered_panic_with_code_500() -> None:
    class Buggy:
        async def default(self, obj: CronJob) -> None:
            raise KeyError("spec")

    with pytest.raises(PanicRecovered) as caught:
        await defaulting_handler(CRON_JOBS, Buggy())(review("CREATE", cronjob()))
    assert caught.value.webhook == "admission"
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.review == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "req-1",
            "allowed": False,
            "status": {"code": 500, "message": "panic: 'spec' [recovered]"},
        },
    }


# -- Invalid's message, as apimachinery formats it ---------------------------------------


def invalid(*errors: FieldError, name: str = "x", kind: Kind[Any] = CRON_JOBS) -> str:
    return Invalid(kind, name, list(errors)).message


def test_invalid_message_formats_values_as_go_does() -> None:
    assert invalid() == 'CronJob.batch.tutorial.kubebuilder.io "x" is invalid'
    one = FieldError("spec.replicas", "must be positive", -1)
    assert invalid(one).endswith("is invalid: spec.replicas: Invalid value: -1: must be positive")
    cases = [
        (FieldError("a", "m", True), "a: Invalid value: true: m"),
        (FieldError("a", "m", 1.5), "a: Invalid value: 1.5: m"),
        (FieldError("a", "m", 3.0), "a: Invalid value: 3: m"),
        (FieldError("a", "m", 1e21), "a: Invalid value: 1e+21: m"),
        (FieldError("a", "m", 0.00001), "a: Invalid value: 1e-05: m"),
        (FieldError("a", "m", 'say "hi"\n'), 'a: Invalid value: "say \\"hi\\"\\n": m'),
        (FieldError("a", "m", ["b", 1]), 'a: Invalid value: ["b",1]: m'),
        (FieldError("a", "m", {"z": 1, "a": "<"}), 'a: Invalid value: {"a":"\\u003c","z":1}: m'),
        (FieldError("a", "m", None), "a: Invalid value: null: m"),
        (FieldError("a", "", "v"), 'a: Invalid value: "v"'),
        (FieldError("a", "", type="FieldValueRequired"), "a: Required value"),
        (FieldError("a", "need it", type="FieldValueRequired"), "a: Required value: need it"),
        (FieldError("a", "m", "x", type="FieldValueForbidden"), "a: Forbidden: m"),
        (FieldError("a", "", "B", type="FieldValueNotSupported"), 'a: Unsupported value: "B"'),
        (FieldError("a", "m", 7, type="Odd"), 'a: <unknown error "Odd">: m'),
    ]
    for error, text in cases:
        assert str(error) == text


def test_invalid_message_lists_several_errors_once_each() -> None:
    a = FieldError("spec.a", "m", "1")
    b = FieldError("spec.b", "", type="FieldValueRequired")
    assert invalid(a, b, a, name='we"ird').endswith(
        '"we\\"ird" is invalid: [spec.a: Invalid value: "1": m, spec.b: Required value]'
    )
    causes = Invalid(CRON_JOBS, "x", [a, b, a]).details["causes"]
    assert len(causes) == 3  # NewInvalid keeps one cause per error, repeats included


def test_invalid_of_a_core_kind_has_no_group_suffix() -> None:
    pods = Kind(POD, KubeObject)
    assert invalid(FieldError("spec", "m", 1), kind=pods).startswith('Pod "x" is invalid: ')


# -- patches: applying one to "before" gives "after" --------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=4), json_values, max_size=5)


@settings(max_examples=300, deadline=None)
@given(before=json_objects, after=json_objects)
def test_patch_turns_before_into_after(before: Obj, after: Obj) -> None:
    kept = copy.deepcopy(before)
    ops = json_patch(before, after)
    assert jsonpatch.apply_patch(before, ops) == after
    assert before == kept  # computing a patch changes neither side
    assert json_patch(after, copy.deepcopy(after)) == []


@settings(max_examples=200, deadline=None)
@given(
    extra=json_objects,
    spec_extra=json_objects,
    suspend=st.none() | st.booleans(),
    new_policy=st.none() | st.sampled_from(["Allow", "Forbid"]),
)
async def test_typed_defaulting_patches_only_what_the_defaulter_set(
    extra: Obj, spec_extra: Obj, suspend: bool | None, new_policy: str | None
) -> None:
    obj = cronjob()
    obj["spec"] = {**{f"x{k}": v for k, v in spec_extra.items()}, **obj["spec"]}
    if suspend is not None:
        obj["spec"]["suspend"] = suspend
    obj.update({f"x{k}": v for k, v in extra.items()})

    class SetPolicy:
        async def default(self, job: CronJob) -> None:
            if new_policy is not None:
                job.spec.concurrency_policy = new_policy

    resp = response(await defaulting_handler(CRON_JOBS, SetPolicy())(review("CREATE", obj)))
    if new_policy is None:
        assert "patch" not in resp
        return
    ops = patch_of(resp)
    assert ops == [{"op": "add", "path": "/spec/concurrencyPolicy", "value": new_policy}]
    before = CRON_JOBS.dump(CRON_JOBS.parse(obj))
    after = jsonpatch.apply_patch(before, ops)
    assert after["spec"]["concurrencyPolicy"] == new_policy
    assert {k: v for k, v in after.items() if k.startswith("x")} == {
        f"x{k}": v for k, v in extra.items() if v is not None
    }
