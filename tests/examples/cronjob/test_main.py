"""``python -m examples.cronjob`` against a control plane of its own that has no CronJob
CRD yet: the one-command run installs it, reconciles, and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from e2e.harness import eventually
from examples.cronjob.api import CRONJOB, JOB
from reconciler import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.plugin import private_plane
from reconciler.resource import NAMESPACE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[3]
TEMPLATE = {
    "spec": {
        "template": {
            "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}
        }
    }
}


@pytest.fixture(scope="module")
def bare_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    why = "needs a control plane without the CronJob CRD"
    with private_plane(tmp_path_factory, "cronjob-plane", why=why) as plane:
        yield plane


@pytest.fixture
async def client(bare_plane: ControlPlane) -> AsyncIterator[Client]:
    async with await Client.from_config(str(bare_plane.kubeconfig)) as c:
        yield c


def command(plane: ControlPlane, *flags: str) -> list[str]:
    return [sys.executable, "-m", "examples.cronjob", f"--kubeconfig={plane.kubeconfig}", *flags]


def test_without_the_crd_and_without_leave_to_install_it_is_a_clear_error(
    bare_plane: ControlPlane,
) -> None:
    proc = subprocess.run(
        command(bare_plane, "--no-install-crd"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no CronJob CRD: kubectl apply -f" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_one_command_installs_the_crd_and_runs_the_controller(
    bare_plane: ControlPlane, client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "cronjob.log"
    with log.open("w") as out:
        proc = await anyio.open_process(command(bare_plane), stdout=out, stderr=out, cwd=ROOT)
    try:
        await eventually(lambda: "starting" in log.read_text(), timeout=30, what="startup")
        await client.create(NAMESPACE, {"metadata": {"name": "demo"}})
        cronjob = await client.create(
            CRONJOB,
            {
                "apiVersion": CRONJOB.api_version,
                "kind": CRONJOB.kind,
                "metadata": {"name": "hello"},
                "spec": {"schedule": "0 0 1 1 *", "jobTemplate": TEMPLATE},
            },
            "demo",
        )
        ref = {"apiVersion": CRONJOB.api_version, "kind": "CronJob", "controller": True}
        ref |= {"name": "hello", "uid": cronjob["metadata"]["uid"]}
        job = {"metadata": {"name": "by-hand", "ownerReferences": [ref]}, **TEMPLATE}
        await client.create(JOB, job, "demo")

        async def active() -> bool:
            status = (await client.get(CRONJOB, "hello", "demo")).get("status") or {}
            return [r["name"] for r in status.get("active", [])] == ["by-hand"]

        await eventually(active, what="status.active = [by-hand]")
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            code = await proc.wait()
    assert code == 0, log.read_text()[-4000:]
    assert "installed the CronJob CRD" in log.read_text()
