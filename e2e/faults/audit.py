"""The transition auditor fed from etcd, and the state machine restated as a test oracle.

The harness's ``TransitionAuditor`` watches Workspaces through the API server. Around a
kube-apiserver restart that watch can end in a 410 and a relist, and a relist shows only
the latest version: two writes in the gap look like one edge, legal or not. etcd keeps
every revision, so :class:`EtcdTransitionAuditor` reads the same objects from etcd's own
watch and sees each stored version, in order, across apiserver restarts and relists.

On top of the edge check it proves that no stale state is written. The operator's status
patch carries the resourceVersion it read, so the version its write creates holds exactly
the conditions it decided on; a state those conditions (and the previous state) do not
imply is a stale write. :func:`implied_state` is the README's state machine written again
for the tests, independently of ``controllers.workspace.fsm``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson

from e2e.harness import RECORD, Obj, TransitionAuditor, eventually, held_state

# -- the oracle -------------------------------------------------------------------------
INFERENCE_STATES = frozenset({"Pending", "Ready", "NotReady"})
TUNING_STATES = frozenset({"Pending", "Running", "Succeeded", "Failed"})
# README: every condition type gates an inference workspace except these (the last one
# is the operator's own record of the state it wrote).
INFORMATIONAL = frozenset(
    {"WorkspaceDeleting", "WorkspaceSucceeded", "ScalingDownCompleted", "JobStarted", RECORD}
)
AWAITED = frozenset({"ResourceReady", "InferenceReady"})


def workload_of(obj: Obj) -> str | None:
    """ "inference", "tuning", or None when neither or both are set (invalid)."""
    has_i, has_t = obj.get("inference") is not None, obj.get("tuning") is not None
    if has_i == has_t:
        return None
    return "inference" if has_i else "tuning"


def conditions_of(obj: Obj) -> dict[str, Obj]:
    """The first condition of each type (meta.FindStatusCondition)."""
    first: dict[str, Obj] = {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        first.setdefault(c.get("type"), c)
    return first


def stale(obj: Obj) -> set[str]:
    """README: with KAITO v0.9+ (status.state set), a condition stamped with an older
    observedGeneration than the newest of KAITO's is stale; awaited ones never are."""
    if (obj.get("status") or {}).get("state") is None:
        return set()
    stamps = {
        t: c["observedGeneration"]
        for t, c in conditions_of(obj).items()
        if t != RECORD and c.get("observedGeneration") is not None
    }
    newest = max(stamps.values(), default=0)
    return {t for t, g in stamps.items() if g < newest and t not in AWAITED}


def _status(conds: dict[str, Obj], type_: str) -> str:
    value = (conds.get(type_) or {}).get("status")
    return value if value in ("True", "False") else "Unknown"


def is_deleting(obj: Obj) -> bool:
    meta = obj.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) or (
        _status(conditions_of(obj), "WorkspaceDeleting") == "True"
    )


def implied_state(obj: Obj, previous: str | None) -> str | None:
    """What status.status must become for ``obj``'s conditions when it was ``previous``.

    A deleting or invalid workspace keeps whatever it has (nothing is written).
    """
    workload = workload_of(obj)
    if workload is None or is_deleting(obj):
        return previous
    conds = conditions_of(obj)
    if workload == "inference":
        prev = previous if previous in INFERENCE_STATES else None
        ignored = INFORMATIONAL | stale(obj)
        gated = any(c.get("status") == "False" and t not in ignored for t, c in conds.items())
        ready = (
            _status(conds, "ResourceReady") == "True"
            and _status(conds, "InferenceReady") == "True"
            and not gated
        )
        if ready:
            return "Ready"
        return "NotReady" if prev in ("Ready", "NotReady") else "Pending"
    prev = previous if previous in TUNING_STATES else None
    if prev in ("Succeeded", "Failed"):
        return prev
    succeeded, job = conds.get("WorkspaceSucceeded") or {}, conds.get("JobStarted") or {}
    failed = (
        succeeded.get("status") == "False" and succeeded.get("reason") == "workspaceFailed"
    ) or (job.get("status") == "False" and job.get("reason") == "WorkspaceTuningJobStatusFailed")
    if failed:
        return "Failed"
    if _status(conds, "WorkspaceSucceeded") == "True":
        return "Succeeded"
    if _status(conds, "JobStarted") == "True" or prev == "Running":
        return "Running"
    return "Pending"


def converged(obj: Obj) -> bool:
    """A valid workspace holds a state, and its conditions imply that same state."""
    state = (obj.get("status") or {}).get("status")
    if workload_of(obj) is None:
        return state is None
    if is_deleting(obj):
        return True
    return state is not None and implied_state(obj, state) == state


# -- the auditor ------------------------------------------------------------------------
ETCD_PREFIX = b"/registry/kaito.sh/workspaces/"
ETCD_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)


@dataclass(frozen=True)
class StaleWrite:
    namespace: str
    name: str
    resource_version: str
    previous: str | None
    written: str | None
    implied: str | None


class _Compacted(Exception):
    """The watch start revision was compacted away: versions were lost to the audit."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdTransitionAuditor(TransitionAuditor):
    """A :class:`TransitionAuditor` that reads every stored Workspace version from etcd.

    ``stale`` lists state writes that the version's own conditions do not imply;
    ``gaps`` counts resynchronisations after etcd compacted revisions the audit had not
    read yet (each one means some versions went unchecked, so tests require 0).
    """

    def __init__(self, etcd_url: str, namespace: str | None = None) -> None:
        # The parent's API client is not used: run() reads etcd.
        super().__init__(None, namespace)  # type: ignore[arg-type]
        self.etcd_url = etcd_url
        prefix = ETCD_PREFIX + (f"{namespace}/".encode() if namespace else b"")
        self.range = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        self.stale: list[StaleWrite] = []
        self.gaps = 0
        self.reconnects = 0
        self.revision = 0
        self.versions = 0

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with aiohttp.ClientSession(timeout=ETCD_TIMEOUT) as session:
            await self._snapshot(session)
            task_status.started()
            while True:
                try:
                    await self._follow(session)
                except _Compacted:
                    self.gaps += 1
                    await self._snapshot(session)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    # etcd restarting: resume from the next revision, nothing is skipped.
                    self.reconnects += 1
                    await anyio.sleep(0.2)

    def caught_up(self, revision: int) -> bool:
        return self.revision >= revision

    async def _snapshot(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                async with session.post(f"{self.etcd_url}/v3/kv/range", json=self.range) as resp:
                    answer = orjson.loads(await resp.read())
                break
            except (aiohttp.ClientError, OSError, TimeoutError):
                await anyio.sleep(0.2)
        self._last.clear()
        for kv in answer.get("kvs") or []:
            obj = self._decode(kv)
            m = obj["metadata"]
            self._last[(m["namespace"], m["name"])] = held_state(obj)
        self.revision = int(answer["header"]["revision"])

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        request = {"create_request": {**self.range, "start_revision": str(self.revision + 1)}}
        async with session.post(f"{self.etcd_url}/v3/watch", json=request) as resp:
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._apply(orjson.loads(line).get("result") or {})
        raise OSError("etcd closed the watch")

    def _apply(self, result: dict[str, Any]) -> None:
        if int(result.get("compact_revision") or 0) > 0:
            raise _Compacted(str(result["compact_revision"]))
        if result.get("canceled"):
            raise OSError(f"etcd cancelled the watch: {result.get('cancel_reason')}")
        for event in result.get("events") or []:
            kv = event["kv"]
            revision = int(kv["mod_revision"])
            if event.get("type") == "DELETE":
                _, _, rest = base64.b64decode(kv["key"]).partition(ETCD_PREFIX)
                ns, _, name = rest.decode().partition("/")
                self._last.pop((ns, name), None)
            else:
                self.versions += 1
                self._observe(self._decode(kv))
            self.revision = max(self.revision, revision)

    @staticmethod
    def _decode(kv: dict[str, Any]) -> Obj:
        obj: Obj = orjson.loads(base64.b64decode(kv["value"]))
        obj["metadata"]["resourceVersion"] = str(kv["mod_revision"])
        return obj

    def _observe(self, obj: Obj) -> None:
        m = obj["metadata"]
        key = (m["namespace"], m["name"])
        previous = self._last.get(key)
        super()._observe(obj)
        state = (obj.get("status") or {}).get("status")
        # None: a KAITO write dropped the field (the parent records the erasure).
        if state is None or state == previous:
            return
        if (key[0], key[1], state) in self._excused or workload_of(obj) is None:
            return  # the test wrote it, or the edge check already judged it
        implied = implied_state(obj, previous)
        if implied != state:
            self.stale.append(
                StaleWrite(key[0], key[1], m["resourceVersion"], previous, state, implied)
            )


async def latest_revision(auditor: EtcdTransitionAuditor) -> int:
    """The newest revision among the Workspaces the auditor covers, read from etcd now."""
    query = {**auditor.range, "sort_order": "DESCEND", "sort_target": "MOD", "limit": 1}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(f"{auditor.etcd_url}/v3/kv/range", json={**query, "keys_only": True}) as resp,
    ):
        kvs = orjson.loads(await resp.read()).get("kvs") or []
    return int(kvs[0]["mod_revision"]) if kvs else 0


async def wait_audited(auditor: EtcdTransitionAuditor, timeout: float = 30) -> None:
    """Wait until the auditor has read the newest stored version of every Workspace."""
    target = await latest_revision(auditor)

    async def at() -> str:
        return f"auditor at revision {auditor.revision}, etcd at {target}"

    await eventually(
        lambda: auditor.caught_up(target), timeout, f"the auditor to reach {target}", describe=at
    )


def assert_clean(auditor: EtcdTransitionAuditor) -> None:
    """Fail on any illegal edge or stale write the auditor has seen."""
    if auditor.illegal:
        raise AssertionError(f"illegal transitions: {auditor.illegal[:10]}")
    if auditor.stale:
        raise AssertionError(f"stale writes: {auditor.stale[:10]}")


async def wait_clean(auditor: EtcdTransitionAuditor, timeout: float = 30) -> None:
    """:func:`wait_audited`, then :func:`assert_clean`."""
    await wait_audited(auditor, timeout)
    assert_clean(auditor)
