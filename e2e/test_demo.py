"""``hack/demo`` against the real API server and the operator binary: the rows it prints
are the operator's answers, in the order the README's state machine gives them."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from e2e.conftest import OperatorFactory
from e2e.harness import ROOT, WORKSPACE, TransitionAuditor, eventually
from hack import demo
from reconciler.client import Client
from reconciler.envtest.controlplane import free_port

ROW = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  (\S+) +(\S+) +(\d+) ms  (.+)$")

# Each workspace's STATUS after each step, written down from the README's tables rather
# than taken from the demo's own scenarios.
EXPECTED_ROWS = {
    "workspace-phi-4-mini": ["Pending"] * 4 + ["Ready", "NotReady", "Ready"],
    "workspace-tuning-phi-3": ["Pending"] * 3 + ["Running", "Succeeded"],
    "workspace-tuning-phi-3-fails": ["Pending"] * 3 + ["Running", "Failed", "Failed", "Failed"],
}
EXPECTED_EDGES: dict[str, list[tuple[str | None, str | None]]] = {
    "workspace-phi-4-mini": [
        (None, "Pending"),
        ("Pending", "Ready"),
        ("Ready", "NotReady"),
        ("NotReady", "Ready"),
    ],
    "workspace-tuning-phi-3": [(None, "Pending"), ("Pending", "Running"), ("Running", "Succeeded")],
    "workspace-tuning-phi-3-fails": [
        (None, "Pending"),
        ("Pending", "Running"),
        ("Running", "Failed"),
    ],
}


def rows(lines: list[str]) -> dict[str, list[tuple[str, int, str]]]:
    """workspace → (STATUS, answer ms, what happened) per printed row, in order."""
    out: dict[str, list[tuple[str, int, str]]] = {}
    for line in lines:
        if m := ROW.match(line):
            out.setdefault(m[1], []).append((m[2], int(m[3]), m[4]))
    return out


@pytest.mark.parametrize("version", ["v0.12.0", "v0.8.1"])
async def test_demo_reports_every_answer(
    k8s: Client,
    kubeconfig: Path,
    namespace: str,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
    version: str,
) -> None:
    await start_operator(f"--namespace={namespace}").wait_ready()
    lines: list[str] = []
    args = ["--kubeconfig", str(kubeconfig), "--namespace", namespace, "--pace", "0"]
    code = await demo.main([*args, "--kaito-version", version], say=lines.append)
    assert code == 0, "\n".join(lines)

    seen = rows(lines)
    assert {name: [r[0] for r in rs] for name, rs in seen.items()} == EXPECTED_ROWS
    inference, failing = seen["workspace-phi-4-mini"], seen["workspace-tuning-phi-3-fails"]
    assert "InferenceReady=False/ContainerCrashLoopBackOff" in inference[5][2]
    assert "JobStarted=False/WorkspaceTuningJobStatusFailed" in failing[4][2]
    assert any("get workspace -n " + namespace + " -w" in line for line in lines)
    assert any(line.startswith("Summary:") for line in lines)

    # The API server's own record agrees: only legal edges (the auditor fixture fails
    # on any other), and KAITO's every write erased STATUS, which the operator restored.
    for name, edges in EXPECTED_EDGES.items():
        await auditor.wait_changes(namespace, name, edges)
    kaito_writes = {name: len(states) - 1 for name, states in EXPECTED_ROWS.items()}

    def erasures() -> Counter[str]:
        return Counter(name for ns, name, _ in auditor.erasures if ns == namespace)

    await eventually(lambda: erasures() == kaito_writes, 10, f"erasures {kaito_writes}")

    async def all_deleted() -> bool:
        return not (await k8s.list(WORKSPACE, namespace)).get("items")

    await eventually(all_deleted, 10, "the demo to delete its workspaces")


async def test_demo_without_operator_says_so(
    kubeconfig: Path, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--kubeconfig", str(kubeconfig), "--namespace", namespace, "--pace", "0"]
    code = await demo.main([*args, "--timeout", "1"], say=lambda _: None)
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    assert all("is the operator (`hack/run`) running" in line for line in err), err
    assert "Traceback" not in "\n".join(err)


@pytest.fixture
def closed_kubeconfig(kubeconfig: Path, tmp_path: Path) -> Path:
    """The test cluster's kubeconfig pointing at a port nothing listens on."""
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    closed = tmp_path / "closed.kubeconfig"
    closed.write_text(yaml.safe_dump(config))
    return closed


async def test_demo_unreachable_api_server_is_one_line(
    closed_kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = closed_kubeconfig
    code = await demo.main(["--kubeconfig", str(closed), "--pace", "0"], say=lambda _: None)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cannot reach the API server" in err[0]
    assert "start `hack/run` first" in err[0]


def test_script_without_local_control_plane(tmp_path: Path) -> None:
    """``hack/demo`` with no --kubeconfig and no local plane: one line, exit 2."""
    env = {**os.environ, "RECONCILER_STATE_DIR": str(tmp_path / "no-plane")}
    proc = subprocess.run(
        [str(ROOT / "hack" / "demo")], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "start `hack/run` in another shell first" in last
