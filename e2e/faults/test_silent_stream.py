"""A silent stream: the operator's watch stays open but delivers nothing.

The fault proxy freezes every open connection (bytes stop, nothing closes, as on a
half-open TCP connection); new connections still flow. Only the informer's watchdog can
notice: after ``WATCH_IDLE_TIMEOUT`` seconds without a byte it reopens the watch, and
the changes made meanwhile arrive.

The CI variant lowers the timeout with ``--watch-idle-timeout=10s`` and freezes once;
the long one keeps the default 90 s and freezes three times under churn.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

from e2e.faults.audit import wait_clean
from e2e.faults.figures import ScenarioFigure
from e2e.faults.load import (
    INFERENCE_SETS,
    ConditionChurn,
    alive,
    crashes,
    list_workspaces,
    logged,
    wait_converged,
)
from e2e.faults.scenario import Scenario, ci_and_long
from e2e.harness import held_state
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.proxy import ProxyHandle, fault_proxy
from reconciler.informer import WATCH_IDLE_TIMEOUT

# The watchdog fires the idle timeout after the last byte; the new watch resumes at
# once (no backoff after a watchdog timeout), then the queue works off the changes.
RECONNECT_MARGIN = 15.0


@dataclass(frozen=True)
class Load:
    workspaces: int
    freezes: int
    writes_per_second: float  # churn during the freezes (0: one change per workspace)
    idle_timeout: float = WATCH_IDLE_TIMEOUT

    @property
    def reconnect_bound(self) -> float:
        return self.idle_timeout + RECONNECT_MARGIN

    @property
    def silence_check(self) -> float:
        """Well inside the idle timeout: nothing can have arrived over the frozen stream."""
        return self.idle_timeout / 3


CI = Load(30, freezes=1, writes_per_second=0, idle_timeout=10.0)
LONG = Load(200, freezes=3, writes_per_second=20)


@pytest.fixture
def proxy(local_plane: ControlPlane) -> Iterator[ProxyHandle]:
    with fault_proxy("127.0.0.1", local_plane.state.apiserver_port) as p:
        yield p


@ci_and_long(CI, LONG)
async def test_watchdog_reopens_a_silent_watch(
    load: Load, proxy: ProxyHandle, scenario: Scenario
) -> None:
    k8s, ns = scenario.k8s, scenario.namespace
    auditor = scenario.audit()
    names, _ = await scenario.populate("w", load.workspaces)
    via_proxy = scenario.plane.admin_kubeconfig_for(proxy.url, f"operator-{ns}")
    op = scenario.start_operator(
        f"--namespace={ns}",
        f"--watch-idle-timeout={load.idle_timeout:g}s",
        kubeconfig_path=via_proxy,
    )
    await op.wait_ready(60)
    await wait_converged(k8s, ns, 60, expect_count=load.workspaces)

    churn = ConditionChurn(k8s, ns, names, rate=load.writes_per_second or None, writers=2)
    reconnect: list[float] = []
    target, want = "crashing", "NotReady"
    for _ in range(load.freezes):
        # Each freeze moves every workspace to the other state: Ready, NotReady, Ready…
        target, want = ("ready", "Ready") if target == "crashing" else ("crashing", "NotReady")
        # Held states: KAITO's writes blank status.status, the record keeps the state.
        before = {o["metadata"]["name"]: held_state(o) for o in await list_workspaces(k8s, ns)}
        fired = len(logged(op, "watch stream silent, reconnecting"))
        proxy.freeze()
        frozen = time.monotonic()
        async with anyio.create_task_group() as tg:
            if load.writes_per_second:
                tg.start_soon(churn.run)
            for name in names:
                assert await churn.write(name, INFERENCE_SETS[target])
            await anyio.sleep(max(0.0, load.silence_check - (time.monotonic() - frozen)))
            if load.writes_per_second:
                churn.stop()
        # The freeze is real: nothing reached the operator over the frozen watch.
        during = {o["metadata"]["name"]: held_state(o) for o in await list_workspaces(k8s, ns)}
        assert during == before, "states changed although the operator's stream was frozen"
        assert alive(op), "operator exited while its stream was silent"
        assert op.ready(), "operator not ready while its stream is silent"
        # The last word, still during the freeze: convergence needs the stream back.
        for name in names:
            assert await churn.write(name, INFERENCE_SETS[target])
        _, items = await wait_converged(
            k8s,
            ns,
            load.reconnect_bound - (time.monotonic() - frozen),
            expect_count=load.workspaces,
        )
        reconnect.append(time.monotonic() - frozen)
        assert all(o["status"]["status"] == want for o in items)
        assert len(logged(op, "watch stream silent, reconnecting")) > fired
        lost = churn.lost_writes(items)
        assert lost == [], lost[:10]

    await wait_clean(auditor)
    assert crashes(op) == 0
    watchdog = logged(op, "watch stream silent, reconnecting")
    scenario.figures.add(
        ScenarioFigure(
            scenario=f"silent watch stream ({'long' if load is LONG else 'ci'})",
            load=(
                f"{load.workspaces} inference workspaces, each changed while frozen"
                + (f", churn at {load.writes_per_second:g}/s" if load.writes_per_second else "")
            ),
            faults=f"{load.freezes}× proxy freeze (connections open, no bytes)",
            convergence=(
                f"converged {', '.join(f'{s:.1f}' for s in reconnect)} s after each freeze "
                f"(watchdog {load.idle_timeout:g} s, bound {load.reconnect_bound:g} s)"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=len(lost),
            crashes=crashes(op),
            notes=(
                f"{len(watchdog)} watchdog reconnects logged; nothing arrived in the first "
                f"{load.silence_check:g} s"
            ),
        )
    )
