"""Hash sharding: the share rule, its stability, and how the operator wires it.

The rule's invariants, each a test below:
1. every key has exactly one owner among ``Shard(0, n)`` … ``Shard(n - 1, n)``;
2. the owner depends on the key and n only: the same in every process, whatever
   ``PYTHONHASHSEED`` (pinned values guard it: changing the rule reshuffles a fleet);
3. growing n to n + 1 moves about 1/(n + 1) of the keys, and only into the new shard;
4. ordinary names spread evenly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from controllers.workspace.operator import LEASE_NAME, lease_name, parse_args, user_agent
from controllers.workspace.reconciler import WorkspaceStatusOptions, WorkspaceStatusReconciler
from reconciler import Client, EventRecorder, InformerCache, Request
from reconciler.resource import ResourceType
from reconciler.sharding import (
    Shard,
    fnv1a_64,
    jump_hash,
    shard_mapper,
    shard_of,
    shard_predicate,
)
from reconciler.store import object_key

Obj = dict[str, Any]
NAMES = [
    f"team-{t}/workspace-{m}-{i}" for t in range(10) for m in ("phi", "llama") for i in range(500)
]


def workspace(key: str, state: str | None = None) -> Obj:
    ns, name = key.split("/")
    status: Obj = {"conditions": []}
    if state is not None:
        status["status"] = state
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"namespace": ns, "name": name, "resourceVersion": "1"},
        "inference": {},
        "status": status,
    }


# -- the hash -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    # The published FNV-1a 64 test vectors (also Go's hash/fnv).
    [(b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8)],
)
def test_fnv1a_64_matches_the_published_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_64(data) == expected


@pytest.mark.parametrize(
    ("key", "buckets"),
    # go-jump's test table, "generated from the reference C++ code": the bucket of each
    # key for 1, 2, 3, … buckets.
    [
        (0, [0] * 20),
        (1, [0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17]),
        (0xDEADBEEF, [0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16]),
        (0x0DDC0FFEEBADF00D, [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15]),
    ],
)
def test_jump_hash_matches_the_reference_implementation(key: int, buckets: list[int]) -> None:
    assert [jump_hash(key, n) for n in range(1, len(buckets) + 1)] == buckets


def test_jump_hash_refuses_no_buckets() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)


# -- the rule's invariants ----------------------------------------------------------------
@pytest.mark.parametrize("total", [1, 2, 3, 5, 8])
def test_every_key_has_exactly_one_owner(total: int) -> None:
    shards = [Shard(i, total) for i in range(total)]
    for key in NAMES[:2000]:
        assert sum(s.owns_key(key) for s in shards) == 1, key


# Computed once by this implementation (its parts checked against the vectors above).
# A change here is a breaking change: running shards would disagree with new ones.
PINNED = {
    "kaito-workspace/workspace-phi-4-mini": [0, 2, 2, 2],
    "kaito-workspace/workspace-tuning-phi-3": [1, 1, 1, 1],
    "default/workspace-falcon-7b": [0, 0, 3, 3],
    "workspace-phi-4-mini": [1, 1, 3, 6],
    "team-a/llama-3-70b-instruct": [1, 1, 1, 6],
}


def test_the_owner_is_pinned() -> None:
    assert {k: [shard_of(k, n) for n in (2, 3, 4, 8)] for k in PINNED} == PINNED


def test_every_process_computes_the_same_owner_whatever_its_hash_seed() -> None:
    code = (
        "import sys; from reconciler.sharding import shard_of\n"
        "print([shard_of(k, n) for k in sys.argv[1:] for n in (2, 3, 7)])\n"
    )
    keys = NAMES[:200]
    here = str([shard_of(k, n) for k in keys for n in (2, 3, 7)])
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, *keys],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        assert out == here, f"PYTHONHASHSEED={seed} changed the owners"
    # Python's own hash() would not have been stable: the test above could fail.
    salted = [
        subprocess.run(
            [sys.executable, "-c", "print(hash('ns/name'))"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert salted[0] != salted[1]


@pytest.mark.parametrize("total", [1, 2, 3, 7])
def test_one_more_shard_moves_a_fair_part_and_only_into_the_new_shard(total: int) -> None:
    moved = 0
    for key in NAMES:
        before, after = shard_of(key, total), shard_of(key, total + 1)
        if before != after:
            assert after == total, f"{key} moved from {before} to {after}, not to the new shard"
            moved += 1
    expected = len(NAMES) / (total + 1)
    assert abs(moved - expected) < 0.05 * len(NAMES), (moved, expected)


@pytest.mark.parametrize("total", [2, 3, 4])
def test_ordinary_names_spread_evenly(total: int) -> None:
    counts = Counter(shard_of(key, total) for key in NAMES)
    fair = len(NAMES) / total
    # 10,000 keys: a fair split's standard deviation is under 50; allow about 5 of them.
    assert all(abs(counts[i] - fair) < 0.03 * len(NAMES) for i in range(total)), counts


# -- Shard --------------------------------------------------------------------------------
@pytest.mark.parametrize(("index", "total"), [(0, 0), (-1, 2), (2, 2), (5, 3)])
def test_a_shard_outside_the_total_is_refused(index: int, total: int) -> None:
    with pytest.raises(ValueError):
        Shard(index, total)


def test_the_object_its_request_and_its_cache_key_have_one_owner() -> None:
    for key in NAMES[:500]:
        ns, name = key.split("/")
        obj = workspace(key)
        assert object_key(obj) == str(Request(ns, name)) == key
        for shard in (Shard(0, 3), Shard(1, 3), Shard(2, 3)):
            assert shard.owns(obj) == shard.owns_request(Request(ns, name)) == shard.owns_key(key)


def test_a_cluster_scoped_object_is_keyed_by_its_name() -> None:
    obj = {"metadata": {"name": "workspaces.kaito.sh"}}
    assert Shard(1, 2).owns(obj) == (shard_of("workspaces.kaito.sh", 2) == 1)


def test_unsharded_owns_everything() -> None:
    assert Shard().owns_key("anything")
    assert not Shard().sharded
    assert Shard(0, 1) == Shard()


def test_each_shard_has_its_own_lease_and_unsharded_keeps_the_name() -> None:
    base = "workspace-status-controller.kaito.sh"
    assert Shard().lease_name(base) == base
    names = {Shard(i, n).lease_name(base) for n in (2, 3) for i in range(n)}
    assert len(names) == 5
    assert Shard(1, 2).lease_name(base) == f"{base}-shard-1-of-2"


# -- the predicate and the mapper -----------------------------------------------------------
def test_the_predicate_passes_the_shares_events_only() -> None:
    mine = [k for k in NAMES[:100] if shard_of(k, 2) == 1]
    theirs = [k for k in NAMES[:100] if shard_of(k, 2) == 0]
    assert mine
    assert theirs
    p = shard_predicate(Shard(1, 2))
    for key in mine:
        o = workspace(key)
        assert [p.create(o), p.update(o, o), p.delete(o)] == [True] * 3
    for key in theirs:
        o = workspace(key)
        assert [p.create(o), p.update(o, o), p.delete(o)] == [False] * 3


def test_unsharded_the_predicate_passes_everything() -> None:
    p = shard_predicate(Shard())
    assert [p.create({}), p.update({}, {}), p.delete({})] == [True] * 3


def test_the_mapper_keeps_the_shares_requests() -> None:
    requests = [Request(*k.split("/")) for k in NAMES[:100]]

    def everything(_: Obj) -> list[Request]:
        return requests

    kept = list(shard_mapper(Shard(0, 2), everything)({}))
    assert kept == [r for r in requests if shard_of(str(r), 2) == 0]
    assert 0 < len(kept) < len(requests)
    assert shard_mapper(Shard(), everything) is everything


# -- the operator -----------------------------------------------------------------------------
def test_the_flags_make_the_shard_its_lease_and_its_user_agent() -> None:
    cfg = parse_args(["--total-shards=2", "--shard=1", "--leader-election-id=ws"])
    assert cfg.shard == Shard(1, 2)
    assert lease_name(cfg) == "ws-shard-1-of-2"
    assert user_agent(cfg) == "workspace-operator (shard=1/2)"

    plain = parse_args([])
    assert plain.shard == Shard()
    assert lease_name(plain) == LEASE_NAME
    assert user_agent(plain) == "workspace-operator"

    labelled = parse_args(["--label-selector=shard=a", "--leader-election-id=ws-a"])
    assert lease_name(labelled) == "ws-a"
    assert user_agent(labelled) == "workspace-operator (label-selector=shard=a)"


@pytest.mark.parametrize(
    "argv",
    [["--shard=2", "--total-shards=2"], ["--shard=-1", "--total-shards=2"], ["--total-shards=0"]],
)
def test_a_shard_outside_the_total_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert "shard" in capsys.readouterr().err


class _Cache:
    def __init__(self, objs: list[Obj]) -> None:
        self._objs = objs

    def list_nowait(self, rt: ResourceType, namespace: str | None = None, **_: object) -> list[Obj]:
        return self._objs


def _state_gauge(objs: list[Obj], shard: Shard) -> dict[str, float]:
    registry = CollectorRegistry()
    WorkspaceStatusReconciler(
        cast(Client, None),
        cast(InformerCache, _Cache(objs)),
        cast(EventRecorder, None),
        registry,
        WorkspaceStatusOptions(shard=shard),
    )
    return {
        s.labels["state"]: s.value
        for metric in registry.collect()
        if metric.name == "kaito_workspace_status_workspaces"
        for s in metric.samples
    }


def test_the_state_gauges_of_the_shards_add_up_to_the_whole() -> None:
    states = ["Ready", "Pending", "NotReady", None]
    objs = [workspace(k, states[i % 4]) for i, k in enumerate(NAMES[:400])]
    whole = _state_gauge(objs, Shard())
    parts = [_state_gauge(objs, Shard(i, 3)) for i in range(3)]
    assert all(sum(p.values()) > 0 for p in parts)
    assert all(sum(p.values()) < sum(whole.values()) for p in parts)
    assert {s: sum(p[s] for p in parts) for s in whole} == whole
    mine = [o for o in objs if Shard(0, 3).owns(o)]
    assert sum(parts[0].values()) == len(mine)
