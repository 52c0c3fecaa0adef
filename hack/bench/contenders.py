"""The four controllers the benchmark runs, as processes started the same way."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hack.bench import procstat

ROOT = Path(__file__).resolve().parents[2]
BENCH_CACHE = ROOT / ".cache" / "bench"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
BENCH_VENV = BENCH_CACHE / "venv"
GO_PEER = BENCH_CACHE / "bin" / "workspace-peer-controller-runtime"
GO_PEER_SOURCES = ROOT / "hack" / "bench" / "peers" / "controller-runtime"
KOPF_PEER = ROOT / "hack" / "bench" / "peers" / "kopf_peer.py"
RAW_LIMIT = ROOT / "hack" / "bench" / "raw_limit.py"

RAW, OURS, CONTROLLER_RUNTIME, KOPF = "raw", "ours", "controller-runtime", "kopf"
BASELINE = "baseline"
"""Ours from another checkout (``--baseline DIR``), for paired before/after runs."""
ALL = (RAW, OURS, BASELINE, CONTROLLER_RUNTIME, KOPF)
DEFAULT = (RAW, OURS, CONTROLLER_RUNTIME, KOPF)
PYTHON = (OURS, BASELINE)
"""The contenders that are this project's operator (profiled with --profile)."""
WATCHING = (OURS, BASELINE, CONTROLLER_RUNTIME, KOPF)
"""The controllers that react to changes; the raw limit only writes a list it is given."""

STOP_TIMEOUT = 20.0


@dataclass
class Launch:
    """Everything one start of a controller needs."""

    kubeconfig: Path
    workers: int
    log_path: Path
    job_path: Path | None = None  # raw only: the patches to send
    readyz: bool = False  # ours only: serves /readyz (on a port it logs)
    extra_args: tuple[str, ...] = ()  # appended to the command line (experiments)
    cwd: Path = ROOT  # where ours runs `python -m controllers`: which checkout it is


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    started_at: float  # time.monotonic() just before the spawn
    readyz: bool = False
    log_path: Path | None = None
    log_offset: int = 0  # where this start's lines begin (retries append to the log)
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> procstat.Sample | None:
        try:
            return procstat.sample(self.pid)
        except OSError:
            return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        close = getattr(self._log, "close", None)
        if close is not None:
            close()
        return code


def _ours(launch: Launch) -> tuple[list[str], dict[str, str]]:
    launch.readyz = True
    return [
        str(PROJECT_PYTHON),
        "-m",
        "controllers",
        f"--kubeconfig={launch.kubeconfig}",
        "--metrics-bind-address=0",
        # Port 0: the operator logs the port it bound (see reconciler.envtest.oplog).
        "--health-probe-bind-address=127.0.0.1:0",
        f"--max-concurrent-reconciles={launch.workers}",
        # The workspaces are as old as the run; past 15 min, the 1 in 4 that stay Pending
        # would each get a StuckPending warning, work no peer does.
        "--pending-warning-after=1000h",
        "--log-format=json",
        "--log-level=info",
    ], {}


def _raw(launch: Launch) -> tuple[list[str], dict[str, str]]:
    if launch.job_path is None:
        raise ValueError("the raw limit needs a job file")
    return [
        str(PROJECT_PYTHON),
        str(RAW_LIMIT),
        f"--kubeconfig={launch.kubeconfig}",
        f"--workers={launch.workers}",
        f"--job={launch.job_path}",
    ], {}


def _controller_runtime(launch: Launch) -> tuple[list[str], dict[str, str]]:
    return [
        str(GO_PEER),
        f"--kubeconfig={launch.kubeconfig}",
        f"--workers={launch.workers}",
    ], {}


def _kopf(launch: Launch) -> tuple[list[str], dict[str, str]]:
    return [
        str(BENCH_VENV / "bin" / "kopf"),
        "run",
        "--standalone",
        "--all-namespaces",
        str(KOPF_PEER),
    ], {
        "KUBECONFIG": str(launch.kubeconfig),
        # The peer imports the project's pure state machine (and pydantic from its venv).
        "PYTHONPATH": str(ROOT),
    }


COMMANDS: dict[str, Callable[[Launch], tuple[list[str], dict[str, str]]]] = {
    RAW: _raw,
    OURS: _ours,
    BASELINE: _ours,
    CONTROLLER_RUNTIME: _controller_runtime,
    KOPF: _kopf,
}


def start(name: str, launch: Launch) -> Process:
    argv, env = COMMANDS[name](launch)
    argv += launch.extra_args
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = launch.log_path.stat().st_size if launch.log_path.exists() else 0
    log = launch.log_path.open("ab")
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=launch.cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        start_new_session=True,
    )
    return Process(name, proc, started, launch.readyz, launch.log_path, offset, log)


def go_peer_sources_digest() -> str:
    """What `hack/bench/run` keys the Go peer's build on: sha256 of go.mod, go.sum and
    the *.go files (in glob order), concatenated."""
    files = [GO_PEER_SOURCES / "go.mod", GO_PEER_SOURCES / "go.sum"]
    files += sorted(GO_PEER_SOURCES.glob("*.go"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def missing() -> list[str]:
    """What `hack/bench/run` should have built, if it is not there or is out of date."""
    wanted = [PROJECT_PYTHON, GO_PEER, BENCH_VENV / "bin" / "kopf"]
    out = [str(p) for p in wanted if not p.exists()]
    stamp = GO_PEER.with_name(GO_PEER.name + ".stamp")
    if GO_PEER.exists() and (
        not stamp.exists() or stamp.read_text().strip() != go_peer_sources_digest()
    ):
        out.append(f"{GO_PEER} (older than {GO_PEER_SOURCES.relative_to(ROOT)})")
    return out
