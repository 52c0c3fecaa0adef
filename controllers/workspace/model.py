"""Typed views of the parts of a KAITO Workspace that the status controller reads.

The informer hands the controller parsed JSON dicts. `parse_workspace` turns one into a
`Workspace`; `project` cuts one down to the fields read here, for use as the informer's
cache transform.

Tolerance rule: anything the API server can store for a Workspace parses. That covers
conditions without reason, message, observedGeneration or lastTransitionTime, condition
statuses other than True/False/Unknown, huge messages, unknown fields at any level, JSON
nulls, and any value in `status.status` (a CRD without the enum stores whatever it is
given). Parsing fails, with `WorkspaceParseError`, only when a field read here has a JSON
type no Workspace schema allows: a non-object where an object belongs, `conditions` that
is not a list, a condition without a non-empty string `type`, a non-integer generation.

KAITO's Workspace has no `spec`: `resource`, `inference` and `tuning` sit at the top
level. Only the presence of `inference` and `tuning` matters here, as in KAITO's Go
types, where both are pointers and "set" means non-nil.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class WorkspaceParseError(ValueError):
    """The object cannot be read as a Workspace; the message names the offending fields."""


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


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # A JSON null means "not set" in Kubernetes objects: fall back to the default.
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


class Condition(_Model):
    """One metav1.Condition as stored.

    `status` is kept verbatim; readers treat anything but "True" and "False" as Unknown.
    """

    type: str = Field(min_length=1)
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    last_transition_time: datetime | None = Field(default=None, alias="lastTransitionTime")

    _time = field_validator("last_transition_time", mode="before")(_lenient_time)


class ObjectMeta(_Model):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int | None = None
    resource_version: str = Field(default="", alias="resourceVersion")
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")
    # Only its presence matters, so it is kept verbatim: a value that fails to parse as a
    # time must still mean "being deleted".
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")

    _time = field_validator("creation_timestamp", mode="before")(_lenient_time)

    @property
    def is_deleting(self) -> bool:
        return self.deletion_timestamp is not None


class PresenceMarker(_Model):
    """Stands for a field whose content is not read here, only whether it is set."""


class ResourceSpec(_Model):
    instance_type: str | None = Field(default=None, alias="instanceType")


class WorkspaceStatus(_Model):
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


class Workspace(_Model):
    api_version: str = Field(default="", alias="apiVersion")
    kind: str = ""
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
    if not isinstance(obj, Mapping):
        raise WorkspaceParseError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        return Workspace.model_validate(obj)
    except ValidationError as err:
        raise WorkspaceParseError(_describe(obj, err)) from err


_MAX_REPORTED_ERRORS = 5


def _describe(obj: Mapping[str, Any], err: ValidationError) -> str:
    metadata = obj.get("metadata")
    who = "Workspace"
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        who = f"Workspace {metadata.get('namespace', '')}/{metadata['name']}"
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['msg']}"
        for error in err.errors(include_url=False)[:_MAX_REPORTED_ERRORS]
    ]
    more = err.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"cannot read {who}: {'; '.join(problems)}{suffix}"


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
