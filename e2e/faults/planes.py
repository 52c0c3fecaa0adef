"""Control planes of the suite's own, and kill -9 restarts that wait for the whole process.

``ControlPlane.restart_apiserver(kill=True)`` starts the new process as soon as the old
one's thread-group leader is a zombie. The other threads of a Go process may still be
exiting then, holding the listening socket, and the new process fails with "bind:
address already in use" (test_envtest_restarts.py). The restarts here wait until the
killed process is gone entirely.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from e2e.harness import ROOT
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.plugin import private_plane as envtest_private_plane

CRD_DIR = ROOT / "config" / "crd"
EXIT_TIMEOUT = 30.0


def private_plane(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    crd_paths: Sequence[Path] = (CRD_DIR,),
    apiserver_args: Sequence[str] = (),
) -> contextlib.AbstractContextManager[ControlPlane]:
    """envtest's private plane with our CRD, for faults the shared one should not see."""
    return envtest_private_plane(
        tmp_path_factory,
        name,
        crd_paths=crd_paths,
        apiserver_args=apiserver_args,
        why="fault injection needs local control planes",
    )


@asynccontextmanager
async def client_for(kubeconfig: Path) -> AsyncIterator[Client]:
    client = await Client.from_config(str(kubeconfig))
    async with client:
        yield client


def threads_alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs (a zombie leader may wait for others)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    state, num_threads = fields[0], int(fields[17])  # stat fields 3 and 20
    return state not in ("Z", "X") or num_threads > 1


def kill_and_wait(pid: int) -> None:
    """SIGKILL ``pid`` and return once none of its threads holds a resource any more."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + EXIT_TIMEOUT
    while threads_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still running {EXIT_TIMEOUT}s after SIGKILL")
        time.sleep(0.01)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def restart_apiserver(plane: ControlPlane) -> None:
    """kill -9 kube-apiserver and start it again on the same port (blocking)."""
    kill_and_wait(plane.state.apiserver_pid)
    plane.start_apiserver()


def restart_etcd(plane: ControlPlane) -> None:
    """kill -9 etcd, start it again on the same data, wait for the API server (blocking)."""
    kill_and_wait(plane.state.etcd_pid)
    plane.start_etcd()
    plane.wait_ready(timeout=plane.start_timeout)
