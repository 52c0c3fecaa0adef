"""Typed views of the parts of a KAITO Workspace that the status controller reads.

The informer hands the controller parsed JSON dicts. `parse_workspace` turns one into a
`Workspace`; `project` cuts one down to the fields read here, for use as the informer's
cache transform. The models are the framework's typed objects (`reconciler.typed`:
`KubeObject`, `ObjectMeta`, `Condition`) made read-only: the controller writes JSON
patches, never a whole object, so they ignore what they do not declare instead of
keeping it, and `reconciler.typed.Kind` refuses to write them.

Tolerance rule: anything the API server can store for a Workspace parses. That covers
conditions without reason, message, observedGeneration or lastTransitionTime, condition
statuses other than True/False/Unknown, huge messages, unknown fields at any level, JSON
nulls, and any value in `status.status` (a CRD without the enum stores whatever it is
given). Parsing fails, with `WorkspaceParseError`, only when a field read here has a JSON
type no Workspace schema allows: a non-object where an object belongs, `conditions` that
is not a list, a condition without a non-empty string `type`, a non-integer generation,
labels that are not strings, an owner reference without apiVersion, kind, name and uid
(the API server validates metadata, so no stored object has the last two).

KAITO's Workspace has no `spec`: `resource`, `inference` and `tuning` sit at the top
level. Only the presence of `inference` and `tuning` matters here, as in KAITO's Go
types, where both are pointers and "set" means non-nil.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from reconciler import typed

__all__ = [
    "Condition",
    "ObjectMeta",
    "PresenceMarker",
    "ResourceSpec",
    "Workspace",
    "WorkspaceParseError",
    "WorkspaceStatus",
    "parse_workspace",
    "project",
]


class WorkspaceParseError(typed.ParseError):
    """The object cannot be read as a Workspace; the message names the offending fields."""


# The controller only reads these models (it writes JSON patches), so they need not keep
# unknown fields for a write: ignoring them keeps parsing fast and the models small.
_READ_ONLY = ConfigDict(extra="ignore", frozen=True)


def _lenient_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp, or None when absent or unreadable.

    Timestamps only feed diagnostics (how long something has been pending), so an
    unreadable one degrades to "unknown" rather than making the whole object unreadable.
    """
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


_UNREADABLE_DELETION = datetime.min.replace(tzinfo=UTC)


def _deletion_time(value: object) -> datetime | None:
    # Only its presence matters: a value that fails to parse as a time must still mean
    # "being deleted". It reads as the earliest time there is. (The API server sets this
    # field itself, so it cannot hold such a value; this is tolerance, not a case.)
    if value is None:
        return None
    return _lenient_time(value) or _UNREADABLE_DELETION


class Condition(typed.Condition):
    """One metav1.Condition as stored.

    `status` is kept verbatim; readers treat anything but "True" and "False" as Unknown.
    """

    model_config = _READ_ONLY

    _time = field_validator("last_transition_time", mode="before")(_lenient_time)


class ObjectMeta(typed.ObjectMeta):
    """The metadata fields `project` keeps; the others read as unset, as in the cache."""

    model_config = _READ_ONLY

    _creation = field_validator("creation_timestamp", mode="before")(_lenient_time)
    _deletion = field_validator("deletion_timestamp", mode="before")(_deletion_time)

    @model_validator(mode="before")
    @classmethod
    def _as_projected(cls, data: Any) -> Any:
        # Reading a full object and reading its projection must give the same model.
        return _keep(data, _METADATA_FIELDS)


class PresenceMarker(typed.KubeModel):
    """Stands for a field whose content is not read here, only whether it is set."""

    model_config = _READ_ONLY


class ResourceSpec(typed.KubeModel):
    model_config = _READ_ONLY

    instance_type: str | None = None


class WorkspaceStatus(typed.KubeModel):
    model_config = _READ_ONLY

    # The field this controller owns. Raw on purpose: a value outside the enum must be
    # representable so the state machine can notice it and say so.
    status: str | None = None
    conditions: tuple[Condition, ...] = ()
    # KAITO's own summary (v0.9 and later; absent at v0.8.1). Only its presence is read:
    # it tells which KAITO writes the conditions (see fsm.stale_conditions).
    state: str | None = None

    @field_validator("state", mode="before")
    @classmethod
    def _any_state(cls, value: object) -> object:
        return None if value is None else str(value)

    @field_validator("status", mode="before")
    @classmethod
    def _verbatim(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True)


class Workspace(typed.KubeObject):
    model_config = _READ_ONLY

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec = Field(default_factory=ResourceSpec)
    inference: PresenceMarker | None = None
    tuning: PresenceMarker | None = None
    status: WorkspaceStatus = Field(default_factory=WorkspaceStatus)

    @field_validator("inference", "tuning", mode="before")
    @classmethod
    def _presence(cls, value: object) -> object:
        return None if value is None else {}

    @property
    def has_inference(self) -> bool:
        return self.inference is not None

    @property
    def has_tuning(self) -> bool:
        return self.tuning is not None


def parse_workspace(obj: Mapping[str, Any]) -> Workspace:
    """Read a Workspace from its JSON form; raises `WorkspaceParseError` if it cannot."""
    try:
        return typed.parse(Workspace, obj)
    except typed.ParseError as err:
        raise WorkspaceParseError(str(err)) from err


_METADATA_FIELDS = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "ownerReferences",
    "labels",
)
_RESOURCE_FIELDS = ("instanceType",)
_STATUS_FIELDS = ("status", "conditions", "state")
_CONDITION_FIELDS = (
    "type",
    "status",
    "reason",
    "message",
    "observedGeneration",
    "lastTransitionTime",
)


def _keep(value: Any, fields: tuple[str, ...], *, share: bool = False) -> Any:
    # A value of the wrong shape is passed through untouched so that parsing the
    # projection fails exactly when parsing the original does.
    if not isinstance(value, Mapping):
        return value
    if share:
        return {key: _shared(value[key]) for key in fields if key in value}
    return {key: value[key] for key in fields if key in value}


def _shared(value: Any) -> Any:
    """One copy per process of a repeated string (condition types, reasons, messages,
    timestamps): thousands of cached workspaces carry the same few dozen values."""
    return sys.intern(value) if isinstance(value, str) and len(value) <= _SHARE_MAX else value


_SHARE_MAX = 512


def project(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest object the controller can work from, for the informer's cache.

    Keeps apiVersion and kind; metadata name, namespace, uid, generation,
    resourceVersion, creationTimestamp, deletionTimestamp, ownerReferences and labels;
    `{}` in place of a set `inference` or `tuning`; resource.instanceType; status.status;
    and each condition's metav1 fields. Drops everything else (managedFields,
    annotations, the workload specs, the rest of the status). Invariant:
    `parse_workspace(project(x)) == parse_workspace(x)`, including failing alike.
    Never raises.
    """
    projected: dict[str, Any] = {
        key: _shared(obj[key]) for key in ("apiVersion", "kind") if key in obj
    }
    if "metadata" in obj:
        meta = _keep(obj["metadata"], _METADATA_FIELDS)
        if isinstance(meta, dict):
            for key in ("namespace", "creationTimestamp"):
                if key in meta:
                    meta[key] = _shared(meta[key])
        projected["metadata"] = meta
    for workload in ("inference", "tuning"):
        if obj.get(workload) is not None:
            projected[workload] = {}
    if "resource" in obj:
        projected["resource"] = _keep(obj["resource"], _RESOURCE_FIELDS, share=True)
    if "status" in obj:
        status = _keep(obj["status"], _STATUS_FIELDS, share=True)
        if isinstance(status, dict) and isinstance(status.get("conditions"), list):
            status["conditions"] = [
                _keep(c, _CONDITION_FIELDS, share=True) for c in status["conditions"]
            ]
        projected["status"] = status
    return projected
