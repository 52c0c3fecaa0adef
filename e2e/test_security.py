"""Security hygiene: TLS verification is always on, credentials never reach the logs,
and the Deployment runs as non-root on a read-only root filesystem."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import OperatorFactory
from e2e.faults.rbac import service_account_kubeconfig
from e2e.harness import (
    ROOT,
    Operator,
    TransitionAuditor,
    walk_inference,
)
from reconciler.client import Client
from reconciler.envtest._certs import TinyCA
from reconciler.envtest.controlplane import ControlPlane

STARTUP_TIMEOUT = 60


def _run_operator(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    """The operator with nothing to serve: it must fail on its own, quickly."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "controllers",
            f"--kubeconfig={kubeconfig}",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        cwd=ROOT,
        check=False,
    )


def _kubeconfig_with(source: Path, target: Path, **cluster: Any) -> Path:
    config = yaml.safe_load(source.read_text())
    config["clusters"][0]["cluster"].update(cluster)
    for key, value in list(config["clusters"][0]["cluster"].items()):
        if value is None:
            del config["clusters"][0]["cluster"][key]
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


def test_a_kubeconfig_trusting_another_ca_fails_clearly(kubeconfig: Path, tmp_path: Path) -> None:
    impostor = TinyCA("not-the-cluster-ca").cert_pem
    wrong_ca = _kubeconfig_with(
        kubeconfig,
        tmp_path / "wrong-ca.kubeconfig",
        **{"certificate-authority-data": base64.b64encode(impostor).decode()},
    )
    proc = _run_operator(wrong_ca)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "does not trust (certificate verify failed" in output, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) <= 3, f"not one clear error:\n{output}"


def test_tls_verification_cannot_be_switched_off(kubeconfig: Path, tmp_path: Path) -> None:
    insecure = _kubeconfig_with(
        kubeconfig,
        tmp_path / "insecure.kubeconfig",
        **{"insecure-skip-tls-verify": True, "certificate-authority-data": None},
    )
    proc = _run_operator(insecure)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "TLS verification is disabled" in output, output
    assert "Traceback" not in output, output


def _secrets_of(kubeconfig: Path) -> dict[str, str]:
    """Every credential in a kubeconfig, as it could appear in a log: raw and decoded."""
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    found: dict[str, str] = {}
    if "token" in user:
        token = user["token"]
        found["token"] = token
        found["token signature"] = token.rsplit(".", 1)[-1]
    for field in ("client-key-data", "client-certificate-data"):
        if field in user:
            pem = base64.b64decode(user[field]).decode()
            body = "".join(pem.strip().splitlines()[1:-1])
            found[field] = user[field][:40]
            found[f"{field} (decoded)"] = body[:40]
    return found


async def _reconcile_a_few(op: Operator, k8s: Client, ns: str) -> None:
    await op.wait_ready(STARTUP_TIMEOUT)
    await walk_inference(k8s, ns, "w")


@pytest.mark.parametrize("credential", ["service-account-token", "client-certificate"])
async def test_no_credential_reaches_the_log_at_debug_level(
    credential: str,
    control_plane: ControlPlane | None,
    kubeconfig: Path,
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
) -> None:
    if control_plane is None:
        pytest.skip("needs the local plane to mint a ServiceAccount token")
    if credential == "service-account-token":
        path, _ = await service_account_kubeconfig(control_plane, k8s)
    else:
        path = kubeconfig
    op = start_operator(f"--namespace={namespace}", "--log-level=debug", kubeconfig_path=path)
    await _reconcile_a_few(op, k8s, namespace)
    assert op.stop() == 0
    log = op.log()
    levels = {json.loads(line).get("level") for line in log.splitlines() if line.startswith("{")}
    assert "debug" in levels, "the operator did not log at debug level"
    assert "BEGIN" not in log
    assert "PRIVATE KEY" not in log
    for what, secret in _secrets_of(path).items():
        assert secret not in log, f"the {what} is in the log"
    assert auditor.changes_of(namespace, "w") == [
        (None, "Pending"),
        ("Pending", "Ready"),
        ("Ready", "NotReady"),
    ]


def _deployment() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "config" / "manager" / "deployment.yaml").read_text())
    return next(d for d in docs if d and d.get("kind") == "Deployment")


def test_the_deployment_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "workspace-status-controller"
    context = pod.get("securityContext") or {}
    assert context.get("runAsNonRoot") is True
    assert context.get("runAsUser", 0) != 0
    assert context.get("runAsGroup", 0) != 0
    assert (context.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), flag
    assert pod["containers"], "no containers"
    for container in pod["containers"] + (pod.get("initContainers") or []):
        sc = container.get("securityContext") or {}
        assert sc.get("readOnlyRootFilesystem") is True, container["name"]
        assert sc.get("allowPrivilegeEscalation") is False, container["name"]
        assert sc.get("privileged", False) is False, container["name"]
        assert sc.get("runAsUser", 1) != 0, container["name"]
        assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), container["name"]
        assert not (sc.get("capabilities") or {}).get("add"), container["name"]
        assert not any(v.get("hostPath") for v in pod.get("volumes") or [])


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [
        line.split(None, 1)[1].strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users, "the image never drops root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric USER lets runAsNonRoot verify it"
    assert int(uid) != 0
