"""Leader election between operator processes on a real Lease.

Only the leader writes (the follower's client never PATCHes and it never reconciles);
kill -9 of the leader hands over within the lease duration plus one jittered retry;
SIGTERM releases the lease and hands over within one retry; a leader cut off from the
API server stops leading before its lease can expire, and exits with code 1.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import pytest

from e2e.conftest import OperatorFactory
from e2e.faults.audit import wait_clean
from e2e.faults.figures import ScenarioFigure
from e2e.faults.load import (
    INFERENCE_SETS,
    ConditionChurn,
    alive,
    crashes,
    logged,
    sample,
    wait_converged,
)
from e2e.faults.scenario import Scenario, ci_and_long
from e2e.harness import Operator, eventually
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.proxy import ProxyHandle, fault_proxy
from reconciler.leaderelection import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    JITTER_FACTOR,
)
from reconciler.resource import LEASE

LEASE_NAME = "workspace-status-controller.kaito.sh"
# A follower tries every retry_period × (1 + U[0, 1.2)); its requests and our metric
# polling add up to a second or two on a busy machine.
MAX_ATTEMPT_GAP = DEFAULT_RETRY_PERIOD * (1 + JITTER_FACTOR)
# kill -9: the follower waits out the lease from when it last saw it renewed.
FAILOVER_BOUND = DEFAULT_LEASE_DURATION + MAX_ATTEMPT_GAP + 2.0
# SIGTERM: the lease is released, the follower takes it at its next attempt.
HANDOVER_BOUND = MAX_ATTEMPT_GAP + 2.0
# Partition: the leader gives up renew_deadline after its last renewal at the latest,
# which was at most one retry period before the cut.
STEP_DOWN_BOUND = DEFAULT_RENEW_DEADLINE + DEFAULT_RETRY_PERIOD + 1.0


@dataclass(frozen=True)
class Load:
    workspaces: int
    failovers: int  # kill -9 of the leader
    handovers: int  # SIGTERM of the leader


CI = Load(10, failovers=1, handovers=1)
LONG = Load(50, failovers=4, handovers=4)


def leading(op: Operator) -> bool:
    return sample(op, "leader_election_master_status", {"name": LEASE_NAME}) == 1


def writes(op: Operator) -> float:
    return op.metric("rest_client_requests_total", method="PATCH")


def replica_args(ns: str) -> list[str]:
    return [f"--namespace={ns}", "--leader-elect", f"--leader-election-namespace={ns}"]


async def flip(churn: ConditionChurn, names: list[str], to: str) -> None:
    for name in names:
        assert await churn.write(name, INFERENCE_SETS[to])


@ci_and_long(CI, LONG)
async def test_only_the_leader_writes_and_failover_is_bounded(
    load: Load, scenario: Scenario
) -> None:
    k8s, ns, start_operator = scenario.k8s, scenario.namespace, scenario.start_operator
    auditor = scenario.audit()
    names, _ = await scenario.populate("le", load.workspaces)
    churn = ConditionChurn(k8s, ns, names)
    leader = await start_operator(*replica_args(ns)).wait_ready()
    await eventually(lambda: leading(leader), 30, "the first replica to lead")
    follower = await start_operator(*replica_args(ns)).wait_ready()
    await wait_converged(k8s, ns, 30, expect_count=load.workspaces)

    failover: list[float] = []
    handover: list[float] = []
    state = "ready"
    for round_ in range(max(load.failovers, load.handovers)):
        # Only the leader writes.
        state = "crashing" if state == "ready" else "ready"
        await flip(churn, names, state)
        await wait_converged(k8s, ns, 30)
        assert not leading(follower)
        assert writes(follower) == 0, "the follower wrote"
        assert follower.metric("controller_runtime_reconcile_total") == 0, "the follower reconciled"

        if round_ < load.failovers:
            leader.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            killed = time.monotonic()
            state = "crashing" if state == "ready" else "ready"
            await flip(churn, names, state)  # changes wait for the next leader
            await eventually(lambda f=follower: leading(f), FAILOVER_BOUND + 5, "failover")  # type: ignore[misc]
            failover.append(time.monotonic() - killed)
            await wait_converged(k8s, ns, 30)
            leader, follower = follower, await start_operator(*replica_args(ns)).wait_ready()

        if round_ < load.handovers:
            leader.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            termed = time.monotonic()
            await eventually(lambda f=follower: leading(f), 30, "handover")  # type: ignore[misc]
            handover.append(time.monotonic() - termed)
            code = leader.stop()
            assert code == 0, f"SIGTERM exit code {code}"
            assert logged(leader, "released leader lease"), "the lease was not released"
            assert time.monotonic() - termed < 30
            leader, follower = follower, await start_operator(*replica_args(ns)).wait_ready()

    assert max(failover, default=0) <= FAILOVER_BOUND, failover
    assert max(handover, default=0) <= HANDOVER_BOUND, handover
    state = "crashing" if state == "ready" else "ready"
    await flip(churn, names, state)
    _, items = await wait_converged(k8s, ns, 30, expect_count=load.workspaces)
    assert churn.lost_writes(items) == []
    assert writes(follower) == 0
    assert crashes(leader, follower) == 0
    await wait_clean(auditor)
    scenario.figures.add(
        ScenarioFigure(
            scenario=f"leader election: kill -9 and SIGTERM ({'long' if load is LONG else 'ci'})",
            load=f"2 replicas, {load.workspaces} workspaces flipped between every step",
            faults=f"{load.failovers}× kill -9 of the leader, {load.handovers}× SIGTERM",
            convergence=(
                f"kill -9 → new leader in {', '.join(f'{s:.1f}' for s in failover)} s "
                f"(bound {FAILOVER_BOUND:g}); SIGTERM → {', '.join(f'{s:.1f}' for s in handover)}"
                f" s (bound {HANDOVER_BOUND:g})"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=len(churn.lost_writes(items)),
            crashes=crashes(leader, follower),
            notes="followers: 0 PATCH requests, 0 reconciles; SIGTERMed leaders exit 0",
        )
    )


@pytest.fixture
def proxy(local_plane: ControlPlane) -> Iterator[ProxyHandle]:
    with fault_proxy("127.0.0.1", local_plane.state.apiserver_port) as p:
        yield p


def _micro(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_partitioned_leader_steps_down_before_its_lease_expires(
    proxy: ProxyHandle, scenario: Scenario
) -> None:
    k8s, ns, start_operator = scenario.k8s, scenario.namespace, scenario.start_operator
    auditor = scenario.audit()
    names, _ = await scenario.populate("part", 10)
    churn = ConditionChurn(k8s, ns, names)
    via_proxy = scenario.plane.admin_kubeconfig_for(proxy.url, f"partitioned-{ns}")
    cut_off = start_operator(*replica_args(ns), kubeconfig_path=via_proxy)
    await cut_off.wait_ready()
    await eventually(lambda: leading(cut_off), 30, "the proxied replica to lead")
    identity = logged(cut_off, "acquired leader lease")[0]["identity"]
    direct = await start_operator(*replica_args(ns)).wait_ready()
    await wait_converged(k8s, ns, 30, expect_count=len(names))

    proxy.cut()
    cut_at, cut_wall = time.monotonic(), time.time()
    await flip(churn, names, "ready")
    # Watch the lease from outside: the last renewal the cut-off leader got through.
    last_renewal = 0.0
    exited_at = taken_at = 0.0
    while not (exited_at and taken_at):
        assert time.monotonic() - cut_at < DEFAULT_LEASE_DURATION + 15, "no handover"
        spec = (await k8s.get(LEASE, LEASE_NAME, ns))["spec"]
        if spec.get("holderIdentity") == identity:
            last_renewal = max(last_renewal, _micro(spec["renewTime"]))
        if not exited_at and not alive(cut_off):
            exited_at = time.time()
        if not taken_at and leading(direct):
            taken_at = time.time()
        await anyio.sleep(0.2)
    code = cut_off.stop()
    stepped_down = _micro(logged(cut_off, "stopped leading")[0]["timestamp"])
    expiry = last_renewal + DEFAULT_LEASE_DURATION

    assert code == 1, f"a partitioned leader exits 1, got {code}"
    assert logged(cut_off, "failed to renew leader lease within the renew deadline")
    assert stepped_down < expiry, "stepped down after its lease expired"
    assert stepped_down - cut_wall <= STEP_DOWN_BOUND
    assert exited_at < taken_at + 0.5, "the new leader started before the old one exited"
    assert taken_at >= expiry - 0.5, "taken over before the lease expired"
    _, items = await wait_converged(k8s, ns, 30, expect_count=len(names))
    assert all(o["status"]["status"] == "Ready" for o in items)
    assert crashes(direct) == 0
    await wait_clean(auditor)
    scenario.figures.add(
        ScenarioFigure(
            scenario="leader election: partitioned leader",
            load="2 replicas (the leader behind a proxy), 10 workspaces changed during the cut",
            faults="proxy cut: the leader loses all API access",
            convergence=(
                f"leader stepped down {stepped_down - cut_wall:.1f} s after the cut "
                f"({expiry - stepped_down:.1f} s before its lease expired), exited {code}; "
                f"new leader {taken_at - cut_wall:.1f} s after the cut"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=len(churn.lost_writes(items)),
            crashes=crashes(direct),
            notes="exit code 1 is the designed reaction to a lost lease",
        )
    )


async def test_a_lost_lease_ends_the_process_with_code_1_and_a_clear_line(
    k8s: Client, namespace: str, start_operator: OperatorFactory
) -> None:
    op = await start_operator(*replica_args(namespace)).wait_ready()
    await eventually(lambda: leading(op), 30, "the replica to lead")
    # Another holder takes the lease: the leader sees it at its next renewal.
    lease = await k8s.get(LEASE, LEASE_NAME, namespace)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease["spec"].update(holderIdentity="intruder", renewTime=now, acquireTime=now)
    await k8s.replace(LEASE, lease)
    assert op.proc is not None
    code = await anyio.to_thread.run_sync(op.proc.wait, 30)
    assert code == 1
    assert "Traceback" not in op.log(), op.log()[-3000:]
    assert logged(op, "leader election lost; exiting so a fresh replica can take over")
