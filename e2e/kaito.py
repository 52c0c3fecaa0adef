"""KAITO's workspace controller as a status writer: the one way tests and the benchmark
play KAITO.

How KAITO writes a Workspace's status (v0.12.0 and v0.8.1; read from its source, see
``/work/shared/kaito/SOURCES.txt`` and ``/work/shared/reference/kaito.md`` §2 and §3):

1. It Gets the object into its Go type ``kaitov1beta1.Workspace``. Any status field that
   type lacks is gone from then on; our ``status.status`` is one. Conditions become
   ``[]metav1.Condition``, so each keeps six fields only.
2. It changes conditions with ``meta.SetStatusCondition`` and ``meta.RemoveStatusCondition``,
   each with ``ObservedGeneration`` = the workspace's ``metadata.generation``.
3. It writes only if the status changed (``apiequality.Semantic.DeepEqual`` of the typed
   status before and after); the write is ``Status().Update``: a PUT of the whole status
   subresource carrying the resourceVersion it read.
4. Get, change and PUT run inside ``retry.OnError(retry.DefaultRetry, …)``, retrying on
   Conflict, ServiceUnavailable, ServerTimeout and TooManyRequests; each attempt Gets again.
5. When that gives up, the reconcile returns the error and controller-runtime requeues
   the workspace with per-item exponential backoff (5 ms, doubling).

What the Go libraries do, read at kubernetes/apimachinery eed236ce (2026-07-23) and
kubernetes/client-go 32ce75a7 (2026-07-24):

* ``meta.SetStatusCondition`` (pkg/api/meta/conditions.go) finds the *first* entry of
  the new condition's type. None: the new condition is appended, its lastTransitionTime
  set to now unless given. Found: if the status differs, the status is replaced and
  lastTransitionTime becomes the given one, or now; reason, message and
  observedGeneration are overwritten whatever they were; lastTransitionTime never moves
  otherwise. Every other entry, and its position, is untouched.
* ``meta.RemoveStatusCondition`` drops every entry of the type.
* ``retry.DefaultRetry`` (util/retry/util.go) is ``Backoff{Steps: 5, Duration: 10ms,
  Factor: 1.0, Jitter: 0.1}``; ``wait.ExponentialBackoff`` (pkg/util/wait/backoff.go)
  calls the function at most Steps times and sleeps Duration plus a uniform
  [0, Jitter × Duration) between calls: 5 attempts, 4 sleeps of 10–11 ms. An error the
  predicate does not accept ends the loop at once; when the steps run out, the last
  retriable error is returned.
* The predicates (pkg/api/errors/errors.go): IsConflict is 409 unless the reason is
  another known one (AlreadyExists is not a conflict); IsServiceUnavailable is reason
  ServiceUnavailable or 503; IsServerTimeout is reason ServerTimeout only;
  IsTooManyRequests is reason TooManyRequests or 429.

Where this writer differs from KAITO, on purpose: an error that no retry can fix (a 422,
403, 404, …) is raised at once rather than requeued forever, because a test wants the API
server's verdict; and requeues stop at a deadline the caller sets, with the last error
raised.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import anyio
import yaml

from reconciler.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    ServerError,
    TooManyRequests,
    TransportError,
)
from reconciler.ratelimit import DEFAULT_EXPONENTIAL_BASE_DELAY, ItemExponentialFailureRateLimiter
from reconciler.resource import ResourceType

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_REQUEUE_DELAY",
    "KAITO_WORKSPACE",
    "RETRY_DURATION",
    "RETRY_JITTER",
    "RETRY_STEPS",
    "KaitoVersion",
    "KaitoWriter",
    "StatusClient",
    "WriterStats",
    "apply_conditions",
    "go_time",
    "is_kaito_type",
    "remove_status_condition",
    "set_status_condition",
    "status_schema",
    "typed_status",
]

Obj = dict[str, Any]

KAITO_WORKSPACE = ResourceType("kaito.sh", "v1beta1", "Workspace", "workspaces")
"""The version KAITO's controller reads and writes (its Go type; the CRD's storage version)."""

RETRY_STEPS = 5
"""retry.DefaultRetry.Steps: attempts (Get, change, PUT) per round."""
RETRY_DURATION = 0.010
"""retry.DefaultRetry.Duration (seconds) between attempts; Factor 1.0 keeps it constant."""
RETRY_JITTER = 0.1
"""retry.DefaultRetry.Jitter: each sleep is RETRY_DURATION × (1 + U[0, RETRY_JITTER))."""
DEFAULT_MAX_REQUEUE_DELAY = 1.0
"""Ceiling (seconds) of the requeue backoff; controller-runtime's is 1000 s, too long for
a test to wait on."""
DEFAULT_DEADLINE = 30.0
"""Seconds after which a write that keeps failing raises its last error."""

_FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kaito"


class KaitoVersion(StrEnum):
    """The KAITO release imitated; it decides which status fields survive a write."""

    V0_12 = "v0.12.0"
    """Has ``status.state`` (and workerNodes, targetNodeCount, performance, conditions)."""
    V0_8_1 = "v0.8.1"
    """The last release before ``status.state``: workerNodes, targetNodeCount, conditions."""

    @property
    def crd_path(self) -> Path:
        """KAITO's Workspace CRD of this release, as shipped (tests/fixtures/kaito)."""
        if self is KaitoVersion.V0_12:
            return _FIXTURES / "kaito.sh_workspaces.yaml"
        return _FIXTURES / "v0.8.1" / "kaito.sh_workspaces.yaml"

    def crd(self) -> Obj:
        return _load_crd(self)


@functools.cache
def _load_crd(version: KaitoVersion) -> Obj:
    # A fixed file of the repository, read once; callers never mutate the result.
    crd: Obj = yaml.safe_load(version.crd_path.read_text())
    return crd


# -- the pure part: conditions as apimachinery changes them, status as Go types keep it ---
def go_time(value: datetime) -> str:
    """A time as metav1.Time marshals it: RFC 3339 in UTC, whole seconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_status_condition(
    conditions: Sequence[Mapping[str, Any]], new: Mapping[str, Any], now: str
) -> list[Obj]:
    """``meta.SetStatusCondition``: the conditions after setting ``new`` at time ``now``
    (copies; the inputs are not modified)."""
    out = [dict(c) for c in conditions]
    given_time = new.get("lastTransitionTime") or None
    for existing in out:
        if existing.get("type") != new.get("type"):
            continue
        if existing.get("status") != new.get("status"):
            existing["status"] = new.get("status")
            existing["lastTransitionTime"] = given_time or now
        existing["reason"] = new.get("reason", "")
        existing["message"] = new.get("message", "")
        # An absent observedGeneration is Go's zero value: the same thing, omitted.
        if new.get("observedGeneration"):
            existing["observedGeneration"] = new["observedGeneration"]
        else:
            existing.pop("observedGeneration", None)
        return out
    appended = {**new, "lastTransitionTime": given_time or now}
    if not appended.get("observedGeneration"):
        appended.pop("observedGeneration", None)
    out.append(appended)
    return out


def remove_status_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> list[Obj]:
    """``meta.RemoveStatusCondition``: every entry of ``type_`` dropped, the rest in order."""
    return [dict(c) for c in conditions if c.get("type") != type_]


def apply_conditions(
    conditions: Sequence[Mapping[str, Any]],
    new: Iterable[Mapping[str, Any]],
    *,
    generation: int,
    now: str,
    remove: Iterable[str] = (),
) -> list[Obj]:
    """One KAITO status change: set each of ``new`` in order (observedGeneration =
    ``generation``), then remove the types in ``remove``."""
    out = [dict(c) for c in conditions]
    for condition in new:
        out = set_status_condition(out, {**condition, "observedGeneration": generation}, now)
    for type_ in remove:
        out = remove_status_condition(out, type_)
    return out


def is_kaito_type(type_: str) -> bool:
    """Whether a condition type can be KAITO's own: every type KAITO writes is a bare
    name (ResourceReady, InferenceReady, …; reference/kaito.md §2), while by the
    metav1.Condition convention another controller qualifies its own
    (``example.com/Name``)."""
    return "/" not in type_


def status_schema(crd: Mapping[str, Any], version: str) -> Obj:
    """The ``status`` schema of ``version`` in a CRD."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema: Obj = v["schema"]["openAPIV3Schema"]["properties"]["status"]
            return schema
    raise ValueError(f"{crd['metadata']['name']} has no version {version}")


def typed_status(
    status: Mapping[str, Any], crd: Mapping[str, Any], version: str = KAITO_WORKSPACE.version
) -> Obj:
    """What survives KAITO's typed round trip of ``status`` (decode into the Go type of
    ``crd``'s ``version``, encode again).

    A field survives only where the Go type has it, and the CRD's schema is generated
    from that type: so fields (at any depth) outside the schema are dropped, and each
    condition is reduced to metav1.Condition's six fields as Go encodes them.
    """
    schema = status_schema(crd, version)
    out: Obj = _prune(status, schema)
    if "conditions" in out:
        conditions = [_metav1_condition(c) for c in out["conditions"] if isinstance(c, Mapping)]
        if conditions:
            out["conditions"] = conditions
        else:
            del out["conditions"]  # `json:"conditions,omitempty"`
    return out


def _prune(value: Any, schema: Mapping[str, Any]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, Mapping):
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            return {k: _prune(v, properties[k]) for k, v in value.items() if k in properties}
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return {k: _prune(v, extra) for k, v in value.items()}
        return dict(value)
    if isinstance(value, list):
        items = schema.get("items")
        return [_prune(v, items) if isinstance(items, Mapping) else v for v in value]
    return value


def _metav1_condition(c: Mapping[str, Any]) -> Obj:
    """A condition as metav1.Condition encodes it: reason and message always (possibly
    empty), observedGeneration only when non-zero (omitempty), the time re-encoded."""
    out: Obj = {"type": c.get("type", ""), "status": c.get("status", "")}
    if c.get("observedGeneration"):
        out["observedGeneration"] = c["observedGeneration"]
    out["lastTransitionTime"] = _reencode_time(c.get("lastTransitionTime"))
    out["reason"] = c.get("reason", "")
    out["message"] = c.get("message", "")
    return out


def _reencode_time(value: Any) -> Any:
    # A value Go could not parse would fail KAITO's decode; we pass it on unchanged so
    # the API server gives its own verdict on it.
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    return go_time(parsed) if parsed.tzinfo is not None else value  # RFC 3339 needs a zone


# -- the I/O part ---------------------------------------------------------------------------
class StatusClient(Protocol):
    """What the writer needs of ``reconciler.client.Client``."""

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj: ...

    async def replace(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj: ...


@dataclass
class WriterStats:
    """What a writer did, for benchmarks and tests to report."""

    gets: int = 0
    writes: int = 0
    """PUTs the API server accepted."""
    unchanged: int = 0
    """Changes that left the typed status as it was, so nothing was written (KAITO's
    DeepEqual check)."""
    conflicts: int = 0
    """PUTs answered 409 (someone wrote after our GET)."""
    retries: int = 0
    """Attempts DefaultRetry made after a retriable error."""
    requeues: int = 0
    """Times DefaultRetry gave up and the write went round again after a backoff."""


# An attempt's conditions, from the typed conditions read, the generation and now.
_Edit = Callable[[list[Obj], int, str], list[Obj]]


def _retriable(err: BaseException) -> bool:
    """KAITO's retry predicate: IsConflict, IsServiceUnavailable, IsServerTimeout or
    IsTooManyRequests."""
    if isinstance(err, AlreadyExists):
        return False
    if isinstance(err, Conflict | TooManyRequests):
        return True
    return isinstance(err, ServerError) and (
        err.status == 503 or err.reason in ("ServiceUnavailable", "ServerTimeout")
    )


def _requeued(err: BaseException) -> bool:
    """Errors worth a requeue: the retriable ones, any 5xx, and no answer at all."""
    return _retriable(err) or isinstance(err, ServerError | TransportError)


class KaitoWriter:
    """Writes a Workspace's conditions exactly as KAITO's workspace controller does.

    Invariants of every write:

    1. The PUT carries the resourceVersion of the GET it was computed from; a 409 means
       a fresh GET and a fresh computation, never a blind overwrite.
    2. The status sent is ``typed_status`` of the result: every field the imitated
       KAITO release does not know (our ``status.status``; ``status.state`` for v0.8.1)
       is erased by the write; ``state`` is otherwise sent back as read.
    3. Conditions change only through ``set_status_condition`` and
       ``remove_status_condition``; other types, including ones KAITO does not know,
       keep their entries and positions.
    4. Nothing is written when the typed status would not change.
    """

    def __init__(
        self,
        client: StatusClient,
        *,
        version: KaitoVersion = KaitoVersion.V0_12,
        resource: ResourceType = KAITO_WORKSPACE,
        field_manager: str | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_requeue_delay: float = DEFAULT_MAX_REQUEUE_DELAY,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._version = version
        self._crd = version.crd()
        self._resource = resource
        self._field_manager = field_manager
        self._deadline = deadline
        self._max_requeue_delay = max_requeue_delay
        self._rng = rng or random.Random()
        self.stats = WriterStats()

    @property
    def version(self) -> KaitoVersion:
        return self._version

    async def set_conditions(
        self,
        namespace: str,
        name: str,
        *conditions: Mapping[str, Any],
        remove: Iterable[str] = (),
    ) -> Obj:
        """Set ``conditions`` (``meta.SetStatusCondition`` each, in order), then remove
        the types in ``remove``; returns the object the PUT returned (or the one read,
        when nothing changed)."""
        removed = tuple(remove)

        def edit(current: list[Obj], generation: int, now: str) -> list[Obj]:
            return apply_conditions(
                current, conditions, generation=generation, now=now, remove=removed
            )

        return await self._write(namespace, name, edit)

    async def replace_conditions(
        self, namespace: str, name: str, *conditions: Mapping[str, Any]
    ) -> Obj:
        """Leave exactly ``conditions`` among KAITO's own conditions: every other type
        KAITO could own (``is_kaito_type``) is removed, as KAITO drops the node
        conditions a provisioner no longer reports; the given ones are set. Other
        controllers' types stay, as KAITO keeps every type it does not manage. Kept
        types keep their positions and, where the status is unchanged, their
        lastTransitionTime."""
        wanted = {c.get("type") for c in conditions}

        def edit(current: list[Obj], generation: int, now: str) -> list[Obj]:
            others = [
                str(c.get("type"))
                for c in current
                if c.get("type") not in wanted and is_kaito_type(str(c.get("type")))
            ]
            return apply_conditions(
                current, conditions, generation=generation, now=now, remove=others
            )

        return await self._write(namespace, name, edit)

    async def _write(self, namespace: str, name: str, edit: _Edit) -> Obj:
        """Rounds of DefaultRetry, requeued with exponential backoff until the deadline."""
        give_up = time.monotonic() + self._deadline
        backoff: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(
            DEFAULT_EXPONENTIAL_BASE_DELAY, self._max_requeue_delay
        )
        while True:
            try:
                return await self._retry_round(namespace, name, edit)
            except (ApiError, TransportError) as err:
                if not _requeued(err):
                    raise
                delay = backoff.when(name)
                if time.monotonic() + delay > give_up:
                    raise
                self.stats.requeues += 1
                await anyio.sleep(delay)

    async def _retry_round(self, namespace: str, name: str, edit: _Edit) -> Obj:
        """``retry.OnError(retry.DefaultRetry, retriable, get-change-put)``."""
        for attempt in range(1, RETRY_STEPS + 1):
            try:
                return await self._attempt(namespace, name, edit)
            except ApiError as err:
                if not _retriable(err) or attempt == RETRY_STEPS:
                    raise
            self.stats.retries += 1
            await anyio.sleep(RETRY_DURATION * (1 + self._rng.random() * RETRY_JITTER))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, namespace: str, name: str, edit: _Edit) -> Obj:
        obj = await self._client.get(self._resource, name, namespace)
        self.stats.gets += 1
        before = typed_status(obj.get("status") or {}, self._crd, self._resource.version)
        generation = int(obj["metadata"].get("generation") or 0)
        conditions = edit(before.get("conditions", []), generation, go_time(datetime.now(UTC)))
        after = typed_status(
            {**before, "conditions": conditions}, self._crd, self._resource.version
        )
        if after == before:
            self.stats.unchanged += 1
            return obj
        # Only status counts in a PUT of /status (the API server keeps the rest as stored),
        # so the body is the object as read, minus what the server would ignore.
        body = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": obj["metadata"],
            "status": after,
        }
        try:
            written = await self._client.replace(
                self._resource, body, subresource="status", field_manager=self._field_manager
            )
        except Conflict as err:
            if not isinstance(err, AlreadyExists):
                self.stats.conflicts += 1
            raise
        self.stats.writes += 1
        return written
