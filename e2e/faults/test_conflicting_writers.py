"""Conflicting writers: KAITO's side rewrites conditions as fast as it can while the
operator writes status.status on the same objects.

The operator's patch carries the resourceVersion it read, so a write racing a condition
change gets 409 and is retried against the newer object: the auditor proves no state is
ever written that its version's conditions do not imply. When the writers stop, the
states match the final conditions, and the operator falls quiet (no hot loop). The
figure is API writes per state change, from the operator's own client metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from e2e.faults.audit import wait_clean
from e2e.faults.figures import ScenarioFigure
from e2e.faults.load import ConditionChurn, crashes, wait_converged, wait_quiet
from e2e.faults.scenario import Scenario, ci_and_long

CONVERGENCE_BOUND = 20.0
QUIET_PERIOD = 3.0


@dataclass(frozen=True)
class Load:
    inference: int
    tuning: int
    seconds: float


CI = Load(6, 2, seconds=15)
LONG = Load(20, 5, seconds=90)


@ci_and_long(CI, LONG)
async def test_conditions_racing_the_operator_never_yield_a_stale_state(
    load: Load, scenario: Scenario
) -> None:
    k8s, ns = scenario.k8s, scenario.namespace
    auditor = scenario.audit()
    inference, tuning = await scenario.populate("race", load.inference, load.tuning)
    op = scenario.start_operator(f"--namespace={ns}")
    await op.wait_ready()
    await wait_converged(k8s, ns, 30, expect_count=load.inference + load.tuning)
    changes_before = len(auditor.transitions)
    patches_before = op.metric("rest_client_requests_total", method="PATCH")
    conflicts_before = op.metric("rest_client_requests_total", method="PATCH", code="409")

    churn = ConditionChurn(k8s, ns, inference, tuning, rate=None, writers=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(churn.run)
        await anyio.sleep(load.seconds)
        churn.stop()

    took, items = await wait_converged(
        k8s, ns, CONVERGENCE_BOUND, expect_count=load.inference + load.tuning
    )
    lost = churn.lost_writes(items)
    assert lost == [], lost[:10]
    await wait_clean(auditor)

    # No hot loop: once converged, the operator writes nothing and every reconcile ends
    # in success. A 409 requeues with per-item backoff, which after a run of conflicts
    # can be seconds long; like client-go's delaying queue ours keeps that delayed entry
    # when a newer event processes the item first, so each object may still be
    # reconciled once more (a no-op). At most one delayed entry exists per item, which
    # bounds those late reconciles by the number of objects. A loop would show up as a
    # PATCH, a requeue/error result, or more reconciles than objects.
    settled = await wait_quiet(op)
    patches = op.metric("rest_client_requests_total", method="PATCH")
    reconciles = op.metric("controller_runtime_reconcile_total")
    looping = op.metric("controller_runtime_reconcile_total", result="requeue") + op.metric(
        "controller_runtime_reconcile_total", result="error"
    )
    await anyio.sleep(QUIET_PERIOD)
    assert op.metric("rest_client_requests_total", method="PATCH") == patches, "hot loop"
    late = op.metric("controller_runtime_reconcile_total") - reconciles
    assert late <= load.inference + load.tuning, f"hot loop: {late:.0f} reconciles"
    assert (
        op.metric("controller_runtime_reconcile_total", result="requeue")
        + op.metric("controller_runtime_reconcile_total", result="error")
        == looping
    ), "hot loop: a reconcile asked to be retried after convergence"

    changes = len(auditor.transitions) - changes_before
    patch_count = patches - patches_before
    conflicts = (
        op.metric("rest_client_requests_total", method="PATCH", code="409") - conflicts_before
    )
    assert changes > 0, "the race produced no state change to measure"
    # Every 409 answers a write that came in between; retries are not a spin.
    assert conflicts <= churn.writes, (conflicts, churn.writes)
    assert crashes(op) == 0
    scenario.figures.add(
        ScenarioFigure(
            scenario=f"conflicting writers ({'long' if load is LONG else 'ci'})",
            load=(
                f"{load.inference} inference + {load.tuning} tuning workspaces, 4 writers "
                f"flat out for {load.seconds:g} s: {churn.writes} condition writes "
                f"({churn.writes / load.seconds:.0f}/s)"
            ),
            faults="condition writes racing every state write",
            convergence=(
                f"{took:.1f} s after the last write; no reconcile from {settled:.1f} s on, "
                f"then 0 PATCH and {late:.0f} no-op reconciles in {QUIET_PERIOD:g} s"
            ),
            illegal_transitions=len(auditor.illegal),
            lost_updates=len(lost),
            crashes=crashes(op),
            notes=(
                f"{changes} state changes; operator PATCHes {patch_count:.0f} = "
                f"{patch_count / changes:.2f} per change ({changes} state writes, "
                f"{conflicts:.0f} answered 409, {patch_count - changes - conflicts:.0f} Event "
                f"count updates); 0 stale writes in {auditor.versions} audited versions"
            ),
        )
    )
