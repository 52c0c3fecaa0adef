"""What this operator adds to KAITO's Workspace CRD, and the JSON patch that re-adds it.

Pure: CRD objects (dicts, as the API server returns them) in, reports and RFC 6902 ops
out. The I/O is in ``crd_keeper.py``.

Why this exists
---------------
KAITO ships its Workspace CRD as a template of its Helm chart (``charts/kaito/workspace/
templates/``, not ``crds/``), so every ``helm upgrade`` of KAITO puts KAITO's schema
back. That schema has no ``status.status``: the API server then prunes the state this
operator writes, and ``kubectl get workspace`` loses its STATUS column.

What "complete" means, per version of the CRD (served or not, so that a version KAITO
starts serving later is already right):

* ``openAPIV3Schema.properties.status.properties.status`` is a string whose enum allows
  every ``WorkspaceState``. A wider enum counts as complete, so an older replica never
  narrows what a newer release of this operator installed.
* an additional printer column reads ``.status.status``, whatever its name or place
  (a user who moved or renamed it chose to).

The ops add exactly what is missing and nothing else: KAITO's fields and columns
(``status.state``, its ``State`` column) are kept. They start by setting
``metadata.resourceVersion`` to the version read, which the API server takes as the
update's precondition: a CRD re-applied between our read and our patch makes the patch
fail with 409 Conflict instead of inserting at indices computed on an older object. (A
``test`` op would fail too, but with 422, like a malformed patch.)

Single source of truth: ``STATUS_FIELD`` and ``STATUS_COLUMN`` are defined here and
``config/crd/kaito.sh_workspaces.yaml`` must carry exactly them (tested). They are not
read from that file at run time because the container image holds only the Python
packages (``Dockerfile`` copies ``reconciler/`` and ``controllers/``).
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from controllers.workspace.fsm import WorkspaceState
from controllers.workspace.record import RECORD_CONDITION
from reconciler.resource import Obj

Op = dict[str, Any]

CRD_NAME: Final = "workspaces.kaito.sh"
STATUS_JSON_PATH: Final = f'.status.conditions[?(@.type=="{RECORD_CONDITION}")].reason'
"""The STATUS column shows the record, not ``status.status``: the record is written with
the field, survives KAITO's status writes (which blank the field until it is restored)
and is stored where admission refuses the field (KAITO's webhook), so the column is
never blank once a state was written."""

STATUS_FIELD: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "description": (
            "Status is the high-level state of the workspace, aggregated from its conditions.\n"
            "Inference: Pending until first ready, then Ready or NotReady; never back to "
            "Pending.\n"
            "Fine-tuning: Pending, Running, then Succeeded or Failed, both terminal.\n"
            "When it is not Ready, the conditions with status False give the cause."
        ),
        "enum": tuple(s.value for s in WorkspaceState),
        "type": "string",
    }
)
"""The schema of ``status.status`` (``enum`` as a tuple: use ``field_schema()`` for JSON)."""

STATUS_COLUMN: Final[Mapping[str, str]] = MappingProxyType(
    {
        "description": "High-level state of the workspace, aggregated from its conditions.",
        "jsonPath": STATUS_JSON_PATH,
        "name": "Status",
        "type": "string",
    }
)

AGE_COLUMN: Final[Mapping[str, str]] = MappingProxyType(
    {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}
)
"""The column the API server shows when a version lists none (``serveDefaultColumnsIfEmpty``
in apiextensions-apiserver); added with ours into an empty list so AGE does not vanish."""

# Where a user expects STATUS: right after INSTANCE, as in our CRD; failing that, just
# before AGE. KAITO v0.8.1 and v0.12.0 both start with Instance and end with Age.
_AFTER_JSON_PATH = ".resource.instanceType"
_BEFORE_JSON_PATH = ".metadata.creationTimestamp"
_SCHEMA_PATH = ("schema", "openAPIV3Schema")
_FIELD_PATH = ("properties", "status", "properties", "status")


def field_schema() -> Obj:
    """A fresh, JSON-ready copy of ``STATUS_FIELD``."""
    return {**STATUS_FIELD, "enum": list(STATUS_FIELD["enum"])}


def status_column() -> Obj:
    """A fresh copy of ``STATUS_COLUMN``."""
    return dict(STATUS_COLUMN)


@dataclass(frozen=True, slots=True)
class VersionReport:
    name: str
    served: bool
    has_field: bool
    has_column: bool
    # False when the operator runs with --status-field=false: the field is not wanted.
    needs_field: bool = True

    @property
    def complete(self) -> bool:
        return (self.has_field or not self.needs_field) and self.has_column

    def missing(self) -> list[str]:
        return [
            what
            for what, present in (
                ("status.status", self.has_field or not self.needs_field),
                ("STATUS column", self.has_column),
            )
            if not present
        ]


@dataclass(frozen=True, slots=True)
class CrdReport:
    resource_version: str
    versions: tuple[VersionReport, ...]

    @property
    def complete(self) -> bool:
        return all(v.complete for v in self.versions)

    def describe_missing(self) -> str:
        """E.g. ``v1alpha1: status.status, STATUS column; v1beta1: STATUS column``."""
        return "; ".join(
            f"{v.name}: {', '.join(v.missing())}" for v in self.versions if not v.complete
        )


def _versions(crd: Obj) -> list[Obj]:
    versions = (crd.get("spec") or {}).get("versions") or []
    return [v for v in versions if isinstance(v, dict)]


def _get(node: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _has_field(version: Obj) -> bool:
    field = _get(version, (*_SCHEMA_PATH, *_FIELD_PATH))
    if not isinstance(field, dict) or field.get("type") != "string":
        return False
    enum = field.get("enum")
    return isinstance(enum, list) and set(STATUS_FIELD["enum"]) <= set(enum)


def _columns(version: Obj) -> list[Obj]:
    columns = version.get("additionalPrinterColumns") or []
    return [c for c in columns if isinstance(c, dict)]


def _has_column(version: Obj) -> bool:
    return any(c.get("jsonPath") == STATUS_JSON_PATH for c in _columns(version))


def inspect(crd: Obj, *, with_field: bool = True) -> CrdReport:
    """Which versions of ``crd`` lack our field (unless ``with_field`` is False) or our
    column."""
    return CrdReport(
        resource_version=str((crd.get("metadata") or {}).get("resourceVersion") or ""),
        versions=tuple(
            VersionReport(
                name=str(v.get("name", "")),
                served=bool(v.get("served", False)),
                has_field=_has_field(v),
                has_column=_has_column(v),
                needs_field=with_field,
            )
            for v in _versions(crd)
        ),
    )


def _pointer(*tokens: str | int) -> str:
    """An RFC 6901 JSON pointer."""
    return "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def _field_op(index: int, version: Obj) -> Op | None:
    """Add the field at the deepest level that exists, creating the levels below it.

    ``None`` when the version has no ``openAPIV3Schema``: apiextensions.k8s.io/v1
    requires one, and inventing a root schema would prune every other field.
    """
    node = _get(version, _SCHEMA_PATH)
    if not isinstance(node, dict):
        return None
    base: list[str | int] = ["spec", "versions", index, *_SCHEMA_PATH]
    # The first level of _FIELD_PATH that is absent (the field itself at the latest).
    depth = 0
    while depth < len(_FIELD_PATH) - 1:
        child = node.get(_FIELD_PATH[depth])
        if not isinstance(child, dict):
            break
        node = child
        depth += 1
    # Build that level's value from the field upwards. A "properties" level maps names
    # to schemas; any other level is a schema, which must say its type to be structural.
    value: Obj = field_schema()
    for level in range(len(_FIELD_PATH) - 2, depth - 1, -1):
        below = _FIELD_PATH[level + 1]
        value = (
            {below: value}
            if _FIELD_PATH[level] == "properties"
            else {
                "type": "object",
                below: value,
            }
        )
    return {"op": "add", "path": _pointer(*base, *_FIELD_PATH[: depth + 1]), "value": value}


def _column_op(index: int, version: Obj) -> Op:
    base: list[str | int] = ["spec", "versions", index, "additionalPrinterColumns"]
    columns = version.get("additionalPrinterColumns")
    if not isinstance(columns, list) or not columns:
        return {"op": "add", "path": _pointer(*base), "value": [status_column(), dict(AGE_COLUMN)]}
    paths = [c.get("jsonPath") if isinstance(c, dict) else None for c in columns]
    if _AFTER_JSON_PATH in paths:
        at: int | str = paths.index(_AFTER_JSON_PATH) + 1
    elif _BEFORE_JSON_PATH in paths:
        at = paths.index(_BEFORE_JSON_PATH)
    else:
        at = "-"
    return {"op": "add", "path": _pointer(*base, at), "value": status_column()}


def patch_ops(crd: Obj, *, with_field: bool = True) -> list[Op]:
    """The JSON patch that makes ``crd`` complete; ``[]`` when nothing can or need be added.
    With ``with_field=False`` only the column is added (the field is not wanted).

    Applied to the object it was computed from, the result is complete, and
    ``patch_ops`` of the result is ``[]``.
    """
    ops: list[Op] = []
    for i, version in enumerate(_versions(crd)):
        if with_field and not _has_field(version):
            op = _field_op(i, version)
            if op is not None:
                ops.append(op)
        if not _has_column(version):
            ops.append(_column_op(i, version))
    if not ops:
        return []
    rv = inspect(crd).resource_version
    return [{"op": "replace", "path": "/metadata/resourceVersion", "value": rv}, *ops]


def kubectl_patch_command(ops: Sequence[Op]) -> str:
    """A shell command that applies ``ops``."""
    body = json.dumps(list(ops), separators=(",", ":"))
    return f"kubectl patch crd {CRD_NAME} --type=json -p {shlex.quote(body)}"


# Metadata worth keeping in the cache: identity, and who last wrote the CRD (for the
# log line that says why the field was missing).
_KEPT_METADATA = ("name", "uid", "resourceVersion", "generation", "deletionTimestamp", "labels")
_HELM_ANNOTATION_PREFIX = "meta.helm.sh/"


def project(crd: Obj) -> Obj:
    """An informer transform: the parts of the CRD that ``inspect`` and ``patch_ops`` read.

    KAITO's schema is about 100 KiB per version; this keeps a few hundred bytes. The
    projection keeps every level on the way to ``status.status`` that exists (and only
    those), the printer columns whole and the versions in order, so ``inspect`` and
    ``patch_ops`` answer the same on it as on the full object (tested).
    """
    meta = crd.get("metadata") or {}
    kept_meta: Obj = {k: copy.deepcopy(meta[k]) for k in _KEPT_METADATA if k in meta}
    helm = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(_HELM_ANNOTATION_PREFIX)
    }
    if helm:
        kept_meta["annotations"] = helm
    writers = [
        {k: e[k] for k in ("manager", "operation", "time") if k in e}
        for e in meta.get("managedFields") or []
        if isinstance(e, dict)
    ]
    if writers:
        kept_meta["managedFields"] = writers
    versions = []
    for v in _versions(crd):
        kept: Obj = {k: copy.deepcopy(v[k]) for k in ("name", "served", "storage") if k in v}
        if "additionalPrinterColumns" in v:
            kept["additionalPrinterColumns"] = copy.deepcopy(v["additionalPrinterColumns"])
        schema = _project_path(v, _SCHEMA_PATH + _FIELD_PATH)
        if schema is not None:
            kept.update(schema)
        versions.append(kept)
    out: Obj = {k: crd[k] for k in ("apiVersion", "kind") if k in crd}
    return {**out, "metadata": kept_meta, "spec": {"versions": versions}}


def _project_path(node: Obj, path: Sequence[str]) -> Obj | None:
    """``node`` reduced to the chain of keys ``path`` (as far as it exists)."""
    if not path or path[0] not in node:
        return None
    child = node[path[0]]
    if len(path) == 1 or not isinstance(child, dict):
        return {path[0]: copy.deepcopy(child)}
    return {path[0]: _project_path(child, path[1:]) or {}}


def last_writer(crd: Obj) -> str | None:
    """The field manager of the most recent write to ``crd`` (``helm``, ``kubectl``, …)."""
    entries = [
        e
        for e in (crd.get("metadata") or {}).get("managedFields") or []
        if isinstance(e, dict) and e.get("manager")
    ]
    if not entries:
        return None
    latest = max(entries, key=lambda e: str(e.get("time") or ""))
    return f"{latest['manager']} ({latest.get('operation', '?')})"


def helm_release(crd: Obj) -> str | None:
    """``namespace/name`` of the Helm release that owns ``crd``, if Helm installed it."""
    annotations = (crd.get("metadata") or {}).get("annotations") or {}
    name = annotations.get("meta.helm.sh/release-name")
    if not name:
        return None
    namespace = annotations.get("meta.helm.sh/release-namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def _main() -> int:
    """``python -m controllers.workspace.crd < crd.json``: print the ops (``[]`` if none)."""
    crd = json.load(sys.stdin)
    report = inspect(crd)
    if not report.complete:
        print(f"missing: {report.describe_missing()}", file=sys.stderr)
    json.dump(patch_ops(crd), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
