"""The CronJob controller against a real API server (the envtest plugin's control plane).

As in the book's envtest suite, nothing runs Jobs here (there is no
kube-controller-manager): the tests write Job status themselves. Time is a clock the
test sets; a test that moves it then asks for a reconcile, as the requeue timer would.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from e2e.harness import eventually, wait_event
from examples.cronjob.api import CRONJOB, JOB, SCHEDULED_AT, rfc3339
from examples.cronjob.controller import setup
from examples.cronjob.main import ensure_crd
from examples.cronjob.schedule import job_name
from reconciler import (
    Client,
    Controller,
    InformerOptions,
    Manager,
    ManagerOptions,
    NotFound,
    Request,
)
from reconciler.envtest.settings import EXISTING_KUBECONFIG_ENV
from reconciler.resource import Obj

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(os.environ.get(EXISTING_KUBECONFIG_ENV)),
        reason="writes Job status itself: a cluster's own Job controller would fight it",
    ),
]

FIVE_MIN = timedelta(minutes=5)
POD_TEMPLATE = {
    "spec": {
        "containers": [{"name": "test-container", "image": "test-image"}],
        "restartPolicy": "OnFailure",
    }
}


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Operator:
    """The controller running in a manager, on a clock the test sets."""

    mgr: Manager
    controller: Controller
    clock: FakeClock
    namespace: str

    def reconciles(self) -> float:
        return sum(
            self.mgr.registry.get_sample_value(
                "controller_runtime_reconcile_total", {"controller": "cronjob", "result": r}
            )
            or 0.0
            for r in ("success", "error", "requeue", "requeue_after")
        )

    async def reconcile_at(self, now: datetime, name: str = "backup") -> None:
        """Set the clock, reconcile ``name``, and return once that reconcile succeeded
        and nothing is queued or running."""
        self.clock.now = now
        request = Request(self.namespace, name)
        before = self.reconciles()
        self.controller.queue.add(request)
        queue = self.controller.queue

        def settled() -> bool:
            return (
                self.reconciles() > before
                and len(queue) == 0
                and not queue.processing_ages()
                and queue.num_requeues(request) == 0
            )

        await eventually(settled, what=f"a reconcile of {name} at {rfc3339(now)}")


@pytest.fixture
async def cronjob_crd(kubeconfig: Path) -> None:
    """The session's control plane installs only config/crd; this adds the CronJob CRD
    (before every test: test_webhooks.py installs it for itself and deletes it after)."""
    async with await Client.from_config(str(kubeconfig)) as client:
        await ensure_crd(client, install=True)


@asynccontextmanager
async def running(kubeconfig: Path, namespace: str) -> AsyncIterator[Operator]:
    """The operator, for the body of an ``async with`` (a task group cannot live in a
    fixture: pytest-asyncio runs its setup and teardown in different tasks)."""
    async with await Client.from_config(str(kubeconfig)) as client:
        mgr = Manager(
            client,
            ManagerOptions(
                metrics_bind_address="0",
                health_probe_bind_address="0",
                handle_signals=False,
                informer_defaults=InformerOptions(namespace=namespace),
            ),
        )
        clock = FakeClock(datetime.now(UTC))
        controller = setup(mgr, clock=clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(mgr.run)
            await mgr.cache.wait_for_sync()
            yield Operator(mgr, controller, clock, namespace)
            mgr.shutdown()


async def create_cronjob(k8s: Client, ns: str, schedule: str = "*/5 * * * *", **spec: Any) -> Obj:
    body = {
        "apiVersion": CRONJOB.api_version,
        "kind": CRONJOB.kind,
        "metadata": {"name": "backup", "namespace": ns},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"spec": {"template": POD_TEMPLATE}},
            **spec,
        },
    }
    return await k8s.create(CRONJOB, body, ns)


def first_run(cronjob: Obj) -> datetime:
    """The first five-minute boundary after the CronJob's creation."""
    created = datetime.fromisoformat(cronjob["metadata"]["creationTimestamp"])
    return created.replace(minute=created.minute - created.minute % 5, second=0) + FIVE_MIN


async def jobs(k8s: Client, ns: str) -> dict[str, Obj]:
    return {j["metadata"]["name"]: j for j in (await k8s.list(JOB, ns))["items"]}


async def status(k8s: Client, ns: str) -> dict[str, Any]:
    return dict((await k8s.get(CRONJOB, "backup", ns)).get("status") or {})


async def finish(k8s: Client, ns: str, name: str, how: str, started: datetime) -> None:
    """Write what the Job controller writes when a Job ends (1.36 wants both conditions)."""
    first = {"Complete": "SuccessCriteriaMet", "Failed": "FailureTarget"}[how]
    job_status: dict[str, Any] = {
        "startTime": rfc3339(started),
        "conditions": [
            {"type": first, "status": "True", "reason": "Test", "message": "by the test"},
            {"type": how, "status": "True", "reason": "Test", "message": "by the test"},
        ],
    }
    if how == "Complete":
        job_status["completionTime"] = rfc3339(started)
    await k8s.patch_status(JOB, name, {"status": job_status}, namespace=ns)


def owned_by(cronjob: Obj) -> list[Obj]:
    meta = cronjob["metadata"]
    return [
        {
            "apiVersion": CRONJOB.api_version,
            "kind": CRONJOB.kind,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


async def create_job(k8s: Client, ns: str, name: str, cronjob: Obj) -> Obj:
    body = {
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owned_by(cronjob)},
        "spec": {"template": POD_TEMPLATE},
    }
    return await k8s.create(JOB, body, ns)


# -- the book's envtest test ----------------------------------------------------------
async def test_a_job_it_owns_shows_in_status_and_history_is_pruned(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        cronjob = await create_cronjob(k8s, ns, "1 * * * *")
        await op.reconcile_at(op.clock.now)
        assert "active" not in await status(k8s, ns)

        await create_job(k8s, ns, "test-job", cronjob)
        await k8s.patch_status(JOB, "test-job", {"status": {"active": 2}}, namespace=ns)

        async def active() -> list[str]:
            return [ref["name"] for ref in (await status(k8s, ns)).get("active", [])]

        await eventually(lambda: _is(active(), ["test-job"]), what="status.active = [test-job]")

        await k8s.patch(
            CRONJOB,
            "backup",
            {"spec": {"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}},
            namespace=ns,
        )
        base = datetime.now(UTC).replace(microsecond=0)
        for name, how, started in [
            ("test-failed-job-old", "Failed", base - timedelta(minutes=1)),
            ("test-failed-job-new", "Failed", base + timedelta(seconds=1)),
            ("test-successful-job-old", "Complete", base - timedelta(minutes=1)),
            ("test-successful-job-new", "Complete", base + timedelta(seconds=1)),
        ]:
            await create_job(k8s, ns, name, cronjob)
            await finish(k8s, ns, name, how, started)

        async def remaining() -> set[str]:
            return set(await jobs(k8s, ns))

        want = {"test-job", "test-failed-job-new", "test-successful-job-new"}
        await eventually(lambda: _is(remaining(), want), what=f"only {sorted(want)} left")


async def _is(value: Any, want: Any) -> bool:
    return bool(await value == want)


# -- scheduling --------------------------------------------------------------------------
async def test_a_due_run_starts_a_job_from_the_template(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        cronjob = await create_cronjob(
            k8s,
            ns,
            jobTemplate={
                "metadata": {"labels": {"app": "backup"}},
                "spec": {"template": POD_TEMPLATE, "backoffLimit": 2},
            },
        )
        run = first_run(cronjob)
        await op.reconcile_at(run - timedelta(seconds=1))
        assert await jobs(k8s, ns) == {}

        await op.reconcile_at(run + timedelta(seconds=30))
        name = job_name("backup", run)
        job = (await jobs(k8s, ns))[name]
        assert job["metadata"]["labels"]["app"] == "backup"
        assert job["metadata"]["annotations"][SCHEDULED_AT] == rfc3339(run)
        assert job["metadata"]["ownerReferences"] == owned_by(cronjob)
        assert job["spec"]["backoffLimit"] == 2
        assert await status(k8s, ns) == {
            "active": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "namespace": ns,
                    "uid": job["metadata"]["uid"],
                }
            ],
            "lastScheduleTime": rfc3339(run),
        }
        await wait_event(k8s, ns, "backup", "SuccessfulCreate", name)

        await op.reconcile_at(run + timedelta(minutes=4))
        assert list(await jobs(k8s, ns)) == [name], "one run, one Job"


async def test_forbid_waits_for_the_active_job_then_starts_late(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        run = first_run(await create_cronjob(k8s, ns, concurrencyPolicy="Forbid"))
        await op.reconcile_at(run)
        first = job_name("backup", run)
        assert list(await jobs(k8s, ns)) == [first]

        await op.reconcile_at(run + FIVE_MIN + timedelta(minutes=1))
        assert list(await jobs(k8s, ns)) == [first]
        await wait_event(k8s, ns, "backup", "JobAlreadyActive", rfc3339(run + FIVE_MIN))

        # The Job's end is an event on a Job the CronJob owns: it reconciles by itself.
        await finish(k8s, ns, first, "Complete", run)
        second = job_name("backup", run + FIVE_MIN)

        async def both() -> bool:
            return set(await jobs(k8s, ns)) == {first, second}

        await eventually(both, what="the waiting run started once the first Job finished")


async def test_replace_deletes_the_active_job_and_starts_the_next(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        run = first_run(await create_cronjob(k8s, ns, concurrencyPolicy="Replace"))
        await op.reconcile_at(run)
        await op.reconcile_at(run + FIVE_MIN)
        second = job_name("backup", run + FIVE_MIN)
        assert list(await jobs(k8s, ns)) == [second]
        assert [ref["name"] for ref in (await status(k8s, ns))["active"]] == [second]
        await wait_event(k8s, ns, "backup", "SuccessfulDelete", job_name("backup", run))


async def test_allow_runs_jobs_side_by_side(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        run = first_run(await create_cronjob(k8s, ns))
        await op.reconcile_at(run)
        await op.reconcile_at(run + FIVE_MIN)
        names = [job_name("backup", run), job_name("backup", run + FIVE_MIN)]
        assert sorted(await jobs(k8s, ns)) == names
        assert [ref["name"] for ref in (await status(k8s, ns))["active"]] == names


async def test_suspended_starts_nothing_until_resumed(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        run = first_run(await create_cronjob(k8s, ns, suspend=True))
        await op.reconcile_at(run + FIVE_MIN + timedelta(minutes=1))
        assert await jobs(k8s, ns) == {}

        await k8s.patch(CRONJOB, "backup", {"spec": {"suspend": False}}, namespace=ns)
        latest = job_name("backup", run + FIVE_MIN)

        async def started() -> bool:
            return list(await jobs(k8s, ns)) == [latest]

        await eventually(started, what="the latest missed run started on resume")


async def test_a_run_missed_past_its_starting_deadline_is_skipped(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        run = first_run(await create_cronjob(k8s, ns, startingDeadlineSeconds=60))
        await op.reconcile_at(run + timedelta(minutes=2))
        await wait_event(k8s, ns, "backup", "MissSchedule", rfc3339(run))
        assert await jobs(k8s, ns) == {}

        await op.reconcile_at(run + FIVE_MIN + timedelta(seconds=59))
        assert list(await jobs(k8s, ns)) == [job_name("backup", run + FIVE_MIN)]


async def test_a_run_whose_job_was_pruned_does_not_run_again(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    """The book's controller runs it again: it finds the last run in the Jobs alone."""
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        run = first_run(await create_cronjob(k8s, ns, successfulJobsHistoryLimit=0))
        await op.reconcile_at(run)
        name = job_name("backup", run)
        await finish(k8s, ns, name, "Complete", run)

        async def pruned() -> bool:
            return await jobs(k8s, ns) == {}

        await eventually(pruned, what="the finished Job pruned")
        await op.reconcile_at(run + timedelta(minutes=1))
        assert await jobs(k8s, ns) == {}
        assert (await status(k8s, ns)).get("lastScheduleTime") == rfc3339(run)


async def test_a_template_the_api_server_refuses_is_reported(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        ns = namespace
        no_containers = {"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}
        run = first_run(await create_cronjob(k8s, ns, jobTemplate=no_containers))
        await op.reconcile_at(run)
        event = await wait_event(k8s, ns, "backup", "FailedCreate", job_name("backup", run))
        assert event["type"] == "Warning"
        assert await jobs(k8s, ns) == {}
        assert "lastScheduleTime" not in await status(k8s, ns)


async def test_a_deleted_cronjob_is_forgotten(
    k8s: Client, namespace: str, kubeconfig: Path, cronjob_crd: None
) -> None:
    async with running(kubeconfig, namespace) as op:
        await create_cronjob(k8s, namespace)
        await k8s.delete(CRONJOB, "backup", namespace)
        with pytest.raises(NotFound):
            await k8s.get(CRONJOB, "backup", namespace)
        await op.reconcile_at(op.clock.now)  # must succeed: nothing left to do
