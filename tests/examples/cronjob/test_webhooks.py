"""The CronJob's webhooks against a real API server: defaulting, validation, and the
``v2`` version converted through the ``v1`` hub.

The operator runs as in production (controller and webhooks in one manager); envtest's
installer points ``config/webhook/manifests.yaml`` and the CRD's conversion at its
webhook server with a CA of the test's own, and removes them (and the CRD) after each
test. Messages are asserted whole: they are what a user reads.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from e2e.harness import eventually, kubectl
from examples.cronjob.api import CRONJOB, JOB
from examples.cronjob.api_v2 import CRONJOB_V2
from examples.cronjob.controller import setup
from examples.cronjob.main import CRD_NAME
from examples.cronjob.schedule import job_name
from examples.cronjob.webhooks import setup_webhooks
from reconciler import (
    ApiError,
    Client,
    InformerOptions,
    Invalid,
    Manager,
    ManagerOptions,
    NotFound,
)
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.settings import EXISTING_KUBECONFIG_ENV
from reconciler.envtest.webhook import WebhookInstallOptions, install_webhooks
from reconciler.resource import CRD, Obj
from tests.examples.cronjob.test_controller import POD_TEMPLATE, FakeClock, Operator, first_run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(os.environ.get(EXISTING_KUBECONFIG_ENV)),
        reason="the API server calls the test's webhook server on 127.0.0.1",
    ),
]

CONFIG = Path(__file__).parents[3] / "examples" / "cronjob" / "config"
WEBHOOK_MANIFESTS = [CONFIG / "webhook" / "manifests.yaml", CONFIG / "crd.yaml"]
CRONJOBS_V1 = "cronjobs.v1.batch.tutorial.kubebuilder.io"
CRONJOBS_V2 = "cronjobs.v2.batch.tutorial.kubebuilder.io"
DENIED = 'admission webhook "vcronjob-v1.kb.io" denied the request: '


@asynccontextmanager
async def operator(
    k8s: Client, kubeconfig: Path, namespace: str, manifests: Sequence[Path] = WEBHOOK_MANIFESTS
) -> AsyncIterator[Operator]:
    """The CronJob operator with its webhooks, called by the API server, for the body of
    an ``async with``; on exit the webhooks, the CRD and its CronJobs are gone again."""
    # CronJobs left by other tests would have to be converted before our server runs: the
    # installer's wait for the CRD (a list of each version) would time out.
    await delete_crd(k8s)
    installed = install_webhooks(k8s, WebhookInstallOptions(paths=manifests))
    async with installed as env, await Client.from_config(str(kubeconfig)) as client:
        mgr = Manager(
            client,
            ManagerOptions(
                metrics_bind_address="0",
                health_probe_bind_address="0",
                handle_signals=False,
                informer_defaults=InformerOptions(namespace=namespace),
                webhook=env.server_options(),
            ),
        )
        clock = FakeClock(datetime.now(UTC))
        controller = setup(mgr, clock=clock)
        setup_webhooks(mgr)
        async with anyio.create_task_group() as tg:
            tg.start_soon(mgr.run)
            await mgr.cache.wait_for_sync()
            await eventually(lambda: "webhook" in mgr.ports, what="the webhook server")
            yield Operator(mgr, controller, clock, namespace)
            mgr.shutdown()


async def delete_crd(k8s: Client) -> None:
    with contextlib.suppress(NotFound):
        await k8s.delete(CRD, CRD_NAME)

    async def gone() -> bool:
        try:
            await k8s.get(CRD, CRD_NAME)
        except NotFound:
            return True
        return False

    await eventually(gone, timeout=60, what=f"CRD {CRD_NAME} deleted")


def cronjob_v1(name: str = "backup", schedule: str = "*/5 9-17 * * 1-5", **spec: Any) -> Obj:
    return {
        "apiVersion": CRONJOB.api_version,
        "kind": CRONJOB.kind,
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": POD_TEMPLATE}}, **spec},
    }


def cronjob_v2(name: str = "backup", spec: Obj | None = None, **schedule: str) -> Obj:
    return {
        "apiVersion": CRONJOB_V2.api_version,
        "kind": CRONJOB_V2.kind,
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"spec": {"template": POD_TEMPLATE}},
            **(spec or {}),
        },
    }


DEFAULTED = {
    "concurrencyPolicy": "Allow",
    "suspend": False,
    "successfulJobsHistoryLimit": 3,
    "failedJobsHistoryLimit": 1,
}


def defaulted_fields(obj: Obj) -> dict[str, Any]:
    return {key: obj["spec"].get(key) for key in DEFAULTED}


# -- defaulting ---------------------------------------------------------------------------
async def test_a_cronjob_without_the_defaulted_fields_comes_back_with_them(
    k8s: Client, kubeconfig: Path, namespace: str
) -> None:
    async with operator(k8s, kubeconfig, namespace):
        created = await k8s.create(CRONJOB, cronjob_v1(), namespace)
        assert defaulted_fields(created) == DEFAULTED
        assert defaulted_fields(await k8s.get(CRONJOB, "backup", namespace)) == DEFAULTED

        # Set fields stay as they are.
        mine = cronjob_v1("mine", suspend=True, failedJobsHistoryLimit=0)
        assert defaulted_fields(await k8s.create(CRONJOB, mine, namespace)) == {
            **DEFAULTED,
            "suspend": True,
            "failedJobsHistoryLimit": 0,
        }

        # A v2 create is converted to v1, defaulted, and converted back.
        created_v2 = await k8s.create(CRONJOB_V2, cronjob_v2("v2", minute="0"), namespace)
        assert defaulted_fields(created_v2) == DEFAULTED
        assert created_v2["spec"]["schedule"] == {"minute": "0"}


# -- validation ---------------------------------------------------------------------------
async def test_an_invalid_cronjob_is_refused_with_the_books_message(
    k8s: Client, kubeconfig: Path, namespace: str
) -> None:
    long_name = "a" * 60
    async with operator(k8s, kubeconfig, namespace):
        with pytest.raises(Invalid) as refused:
            await k8s.create(CRONJOB, cronjob_v1(schedule="bad"), namespace)
        assert refused.value.message == (
            DENIED + 'CronJob.batch.tutorial.kubebuilder.io "backup" is invalid: '
            'spec.schedule: Invalid value: "bad": Expected exactly 5 fields, found 1: bad'
        )

        with pytest.raises(Invalid) as refused:
            await k8s.create(CRONJOB, cronjob_v1(long_name), namespace)
        assert refused.value.message == (
            DENIED + f'CronJob.batch.tutorial.kubebuilder.io "{long_name}" is invalid: '
            f'metadata.name: Invalid value: "{long_name}": must be no more than 52 characters'
        )

        with pytest.raises(Invalid) as refused:
            await k8s.create(CRONJOB, cronjob_v1(long_name, "*/0 * * * *"), namespace)
        assert refused.value.message == (
            DENIED + f'CronJob.batch.tutorial.kubebuilder.io "{long_name}" is invalid: ['
            f'metadata.name: Invalid value: "{long_name}": must be no more than 52 characters, '
            'spec.schedule: Invalid value: "*/0 * * * *": '
            "Step of range should be a positive number: */0]"
        )
        assert [cause["field"] for cause in refused.value.details["causes"]] == [
            "metadata.name",
            "spec.schedule",
        ]

        # A v2 CronJob is validated as the v1 object it converts to.
        with pytest.raises(Invalid) as refused:
            await k8s.create(CRONJOB_V2, cronjob_v2(minute="61", hour="9"), namespace)
        assert refused.value.message == (
            DENIED + 'CronJob.batch.tutorial.kubebuilder.io "backup" is invalid: '
            'spec.schedule: Invalid value: "61 9 * * *": End of range (61) above maximum (59): 61'
        )

        # A v2 field that is not one cron field: the API server converts the object to
        # v1 for the mutating webhook, before the CRD's pattern is checked.
        # (kube-apiserver 1.36 words the failure twice over).
        with pytest.raises(ApiError) as failed:
            await k8s.create(CRONJOB_V2, cronjob_v2("spaced", minute="1 2"), namespace)
        assert (failed.value.status, failed.value.message) == (
            500,
            "Internal error occurred: Internal error occurred: "
            "conversion webhook for batch.tutorial.kubebuilder.io/v2, Kind=CronJob failed: "
            "spec.schedule.minute: '1 2' is not one cron field "
            "(it must not be empty or hold white space)",
        )

        # Updates too; a valid one passes.
        await k8s.create(CRONJOB, cronjob_v1(), namespace)
        with pytest.raises(Invalid) as refused:
            every = {"spec": {"schedule": "@every 5m"}}
            await k8s.patch(CRONJOB, "backup", every, namespace=namespace)
        assert refused.value.message.endswith(
            'spec.schedule: Invalid value: "@every 5m": Unsupported descriptor '
            "(schedules are calendar times, not intervals): @every 5m"
        )
        patched = await k8s.patch(
            CRONJOB, "backup", {"spec": {"schedule": "@hourly"}}, namespace=namespace
        )
        assert patched["spec"]["schedule"] == "@hourly"


# -- conversion ---------------------------------------------------------------------------
def conversions(op: Operator) -> float:
    value = op.mgr.registry.get_sample_value(
        "controller_runtime_webhook_requests_total", {"webhook": "/convert", "code": "200"}
    )
    return value or 0.0


async def test_one_cronjob_reads_the_same_in_both_versions_whichever_it_was_created_in(
    k8s: Client, kubeconfig: Path, namespace: str, control_plane: ControlPlane | None
) -> None:
    async with operator(k8s, kubeconfig, namespace) as op:
        before = conversions(op)
        # Suspended, so that the controller changes nothing between the reads.
        v1 = cronjob_v1("from-v1", "*/5 9-17 * * 1-5", suspend=True)
        v2 = cronjob_v2("from-v2", {"suspend": True}, minute="30", hour="2", dayOfWeek="sun")
        v1 = await k8s.create(CRONJOB, v1, namespace)
        v2 = await k8s.create(CRONJOB_V2, v2, namespace)
        status = {"lastScheduleTime": "2026-03-02T09:00:00Z"}
        await k8s.patch_status(CRONJOB, "from-v2", {"status": status}, namespace=namespace)

        from_v1 = {"minute": "*/5", "hour": "9-17", "dayOfWeek": "1-5"}
        from_v2 = {"minute": "30", "hour": "2", "dayOfWeek": "sun"}
        for name, created, schedule, schedule_v2 in [
            ("from-v1", v1, "*/5 9-17 * * 1-5", from_v1),
            ("from-v2", v2, "30 2 * * sun", from_v2),
        ]:
            as_v1 = await k8s.get(CRONJOB, name, namespace)
            as_v2 = await k8s.get(CRONJOB_V2, name, namespace)
            assert (as_v1["apiVersion"], as_v2["apiVersion"]) == (
                CRONJOB.api_version,
                CRONJOB_V2.api_version,
            )
            assert as_v1["spec"]["schedule"] == schedule
            assert as_v2["spec"]["schedule"] == schedule_v2
            assert as_v2["metadata"] == as_v1["metadata"]
            assert as_v2.get("status") == as_v1.get("status")
            rest = {k: v for k, v in as_v1["spec"].items() if k != "schedule"}
            assert {k: v for k, v in as_v2["spec"].items() if k != "schedule"} == rest
            assert as_v1["metadata"]["uid"] == created["metadata"]["uid"]
        assert (await k8s.get(CRONJOB_V2, "from-v2", namespace))["status"] == status

        # kubectl reads the same, and a list converts every object in one review.
        for resource, read in [(CRONJOBS_V2, CRONJOB_V2), (CRONJOBS_V1, CRONJOB)]:
            out = await kubectl(
                control_plane, kubeconfig, "get", resource, "-n", namespace, "-o", "json"
            )
            by_kubectl = by_name(json.loads(out)["items"])
            by_client = by_name((await k8s.list(read, namespace))["items"])
            assert by_kubectl == by_client
            assert sorted(by_kubectl) == ["from-v1", "from-v2"]
        assert conversions(op) > before, "the v2 reads went through /convert"


def by_name(items: list[Obj]) -> dict[str, Obj]:
    """Objects by name, without managedFields (kubectl leaves them out of its output)."""
    for item in items:
        item["metadata"].pop("managedFields", None)
    return {item["metadata"]["name"]: item for item in items}


async def test_a_schedule_v2_cannot_express_fails_only_reads_as_v2(
    k8s: Client, kubeconfig: Path, namespace: str
) -> None:
    """Only a CronJob stored while the validating webhook is off can hold one: here only
    the CRD's conversion is installed."""
    async with operator(k8s, kubeconfig, namespace, [CONFIG / "crd.yaml"]):
        await k8s.create(CRONJOB, cronjob_v1("unchecked", "@every 5m"), namespace)
        assert (await k8s.get(CRONJOB, "unchecked", namespace))["spec"]["schedule"] == "@every 5m"
        message = (
            "conversion webhook for batch.tutorial.kubebuilder.io/v1, Kind=CronJob failed: "
            "cannot convert spec.schedule '@every 5m' to v2: "
            "v2 holds five cron fields, or a descriptor such as @hourly"
        )
        with pytest.raises(ApiError) as refused:
            await k8s.get(CRONJOB_V2, "unchecked", namespace)
        assert (refused.value.status, refused.value.message) == (500, message)
        # A list of v2 fails as a whole.
        with pytest.raises(ApiError) as refused:
            await k8s.list(CRONJOB_V2, namespace)
        assert refused.value.message.endswith(message)


# -- the controller, on v1 -------------------------------------------------------------
async def test_the_controller_runs_jobs_for_a_cronjob_created_as_v2(
    k8s: Client, kubeconfig: Path, namespace: str
) -> None:
    async with operator(k8s, kubeconfig, namespace) as op:
        created = await k8s.create(CRONJOB_V2, cronjob_v2(minute="*/5"), namespace)
        run = first_run(created)

        async def cached() -> bool:
            return await op.mgr.cache.get(CRONJOB, "backup", namespace) is not None

        await eventually(cached, what="the CronJob in the controller's (v1) cache")
        await op.reconcile_at(run + timedelta(seconds=30))
        name = job_name("backup", run)
        assert [j["metadata"]["name"] for j in (await k8s.list(JOB, namespace))["items"]] == [name]
        as_v2 = await k8s.get(CRONJOB_V2, "backup", namespace)
        assert [ref["name"] for ref in as_v2["status"]["active"]] == [name]
