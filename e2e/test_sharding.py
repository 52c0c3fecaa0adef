"""Two operator processes sharing the Workspaces: each write comes from exactly one.

Who wrote what is read from the API server, not from the operators: this module's
control plane keeps an audit log of every write to a Workspace (create, KAITO's status
PUTs, label patches, the operators' status PATCHes), request and response. Each
operator sends a User-Agent naming its share (``operator.user_agent``), and its JSON
patch starts with the resourceVersion it decided on, the write's precondition. So the
log says, for every version of every workspace, which process made it and from which
version, whatever the processes themselves log.

From that log, per workspace, the tests check:

* every successful status PATCH came from the one process whose share the workspace
  was in at the version the write was computed from, and the other process sent none;
* the writes form one chain: each operator write's precondition is the version just
  before it (the log misses no write), and each changed the held state or put back a
  field KAITO's PUT had dropped (no write doubled);
* every KAITO write that dropped ``status.status`` is followed by an operator write that
  put it back, and the last version holds the expected state (no write lost).

Label sharding: ``--label-selector=shard=a`` and ``=b``, each with its own
``--leader-election-id``; a workspace relabelled from a to b mid-life is taken over by
b (its next KAITO change is decided and written by b) and a sends nothing for it after
the relabel. Hash sharding: ``--total-shards=2 --shard=0`` and ``=1``, each handling
exactly the workspaces ``reconciler.sharding.shard_of`` names it, under Leases
``…-shard-0-of-2`` and ``…-shard-1-of-2``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from controllers.workspace.operator import lease_name, parse_args, user_agent
from e2e.conftest import OperatorFactory
from e2e.harness import (
    CRASHING,
    INFERENCE_EXAMPLE,
    INFERENCE_READY,
    ROOT,
    TUNING_EXAMPLE,
    WORKSPACE,
    Operator,
    TransitionAuditor,
    assert_held,
    condition,
    create_workspace,
    eventually,
    set_conditions,
    sum_samples,
    wait_state,
)
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.plugin import private_plane
from reconciler.resource import LEASE, NAMESPACE
from reconciler.sharding import shard_of

Obj = dict[str, Any]

# Every write to a Workspace, with its request and response; nothing else.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "RequestResponse",
            "verbs": ["create", "update", "patch"],
            "resources": [{"group": "kaito.sh", "resources": ["workspaces", "workspaces/status"]}],
        },
        {"level": "None"},
    ],
}

JOB_RUNNING = (
    condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
    condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
)


@dataclass(frozen=True)
class AuditedPlane:
    plane: ControlPlane
    audit_log: Path


@pytest.fixture(scope="module")
def audited_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedPlane]:
    folder = tmp_path_factory.mktemp("sharding-audit")
    policy = folder / "policy.json"
    policy.write_bytes(orjson.dumps(AUDIT_POLICY))
    with private_plane(
        tmp_path_factory,
        "sharding-plane",
        crd_paths=[ROOT / "config" / "crd"],
        apiserver_args=[
            f"--audit-policy-file={policy}",
            f"--audit-log-path={folder / 'audit.log'}",
        ],
        why="attributes every write through the API server's audit log",
    ) as plane:
        yield AuditedPlane(plane, folder / "audit.log")


@pytest.fixture
async def client(audited_plane: AuditedPlane) -> AsyncIterator[Client]:
    kubeconfig = audited_plane.plane.kubeconfig
    c = await Client.from_config(str(kubeconfig), user_agent="sharding-test")
    yield c
    await c.close()


# -- the audit log ----------------------------------------------------------------------
@dataclass(frozen=True)
class Write:
    """One write to a workspace, as the API server recorded it."""

    name: str
    agent: str
    verb: str
    subresource: str
    code: int
    precondition: int | None  # operators' status PATCH: the version decided on
    version: int | None  # the resourceVersion the write created (successful writes)
    held: str | None  # status.status of the version created

    @property
    def ok(self) -> bool:
        return self.code < 300


def _precondition(request: Any) -> int | None:
    if (
        isinstance(request, list)
        and request
        and request[0].get("path") == ("/metadata/resourceVersion")
    ):
        return int(request[0]["value"])
    return None


def audited_writes(audit_log: Path, ns: str) -> list[Write]:
    """Every write to a Workspace in ``ns``, in the order the API server finished them."""
    out = []
    for line in audit_log.read_bytes().splitlines():
        event = orjson.loads(line)
        ref = event.get("objectRef") or {}
        if ref.get("resource") != "workspaces" or ref.get("namespace") != ns:
            continue
        response = event.get("responseObject") or {}
        code = int((event.get("responseStatus") or {}).get("code", 0))
        ok = code < 300 and response.get("kind") == "Workspace"
        out.append(
            Write(
                name=ref["name"],
                agent=event.get("userAgent", ""),
                verb=event["verb"],
                subresource=ref.get("subresource", ""),
                code=code,
                precondition=_precondition(event.get("requestObject")),
                version=int(response["metadata"]["resourceVersion"]) if ok else None,
                held=(response.get("status") or {}).get("status") if ok else None,
            )
        )
    return out


def chains(writes: list[Write]) -> dict[str, list[Write]]:
    """The successful writes of each workspace, oldest version first."""
    out: dict[str, list[Write]] = {}
    for w in writes:
        if w.ok:
            out.setdefault(w.name, []).append(w)
    for chain in out.values():
        chain.sort(key=lambda w: w.version or 0)
    return out


def is_operator(w: Write) -> bool:
    return w.agent.startswith("workspace-operator")


def check_chain(name: str, chain: list[Write], owner: Callable[[int], str]) -> None:
    """The invariants of the module docstring for one workspace's successful writes.
    ``owner(v)``: the User-Agent of the process whose share the workspace was in at
    version ``v``."""
    assert chain[0].verb == "create", f"{name}: the log misses its creation: {chain[0]}"
    for i, (before, w) in enumerate(itertools.pairwise(chain), start=1):
        assert before.version is not None
        if not is_operator(w):
            if before.held is not None and w.held is None:
                # A KAITO PUT dropped the field: a later write must put a state back.
                assert any(is_operator(x) and x.held for x in chain[i:]), (
                    f"{name}: status.status dropped at {w.version}, never written back"
                )
            continue
        assert w.precondition == before.version, (
            f"{name}: {w.agent} wrote from {w.precondition}, but the version before its "
            f"write is {before.version}: the audit log misses a write"
        )
        assert w.agent == owner(before.version), (
            f"{name}@{before.version} is {owner(before.version)!r}'s, written by {w.agent!r}"
        )
        assert w.held != before.held, f"{name}: {w.agent} wrote {w.held} again (a double write)"
    assert chain[-1].held is not None, f"{name}: ends without a state: {chain[-1]}"


def always(agent: str) -> Callable[[int], str]:
    """The owner of a workspace that never changes share."""
    return lambda _version: agent


async def wait_audited(audit_log: Path, ns: str, name: str, written: Obj) -> None:
    """Until the audit log has the write that created ``written`` (the API server may
    answer a request before it has written the request's audit event)."""
    version = rv(written)

    def seen() -> bool:
        return any(w.name == name and w.version == version for w in audited_writes(audit_log, ns))

    await eventually(seen, 10, f"the audit event of {ns}/{name}@{version}")


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


def operator_args(ns: str, *flags: str) -> list[str]:
    return [
        f"--namespace={ns}",
        "--leader-elect",
        f"--leader-election-namespace={ns}",
        "--log-level=debug",
        *flags,
    ]


@dataclass(frozen=True)
class ShardProcess:
    op: Operator
    agent: str  # its User-Agent
    lease: str


def start_shard(
    start_operator: OperatorFactory, audited: AuditedPlane, ns: str, *flags: str
) -> ShardProcess:
    """An operator process, with its User-Agent and Lease as the operator computes them."""
    args = operator_args(ns, *flags)
    cfg = parse_args(args)
    op = start_operator(*args, kubeconfig_path=audited.plane.kubeconfig)
    return ShardProcess(op, user_agent(cfg), lease_name(cfg))


async def wait_leading(shard: ShardProcess) -> None:
    def leading() -> bool:
        samples = sum_samples(
            shard.op.metrics(), "leader_election_master_status", {"name": shard.lease}
        )
        return samples == 1

    await shard.op.wait_ready()
    await eventually(leading, 30, f"{shard.agent} to hold Lease {shard.lease}")


async def new_namespace(client: Client, ns: str) -> str:
    await client.create(NAMESPACE, {"metadata": {"name": ns}})
    return ns


# -- label sharding -----------------------------------------------------------------------
LABELLED = {"a-infer": "a", "a-tune": "a", "b-infer": "b", "b-tune": "b", "moving": "a"}


async def test_label_shards_write_their_own_workspaces_and_a_relabelled_one_moves(
    audited_plane: AuditedPlane, client: Client, start_operator: OperatorFactory
) -> None:
    ns = await new_namespace(client, "label-shards")
    a, b = (
        start_shard(
            start_operator,
            audited_plane,
            ns,
            f"--label-selector=shard={x}",
            f"--leader-election-id=workspace-status-shard-{x}",
        )
        for x in ("a", "b")
    )
    assert a.lease != b.lease
    await wait_leading(a)
    await wait_leading(b)
    leases = [await client.get(LEASE, s.lease, ns) for s in (a, b)]
    assert leases[0]["spec"]["holderIdentity"] != leases[1]["spec"]["holderIdentity"]

    auditor = TransitionAuditor(client, ns)
    async with anyio.create_task_group() as tg:
        await tg.start(auditor.run)
        for name, label in LABELLED.items():
            tuning = name.endswith("tune")
            await create_workspace(
                client,
                ns,
                name,
                TUNING_EXAMPLE if tuning else INFERENCE_EXAMPLE,
                metadata={"labels": {"shard": label}},
            )
        for name in LABELLED:
            tuning = name.endswith("tune")
            await wait_state(client, ns, name, "Pending")
            await set_conditions(client, ns, name, *(JOB_RUNNING if tuning else INFERENCE_READY))
            await wait_state(client, ns, name, "Running" if tuning else "Ready")

        # Move "moving" from a to b mid-life, then let KAITO change its conditions.
        relabelled = await client.patch(
            WORKSPACE, "moving", {"metadata": {"labels": {"shard": "b"}}}, namespace=ns
        )
        moved_at = rv(relabelled)
        assert await b.op.wait_decided(ns, "moving", relabelled) == "Ready"
        crashed = await set_conditions(client, ns, "moving", *CRASHING)
        await assert_held(client, b.op, ns, "moving", crashed, "NotReady")
        # A write that keeps the state: KAITO's PUT drops status.status, b puts it back.
        kept = await set_conditions(
            client, ns, "moving", CRASHING[0], {**CRASHING[1], "message": "back-off 10s"}
        )
        await assert_held(client, b.op, ns, "moving", kept, "NotReady")
        # a goes on handling its own.
        crashed = await set_conditions(client, ns, "a-infer", *CRASHING)
        await assert_held(client, a.op, ns, "a-infer", crashed, "NotReady")
        await auditor.wait_changes(
            ns, "moving", [(None, "Pending"), ("Pending", "Ready"), ("Ready", "NotReady")]
        )
        tg.cancel_scope.cancel()
    assert auditor.illegal == []

    # Each workspace's last write may reach the audit log after another's: wait for
    # every one of them, not only the last write made here.
    for name in LABELLED:
        await wait_audited(audited_plane.audit_log, ns, name, await client.get(WORKSPACE, name, ns))
    writes = audited_writes(audited_plane.audit_log, ns)
    by_name = chains(writes)

    def moving_owner(version: int) -> str:
        return a.agent if version < moved_at else b.agent

    for name, label in LABELLED.items():
        fixed = always((a if label == "a" else b).agent)
        check_chain(name, by_name[name], moving_owner if name == "moving" else fixed)

    # The move, said directly: every request of a for "moving" was computed on a version
    # before the relabel, every one of b on the relabel or after, and both wrote.
    moving = [w for w in writes if w.name == "moving" and is_operator(w)]
    from_a = [w for w in moving if w.agent == a.agent]
    from_b = [w for w in moving if w.agent == b.agent]
    assert from_a, "a never wrote the workspace it had first"
    assert all((w.precondition or 0) < moved_at for w in from_a), from_a
    assert len([w for w in from_b if w.ok]) >= 2, from_b
    assert all((w.precondition or 0) >= moved_at for w in from_b), from_b
    assert all(int(v) < moved_at for v in a.op.decisions(ns, "moving")), (
        "a decided on the workspace after it left a's selector"
    )
    # Each process sent requests, and decided, only about its own workspaces.
    for s, label in ((a, "a"), (b, "b")):
        touched = {w.name for w in writes if w.agent == s.agent}
        assert touched == {n for n, x in LABELLED.items() if x == label} | {"moving"}
        for other in (n for n, x in LABELLED.items() if x != label and n != "moving"):
            assert s.op.decisions(ns, other) == {}, f"{s.agent} decided on {other}"


# -- hash sharding ------------------------------------------------------------------------
async def test_hash_shards_each_handle_exactly_the_workspaces_their_hash_names(
    audited_plane: AuditedPlane, client: Client, start_operator: OperatorFactory
) -> None:
    ns = await new_namespace(client, "hash-shards")
    names = [f"ws-{i}" for i in range(10)]
    owner_of = {n: shard_of(f"{ns}/{n}", 2) for n in names}
    # The names are fixed, so is the split: both shards have work.
    assert min(list(owner_of.values()).count(i) for i in (0, 1)) >= 3, owner_of
    shards = [
        start_shard(start_operator, audited_plane, ns, "--total-shards=2", f"--shard={i}")
        for i in (0, 1)
    ]
    assert shards[0].lease != shards[1].lease
    for s in shards:
        await wait_leading(s)

    auditor = TransitionAuditor(client, ns)
    async with anyio.create_task_group() as tg:
        await tg.start(auditor.run)
        for n in names:
            await create_workspace(client, ns, n)
        for n in names:
            await wait_state(client, ns, n, "Pending")
            await set_conditions(client, ns, n, *INFERENCE_READY)
            await wait_state(client, ns, n, "Ready")
        for n in names:
            crashed = await set_conditions(client, ns, n, *CRASHING)
            await assert_held(client, shards[owner_of[n]].op, ns, n, crashed, "NotReady")
        tg.cancel_scope.cancel()
    assert auditor.illegal == []

    for n in names:
        await wait_audited(audited_plane.audit_log, ns, n, await client.get(WORKSPACE, n, ns))
    writes = audited_writes(audited_plane.audit_log, ns)
    by_name = chains(writes)
    for n in names:
        mine, other = shards[owner_of[n]], shards[1 - owner_of[n]]
        check_chain(n, by_name[n], always(mine.agent))
        sent = [w for w in writes if w.name == n and w.agent == other.agent]
        assert sent == [], f"{n} is shard {owner_of[n]}'s, yet {other.agent} sent {sent}"
        assert other.op.decisions(ns, n) == {}, f"{other.agent} decided on {n}"

    # Each shard caches all ten; its state gauge counts its share only.
    def gauges_count_the_shares() -> bool:
        return all(
            s.op.metric("kaito_workspace_status_workspaces")
            == s.op.metric("kaito_workspace_status_workspaces", state="NotReady")
            == list(owner_of.values()).count(i)
            for i, s in enumerate(shards)
        )

    await eventually(gauges_count_the_shares, 10, "each shard's gauge to count its share")
