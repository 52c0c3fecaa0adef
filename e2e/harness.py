"""What the e2e tests share: the operator as a real process, KAITO-shaped workspaces,
condition writes as KAITO's controller makes them (``e2e/kaito.py``), polling with
deadlines, and the transition auditor."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import yaml

from controllers.workspace.fsm import LEGAL_STATES, TRANSITIONS, Workload, WorkspaceState
from controllers.workspace.reconciler import WORKSPACE as WORKSPACE  # re-exported for the tests
from e2e.kaito import KaitoWriter
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.oplog import log_entries, served_ports
from reconciler.errors import ApiError, Conflict, Gone, TransportError
from reconciler.resource import CORE_EVENT, ResourceType

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "kaito"
WORKSPACE_V1ALPHA1 = ResourceType("kaito.sh", "v1alpha1", "Workspace", "workspaces")


# -- waiting ----------------------------------------------------------------------------
async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    describe: Callable[[], Awaitable[str]] | None = None,
    poll: float = 0.05,
) -> float:
    """Poll ``check`` (plain or async) until it is true and return the seconds it took;
    after ``timeout`` fail with ``what`` and, if given, ``describe()``'s account of what
    was seen instead."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            message = f"timed out after {timeout}s waiting for {what}"
            if describe is not None:
                message += f"; {await describe()}"
            raise AssertionError(message)
        await anyio.sleep(poll)


async def state_of(k8s: Client, ns: str, name: str) -> str | None:
    obj = await k8s.get(WORKSPACE, name, ns)
    return (obj.get("status") or {}).get("status")


async def wait_state(k8s: Client, ns: str, name: str, state: str, timeout: float = 20.0) -> None:
    async def check() -> bool:
        return await state_of(k8s, ns, name) == state

    await eventually(
        check, timeout, f"{ns}/{name} to be {state}", describe=lambda: _describe(k8s, ns, name)
    )


async def events_for(k8s: Client, ns: str, name: str) -> list[Obj]:
    page = await k8s.list(CORE_EVENT, ns, field_selector=f"involvedObject.name={name}")
    return list(page.get("items") or [])


async def wait_event(
    k8s: Client, ns: str, name: str, reason: str, contains: str = "", timeout: float = 20.0
) -> Obj:
    found: list[Obj] = []

    async def check() -> bool:
        for ev in await events_for(k8s, ns, name):
            if ev.get("reason") == reason and contains in ev.get("message", ""):
                found.append(ev)
                return True
        return False

    await eventually(
        check,
        timeout,
        f"a {reason} event on {ns}/{name} containing {contains!r}",
        describe=lambda: _describe(k8s, ns, name),
    )
    return found[0]


async def _describe(k8s: Client, ns: str, name: str) -> str:
    """What a failed wait sees: the object's state and conditions and its Events."""
    obj = await k8s.get(WORKSPACE, name, ns)
    status = obj.get("status") or {}
    conditions = [
        f"{c.get('type')}={c.get('status')}/{c.get('reason')}"
        for c in status.get("conditions") or []
    ]
    events = [
        f"{ev.get('type')} {ev.get('reason')}: {ev.get('message')}"
        for ev in await events_for(k8s, ns, name)
    ]
    return (
        f"saw status.status={status.get('status')!r} at resourceVersion "
        f"{obj['metadata'].get('resourceVersion')}, conditions {conditions}, events {events}"
    )


# -- kubectl, as a user runs it -------------------------------------------------------------
def kubectl_binary(plane: ControlPlane | None) -> str:
    """The control plane's kubectl, or the one on PATH against an existing cluster."""
    return str(plane.bin_dir / "kubectl") if plane else "kubectl"


async def kubectl(plane: ControlPlane | None, kubeconfig: object, *args: str) -> str:
    """``kubectl --kubeconfig=… ARGS``; its standard output, or a failure with stderr."""
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [kubectl_binary(plane), f"--kubeconfig={kubeconfig}", *args], check=False
        )
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.decode().strip()}")
    return done.stdout.decode()


# -- workspaces as users and KAITO write them -------------------------------------------
def example(file: str) -> Obj:
    """A KAITO example manifest (the first Workspace in the file)."""
    for doc in yaml.safe_load_all((FIXTURES / file).read_text()):
        if doc and doc.get("kind") == "Workspace":
            return dict(doc)
    raise ValueError(f"no Workspace in {file}")


INFERENCE_EXAMPLE = "kaito_workspace_phi_4_mini.yaml"
TUNING_EXAMPLE = "kaito_workspace_tuning_phi_3.yaml"


async def create_workspace(
    k8s: Client, ns: str, name: str, file: str = INFERENCE_EXAMPLE, **overrides: Any
) -> Obj:
    obj = copy.deepcopy(example(file))
    obj["metadata"] = {"name": name, "namespace": ns, **overrides.pop("metadata", {})}
    obj.update(overrides)
    rt = WORKSPACE_V1ALPHA1 if obj["apiVersion"].endswith("v1alpha1") else WORKSPACE
    return await k8s.create(rt, obj)


def condition(type_: str, status: str, reason: str = "", message: str = "") -> Obj:
    """A condition as KAITO builds one, lastTransitionTime = now (v0.8.1's
    UpdateStatusConditionIfNotMatch does so; ``meta.SetStatusCondition`` uses it only
    when the status changes, and keeps the stored one otherwise)."""
    return {
        "type": type_,
        "status": status,
        "reason": reason or f"{type_}{status}",
        "message": message or f"{type_} is {status}",
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def set_conditions(k8s: Client, ns: str, name: str, *conditions: Obj) -> Obj:
    """Leave exactly ``conditions`` among KAITO's conditions, written as KAITO v0.12's
    controller writes them (see ``e2e/kaito.py``): GET, ``meta.SetStatusCondition`` each,
    drop KAITO's other types (other controllers' qualified types stay), PUT the typed
    status with the read resourceVersion, retry on 409.

    That PUT erases status.status, as real KAITO's does, unless nothing changed. Returns
    the object the PUT returned (the one read, if nothing changed).
    """
    return await KaitoWriter(k8s).replace_conditions(ns, name, *conditions)


async def merge_patch_conditions(k8s: Client, ns: str, name: str, *conditions: Obj) -> Obj:
    """Replace status.conditions with a merge patch, which KAITO never does: only for
    tests about input KAITO cannot write (two entries of one type, a condition in a
    shape metav1.Condition cannot hold). Leaves status.status alone."""
    return await k8s.patch_status(
        WORKSPACE, name, {"status": {"conditions": list(conditions)}}, namespace=ns
    )


INFERENCE_READY = (
    condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
    condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
)


CRASHING = (
    condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    condition("InferenceReady", "False", "ContainerCrashLoopBackOff", "back-off"),
)


async def walk_inference(k8s: Client, ns: str, name: str) -> None:
    """Create an inference workspace and take it Pending → Ready → NotReady (a crash
    loop) the way KAITO's conditions would, waiting for each state."""
    await create_workspace(k8s, ns, name)
    await wait_state(k8s, ns, name, "Pending")
    await set_conditions(k8s, ns, name, *INFERENCE_READY)
    await wait_state(k8s, ns, name, "Ready")
    await set_conditions(k8s, ns, name, *CRASHING)
    await wait_state(k8s, ns, name, "NotReady")


async def assert_held(
    k8s: Client,
    op: Operator,
    ns: str,
    name: str,
    written: Obj,
    state: str,
    *,
    decided: str | None = None,
) -> None:
    """After the write that returned ``written``, the operator decided ``decided``
    (default: ``state``) on that very version, and ``ns/name`` holds ``state``.

    A KAITO write erases status.status, so "holds" may take the operator's restoring
    write: wait for it (the transition auditor fails the test on any other value)."""
    outcome = await op.wait_decided(ns, name, written)
    assert outcome == (decided or state), f"{ns}/{name}: decided {outcome}"
    await wait_state(k8s, ns, name, state)


def sum_samples(exposition: str, name: str, labels: Mapping[str, str]) -> float:
    """Sum of the samples of metric ``name`` in Prometheus text ``exposition`` whose
    labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        family, _, label_text = head.partition("{")
        if family == name and all(w in label_text for w in wanted):
            total += float(value)
    return total


# -- the operator as a process ----------------------------------------------------------
@dataclass
class Operator:
    """``python -m controllers`` with the given flags, logging to a file."""

    kubeconfig: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _ports: dict[str, int] = field(default_factory=dict)
    _log_offset: int = 0

    def start(self) -> Operator:
        # Port 0: the operator binds free ports itself and logs them. Picking ports here
        # and passing them on would race with every other process taking ports meanwhile.
        cmd = [
            sys.executable,
            "-m",
            "controllers",
            f"--kubeconfig={self.kubeconfig}",
            "--metrics-bind-address=127.0.0.1:0",
            "--health-probe-bind-address=127.0.0.1:0",
            "--log-format=json",
            *self.args,
        ]
        self._ports = {}
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **self.env},
        )
        return self

    @property
    def metrics_port(self) -> int:
        return self._port("/metrics")

    @property
    def health_port(self) -> int:
        return self._port("/readyz")

    def _port(self, path: str) -> int:
        """The port of the server that serves ``path``, from the operator's "serving" log
        line; ConnectionRefusedError (an OSError, like a closed port) until it is logged."""
        if path not in self._ports:
            self._ports = served_ports(self.log_path, self._log_offset)
        if path not in self._ports:
            raise ConnectionRefusedError(f"the operator has not logged a port for {path} yet")
        return self._ports[path]

    def decisions(self, ns: str, name: str) -> dict[str, str]:
        """resourceVersion → outcome of every decision the operator logged on ``ns/name``
        (the "decided" lines; start the operator with ``--log-level=debug``)."""
        return {
            str(entry.get("resource_version")): str(entry.get("outcome"))
            for entry in log_entries(self.log_path, "decided", self._log_offset)
            if (entry.get("namespace"), entry.get("name")) == (ns, name)
        }

    async def wait_decided(self, ns: str, name: str, written: Obj, timeout: float = 20.0) -> str:
        """Wait until the operator has decided on exactly the version ``written`` (an
        object as a write returned it) and return its outcome: a state, ``Deleting`` or
        ``InvalidWorkload``. A barrier for checks that something does *not* change."""
        rv = str(written["metadata"]["resourceVersion"])

        async def check() -> bool:
            return rv in self.decisions(ns, name)

        await eventually(check, timeout, f"the operator's decision on {ns}/{name}@{rv}")
        return self.decisions(ns, name)[rv]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    async def wait_ready(self, timeout: float = 30.0) -> Operator:
        async def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log()}")
            return self.ready()

        await eventually(check, timeout, "operator /readyz")
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum_samples(self.metrics(), name, labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


# -- the transition auditor -------------------------------------------------------------
@dataclass
class Transition:
    namespace: str
    name: str
    workload: Workload | None
    previous: str | None
    state: str | None
    legal: bool


RECORD = "workspace-status.kaito.sh/State"
"""The operator's record condition (README: how the state is remembered)."""


def held_state(obj: Obj) -> str | None:
    """status.status, or where a KAITO write dropped it, the operator's record of it."""
    status = obj.get("status") or {}
    if status.get("status") is not None:
        return str(status["status"])
    for c in status.get("conditions") or ():
        if c.get("type") == RECORD:
            return str(c.get("reason"))
    return None


def _workload(obj: Obj) -> Workload | None:
    has_i, has_t = obj.get("inference") is not None, obj.get("tuning") is not None
    if has_i == has_t:
        return None
    return Workload.INFERENCE if has_i else Workload.TUNING


class TransitionAuditor:
    """Watches every Workspace and checks each status.status change against the table.

    A change to an illegal value, an edge not in ``TRANSITIONS``, or a state written
    onto an invalid workload is recorded as illegal. Values written by the test itself
    (to simulate garbage) are excused with :meth:`expect_external`.

    A state that disappears is not a transition: KAITO's status PUT erases status.status
    (see ``e2e/kaito.py``). It is recorded in ``erasures``, and the next state written
    is checked as an edge from the state before the erasure.
    """

    def __init__(self, client: Client, namespace: str | None = None) -> None:
        self._client = client
        self._namespace = namespace
        self._last: dict[tuple[str, str], str | None] = {}
        self._excused: set[tuple[str, str, str]] = set()
        self.transitions: list[Transition] = []
        self.erasures: list[tuple[str, str, str]] = []  # (namespace, name, state erased)
        self.events_seen = 0
        self.relists = 0
        self.errors: list[str] = []  # what made the watch start again, for failure messages

    def expect_external(self, ns: str, name: str, value: str) -> None:
        self._excused.add((ns, name, value))

    @property
    def illegal(self) -> list[Transition]:
        return [t for t in self.transitions if not t.legal]

    def changes_of(self, ns: str, name: str) -> list[tuple[str | None, str | None]]:
        return [
            (t.previous, t.state) for t in self.transitions if (t.namespace, t.name) == (ns, name)
        ]

    async def wait_changes(
        self,
        ns: str,
        name: str,
        expected: list[tuple[str | None, str | None]],
        timeout: float = 10.0,
    ) -> None:
        """Wait until the auditor's watch has seen exactly ``expected`` for the object."""

        async def check() -> bool:
            return self.changes_of(ns, name) == expected

        async def seen() -> str:
            return (
                f"the auditor saw {self.changes_of(ns, name)} ({self.events_seen} events, "
                f"{self.relists} relists, errors {self.errors[-3:]})"
            )

        await eventually(
            check, timeout, f"the auditor to see {expected} on {ns}/{name}", describe=seen
        )

    async def run(
        self,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        items, rv = await self._client.list_all(WORKSPACE, self._namespace)
        for obj in items:
            m = obj["metadata"]
            self._last[(m["namespace"], m["name"])] = held_state(obj)
        task_status.started()
        relist = False
        while True:
            try:
                if relist:
                    # Compare what we hold with the current states (versions in between
                    # are not seen: tests that must see every version use etcd's audit).
                    items, rv = await self._client.list_all(WORKSPACE, self._namespace)
                    self.relists += 1
                    for obj in items:
                        self._observe(obj)
                    relist = False
                async with self._client.watch(
                    WORKSPACE, self._namespace, resource_version=rv, idle_timeout=30
                ) as events:
                    async for ev in events:
                        if ev.type == "ERROR":
                            # A Status, not an object: start again from a fresh list.
                            self.errors.append(str(ev.object.get("message")))
                            relist = True
                            break
                        rv = ev.object["metadata"].get("resourceVersion", rv)
                        if ev.type in ("ADDED", "MODIFIED"):
                            self._observe(ev.object)
                        elif ev.type == "DELETED":
                            m = ev.object["metadata"]
                            self._last.pop((m["namespace"], m["name"]), None)
            except Gone:
                relist = True
            except (TimeoutError, TransportError, Conflict):
                await anyio.sleep(0.2)
            except ApiError as err:  # e.g. 429/5xx from a loaded API server
                self.errors.append(str(err))
                relist = True
                await anyio.sleep(0.2)

    def _observe(self, obj: Obj) -> None:
        self.events_seen += 1
        m = obj["metadata"]
        key = (m["namespace"], m["name"])
        state = (obj.get("status") or {}).get("status")
        known = key in self._last
        previous = self._last.get(key)
        if state is None and previous is not None:
            self.erasures.append((key[0], key[1], previous))
            return
        self._last[key] = state
        if previous == state or (not known and state is None):
            return
        workload = _workload(obj)
        legal = self._legal(key, workload, previous, state)
        self.transitions.append(Transition(key[0], key[1], workload, previous, state, legal))

    def _legal(
        self, key: tuple[str, str], workload: Workload | None, prev: str | None, state: str | None
    ) -> bool:
        if state is not None and (key[0], key[1], state) in self._excused:
            return True
        if state is None or workload is None:
            return prev == state
        try:
            new = WorkspaceState(state)
        except ValueError:
            return False
        old: WorkspaceState | None
        try:
            old = WorkspaceState(prev) if prev is not None else None
        except ValueError:
            old = None
        if old is not None and old not in LEGAL_STATES[workload]:
            old = None
        return (old, new) in TRANSITIONS[workload]
