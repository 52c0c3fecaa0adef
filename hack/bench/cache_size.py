"""What one cached workspace costs in ours, object by object, without RSS noise.

Decodes N workspaces from their JSON (as the informer does, one orjson.loads each),
keeps them the way a cache would, and counts the bytes Python allocated for them with
tracemalloc. Compares what the informer could keep:

- full: the object as the API server sends it (managedFields included);
- default transform: the framework's default, managedFields dropped;
- ours (project): what the workspace operator keeps (controllers.workspace.model.project);
- ours + store: the same inside the informer's Store (key string, dict slot, namespace
  index entry);
- project + interned condition strings: identical condition strings shared between
  objects instead of one copy per object;
- floor: a tuple of only the fields next_state reads.

Run: PYTHONPATH=. .venv/bin/python -m hack.bench.cache_size [--n 10000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from controllers.workspace.model import project
from hack.bench import workload
from reconciler.informer import strip_managed_fields
from reconciler.store import Store

Obj = dict[str, Any]
_WRITTEN = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def server_object(i: int) -> Obj:
    """A workspace as kube-apiserver returns it after KAITO and ours have written it."""
    obj = workload.manifest(i)
    obj["apiVersion"] = "kaito.sh/v1beta1"
    obj["kind"] = "Workspace"
    if "inference" in obj:
        obj["inference"]["preset"]["accessMode"] = "public"
    obj["resource"]["count"] = 1
    meta = obj["metadata"]
    meta.update(
        uid=str(uuid.UUID(int=i + 1)),
        resourceVersion=str(1_000_000 + i),
        generation=1,
        creationTimestamp=workload.TIMESTAMP,
    )
    applied: Obj = {f"f:{k}": {".": {}} for k in obj if k not in ("apiVersion", "kind", "metadata")}
    applied["f:metadata"] = {
        "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
        "f:finalizers": {".": {}, 'v:"workspace.finalizer.kaito.sh"': {}},
        "f:labels": {".": {}, **{f"f:{k}": {} for k in meta["labels"]}},
    }
    conditions: Obj = {"f:status": {".": {}, "f:conditions": {}}}
    meta["managedFields"] = [
        _managed("kubectl-client-side-apply", None, applied),
        _managed(workload.KAITO_FIELD_MANAGER, "status", conditions),
        _managed("workspace-operator", "status", {"f:status": {"f:status": {}}}),
    ]
    state = workload.expected_state(i, workload.initial_conditions(i), None)
    assert state is not None
    # Ours writes its record condition with the field (controllers/workspace/record.py).
    key = workload.key_of(i)
    last = workload.first_state_patch(key, meta["resourceVersion"], 1, state, _WRITTEN)[-1]
    assert last["path"] == "/status/conditions/-"
    obj["status"] = {
        "conditions": [*workload.initial_conditions(i), last["value"]],
        "status": state,
    }
    return obj


def _managed(manager: str, subresource: str | None, fields: Obj) -> Obj:
    entry: Obj = {
        "apiVersion": "kaito.sh/v1beta1",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        "manager": manager,
        "operation": "Update",
        "time": workload.TIMESTAMP,
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _interned(obj: Obj) -> Obj:
    for c in obj.get("status", {}).get("conditions", []):
        for k in ("type", "status", "reason", "message", "lastTransitionTime"):
            if isinstance(c.get(k), str):
                c[k] = sys.intern(c[k])
    meta = obj["metadata"]
    for k in ("namespace", "creationTimestamp"):
        if isinstance(meta.get(k), str):
            meta[k] = sys.intern(meta[k])
    return obj


def _floor(obj: Obj) -> Any:
    meta = obj["metadata"]
    status = obj.get("status") or {}
    return (
        meta["namespace"],
        meta["name"],
        meta["uid"],
        meta["resourceVersion"],
        meta.get("creationTimestamp"),
        meta.get("deletionTimestamp"),
        obj.get("inference") is not None,
        obj.get("tuning") is not None,
        status.get("status"),
        tuple(
            (sys.intern(c["type"]), sys.intern(c["status"]), sys.intern(c["reason"]),
             sys.intern(c["message"]))
            for c in status.get("conditions", [])
        ),
    )  # fmt: skip


def measure(blobs: list[bytes], keep: Callable[[list[Obj]], Any]) -> float:
    """Bytes per object still allocated after decoding ``blobs`` and keeping them."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = keep([orjson.loads(b) for b in blobs])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return (after - before) / len(blobs)


def _in_store(objs: list[Obj]) -> Store:
    store = Store()
    for obj in objs:
        store.upsert(project(obj))
    return store


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    n = p.parse_args().n
    blobs = [orjson.dumps(server_object(i)) for i in range(n)]
    print(f"{n:,} workspaces, {sum(map(len, blobs)) / n:,.0f} bytes of JSON each\n")
    cases: list[tuple[str, Callable[[list[Obj]], Any]]] = [
        ("full object", lambda objs: objs),
        ("default transform (no managedFields)", lambda os: [strip_managed_fields(o) for o in os]),
        ("ours: project()", lambda objs: [project(o) for o in objs]),
        ("ours: project() in the Store", _in_store),
        ("project() + interned condition strings", lambda os: [_interned(project(o)) for o in os]),
        ("floor: a tuple of what next_state reads", lambda objs: [_floor(o) for o in objs]),
    ]
    print("| kept per workspace | bytes / object |\n|---|---|")
    for label, keep in cases:
        print(f"| {label} | {measure(blobs, keep):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
