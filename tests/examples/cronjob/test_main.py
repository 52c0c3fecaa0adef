"""``python -m examples.cronjob`` against a control plane of its own that has no CronJob
CRD yet: the one-command run installs it, reconciles, and stops cleanly on SIGTERM;
with webhooks on (the default) it serves them on the flags' port and certificate, and
without a certificate it says so."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from e2e.harness import eventually
from examples.cronjob.api import CRONJOB, JOB
from examples.cronjob.main import CRD_NAME
from reconciler import Client
from reconciler.envtest.controlplane import ControlPlane, free_port
from reconciler.envtest.webhook import ServingCerts
from reconciler.resource import NAMESPACE
from reconciler.webhook import validating_path

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[3]
TEMPLATE = {
    "spec": {
        "template": {
            "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}
        }
    }
}


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


def test_webhooks_without_a_certificate_are_a_clear_error(
    bare_plane: ControlPlane, tmp_path: Path
) -> None:
    proc = subprocess.run(
        command(bare_plane, f"--webhook-cert-dir={tmp_path}", "--webhook-port=0"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"no webhook certificate: cannot load certificate {tmp_path}/tls.crt" in proc.stderr
    assert "(or run with --no-enable-webhooks)" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_one_command_installs_the_crd_and_runs_the_controller(
    bare_plane: ControlPlane, client: Client, tmp_path: Path
) -> None:
    # Other tests' runs of the command install it: start from a cluster without it.
    bare_plane.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")
    log = tmp_path / "cronjob.log"
    with log.open("w") as out:
        proc = await anyio.open_process(
            command(bare_plane, "--no-enable-webhooks"), stdout=out, stderr=out, cwd=ROOT
        )
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


async def test_the_command_serves_the_webhooks_on_the_flags_port_and_certificate(
    bare_plane: ControlPlane, tmp_path: Path
) -> None:
    """The API server is not involved here (test_webhooks.py has it): this POSTs a review
    to the port the flags name, trusting the CA of the certificate they point at."""
    certs = ServingCerts(tmp_path / "certs", "127.0.0.1")
    port = free_port()
    log = tmp_path / "cronjob.log"
    flags = [f"--webhook-cert-dir={certs.cert_dir}", f"--webhook-port={port}"]
    with log.open("w") as out:
        proc = await anyio.open_process(
            command(bare_plane, *flags), stdout=out, stderr=out, cwd=ROOT
        )
    try:
        await eventually(lambda: "serving webhooks" in log.read_text(), timeout=30, what="webhooks")
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "r-1",
                "kind": {"group": CRONJOB.group, "version": "v1", "kind": "CronJob"},
                "operation": "CREATE",
                "object": {
                    "apiVersion": CRONJOB.api_version,
                    "kind": "CronJob",
                    "metadata": {"name": "hello", "namespace": "demo"},
                    "spec": {"schedule": "bad", "jobTemplate": TEMPLATE},
                },
            },
        }
        url = f"https://127.0.0.1:{port}{validating_path(CRONJOB)}"
        answer = await anyio.to_thread.run_sync(post_json, url, review, certs.ca_pem)
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            code = await proc.wait()
    assert code == 0, log.read_text()[-4000:]
    assert answer["response"]["status"]["message"] == (
        'CronJob.batch.tutorial.kubebuilder.io "hello" is invalid: '
        'spec.schedule: Invalid value: "bad": Expected exactly 5 fields, found 1: bad'
    )


def post_json(url: str, body: object, ca_pem: bytes) -> Any:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.load(response)
