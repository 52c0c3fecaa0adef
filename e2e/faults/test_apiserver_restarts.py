"""kube-apiserver killed (-9) and restarted again and again, and etcd restarted once,
while KAITO-like writers keep changing conditions on hundreds of workspaces.

Afterwards every workspace holds the state its final conditions imply, within a bound
derived from the informer's documented backoff; no condition write is lost; the
operator never exits; and the etcd-fed auditor, which reads every stored version,
finds no illegal edge and no stale write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

from e2e.conftest import OperatorFactory
from e2e.faults.audit import wait_clean
from e2e.faults.figures import Figures, ScenarioFigure
from e2e.faults.load import (
    ConditionChurn,
    alive,
    crashes,
    logged,
    states,
    wait_converged,
)
from e2e.faults.planes import private_plane, restart_apiserver, restart_etcd
from e2e.faults.scenario import Scenario, StartAudit, ci_and_long, scenario_on
from e2e.harness import eventually
from reconciler.envtest.controlplane import ControlPlane
from reconciler.informer import BACKOFF_MAX

# After the last restart the informer retries within one jittered backoff step (at most
# 2 × BACKOFF_MAX), relists, and the queue works off what changed.
CONVERGENCE_BOUND = 2 * BACKOFF_MAX + 15.0


@dataclass(frozen=True)
class Load:
    inference: int
    tuning: int
    apiserver_kills: int
    etcd_restarts: int
    writes_per_second: float
    load_between_faults: float  # seconds of churn on a healthy plane between faults

    @property
    def workspaces(self) -> int:
        return self.inference + self.tuning


CI = Load(400, 100, apiserver_kills=5, etcd_restarts=1, writes_per_second=40, load_between_faults=3)
LONG = Load(
    1600, 400, apiserver_kills=12, etcd_restarts=3, writes_per_second=80, load_between_faults=8
)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A plane of this module's own: the shared one is not killed under other tests."""
    with private_plane(tmp_path_factory, "restarts") as p:
        yield p


@ci_and_long(CI, LONG)
async def test_apiserver_and_etcd_restarts_under_load(
    load: Load,
    plane: ControlPlane,
    start_operator: OperatorFactory,
    start_audit: StartAudit,
    figures: Figures,
) -> None:
    ns = "restarts-long" if load is LONG else "restarts"
    async with scenario_on(plane, ns, start_operator, start_audit, figures) as scenario:
        await _restarts_under_load(load, scenario)


async def _restarts_under_load(load: Load, scenario: Scenario) -> None:
    plane, k8s, ns = scenario.plane, scenario.k8s, scenario.namespace
    auditor = scenario.audit()
    inference, tuning = await scenario.populate("w", load.inference, load.tuning)
    op = scenario.start_operator(f"--namespace={ns}", kubeconfig_path=plane.kubeconfig)
    await op.wait_ready(60)
    await wait_converged(k8s, ns, 120, expect_count=load.workspaces)

    churn = ConditionChurn(k8s, ns, inference, tuning, rate=load.writes_per_second)
    # The etcd restarts sit between apiserver kills, so the last fault is a kill.
    plan = ["apiserver"] * load.apiserver_kills
    for i in range(load.etcd_restarts):
        plan.insert(1 + 2 * i, "etcd")
    downtime: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(churn.run)
        for fault in plan:
            await anyio.sleep(load.load_between_faults)
            writes_before = churn.writes
            started = time.monotonic()
            restart = restart_apiserver if fault == "apiserver" else restart_etcd
            await anyio.to_thread.run_sync(restart, plane)
            downtime.append(time.monotonic() - started)
            last_fault = time.monotonic()
            assert alive(op), f"operator exited after a {fault} restart:\n{op.log()[-3000:]}"

            # The writers recover too: the plane takes writes again before the next fault.
            def resumed(before: int = writes_before) -> bool:
                return churn.writes > before

            await eventually(resumed, 30, "writes to resume")
        await anyio.sleep(load.load_between_faults)
        churn.stop()
    stopped = time.monotonic()

    took, items = await wait_converged(k8s, ns, CONVERGENCE_BOUND, expect_count=load.workspaces)
    after_fault = stopped + took - last_fault
    lost = churn.lost_writes(items)
    assert lost == [], f"condition writes lost: {lost[:10]}"

    # The operator's cache agrees with the server: the state gauge counts every workspace.
    expected = states(items)

    def cache_matches() -> bool:
        gauge = {s: op.metric("kaito_workspace_status_workspaces", state=s) for s in expected}
        return all(gauge[s] == n for s, n in expected.items())

    await eventually(cache_matches, 30, "the state gauge to match the server")
    await wait_clean(auditor)
    assert auditor.gaps == 0
    assert crashes(op) == 0
    relists = len(logged(op, "watch expired, relisting"))
    scenario.figures.add(
        ScenarioFigure(
            scenario=f"API server kill -9 + etcd restart ({'long' if load is LONG else 'ci'})",
            load=(
                f"{load.inference} inference + {load.tuning} tuning workspaces, "
                f"{churn.writes} condition writes at ~{load.writes_per_second:g}/s"
            ),
            faults=(
                f"{load.apiserver_kills}× kube-apiserver kill -9, {load.etcd_restarts}× etcd "
                f"kill -9; downtime {min(downtime):.1f}-{max(downtime):.1f} s each"
            ),
            convergence=(
                f"{took:.1f} s after the last write, {after_fault:.1f} s after the last "
                f"restart (bound {CONVERGENCE_BOUND:g} s)"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=len(lost),
            crashes=crashes(op),
            notes=(
                f"{auditor.versions} versions audited, {len(auditor.transitions)} state "
                f"changes, {relists} operator relists, final {expected}"
            ),
        )
    )
