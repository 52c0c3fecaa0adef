"""A forced relist: the operator's resourceVersion expires while it is cut off.

The plane runs without the watch cache, so a watch resumed from a compacted revision is
answered by etcd itself with 410 Gone. The operator reaches it through a fault proxy:
cut it, keep changing, creating and deleting workspaces, compact etcd, restore. The
informer must relist ("watch expired, relisting"), and nothing may be missed: every
workspace converges, deleted ones leave the cache, new ones enter it.
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
    call,
    crashes,
    create_many,
    logged,
    wait_converged,
)
from e2e.faults.planes import CRD_DIR, private_plane
from e2e.faults.scenario import Scenario, StartAudit, ci_and_long, scenario_on
from e2e.harness import WORKSPACE, eventually
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.proxy import ProxyHandle, fault_proxy
from reconciler.informer import BACKOFF_MAX

# After the restore the informer retries within one jittered backoff step, gets 410,
# relists at once, and works off the changes.
RELIST_BOUND = 2 * BACKOFF_MAX
CONVERGENCE_BOUND = RELIST_BOUND + 30.0


@dataclass(frozen=True)
class Load:
    inference: int
    tuning: int
    cycles: int  # cut → churn, create, delete → compact → restore
    outage: float  # seconds the operator is cut off per cycle
    writes_per_second: float
    churned: int = 10  # workspaces created and deleted per cycle


CI = Load(150, 50, cycles=1, outage=4.0, writes_per_second=30)
LONG = Load(800, 200, cycles=4, outage=10.0, writes_per_second=60, churned=50)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with private_plane(
        tmp_path_factory,
        "no-watch-cache",
        crd_paths=[CRD_DIR],
        apiserver_args=["--watch-cache=false"],
    ) as p:
        yield p


@pytest.fixture(scope="module")
def proxy(plane: ControlPlane) -> Iterator[ProxyHandle]:
    with fault_proxy("127.0.0.1", plane.state.apiserver_port) as p:
        yield p


@ci_and_long(CI, LONG)
async def test_expired_resource_version_forces_a_relist_and_nothing_is_missed(
    load: Load,
    plane: ControlPlane,
    proxy: ProxyHandle,
    start_operator: OperatorFactory,
    start_audit: StartAudit,
    figures: Figures,
) -> None:
    ns = "relist-long" if load is LONG else "relist"
    async with scenario_on(plane, ns, start_operator, start_audit, figures) as scenario:
        await _relist(load, proxy, scenario)


async def _relist(load: Load, proxy: ProxyHandle, scenario: Scenario) -> None:
    plane, k8s, ns = scenario.plane, scenario.k8s, scenario.namespace
    auditor = scenario.audit()
    inference, tuning = await scenario.populate("w", load.inference, load.tuning)
    via_proxy = plane.admin_kubeconfig_for(proxy.url, f"operator-{ns}")
    op = scenario.start_operator(f"--namespace={ns}", kubeconfig_path=via_proxy)
    await op.wait_ready(60)
    await wait_converged(k8s, ns, 120, expect_count=load.inference + load.tuning)

    churn = ConditionChurn(k8s, ns, inference, tuning, rate=load.writes_per_second)
    relist_delays: list[float] = []
    compacted: list[int] = []
    live = load.inference + load.tuning
    async with anyio.create_task_group() as tg:
        tg.start_soon(churn.run)
        for cycle in range(load.cycles):
            await anyio.sleep(2.0)
            relists = len(logged(op, "watch expired, relisting"))
            proxy.cut()
            # While the operator is away: conditions change (the churn), workspaces come
            # and go, and etcd forgets the revisions the operator's watch would resume at.
            born = [f"new{cycle}-{i:03d}" for i in range(load.churned)]
            await create_many(k8s, ns, born)
            for name in inference[cycle * load.churned : (cycle + 1) * load.churned]:
                await call(
                    lambda n=name: k8s.delete(WORKSPACE, n, ns),  # type: ignore[misc]
                    what=f"delete {name}",
                )
            live += len(born) - load.churned
            await anyio.sleep(load.outage)
            compacted.append(await anyio.to_thread.run_sync(plane.compact_etcd))
            proxy.restore()
            restored = time.monotonic()
            assert alive(op), op.log()[-3000:]
            await eventually(
                lambda r=relists: len(logged(op, "watch expired, relisting")) > r,  # type: ignore[misc]
                RELIST_BOUND + 5,
                "the operator to relist after its resourceVersion expired",
            )
            relist_delays.append(time.monotonic() - restored)
        await anyio.sleep(2.0)
        churn.stop()

    took, items = await wait_converged(k8s, ns, CONVERGENCE_BOUND, expect_count=live)
    lost = churn.lost_writes(items)
    assert lost == [], f"condition writes lost: {lost[:10]}"

    # The cache holds exactly the live workspaces: deletions seen, creations seen.
    def cache_complete() -> bool:
        return op.metric("kaito_workspace_status_workspaces") == live

    await eventually(cache_complete, 30, f"the operator's cache to hold {live} workspaces")
    expired = logged(op, "watch expired, relisting")
    assert expired, "no relist logged"
    assert any("too old" in r.get("error", "") for r in expired), expired
    await wait_clean(auditor)
    assert crashes(op) == 0
    scenario.figures.add(
        ScenarioFigure(
            scenario=f"forced relist after compaction ({'long' if load is LONG else 'ci'})",
            load=(
                f"{load.inference} inference + {load.tuning} tuning workspaces, "
                f"{churn.writes} condition writes, {load.churned} created and "
                f"{load.churned} deleted per cycle"
            ),
            faults=(
                f"{load.cycles}× (proxy cut {load.outage:g} s, etcd compacted to "
                f"revision {compacted[-1]}, watch cache off, restore)"
            ),
            convergence=(
                f"relist {max(relist_delays):.1f} s after restore (bound {RELIST_BOUND:g} s); "
                f"all converged {took:.1f} s after the last write"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=len(lost),
            crashes=crashes(op),
            notes=(
                f"{len(expired)} relists logged ({expired[0].get('error', '')[:60]}); "
                f"cache holds {live} live workspaces; {auditor.versions} versions audited"
            ),
        )
    )
