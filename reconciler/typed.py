"""Typed objects: a resource declared as pydantic models, read and written through them.

The cache and the client carry parsed JSON dicts: fast, and right for any type nobody
modelled. A controller that wants types declares its resource once and reads and writes
through that declaration; the dict path stays where it was::

    class CronJobSpec(KubeModel):
        schedule: str
        suspend: bool = False

    class CronJob(KubeObject):
        spec: CronJobSpec
        status: CronJobStatus = Field(default_factory=CronJobStatus)

    CRON_JOBS = Kind(ResourceType("batch.example.io", "v1", "CronJob", "cronjobs"), CronJob)

    job = await TypedCache(mgr.cache, CRON_JOBS).get("nightly", "default")  # CronJob | None
    job.spec.suspend = True
    job = await TypedClient(mgr.client, CRON_JOBS).replace(job)  # CronJob, as stored

Rules every :class:`KubeModel` follows:

1. A field's JSON name is its camelCase (``resource_version`` ↔ ``resourceVersion``);
   give an explicit alias where Kubernetes spells it otherwise (``podIP``).
2. A JSON null reads as unset: the field takes its default (Kubernetes' ``omitempty``;
   the API server prunes nulls it does not allow, so null and absent mean the same).
3. Fields the model does not declare are kept (``extra="allow"``) and written back, at
   every level: replacing an object read through a model never erases what the model
   does not know — another writer's fields, a newer API version's, the ones the user did
   not bother to model. A :class:`Kind` whose model would drop them refuses to write.
4. A write sends the fields that were read, passed to the constructor, assigned, or
   changed in place — never a default the object did not have, which would override
   the server's own defaulting.

Parsing costs about 10 µs per object (a CronJob-sized one; pydantic 2.14), so the typed
path suits a reconcile's few objects; a mapper or a predicate that runs on every event
is better served by the dicts, and so is any type nobody modelled.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from reconciler.resource import Obj, ResourceType

if TYPE_CHECKING:
    # Only for annotations: importing the client at run time would pull in aiohttp and
    # kubernetes_asyncio for every user of the models (the kopf peer has neither).
    from reconciler.client import PatchType

__all__ = [
    "Condition",
    "Kind",
    "KubeModel",
    "KubeObject",
    "ObjectMeta",
    "OwnerReference",
    "ParseError",
    "TypedCache",
    "TypedClient",
    "parse",
]


class KubeModel(BaseModel):
    """Base of every part of a Kubernetes object; see the module's rules 1–3."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # The membership test runs in C; most objects have no null and are passed on as is.
        if isinstance(data, dict) and None in data.values():
            return {key: value for key, value in data.items() if value is not None}
        return data


class OwnerReference(KubeModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(KubeModel):
    """metav1.ObjectMeta's usual fields; the others (managedFields…) are kept unread."""

    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)

    @property
    def is_deleting(self) -> bool:
        return self.deletion_timestamp is not None


class Condition(KubeModel):
    """metav1.Condition, read as Kubernetes reads one: a missing status is Unknown.

    ``status`` is kept verbatim; anything but "True" and "False" means Unknown. The
    schema of metav1.Condition requires reason, message and lastTransitionTime on
    writes; the defaults here only make reading tolerant.
    """

    type: str = Field(min_length=1)
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: datetime | None = None


class KubeObject(KubeModel):
    """A whole object: subclass it with ``spec`` and ``status`` models of your own."""

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


ObjT = TypeVar("ObjT", bound=KubeObject)

# Inside classes with a ``list`` method the name is that method, so their annotations
# spell lists through these module-level aliases.
_Objs: TypeAlias = list[Obj]
_Models: TypeAlias = list[ObjT]


class ParseError(ValueError):
    """An object does not fit its model; the message names the object and the fields."""


_MAX_REPORTED_ERRORS = 5


def parse(model: type[ObjT], obj: Mapping[str, Any]) -> ObjT:
    """Read ``obj`` (parsed JSON) as ``model``; raises :class:`ParseError` if it does not fit."""
    if not isinstance(obj, Mapping):
        raise ParseError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        raise ParseError(_describe(model, obj, err)) from err


def _describe(model: type[BaseModel], obj: Mapping[str, Any], err: ValidationError) -> str:
    kind = obj.get("kind")
    who = kind if isinstance(kind, str) and kind else model.__name__
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        namespace = metadata.get("namespace")
        who += f" {namespace}/{metadata['name']}" if namespace else f" {metadata['name']}"
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['msg']}"
        for error in err.errors(include_url=False)[:_MAX_REPORTED_ERRORS]
    ]
    more = err.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"cannot read {who}: {'; '.join(problems)}{suffix}"


@dataclass(frozen=True, slots=True)
class Kind(Generic[ObjT]):
    """A resource type bound to the model its objects are read as.

    Invariant: ``dump(parse(x)) == x`` for every ``x`` the model reads, up to nulls
    (rule 2) and the spelling of timestamps, provided the model keeps unknown fields;
    ``dump`` raises ``TypeError`` for a model that does not (see ``lossy_parts``).
    """

    resource: ResourceType
    model: type[ObjT]
    lossy_parts: tuple[str, ...] = field(init=False)
    """Where the model drops fields it does not declare (``extra`` other than "allow")."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lossy_parts", _lossy_parts(self.model))

    def parse(self, obj: Mapping[str, Any]) -> ObjT:
        return parse(self.model, obj)

    def dump(self, obj: ObjT) -> Obj:
        """The JSON form to write: what was read or set (rule 4), unknown fields included.

        Fields of ``obj`` changed in place since they were defaults are marked set on it.
        """
        if self.lossy_parts:
            raise TypeError(
                f"{self.model.__name__} drops fields it does not declare "
                f"({', '.join(self.lossy_parts)}): writing it would erase them on the "
                "server; send a patch of the fields you change instead"
            )
        _mark_changed(obj)
        out: Obj = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        # Filled in, never overridden: a body whose version disagrees with the URL is the
        # API server's to refuse, not ours to convert.
        out["apiVersion"] = out.get("apiVersion") or self.resource.api_version
        out["kind"] = out.get("kind") or self.resource.kind
        return out


def _lossy_parts(model: type[BaseModel]) -> tuple[str, ...]:
    found: list[str] = []
    seen: set[type[BaseModel]] = set()

    def visit(annotation: Any, path: str) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.add(annotation)
            if annotation.model_config.get("extra") != "allow":
                found.append(f"{path or '<object>'}: {annotation.__name__}")
            for name, info in annotation.model_fields.items():
                child = info.alias or name
                visit(info.annotation, f"{path}.{child}" if path else child)
        else:
            for arg in typing.get_args(annotation):
                visit(arg, path)

    visit(model, "")
    return tuple(found)


def _mark_changed(model: BaseModel) -> None:
    """Count as set every field that was left at its default and then changed in place
    (``obj.metadata.labels["a"] = "b"`` on a new object), so rule 4 still writes it."""
    fields_set = model.model_fields_set
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if name not in fields_set and value != info.get_default(call_default_factory=True):
            fields_set.add(name)
        for child in _models_in(value):
            _mark_changed(child)


def _models_in(value: Any) -> list[BaseModel]:
    if isinstance(value, BaseModel):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, BaseModel)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, BaseModel)]
    return []


class _CacheReader(Protocol):
    """What :class:`TypedCache` reads; :class:`reconciler.cache.InformerCache` has it.

    Both return copies of what the cache stores, so a model parsed from them shares
    nothing with the cache: changing it, unknown fields included, cannot corrupt what
    other readers see.
    """

    async def get(
        self, rt: ResourceType, name: str, namespace: str | None = None
    ) -> Obj | None: ...

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> _Objs: ...


class TypedCache(Generic[ObjT]):
    """Cached reads of one kind, as models; the cache's rules for waiting on its first
    list apply (:class:`reconciler.cache.CacheNotSynced`)."""

    def __init__(self, cache: _CacheReader, kind: Kind[ObjT]) -> None:
        self._cache = cache
        self.kind = kind

    async def get(self, name: str, namespace: str | None = None) -> ObjT | None:
        obj = await self._cache.get(self.kind.resource, name, namespace)
        return None if obj is None else self.kind.parse(obj)

    async def list(
        self,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> _Models[ObjT]:
        """Objects in ``namespace`` (all: None) matching the selector and field indexes."""
        objs = await self._cache.list(
            self.kind.resource, namespace, label_selector=label_selector, fields=fields
        )
        return [self.kind.parse(obj) for obj in objs]


class _ClientVerbs(Protocol):
    """What :class:`TypedClient` calls; :class:`reconciler.client.Client` has it."""

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj: ...

    async def list_all(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[_Objs, str]: ...

    async def create(
        self,
        rt: ResourceType,
        obj: Obj,
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
    ) -> Obj: ...

    async def replace(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj: ...

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        patch: Obj | _Objs,
        *,
        namespace: str | None = None,
        patch_type: PatchType = ...,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj: ...


class TypedClient(Generic[ObjT]):
    """The client's verbs for one kind: models in, models (as the server stored them) out.

    Errors are the client's (``NotFound``, ``Conflict``…); a response the model cannot
    read raises :class:`ParseError` — after the write, which did happen.
    """

    def __init__(self, client: _ClientVerbs, kind: Kind[ObjT]) -> None:
        self._client = client
        self.kind = kind

    async def get(self, name: str, namespace: str | None = None) -> ObjT:
        return self.kind.parse(await self._client.get(self.kind.resource, name, namespace))

    async def list(
        self,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> _Models[ObjT]:
        items, _ = await self._client.list_all(
            self.kind.resource,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return [self.kind.parse(item) for item in items]

    async def create(self, obj: ObjT, *, field_manager: str | None = None) -> ObjT:
        body = self.kind.dump(obj)
        created = await self._client.create(self.kind.resource, body, field_manager=field_manager)
        return self.kind.parse(created)

    async def replace(self, obj: ObjT, *, field_manager: str | None = None) -> ObjT:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it optimistic."""
        body = self.kind.dump(obj)
        stored = await self._client.replace(self.kind.resource, body, field_manager=field_manager)
        return self.kind.parse(stored)

    async def replace_status(self, obj: ObjT, *, field_manager: str | None = None) -> ObjT:
        """PUT the status subresource: only ``status`` changes; optimistic as ``replace``."""
        body = self.kind.dump(obj)
        stored = await self._client.replace(
            self.kind.resource, body, subresource="status", field_manager=field_manager
        )
        return self.kind.parse(stored)

    async def patch(
        self,
        name: str,
        patch: Obj | _Objs,
        *,
        namespace: str | None = None,
        patch_type: PatchType | None = None,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> ObjT:
        """A patch is a dict (or a JSON patch's list): it names only what changes. The
        client's default patch type (a merge patch) unless ``patch_type`` is given."""
        chosen = {} if patch_type is None else {"patch_type": patch_type}
        patched = await self._client.patch(
            self.kind.resource,
            name,
            patch,
            namespace=namespace,
            subresource=subresource,
            field_manager=field_manager,
            **chosen,
        )
        return self.kind.parse(patched)
