"""``kaito_workspace_status_stuck_pending``: the workspaces the StuckPending Event is about,
counted from the cache at scrape time.

The gauge and the Event must agree: ``KaitoWorkspaceStuckPending`` fires on the gauge and
tells the reader to look at the Events. So the boundary tests run both rules on the same
workspace, and the rest pin down what the gauge counts: the held state (not a fresh
decision), the injected clock, this shard's share, raw cached dicts never copied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from controllers.workspace.reconciler import WORKSPACE, WorkspaceStatusOptions
from controllers.workspace.reconciler import WorkspaceStatusReconciler as Reconciler
from reconciler import Client, EventRecorder, InformerCache
from reconciler.cache import CacheNotSynced
from reconciler.resource import ResourceType
from reconciler.sharding import Shard
from tests.unit.test_workspace_reconciler import NOW, cond, record, rig, workspace

Obj = dict[str, Any]
GAUGE = "kaito_workspace_status_stuck_pending"
LIMIT = 900.0
WAITING = [cond("ResourceReady", "False", "NodeClaimNotReady")]  # Pending, per the FSM
SERVING = [cond("ResourceReady", "True"), cond("InferenceReady", "True")]


def created(age: float) -> str:
    """creationTimestamp of an object created ``age`` seconds before NOW, as stored."""
    return datetime.fromtimestamp(NOW - age, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cached(
    name: str,
    state: str | None,
    age: float,
    *,
    conditions: list[Obj] | None = None,
    namespace: str = "ns",
) -> Obj:
    obj = workspace(WAITING if conditions is None else conditions, state)
    meta = obj["metadata"]
    meta.update(name=name, namespace=namespace, uid=f"uid-{namespace}-{name}")
    meta["creationTimestamp"] = created(age)
    return obj


@dataclass
class ListingCache:
    """The cache as the collector uses it: list_nowait, and the flags it was called with."""

    objs: list[Obj] | None
    calls: list[dict[str, object]] = field(default_factory=list)

    def list_nowait(
        self, rt: ResourceType, namespace: str | None = None, **kw: object
    ) -> list[Obj]:
        assert rt == WORKSPACE
        self.calls.append(kw)
        if self.objs is None:
            raise CacheNotSynced(rt, "the informer has not finished its first list yet")
        return self.objs


def registry_for(
    cache: ListingCache,
    *,
    shard: Shard | None = None,
    clock: list[float] | None = None,
    limit: float = LIMIT,
) -> CollectorRegistry:
    """A registry holding the reconciler's collectors over ``cache``; ``clock[0]`` is now."""
    now = clock if clock is not None else [NOW]
    registry = CollectorRegistry()
    Reconciler(
        cast(Client, None),
        cast(InformerCache, cache),
        cast(EventRecorder, None),
        registry,
        WorkspaceStatusOptions(pending_warning_after=limit, shard=shard or Shard()),
        clock=lambda: now[0],
    )
    return registry


def stuck(objs: list[Obj], **kw: Any) -> float | None:
    return registry_for(ListingCache(objs), **kw).get_sample_value(GAUGE)


# -- the threshold, and agreement with the Event ----------------------------------------
@pytest.mark.parametrize(
    ("age", "expected"),
    [(LIMIT - 1, 0.0), (LIMIT - 0.001, 0.0), (LIMIT, 1.0), (LIMIT + 1, 1.0), (86400.0, 1.0)],
)
def test_a_pending_workspace_counts_from_the_threshold_on(age: float, expected: float) -> None:
    obj = cached("w", "Pending", 0)
    # Sub-second ages: the stored timestamp has whole seconds, so move the clock instead.
    assert stuck([obj], clock=[NOW + age]) == expected


@pytest.mark.parametrize("age", [LIMIT - 1, LIMIT, LIMIT + 1])
async def test_the_gauge_counts_exactly_the_workspaces_the_event_warns_about(
    age: float,
) -> None:
    obj = cached("w", "Pending", age)
    r = rig(obj, options=WorkspaceStatusOptions(pending_warning_after=LIMIT))
    await r.reconcile()
    warned = [e for e in r.recorder.events if e[1] == "StuckPending"]
    assert len(warned) == (1 if age >= LIMIT else 0)
    r.sync_cache()  # the record condition the reconcile wrote keeps the state Pending
    assert r.metric(GAUGE) == len(warned)


def test_the_threshold_is_the_pending_warning_after_option() -> None:
    objs = [cached("w", "Pending", 120)]
    assert stuck(objs, limit=60) == 1
    assert stuck(objs, limit=180) == 0


def test_the_injected_clock_is_read_at_each_scrape() -> None:
    clock = [NOW]
    registry = registry_for(ListingCache([cached("w", "Pending", LIMIT - 10)]), clock=clock)
    assert registry.get_sample_value(GAUGE) == 0
    clock[0] += 10
    assert registry.get_sample_value(GAUGE) == 1


# -- what counts as Pending ---------------------------------------------------------------
@pytest.mark.parametrize("state", ["Ready", "NotReady", "Running", "Failed", "Succeeded", "bogus"])
def test_old_workspaces_in_any_other_state_never_count(state: str) -> None:
    assert stuck([cached("w", state, 86400.0, conditions=SERVING)]) == 0


def test_the_held_state_counts_not_the_conditions() -> None:
    # Conditions say Ready, but the operator has not written it yet: still Pending.
    held_pending = cached("a", "Pending", 86400.0, conditions=SERVING)
    # KAITO's status write dropped status.status; the record condition still says Pending.
    blanked = cached("b", None, 86400.0, conditions=[*WAITING, record("Pending")])
    # Nothing written yet: no held state, so not Pending (and no Event either: the first
    # reconcile writes Pending before it checks).
    unwritten = cached("c", None, 86400.0)
    assert stuck([held_pending, blanked, unwritten]) == 2


def test_deleting_or_undated_workspaces_do_not_count() -> None:
    deleting = cached("a", "Pending", 86400.0)
    deleting["metadata"]["deletionTimestamp"] = created(10)
    undated = cached("b", "Pending", 86400.0)
    del undated["metadata"]["creationTimestamp"]
    garbled = cached("c", "Pending", 86400.0)
    garbled["metadata"]["creationTimestamp"] = "yesterday"
    assert stuck([deleting, undated, garbled]) == 0
    assert stuck([deleting, undated, garbled, cached("d", "Pending", 86400.0)]) == 1


def test_it_reads_the_cache_without_copies_and_writes_nothing() -> None:
    objs = [cached("a", "Pending", 86400.0), cached("b", "Ready", 10.0, conditions=SERVING)]
    before = copy.deepcopy(objs)
    cache = ListingCache(objs)
    assert registry_for(cache).get_sample_value(GAUGE) == 1
    assert cache.calls == [{"unsafe_disable_deep_copy": True}]
    assert objs == before


def test_nothing_is_exported_before_the_cache_has_synced() -> None:
    registry = registry_for(ListingCache(None))
    assert registry.get_sample_value(GAUGE) is None
    assert all(m.name != GAUGE for m in registry.collect())


# -- sharding -----------------------------------------------------------------------------
def test_each_hash_shard_counts_only_its_own_share() -> None:
    objs = []
    for i in range(300):
        state, age = [("Pending", 86400.0), ("Pending", 10.0), ("Ready", 86400.0)][i % 3]
        objs.append(cached(f"w-{i}", state, age, namespace=f"team-{i % 7}"))
    whole = stuck(objs)
    assert whole == 100
    shards = [Shard(i, 3) for i in range(3)]
    parts = [stuck(objs, shard=s) for s in shards]
    for s, part in zip(shards, parts, strict=True):
        mine = [o for o in objs if s.owns(o)]
        assert part == stuck(mine)  # the same as a process that caches only its share
        assert 0 < cast(float, part) < whole
    assert sum(cast(float, p) for p in parts) == whole
