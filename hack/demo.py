"""``hack/demo``: KAITO's status writes, imitated, next to the running operator.

There is no KAITO here. This plays KAITO's workspace controller on three workspaces at
once, with the faithful writer of ``e2e/kaito.py`` (GET, ``meta.SetStatusCondition``,
a full PUT of the typed status with the read resourceVersion, retry on 409), and after
each write waits until the operator (``hack/run``) has answered with ``status.status``:

* inference (``kaito_workspace_phi_4_mini.yaml``): provisioning → nodes ready → model
  ready (Ready) → the model container crash-loops (NotReady) → recovers (Ready);
* fine-tuning (``kaito_workspace_tuning_phi_3.yaml``): Pending → Job started (Running)
  → Job succeeded (Succeeded);
* a second fine-tuning run whose Job fails (Failed) and which KAITO keeps writing
  (the Job recreated, started again) while STATUS stays Failed: terminal.

The demo never writes ``status.status``; every value it reports was written by the
operator. Every KAITO write erases it (KAITO's Go type has no such field), so the first
value that appears after a write is the operator's answer to that write: its stale
writes carry an older resourceVersion and are refused with a 409.

Reasons and messages are the ones KAITO writes (kaito-project/kaito main, v0.12.0
era: ``pkg/workspace/controllers/workspace_controller.go``, the node provisioners and
``classifyInferencePodFailure``; summarised in ``/work/shared/reference/kaito.md``
§2.2–§3.3). Condition order is KAITO's: the first reconcile appends NodesReady,
NodeClaimReady, ResourceReady, then InferenceReady or JobStarted, then
WorkspaceSucceeded.

Exit codes: 0 every answer was the expected one; 1 the operator did not answer in time
or answered otherwise; 2 the cluster is not usable (unreachable, no Workspace CRD, bad
kubeconfig, a refused request).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio
import yaml

from controllers.workspace.fsm import WorkspaceState
from controllers.workspace.reconciler import WORKSPACE
from e2e.kaito import KaitoVersion, KaitoWriter
from reconciler.client import Client, KubeconfigError
from reconciler.envtest.settings import assets_dir
from reconciler.errors import AlreadyExists, ApiError, NotFound, TransportError
from reconciler.resource import NAMESPACE

Obj = dict[str, Any]
Say = Callable[[str], None]

DEFAULT_NAMESPACE = "kaito-demo"
DEFAULT_PACE = 2.0
"""Seconds between two steps of a workspace: slow enough to follow ``kubectl get -w``."""
DEFAULT_TIMEOUT = 30.0
"""Seconds the operator has to answer one write; it usually takes tens of milliseconds."""
POLL_INTERVAL = 0.005
"""Seconds between two reads while waiting for an answer: the resolution of the times
reported. An answer usually takes a few of them, so the reads stay few."""
USER_AGENT = "kaito-demo"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kaito"

TERMINAL = frozenset({WorkspaceState.SUCCEEDED, WorkspaceState.FAILED})


class Actor(StrEnum):
    USER = "user"
    KAITO = "KAITO"


@dataclass(frozen=True)
class Cond:
    """A condition as KAITO sets it; lastTransitionTime is left to SetStatusCondition."""

    type: str
    status: str
    reason: str
    message: str

    def as_dict(self) -> Obj:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
        }

    def brief(self) -> str:
        """``Type=True``, or ``Type=False/Reason``: a False condition's reason says why."""
        if self.status == "True":
            return f"{self.type}=True"
        return f"{self.type}={self.status}/{self.reason}"


@dataclass(frozen=True)
class Step:
    """One thing that happens to a workspace and the STATUS the operator must answer.

    A user step creates the workspace; a KAITO step sets ``conditions`` the way KAITO's
    status sync does (the types it leaves out keep their entries)."""

    actor: Actor
    story: str
    expect: WorkspaceState
    conditions: tuple[Cond, ...] = ()

    def wrote(self) -> str:
        what = " ".join(c.brief() for c in self.conditions)
        return f"{self.story}: {what}" if what else self.story


@dataclass(frozen=True)
class Scenario:
    name: str
    example: str
    """The KAITO example manifest (tests/fixtures/kaito) the user applies."""
    steps: tuple[Step, ...]


# -- KAITO's conditions, reasons and messages (reference/kaito.md §2.3) -------------------
PROVISIONING = (
    Cond("NodesReady", "False", "NodeNotReady", "Not enough Nodes are ready"),
    Cond("NodeClaimReady", "False", "NodeClaimNotReady", "Ready NodeClaims are not enough"),
    Cond(
        "ResourceReady",
        "False",
        "workspaceResourceStatusNotReady",
        "node claim or node status condition not ready",
    ),
)
NODE_CLAIM_READY = (
    Cond("NodeClaimReady", "True", "NodeClaimsReady", "Enough NodeClaims are ready"),
)
NODES_READY = (
    Cond("NodesReady", "True", "NodesReady", "Enough Nodes are ready"),
    Cond("ResourceReady", "True", "workspaceResourceStatusSuccess", "workspace resource is ready"),
)
INFERENCE_PENDING = (
    Cond(
        "InferenceReady",
        "False",
        "WorkspaceInferenceStatusPending",
        "Inference workload is not ready",
    ),
    Cond(
        "WorkspaceSucceeded",
        "False",
        "workspacePending",
        "workspace is waiting for inference workload readiness",
    ),
)
INFERENCE_SERVING = (
    Cond(
        "InferenceReady",
        "True",
        "WorkspaceInferenceStatusSuccess",
        "Inference has been deployed successfully",
    ),
    Cond("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
)


def crash_loop(container: str) -> tuple[Cond, ...]:
    """InferenceReady as classifyInferencePodFailure reports a container in
    CrashLoopBackOff (the inference StatefulSet's container is named after the
    workspace), and WorkspaceSucceeded back to pending."""
    message = f'container "{container}" is in CrashLoopBackOff; last termination: exit code 1'
    return (
        Cond("InferenceReady", "False", "ContainerCrashLoopBackOff", message),
        INFERENCE_PENDING[1],
    )


JOB_NOT_STARTED = (
    Cond("JobStarted", "False", "WorkspaceTuningJobStatusPending", "Tuning job has not started"),
    Cond(
        "WorkspaceSucceeded",
        "False",
        "workspacePending",
        "workspace is initializing, tuning job has not started",
    ),
)
JOB_RUNNING = (
    Cond("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started"),
    Cond(
        "WorkspaceSucceeded",
        "False",
        "workspacePending",
        "workspace has not completed yet, tuning job is running",
    ),
)
# KAITO's message for a succeeded tuning workspace is not in our notes; the inference
# one stands in (the state machine reads only type, status and reason).
JOB_SUCCEEDED = (Cond("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),)
JOB_FAILED = (
    Cond("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "tuning job failed"),
    Cond("WorkspaceSucceeded", "False", "workspaceFailed", "tuning job failed"),
)

INFERENCE_EXAMPLE = "kaito_workspace_phi_4_mini.yaml"
TUNING_EXAMPLE = "kaito_workspace_tuning_phi_3.yaml"


def _created(example: str) -> Step:
    return Step(Actor.USER, f"created from {example}", WorkspaceState.PENDING)


def _tuning_until_running() -> tuple[Step, ...]:
    return (
        _created(TUNING_EXAMPLE),
        Step(
            Actor.KAITO,
            "provisioning",
            WorkspaceState.PENDING,
            (*PROVISIONING, *JOB_NOT_STARTED),
        ),
        Step(
            Actor.KAITO,
            "GPU node ready",
            WorkspaceState.PENDING,
            (*NODE_CLAIM_READY, *NODES_READY),
        ),
        Step(Actor.KAITO, "tuning Job started", WorkspaceState.RUNNING, JOB_RUNNING),
    )


def scenarios() -> tuple[Scenario, ...]:
    """The three workspaces and what happens to each, in order."""
    inference = "workspace-phi-4-mini"
    state = WorkspaceState
    return (
        Scenario(
            inference,
            INFERENCE_EXAMPLE,
            (
                _created(INFERENCE_EXAMPLE),
                Step(
                    Actor.KAITO,
                    "provisioning",
                    state.PENDING,
                    (*PROVISIONING, *INFERENCE_PENDING),
                ),
                Step(Actor.KAITO, "NodeClaim launched", state.PENDING, NODE_CLAIM_READY),
                Step(Actor.KAITO, "GPU node ready", state.PENDING, NODES_READY),
                Step(Actor.KAITO, "model served", state.READY, INFERENCE_SERVING),
                Step(Actor.KAITO, "model crashes", state.NOT_READY, crash_loop(inference)),
                Step(Actor.KAITO, "model recovered", state.READY, INFERENCE_SERVING),
            ),
        ),
        Scenario(
            "workspace-tuning-phi-3",
            TUNING_EXAMPLE,
            (
                *_tuning_until_running(),
                Step(Actor.KAITO, "tuning Job succeeded", state.SUCCEEDED, JOB_SUCCEEDED),
            ),
        ),
        Scenario(
            "workspace-tuning-phi-3-fails",
            TUNING_EXAMPLE,
            (
                *_tuning_until_running(),
                Step(Actor.KAITO, "tuning Job failed", state.FAILED, JOB_FAILED),
                # KAITO's tuning status never reads the previous state: a recreated Job
                # reads as not started, then as running (reference/kaito.md §3.4).
                Step(
                    Actor.KAITO,
                    "Job deleted, KAITO recreates it",
                    state.FAILED,
                    JOB_NOT_STARTED,
                ),
                Step(Actor.KAITO, "new Job started", state.FAILED, JOB_RUNNING),
            ),
        ),
    )


def manifest(scenario: Scenario, namespace: str) -> Obj:
    """The example's Workspace under the scenario's name, as ``kubectl apply`` sends it."""
    for doc in yaml.safe_load_all((FIXTURES / scenario.example).read_text()):
        if doc and doc.get("kind") == "Workspace":
            return {**doc, "metadata": {"name": scenario.name, "namespace": namespace}}
    raise ValueError(f"no Workspace in {scenario.example}")


# -- reporting (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """The operator's answer to one step: the status.status it wrote, and how long after
    the step's write returned it was read."""

    workspace: str
    step: Step
    state: str
    seconds: float
    at: datetime


NAME_WIDTH = max(len(s.name) for s in scenarios())
HEADER = f"{'TIME':<12}  {'WORKSPACE':<{NAME_WIDTH}}  {'STATUS':<9}  {'ANSWER':>7}  WHAT HAPPENED"


def format_answer(a: Answer) -> str:
    """One table row: time, workspace, the operator's STATUS, its delay, the step."""
    ms = f"{a.seconds * 1000:.0f} ms"
    who = "" if a.step.actor is Actor.KAITO else "user: "
    return (
        f"{a.at:%H:%M:%S}.{a.at.microsecond // 1000:03d}  {a.workspace:<{NAME_WIDTH}}  "
        f"{a.state:<9}  {ms:>7}  {who}{a.step.wrote()}"
    )


def path_of(states: Sequence[str]) -> list[str]:
    """The states in order, each repeat of the previous one dropped."""
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


def _repeats_of_last(states: Sequence[str]) -> int:
    """How many answers before the last one already gave the last state, back to back."""
    count = 0
    for state in reversed(states[:-1]):
        if state != states[-1]:
            break
        count += 1
    return count


def summary(answers: Sequence[Answer]) -> list[str]:
    lines = []
    for scenario in scenarios():
        mine = [a for a in answers if a.workspace == scenario.name]
        if not mine:
            continue
        states = [a.state for a in mine]
        ms = [a.seconds * 1000 for a in mine]
        line = (
            f"  {scenario.name:<{NAME_WIDTH}}  {' → '.join(path_of(states))}  "
            f"({len(mine)} answers, {min(ms):.0f}–{max(ms):.0f} ms, "
            f"median {statistics.median(ms):.0f} ms)"
        )
        final = states[-1]
        later = _repeats_of_last(states)
        if final in TERMINAL and later:
            line += f"; stayed {final} through {later} more KAITO writes"
        lines.append(line)
    return lines


# -- the I/O part ---------------------------------------------------------------------------
class Unusable(Exception):
    """The cluster cannot run the demo (exit 2)."""


class NoAnswer(Exception):
    """The operator did not answer a step in time, or answered otherwise (exit 1)."""


@dataclass(frozen=True)
class DemoOptions:
    kubeconfig: str
    namespace: str = DEFAULT_NAMESPACE
    pace: float = DEFAULT_PACE
    kaito_version: KaitoVersion = KaitoVersion.V0_12
    keep: bool = False
    timeout: float = DEFAULT_TIMEOUT


def _say(line: str) -> None:
    print(line, flush=True)


def kubectl() -> str:
    """kubectl as the user can run it: from PATH, else the one the control plane built."""
    if shutil.which("kubectl"):
        return "kubectl"
    built = assets_dir() / "kubectl"
    return str(built.resolve()) if built.is_file() else "kubectl"


async def preflight(client: Client, namespace: str) -> None:
    """The API server answers, serves Workspaces, and ``namespace`` exists."""
    try:
        doc = await client.raw("GET", f"/apis/{WORKSPACE.group}/{WORKSPACE.version}")
    except TransportError as err:
        raise Unusable(
            f"cannot reach the API server at {client.host} ({err}): start `hack/run` first, "
            "or pass --kubeconfig"
        ) from err
    except ApiError as err:
        raise Unusable(
            f"the API server at {client.host} does not serve {WORKSPACE.api_version} "
            f"({err.status} {err.reason}): install the CRD with `kubectl apply -k config/crd`"
        ) from err
    if not any(r.get("name") == WORKSPACE.plural for r in doc.get("resources", [])):
        raise Unusable(f"{WORKSPACE.api_version} on {client.host} does not serve workspaces")
    with contextlib.suppress(AlreadyExists):
        await client.create(
            NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )


async def _state(client: Client, namespace: str, name: str) -> str | None:
    obj = await client.get(WORKSPACE, name, namespace)
    return (obj.get("status") or {}).get("status")


async def _answer(
    client: Client, namespace: str, scenario: Scenario, step: Step, timeout: float
) -> str:
    """The first status.status after the step's write.

    Invariant: the write left status.status empty (a create has none; a KAITO write
    erases it), and the operator's writes are optimistic, so whatever appears next was
    decided on this step's conditions."""
    with anyio.move_on_after(timeout):
        # A poll, not a watch: each read is a quorum read, so it is never older than
        # the write it follows.
        while True:
            state = await _state(client, namespace, scenario.name)
            if state is not None:
                break
            await anyio.sleep(POLL_INTERVAL)
        if state != step.expect:
            raise NoAnswer(
                f"{scenario.name}: after {step.story!r} the operator answered {state}, "
                f"expected {step.expect}"
            )
        return state
    raise NoAnswer(
        f"{scenario.name}: no status.status within {timeout:g} s after {step.story!r}: "
        "is the operator (`hack/run`) running against this cluster?"
    )


async def _play(
    client: Client,
    writer: KaitoWriter,
    options: DemoOptions,
    scenario: Scenario,
    start_after: float,
    answers: list[Answer],
    say: Say,
) -> None:
    await anyio.sleep(start_after)
    for index, step in enumerate(scenario.steps):
        if index:
            await anyio.sleep(options.pace)
        if step.actor is Actor.USER:
            await client.create(WORKSPACE, manifest(scenario, options.namespace))
        else:
            conditions = [c.as_dict() for c in step.conditions]
            obj = await writer.set_conditions(options.namespace, scenario.name, *conditions)
            if (obj.get("status") or {}).get("status") is not None:
                # KAITO wrote nothing (the step changed no condition), so the state
                # read next would not be an answer to it: a step that is not one.
                raise AssertionError(f"{scenario.name}: {step.story!r} changes nothing")
        written = time.monotonic()
        state = await _answer(client, options.namespace, scenario, step, options.timeout)
        answer = Answer(scenario.name, step, state, time.monotonic() - written, datetime.now())
        answers.append(answer)
        say(format_answer(answer))


async def _delete(client: Client, namespace: str, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(NotFound):
            await client.delete(WORKSPACE, name, namespace)


async def _gone(client: Client, namespace: str, names: Sequence[str], timeout: float) -> None:
    """Wait until none of ``names`` exists (left over from an earlier run)."""
    with anyio.move_on_after(timeout):
        for name in names:
            while True:
                try:
                    await client.get(WORKSPACE, name, namespace)
                except NotFound:
                    break
                await anyio.sleep(POLL_INTERVAL)
        return
    raise Unusable(
        f"workspaces left over in namespace {namespace} from an earlier run were not gone "
        f"{timeout:g} s after deleting them: delete them, or use another --namespace"
    )


async def run_demo(client: Client, options: DemoOptions, say: Say = _say) -> list[Answer]:
    """Play every scenario at once (staggered by a fraction of the pace); returns the
    operator's answers in the order they came."""
    await preflight(client, options.namespace)
    plays = scenarios()
    names = [s.name for s in plays]
    await _delete(client, options.namespace, names)
    await _gone(client, options.namespace, names, options.timeout)
    say(
        f"Playing KAITO {options.kaito_version} (e2e/kaito.py) on {len(plays)} workspaces in "
        f"namespace {options.namespace}, a step every {options.pace:g} s. Watch along:"
    )
    say(f"  {kubectl()} --kubeconfig {options.kubeconfig} get workspace -n {options.namespace} -w")
    say(
        "Each KAITO write replaces the whole status and so erases STATUS (KAITO's type has "
        "no status.status);\nthe operator writes it back. ANSWER: from KAITO's write to "
        "the operator's STATUS."
    )
    say(HEADER)
    writer = KaitoWriter(client, version=options.kaito_version, deadline=options.timeout)
    answers: list[Answer] = []
    async with anyio.create_task_group() as tg:
        for i, scenario in enumerate(plays):
            offset = options.pace * i / len(plays)
            tg.start_soon(_play, client, writer, options, scenario, offset, answers, say)
    say("Summary: the operator answered every step as expected.")
    for line in summary(answers):
        say(line)
    if options.keep:
        say(
            f"Kept the workspaces; to delete them: {kubectl()} --kubeconfig "
            f"{options.kubeconfig} delete workspace -n {options.namespace} --all"
        )
    else:
        await _delete(client, options.namespace, names)
        say(f"Deleted the workspaces (--keep leaves them in namespace {options.namespace}).")
    return answers


# -- the command ----------------------------------------------------------------------------
def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    p = argparse.ArgumentParser(
        prog="hack/demo",
        description="Play KAITO's status writes on three workspaces next to the running "
        "operator (hack/run) and report how it answers each.",
    )
    p.add_argument(
        "--kubeconfig",
        required=True,
        help="the cluster the operator runs against (hack/demo: the local control plane's)",
    )
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="created if missing")
    p.add_argument("--pace", type=_non_negative, default=DEFAULT_PACE, help="seconds between steps")
    p.add_argument(
        "--kaito-version",
        choices=[v.value for v in KaitoVersion],
        default=KaitoVersion.V0_12.value,
        help="the KAITO release whose status writes are imitated",
    )
    p.add_argument("--keep", action="store_true", help="leave the workspaces at the end")
    p.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        help="seconds the operator has to answer each step",
    )
    a = p.parse_args(argv)
    return DemoOptions(
        kubeconfig=a.kubeconfig,
        namespace=a.namespace,
        pace=a.pace,
        kaito_version=KaitoVersion(a.kaito_version),
        keep=a.keep,
        timeout=a.timeout,
    )


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _unusable(host: str, err: BaseException) -> str | None:
    """The line that explains an error of the cluster (not of the operator), if it is one."""
    if isinstance(err, Unusable):
        return str(err)
    if isinstance(err, TransportError):
        return f"lost the API server at {host}: {err}"
    if isinstance(err, ApiError):
        return f"the API server at {host} refused a request: {err}"
    return None


def _fail(code: int, lines: Sequence[str]) -> int:
    for line in dict.fromkeys(lines):  # several workspaces may fail the same way
        print(f"hack/demo: {line}", file=sys.stderr, flush=True)
    return code


async def main(argv: Sequence[str] | None = None, say: Say = _say) -> int:
    """Exit code 0, 1 (no or a wrong answer) or 2 (the cluster is not usable)."""
    options = parse_args(argv)
    try:
        client = await Client.from_config(options.kubeconfig, user_agent=USER_AGENT)
    except KubeconfigError as err:
        return _fail(2, [str(err)])
    async with client:
        try:
            await run_demo(client, options, say)
        except Exception as exc:
            # Expected failures end in one line each, never a traceback; anything else
            # is a bug and keeps its traceback.
            leaves = _leaves(exc)
            if all(isinstance(e, NoAnswer) for e in leaves):
                return _fail(1, [str(e) for e in leaves])
            unusable = [_unusable(client.host, e) for e in leaves]
            if all(unusable):
                return _fail(2, [line for line in unusable if line])
            raise
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    try:
        return anyio.run(main, argv)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(cli())
