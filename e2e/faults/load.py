"""Load for fault scenarios: many workspaces, condition churn written as KAITO writes it
(``e2e/kaito.py``) that survives an unreachable API server, and convergence checks
against the oracle in ``audit``.

Every churn write carries its sequence number in an informational condition
(``ScalingDownCompleted``, which gates nothing), so the test can tell afterwards whether
the conditions the server holds are the last ones written: a lower number means a
condition write was lost (clobbered by someone who should never send conditions).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from e2e.faults.audit import converged, workload_of
from e2e.harness import (
    INFERENCE_EXAMPLE,
    WORKSPACE,
    Obj,
    Operator,
    condition,
    example,
    sum_samples,
)
from e2e.kaito import KaitoWriter
from reconciler.client import Client
from reconciler.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    ServerError,
    TooManyRequests,
    TransportError,
)

T = TypeVar("T")
# Failures that mean "the API server is away right now", not "the request is wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    TransportError,
    ServerError,
    TooManyRequests,
    TimeoutError,
)
# A condition write that fails so may or may not have landed; the churn moves on. (A
# Conflict is KAITO's writer giving up after retrying for REQUEST_BOUND: it did not land.)
WRITE_FAILURES: tuple[type[BaseException], ...] = (*UNAVAILABLE, NotFound, Conflict)
REQUEST_BOUND = 5.0  # seconds; etcd outages make the API server hold requests for long

INFERENCE_SETS: dict[str, tuple[Obj, ...]] = {
    "ready": (
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    ),
    "crashing": (
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "False", "ContainerCrashLoopBackOff", "back-off 5m"),
        condition("WorkspaceSucceeded", "False", "workspacePending"),
    ),
    "provisioning": (
        condition("NodeClaimReady", "False", "NodeClaimNotReady", "InsufficientCapacity"),
        condition("ResourceReady", "False", "workspaceResourceStatusPending"),
        condition("InferenceReady", "False", "WorkspaceInferenceStatusPending"),
    ),
    "unknown": (),
}
TUNING_SETS: dict[str, tuple[Obj, ...]] = {
    "queued": (condition("JobStarted", "False", "WorkspaceTuningJobStatusPending"),),
    "started": (condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),),
    "succeeded": (
        condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    ),
    "failed": (
        condition("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "job failed"),
        condition("WorkspaceSucceeded", "False", "workspaceFailed"),
    ),
}
# Tuning workspaces mostly wait and run, and sometimes end: terminal states are sticky,
# so ending them too often would leave nothing to churn.
TUNING_WEIGHTS = {"queued": 4, "started": 6, "succeeded": 1, "failed": 1}
MARKER = "ScalingDownCompleted"


def marker(seq: int) -> Obj:
    return condition(MARKER, "True", "ChurnWrite", f"churn write {seq}")


def seq_of(obj: Obj) -> int:
    """The churn sequence number of the conditions ``obj`` holds (-1: none)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == MARKER and str(c.get("message", "")).startswith("churn write "):
            return int(c["message"].rsplit(" ", 1)[1])
    return -1


async def call(
    fn: Callable[[], Awaitable[T]], *, deadline: float = 120.0, what: str = "request"
) -> T:
    """Retry ``fn`` while the API server is unavailable, for at most ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        try:
            with anyio.fail_after(REQUEST_BOUND * 4):
                return await fn()
        except UNAVAILABLE as err:
            if time.monotonic() > end:
                raise AssertionError(f"{what}: API server unavailable for {deadline}s") from err
            await anyio.sleep(0.2)


def _workspace(template: Obj, ns: str, name: str) -> Obj:
    obj = copy.deepcopy(template)
    obj["metadata"] = {"name": name, "namespace": ns}
    return obj


async def create_many(
    client: Client, ns: str, names: Sequence[str], file: str = INFERENCE_EXAMPLE, workers: int = 8
) -> None:
    template = example(file)
    pending = list(names)

    async def worker() -> None:
        while pending:
            name = pending.pop()
            obj = _workspace(template, ns, name)
            with contextlib.suppress(AlreadyExists):  # a retry of a create that landed
                await call(lambda obj=obj: client.create(WORKSPACE, obj), what=f"create {name}")  # type: ignore[misc]

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)


async def list_workspaces(client: Client, ns: str | None) -> list[Obj]:
    items, _ = await call(lambda: client.list_all(WORKSPACE, ns), what="list workspaces")
    return items


def load_names(prefix: str, inference: int, tuning: int) -> tuple[list[str], list[str]]:
    return [f"{prefix}-i{i:04d}" for i in range(inference)], [
        f"{prefix}-t{i:04d}" for i in range(tuning)
    ]


@dataclass
class _Tracked:
    workload: str
    lock: anyio.Lock = field(default_factory=anyio.Lock)  # one write at a time, in order
    confirmed: set[int] = field(default_factory=set)
    unconfirmed: set[int] = field(default_factory=set)  # may have landed, even late

    @property
    def acked(self) -> int:
        return max(self.confirmed, default=-1)


@dataclass
class ConditionChurn:
    """Writes conditions to random workspaces as KAITO does, until stopped.

    ``rate`` is the total writes per second (None: as fast as the writers can go). A
    write that fails because the API server is away is counted and the writer moves on.
    Each write is KAITO's GET, change, PUT of the typed status (which erases
    status.status), retried on 409; ``kaito.stats`` counts its conflicts and retries.
    """

    client: Client
    namespace: str
    inference: Sequence[str]
    tuning: Sequence[str] = ()
    rate: float | None = 50.0
    writers: int = 4
    seed: int = 0
    writes: int = 0
    failed: int = 0
    kaito: KaitoWriter = field(init=False)
    _tracked: dict[str, _Tracked] = field(default_factory=dict)
    _seq: int = 0
    _stop: anyio.Event | None = None

    def __post_init__(self) -> None:
        self.kaito = KaitoWriter(self.client, deadline=REQUEST_BOUND)
        self._tracked = {n: _Tracked("inference") for n in self.inference}
        self._tracked.update({n: _Tracked("tuning") for n in self.tuning})
        self._random = random.Random(self.seed)

    def stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    async def run(self) -> None:
        self._stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(self.writers):
                tg.start_soon(self._writer)

    async def write(self, name: str, conditions: Sequence[Obj]) -> bool:
        """One tracked write; False when the API server did not confirm it.

        Writes to one workspace are serialised, as KAITO's controller never works on
        one object in two workers at once.
        """
        tracked = self._tracked[name]
        async with tracked.lock:
            self._seq += 1
            seq = self._seq
            try:
                with anyio.fail_after(REQUEST_BOUND):
                    await self.kaito.replace_conditions(
                        self.namespace, name, *conditions, marker(seq)
                    )
            except WRITE_FAILURES:
                self.failed += 1
                tracked.unconfirmed.add(seq)
                return False
            self.writes += 1
            tracked.confirmed.add(seq)
            return True

    def pick(self, name: str) -> tuple[Obj, ...]:
        if self._tracked[name].workload == "inference":
            return INFERENCE_SETS[self._random.choice(list(INFERENCE_SETS))]
        names, weights = zip(*TUNING_WEIGHTS.items(), strict=True)
        return TUNING_SETS[self._random.choices(names, weights)[0]]

    async def _writer(self) -> None:
        assert self._stop is not None
        names = list(self._tracked)
        pause = self.writers / self.rate if self.rate else 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            name = self._random.choice(names)
            await self.write(name, self.pick(name))
            await anyio.sleep(max(0.0, pause - (time.monotonic() - started)))

    def lost_writes(self, items: Sequence[Obj]) -> list[str]:
        """Workspaces whose stored conditions are not what the writer last left there.

        The server must hold the last confirmed write, or a write whose answer never
        came (it may have landed, even after a later one); holding an older confirmed
        write, or one nobody made, means a condition write was lost.
        """
        lost = []
        for obj in items:
            name = obj["metadata"]["name"]
            tracked = self._tracked.get(name)
            if tracked is None or tracked.acked < 0:
                continue
            held = seq_of(obj)
            if held in tracked.unconfirmed or held == tracked.acked:
                continue
            lost.append(f"{name}: holds write {held}, last confirmed {tracked.acked}")
        return lost


def not_converged(items: Sequence[Obj]) -> list[Obj]:
    return [obj for obj in items if not converged(obj)]


def describe(obj: Obj) -> str:
    conds = [
        f"{c.get('type')}={c.get('status')}({c.get('reason')})"
        for c in (obj.get("status") or {}).get("conditions") or []
    ]
    state = (obj.get("status") or {}).get("status")
    return f"{obj['metadata']['name']} [{workload_of(obj)}] state={state} conditions={conds}"


async def wait_converged(
    client: Client, ns: str | None, timeout: float, expect_count: int | None = None
) -> tuple[float, list[Obj]]:
    """Poll until every workspace in ``ns`` holds the state its conditions imply.

    Returns the seconds it took and the final objects; fails naming the laggards.
    """
    start = time.monotonic()
    while True:
        items = await list_workspaces(client, ns)
        behind = not_converged(items)
        if not behind and (expect_count is None or len(items) == expect_count):
            return time.monotonic() - start, items
        if time.monotonic() - start > timeout:
            detail = "\n".join(describe(o) for o in behind[:10])
            raise AssertionError(
                f"{len(behind)} of {len(items)} workspaces not converged after {timeout}s:\n"
                f"{detail}"
            )
        await anyio.sleep(0.25)


def states(items: Sequence[Obj]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in items:
        state = str((obj.get("status") or {}).get("status"))
        counts[state] = counts.get(state, 0) + 1
    return dict(sorted(counts.items()))


# -- the operator process ---------------------------------------------------------------
def log_records(op: Operator) -> list[dict[str, Any]]:
    """The operator's JSON log lines (anything else, e.g. a traceback, is skipped)."""
    records = []
    for line in op.log().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def logged(op: Operator, event: str) -> list[dict[str, Any]]:
    return [r for r in log_records(op) if r.get("event") == event]


def alive(op: Operator) -> bool:
    return op.proc is not None and op.proc.poll() is None


def crashes(*ops: Operator) -> int:
    """Operators that exited without being told to (tests stop them explicitly)."""
    return sum(1 for op in ops if op.proc is not None and op.proc.poll() is not None)


async def wait_quiet(op: Operator, settle: float = 2.0, timeout: float = 30.0) -> float:
    """Wait until the operator has reconciled nothing for ``settle`` seconds (a delayed
    retry may still be due after convergence); a hot loop never gets there. Returns the
    seconds it took."""
    start = time.monotonic()
    last, since = op.metric("controller_runtime_reconcile_total"), time.monotonic()
    while time.monotonic() - since < settle:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"operator still reconciling after {timeout}s: a hot loop")
        await anyio.sleep(0.2)
        now = op.metric("controller_runtime_reconcile_total")
        if now != last:
            last, since = now, time.monotonic()
    return time.monotonic() - start


def sample(op: Operator, metric: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of ``metric``'s samples whose labels include ``labels``; None when the
    operator does not answer. (Unlike ``Operator.metric`` it takes a label called
    "name", which ``leader_election_master_status`` has.)"""
    try:
        text = op.metrics()
    except OSError:
        return None
    return sum_samples(text, metric, labels or {})
