"""CRD conversion: hub and spokes, answering ``ConversionReview`` on ``/convert``.

As controller-runtime's ``pkg/webhook/conversion/conversion.go``: each group+kind has one
*hub* version (the one every other version converts through: usually the storage
version) and *spokes*, each with a pure ``to_hub``/``from_hub`` pair. A request names
the desired apiVersion and lists objects; every object is converted

- spoke → hub: ``to_hub``; hub → spoke: ``from_hub``;
- spoke → spoke: ``to_hub`` then the other spoke's ``from_hub``;
- same version → returned unchanged (controller-runtime refuses "conversion … between
  same type"; the API server never asks, as it only sends objects not yet in the
  desired version, so answering them as they are is the tolerant choice),

and the answer lists them in request order with ``result.status: Success``, or carries no
objects and ``result.status: Failure`` with a message when any object fails (the API
server then fails the whole read or write). ``apiVersion`` is set to the desired one.

**Metadata is kept as it came**, byte for byte: a spoke function only maps spec and
status, and whatever metadata its returned model has is ignored. The API server accepts
no other change than labels and annotations from a conversion webhook (and restores the
rest); controller-runtime leaves that to each ``ConvertTo``/``ConvertFrom``, which
usually copies ``ObjectMeta`` over.

Failures: an object that does not fit its model, a kind or version nobody registered,
and a ``ValueError`` raised by a spoke function (say, a value the older version cannot
represent) give ``Failure`` with the reason. Any other exception is a bug: ``Failure``
with controller-runtime's ``internal error occurred during conversion``, and
``controller_runtime_conversion_webhook_panics_total`` counts it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from reconciler.resource import Obj
from reconciler.typed import Kind, KubeObject
from reconciler.webhook.server import BadRequest, PanicRecovered

__all__ = [
    "CONVERSION_REVIEW_VERSIONS",
    "CONVERT_PATH",
    "ConversionError",
    "ConversionHandler",
    "Conversions",
    "Spoke",
]

log = structlog.get_logger("reconciler.webhook.conversion")

CONVERT_PATH = "/convert"
"""Where controller-runtime's builder serves conversion, for every kind."""
CONVERSION_REVIEW_VERSIONS = ("apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1")

HubT = TypeVar("HubT", bound=KubeObject)
SpokeT = TypeVar("SpokeT", bound=KubeObject)


@dataclass(frozen=True)
class Spoke(Generic[HubT, SpokeT]):
    """A version that converts through the hub; both functions are pure."""

    kind: Kind[SpokeT]
    to_hub: Callable[[SpokeT], HubT]
    from_hub: Callable[[HubT], SpokeT]


class ConversionError(ValueError):
    """An object cannot be converted; the message says why (sent as the Failure message)."""


@dataclass
class _Family:
    """One group+kind: its hub and its spokes by version."""

    hub: Kind[Any]
    spokes: dict[str, Spoke[Any, Any]] = field(default_factory=dict)

    def kind_of(self, version: str) -> Kind[Any]:
        if version == self.hub.resource.version:
            return self.hub
        spoke = self.spokes.get(version)
        if spoke is None:
            rt = self.hub.resource
            raise ConversionError(f"no version {version} of {rt.kind}.{rt.group} is registered")
        return spoke.kind


class Conversions:
    """Hubs and spokes by group+kind; :meth:`handler` serves them all."""

    def __init__(self) -> None:
        self._families: dict[tuple[str, str], _Family] = {}

    def add(self, hub: Kind[HubT], *spokes: Spoke[HubT, Any]) -> None:
        """Register ``hub`` and ``spokes`` (same group and kind). ``ValueError`` for a
        second hub of a group+kind, or a version registered twice; adding more spokes to
        a registered hub is fine."""
        rt = hub.resource
        key = (rt.group, rt.kind)
        family = self._families.get(key)
        if family is not None and family.hub != hub:
            raise ValueError(
                f"{rt.kind}.{rt.group} already has hub version {family.hub.resource.version}"
            )
        new = family or _Family(hub)
        versions = {rt.version, *new.spokes}
        for spoke in spokes:
            srt = spoke.kind.resource
            if (srt.group, srt.kind) != key:
                raise ValueError(f"spoke {srt} is not a version of {rt.kind}.{rt.group}")
            if srt.version in versions:
                raise ValueError(
                    f"version {srt.version} of {rt.kind}.{rt.group} is registered twice"
                )
            versions.add(srt.version)
        for spoke in spokes:
            new.spokes[spoke.kind.resource.version] = spoke
        self._families[key] = new

    def convert(self, obj: Mapping[str, Any], desired_api_version: str) -> Obj:
        """``obj`` in ``desired_api_version``; raises ``ValueError`` (a
        :class:`ConversionError` or the model's ``ParseError``) when it cannot be."""
        api_version, kind_name = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind_name, str):
            raise ConversionError("object has no apiVersion or kind")
        group, version = _split(api_version)
        desired_group, desired_version = _split(desired_api_version)
        if desired_group != group:
            raise ConversionError(
                f"cannot convert {kind_name} from {api_version} to group {desired_group!r}"
            )
        family = self._families.get((group, kind_name))
        if family is None:
            raise ConversionError(f"no conversion is registered for {kind_name}.{group}")
        if version == desired_version:
            return copy.deepcopy(dict(obj))
        source, target = family.kind_of(version), family.kind_of(desired_version)
        converted = _via_hub(family, source.parse(obj), source, target)
        out = target.dump(converted)
        out["apiVersion"] = desired_api_version
        out["kind"] = kind_name
        # The API server refuses a converted object without metadata; it always sends one.
        out["metadata"] = copy.deepcopy(obj.get("metadata", {}))
        return out

    def handler(self) -> ConversionHandler:
        """Answers ConversionReviews for every registered group+kind (later additions
        included)."""
        return ConversionHandler(self)


class ConversionHandler:
    """The :data:`~reconciler.webhook.server.Handler` of a :class:`Conversions`; the
    builder finds the registry behind ``/convert`` through :attr:`conversions`."""

    def __init__(self, conversions: Conversions) -> None:
        self.conversions = conversions

    async def __call__(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        api_version, request = _read_review(body)
        uid, desired, objects = request["uid"], request["desiredAPIVersion"], request["objects"]
        try:
            converted = [self.conversions.convert(obj, desired) for obj in objects]
        except ValueError as err:
            log.warning("conversion failed", request_uid=uid, desired=desired, error=str(err))
            return _review(api_version, uid, failure=str(err))
        except Exception as err:
            failure = "internal error occurred during conversion"
            raise PanicRecovered(
                _review(api_version, uid, failure=failure), webhook="conversion"
            ) from err
        return _review(api_version, uid, converted=converted)


def _via_hub(family: _Family, obj: KubeObject, source: Kind[Any], target: Kind[Any]) -> KubeObject:
    hub = family.hub
    as_hub = obj if source is hub else family.spokes[source.resource.version].to_hub(obj)
    _expect(as_hub, hub, "to_hub", source)
    if target is hub:
        return as_hub
    out: KubeObject = family.spokes[target.resource.version].from_hub(as_hub)
    _expect(out, target, "from_hub", target)
    return out


def _expect(obj: object, kind: Kind[Any], function: str, spoke: Kind[Any]) -> None:
    if not isinstance(obj, kind.model):
        raise TypeError(
            f"{function} of {spoke.resource} returned {type(obj).__name__}, "
            f"expected {kind.model.__name__}"
        )


def _split(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _read_review(body: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    api_version = body.get("apiVersion")
    if body.get("kind") != "ConversionReview" or api_version not in CONVERSION_REVIEW_VERSIONS:
        raise BadRequest(
            f"expected a ConversionReview ({', '.join(CONVERSION_REVIEW_VERSIONS)}), "
            f"got kind={body.get('kind')!r} apiVersion={api_version!r}"
        )
    request = body.get("request")
    if (
        not isinstance(request, Mapping)
        or not isinstance(request.get("uid"), str)
        or not isinstance(request.get("desiredAPIVersion"), str)
        or not isinstance(request.get("objects"), list)
        or not all(isinstance(o, Mapping) for o in request["objects"])
    ):
        raise BadRequest(
            "the ConversionReview has no request with uid, desiredAPIVersion and objects"
        )
    return str(api_version), request


def _review(
    api_version: str,
    uid: str,
    *,
    converted: list[Obj] | None = None,
    failure: str | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid}
    if failure is None:
        response["convertedObjects"] = converted or []
        response["result"] = {"status": "Success"}
    else:
        response["result"] = {"status": "Failure", "message": failure}
    return {"apiVersion": api_version, "kind": "ConversionReview", "response": response}
