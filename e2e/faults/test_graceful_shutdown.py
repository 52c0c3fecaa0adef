"""Shutdown in the middle of a burst of reconciles.

SIGTERM: intake stops, in-flight reconciles finish, the process exits 0 within the grace
period, and nothing is half-written: every state the operator wrote has the Event that
announces it. SIGKILL: whatever was in flight is simply gone, and the next start
converges everything.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from e2e.faults.audit import wait_clean
from e2e.faults.figures import ScenarioFigure
from e2e.faults.load import (
    INFERENCE_SETS,
    ConditionChurn,
    list_workspaces,
    logged,
    wait_converged,
)
from e2e.faults.scenario import Scenario, ci_and_long
from e2e.harness import Operator, eventually
from reconciler.client import Client
from reconciler.resource import CORE_EVENT

GRACE = 30.0  # the operator's default --graceful-shutdown-timeout
WORKERS = 4


@dataclass(frozen=True)
class Load:
    workspaces: int
    rounds: int


CI = Load(300, rounds=1)
LONG = Load(1500, rounds=3)


async def write_all(churn: ConditionChurn, names: Sequence[str], to: str) -> None:
    pending = list(names)

    async def writer() -> None:
        while pending:
            assert await churn.write(pending.pop(), INFERENCE_SETS[to])

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(writer)


def reconciles(op: Operator) -> float:
    return op.metric("controller_runtime_reconcile_total")


async def announced(k8s: Client, ns: str) -> dict[str, set[str]]:
    """Per workspace, the state changes its StateChanged/NotReady Events announce."""
    found: dict[str, set[str]] = {}
    for ev in (await k8s.list(CORE_EVENT, ns)).get("items") or []:
        if ev.get("reason") in ("StateChanged", "NotReady"):
            change = ev["message"].split(":")[0]
            found.setdefault(ev["involvedObject"]["name"], set()).add(change)
    return found


@ci_and_long(CI, LONG)
async def test_sigterm_and_sigkill_in_the_middle_of_a_burst(load: Load, scenario: Scenario) -> None:
    k8s, ns = scenario.k8s, scenario.namespace
    auditor = scenario.audit()
    names, _ = await scenario.populate("burst", load.workspaces)
    churn = ConditionChurn(k8s, ns, names)
    args = (f"--namespace={ns}", f"--max-concurrent-reconciles={WORKERS}")
    stop_seconds: list[float] = []
    written_before_stop: list[int] = []
    restart_seconds: list[float] = []
    target = "crashing"  # the first round makes them ready: none → Ready
    for _ in range(load.rounds):
        # SIGTERM while the burst is under way.
        target = "crashing" if target == "ready" else "ready"
        want = "Ready" if target == "ready" else "NotReady"
        await write_all(churn, names, target)
        op = scenario.start_operator(*args)
        await op.wait_ready(60)
        await eventually(lambda o=op: reconciles(o) >= load.workspaces // 10, 60, "the burst")  # type: ignore[misc]
        assert op.proc is not None
        op.proc.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        code = await anyio.to_thread.run_sync(op.proc.wait, GRACE + 10)
        stop_seconds.append(time.monotonic() - termed)
        assert code == 0, op.log()[-3000:]
        assert stop_seconds[-1] <= GRACE
        assert logged(op, "shutting down")
        assert not logged(op, "graceful shutdown timed out; cancelling in-flight reconciles")
        assert not logged(op, "reconciler error")
        assert "Traceback" not in op.log()
        items = await list_workspaces(k8s, ns)
        done = [o["metadata"]["name"] for o in items if o["status"].get("status") == want]
        assert 0 < len(done) < load.workspaces, "SIGTERM did not land mid-burst"
        written_before_stop.append(len(done))
        # Nothing half-written: each state the stopped process wrote was announced.
        events = await announced(k8s, ns)
        silent = [n for n in done if not any(c.endswith(f"→ {want}") for c in events.get(n, ()))]
        assert silent == [], f"{len(silent)} states written without their Event: {silent[:5]}"

        # SIGKILL while the rest is under way; the next start converges everything.
        op = scenario.start_operator(*args)
        await op.wait_ready(60)
        already = reconciles(op)
        await eventually(
            lambda o=op, a=already: reconciles(o) >= a + 10,  # type: ignore[misc]
            60,
            "the second burst",
        )
        assert op.proc is not None
        op.proc.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(op.proc.wait, 10)
        started = time.monotonic()
        op = await scenario.start_operator(*args).wait_ready(60)
        _, items = await wait_converged(k8s, ns, 60, expect_count=load.workspaces)
        restart_seconds.append(time.monotonic() - started)
        assert all(o["status"]["status"] == want for o in items)
        lost = churn.lost_writes(items)
        assert lost == [], lost[:10]
        assert op.stop() == 0  # the next round starts from a stopped operator

    await wait_clean(auditor)
    scenario.figures.add(
        ScenarioFigure(
            scenario=f"graceful shutdown ({'long' if load is LONG else 'ci'})",
            load=f"{load.workspaces} workspaces changed at once, {WORKERS} workers",
            faults=f"{load.rounds}× (SIGTERM mid-burst, then SIGKILL mid-burst)",
            convergence=(
                f"SIGTERM → exit 0 in {max(stop_seconds):.2f} s (grace {GRACE:g} s) with "
                f"{min(written_before_stop)}-{max(written_before_stop)} states written, each "
                f"with its Event; after SIGKILL a fresh start converged all in "
                f"{max(restart_seconds):.1f} s"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=0,
            crashes=0,
            notes="no 'graceful shutdown timed out', no reconcile error, no traceback",
        )
    )
