"""Admission webhooks for one typed kind: defaulting (mutating) and validating.

Write a :class:`Defaulter` or a :class:`Validator` over your :class:`~reconciler.typed.KubeObject`
model; :func:`defaulting_handler`/:func:`validating_handler` turn it into a
:data:`~reconciler.webhook.server.Handler` answering ``AdmissionReview``
(``admission.k8s.io/v1``, or ``v1beta1``: the answer has the request's apiVersion), as
controller-runtime's ``admission.WithDefaulter``/``WithValidator`` do
(``pkg/webhook/admission/defaulter_custom.go``, ``validator_custom.go``, ``webhook.go``,
``response.go``):

- **Operations.** The validator gets the new object on CREATE, old and new on UPDATE and
  the object being deleted (``oldObject``) on DELETE; CONNECT is allowed unvalidated.
  The defaulter runs on CREATE and UPDATE only; anything else is allowed untouched.
- **Answers.** Allowed: ``status.code`` 200, with the validator's warnings. Refused by
  raising :class:`Denied`: 403 ``Forbidden`` and the message, as controller-runtime's
  ``admission.Denied``; :class:`Invalid` and ``Denied(code=…, reason=…)`` carry a
  whole ``metav1.Status``, as an ``apierrors`` error does. The API server then tells the
  user ``admission webhook "<name>" denied the request: <message>``.
- **Bad requests.** A review whose object is not the webhook's kind, does not fit the
  model, or names an unknown operation is refused with code 400 (the decoder's error in
  controller-runtime). A body that is no ``AdmissionReview`` at all raises
  :class:`~reconciler.webhook.server.BadRequest` (HTTP 400).
- **Failures.** Any other exception from a defaulter or validator — a bug — is what a
  panic is in Go: the answer is ``allowed: false`` with code 500 and
  ``panic: <error> [recovered]``, and ``controller_runtime_webhook_panics_total`` counts
  it. (controller-runtime turns a plain ``error`` returned by a validator into a 403
  denial; Python has no such return, so a refusal is always an explicit :class:`Denied`.)
- **Mutations** are an RFC 6902 JSON patch (``patchType: JSONPatch``, base64 in
  ``patch``) from the object as the model dumps it before :meth:`Defaulter.default` to
  the same after it: no change, no patch. controller-runtime diffs the raw request
  against the re-encoded Go object and then drops the removals its scheme caused
  (``dropSchemeRemovals``); a :class:`~reconciler.typed.Kind` keeps the fields its model
  does not declare (the kind must: a lossy model is refused when the handler is made),
  so both dumps carry them unchanged and the patch never touches them, and dumping
  both sides hides what parsing alone re-spells (nulls, timestamp formats).
- **dryRun** needs nothing here: handlers are pure (declare ``sideEffects: None`` in
  the webhook configuration), so a dry run is answered like any other request.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import jsonpatch
import orjson
import structlog

from reconciler.resource import Obj, ResourceType
from reconciler.typed import Kind, KubeObject, ParseError
from reconciler.webhook.server import BadRequest, Handler, PanicRecovered

__all__ = [
    "ADMISSION_REVIEW_VERSIONS",
    "Defaulter",
    "Denied",
    "FieldError",
    "Invalid",
    "Validator",
    "Warnings",
    "defaulting_handler",
    "defaulting_path",
    "json_patch",
    "validating_handler",
    "validating_path",
]

log = structlog.get_logger("reconciler.webhook.admission")

Warnings = list[str]
"""Warnings for the client (kubectl prints them), allowed or not."""

ADMISSION_REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
"""The AdmissionReview versions answered (the two are the same schema)."""

ObjT = TypeVar("ObjT", bound=KubeObject)
_ObjT_contra = TypeVar("_ObjT_contra", bound=KubeObject, contravariant=True)


# -- refusals -----------------------------------------------------------------------------
class Denied(Exception):
    """Raise from a defaulter or validator to refuse the request with ``message``."""

    def __init__(
        self,
        message: str,
        *,
        code: int = 403,
        reason: str = "Forbidden",
        warnings: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.warnings: Warnings = list(warnings)

    def status(self) -> dict[str, Any]:
        """The ``status`` of the AdmissionResponse (a ``metav1.Status``)."""
        if (self.code, self.reason) == (403, "Forbidden"):
            # controller-runtime's admission.Denied: code, reason and message only.
            return {"code": self.code, "reason": self.reason, "message": self.message}
        return {
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class FieldError:
    """One field's problem, as apimachinery's ``field.Error``.

    ``type`` is its ``ErrorType`` (``FieldValueInvalid``, ``FieldValueRequired``…);
    ``value`` the offending value, shown as the API server shows it.
    """

    path: str
    message: str
    value: object = None
    type: str = "FieldValueInvalid"

    def body(self) -> str:
        """The message without the field (apimachinery's ``ErrorBody``)."""
        label = _ERROR_TYPE_LABELS.get(self.type, f"<unknown error {_go_quote(self.type)}>")
        text = label
        if self.type in _VALUED_ERROR_TYPES:
            text = f"{label}: {_go_value(self.value)}"
        if self.message:
            text += f": {self.message}"
        return text

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


class Invalid(Denied):
    """The object fails validation: 422 ``Invalid``, worded as ``apierrors.NewInvalid``.

    ``CronJob.batch.tutorial.kubebuilder.io "x" is invalid: spec.schedule: Invalid value:
    "bad": <message>``; several errors are listed in brackets, comma-separated, repeats
    dropped; ``status.details.causes`` has one entry per error.
    """

    def __init__(
        self,
        kind: Kind[Any],
        name: str,
        errors: Sequence[FieldError],
        *,
        warnings: Sequence[str] = (),
    ) -> None:
        rt = kind.resource
        qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
        unique = list(dict.fromkeys(str(e) for e in errors))
        message = f"{qualified} {_go_quote(name)} is invalid"
        if len(unique) == 1:
            message += f": {unique[0]}"
        elif unique:
            message += f": [{', '.join(unique)}]"
        super().__init__(message, code=422, reason="Invalid", warnings=warnings)
        # metav1.StatusDetails: empty fields are omitted (``omitempty``).
        details = {"name": name, "group": rt.group, "kind": rt.kind}
        self.details: dict[str, Any] = {k: v for k, v in details.items() if v}
        self.details["causes"] = [
            {"reason": e.type, "message": e.body(), "field": e.path} for e in errors
        ]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "details": self.details}


# -- the two handler kinds ----------------------------------------------------------------
class Defaulter(Protocol[_ObjT_contra]):
    async def default(self, obj: _ObjT_contra) -> None:
        """Set defaults on ``obj`` in place; raise :class:`Denied` to refuse it."""
        ...


class Validator(Protocol[_ObjT_contra]):
    """Each method returns warnings; raising :class:`Denied`/:class:`Invalid` refuses."""

    async def validate_create(self, obj: _ObjT_contra) -> Warnings: ...

    async def validate_update(self, old: _ObjT_contra, new: _ObjT_contra) -> Warnings: ...

    async def validate_delete(self, obj: _ObjT_contra) -> Warnings: ...


def defaulting_path(resource: ResourceType) -> str:
    """kubebuilder's path: ``/mutate-<group, dots as dashes>-<version>-<lower-case kind>``
    (the core group gives ``/mutate--v1-pod``, as in controller-runtime)."""
    return _path("mutate", resource)


def validating_path(resource: ResourceType) -> str:
    """kubebuilder's path: ``/validate-<group, dots as dashes>-<version>-<lower-case kind>``."""
    return _path("validate", resource)


def _path(prefix: str, rt: ResourceType) -> str:
    return f"/{prefix}-{rt.group.replace('.', '-')}-{rt.version}-{rt.kind.lower()}"


def defaulting_handler(kind: Kind[ObjT], defaulter: Defaulter[ObjT]) -> Handler:
    """Answer AdmissionReviews for ``kind`` by running ``defaulter``; a JSON patch says what
    it changed. ``TypeError`` if ``kind``'s model drops fields it does not declare (the
    patch would remove them)."""
    if kind.lossy_parts:
        raise TypeError(
            f"{kind.model.__name__} drops fields it does not declare "
            f"({', '.join(kind.lossy_parts)}): a defaulting webhook would remove them"
        )

    async def default(request: Mapping[str, Any]) -> dict[str, Any]:
        if request.get("operation") not in ("CREATE", "UPDATE"):
            return _allowed()
        obj = _object(kind, request, "object")
        before = kind.dump(obj)
        await defaulter.default(obj)
        patch = json_patch(before, kind.dump(obj))
        if not patch:
            return _allowed()
        return {
            **_allowed(),
            "patch": base64.b64encode(orjson.dumps(patch)).decode(),
            "patchType": "JSONPatch",
        }

    return _admission_handler(kind, default)


def validating_handler(kind: Kind[ObjT], validator: Validator[ObjT]) -> Handler:
    """Answer AdmissionReviews for ``kind`` with ``validator``'s verdict and warnings."""

    async def validate(request: Mapping[str, Any]) -> dict[str, Any]:
        match request.get("operation"):
            case "CONNECT":
                return _allowed()
            case "CREATE":
                warnings = await validator.validate_create(_object(kind, request, "object"))
            case "UPDATE":
                new = _object(kind, request, "object")
                old = _object(kind, request, "oldObject")
                warnings = await validator.validate_update(old, new)
            case "DELETE":
                # The API server sends the object being deleted as oldObject.
                warnings = await validator.validate_delete(_object(kind, request, "oldObject"))
            case op:
                raise _RequestInvalid(f"unknown operation {_go_quote(str(op))}")
        return {**_allowed(), **({"warnings": list(warnings)} if warnings else {})}

    return _admission_handler(kind, validate)


# -- patches ------------------------------------------------------------------------------
def json_patch(before: Obj, after: Obj) -> list[dict[str, Any]]:
    """The RFC 6902 operations that turn ``before`` into ``after``; ``[]`` when equal."""
    if before == after:
        return []
    ops: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    return ops


# -- the review around a handler ----------------------------------------------------------
class _RequestInvalid(Exception):
    """The request's content cannot be handled: answered with code 400 in the review."""


def _admission_handler(kind: Kind[Any], handle: _Handle) -> Handler:
    rt = kind.resource

    async def handler(body: Mapping[str, Any]) -> Mapping[str, Any]:
        api_version, request = _read_review(body)
        uid = request["uid"]
        who = _who(request)
        try:
            _check_kind(rt, request)
            response = await handle(request)
        except _RequestInvalid as err:
            log.warning("bad admission request", webhook=str(rt), **who, error=str(err))
            response = _errored(400, str(err))
        except Denied as denied:
            log.debug("admission denied", webhook=str(rt), **who, reason=denied.reason)
            response = {"allowed": False, "status": denied.status()}
            if denied.warnings:
                response["warnings"] = list(denied.warnings)
        except Exception as err:
            answer = _errored(500, f"panic: {err} [recovered]")
            raise PanicRecovered(_review(api_version, uid, answer), webhook="admission") from err
        return _review(api_version, uid, response)

    return handler


class _Handle(Protocol):
    async def __call__(self, request: Mapping[str, Any], /) -> dict[str, Any]: ...


def _read_review(body: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    api_version = body.get("apiVersion")
    if body.get("kind") != "AdmissionReview" or api_version not in ADMISSION_REVIEW_VERSIONS:
        raise BadRequest(
            f"expected an AdmissionReview ({', '.join(ADMISSION_REVIEW_VERSIONS)}), "
            f"got kind={body.get('kind')!r} apiVersion={api_version!r}"
        )
    request = body.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise BadRequest("the AdmissionReview has no request with a uid")
    return str(api_version), request


def _check_kind(rt: ResourceType, request: Mapping[str, Any]) -> None:
    gvk = request.get("kind")
    expected = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    if not isinstance(gvk, Mapping) or {k: gvk.get(k, "") for k in expected} != expected:
        raise _RequestInvalid(f"this webhook serves {rt}, the request is for {gvk}")


def _object(kind: Kind[ObjT], request: Mapping[str, Any], key: str) -> ObjT:
    raw = request.get(key)
    if not isinstance(raw, Mapping):
        raise _RequestInvalid(f"the request has no {key}")
    try:
        return kind.parse(raw)
    except ParseError as err:
        raise _RequestInvalid(str(err)) from None


def _who(request: Mapping[str, Any]) -> dict[str, Any]:
    user = request.get("userInfo")
    return {
        "operation": request.get("operation"),
        "namespace": request.get("namespace"),
        "name": request.get("name"),
        "user": user.get("username") if isinstance(user, Mapping) else None,
        "request_uid": request.get("uid"),
    }


def _allowed() -> dict[str, Any]:
    # controller-runtime's Response.Complete fills a missing status with code 200.
    return {"allowed": True, "status": {"code": 200}}


def _errored(code: int, message: str) -> dict[str, Any]:
    """controller-runtime's ``admission.Errored``: refused, with a code and a message."""
    return {"allowed": False, "status": {"code": code, "message": message}}


def _review(api_version: str, uid: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {"uid": uid, **response},
    }


# -- values as apimachinery prints them ---------------------------------------------------
_ERROR_TYPE_LABELS = {
    "FieldValueNotFound": "Not found",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "FieldValueTooFew": "Too few",
    "InternalError": "Internal error",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueTooShort": "Too short",
}
# ErrorBody prints the value for these types only.
_VALUED_ERROR_TYPES = frozenset(
    {
        "FieldValueInvalid",
        "FieldValueTypeInvalid",
        "FieldValueNotSupported",
        "FieldValueNotFound",
        "FieldValueDuplicate",
        "FieldValueTooMany",
        "FieldValueTooFew",
    }
)
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f"}
_GO_ESCAPES |= {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(s: str) -> str:
    """Go's ``%q``: double quotes, backslash escapes, printable Unicode kept as is."""
    out = []
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _go_value(value: object) -> str:
    """A field error's value as ``ErrorBody`` prints it: ``%v`` for bools and numbers,
    ``%q`` for strings, JSON (Go's ``json.Marshal``) for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_quote(value)
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
    # Go's json.Marshal escapes HTML characters and the JavaScript line separators.
    for ch, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent form below 1e-4 or from 1e21."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    shortest = Decimal(repr(value))
    exponent = shortest.adjusted()
    if -4 <= exponent < 21:
        text = format(shortest, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exp = format(shortest, "e").partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign, digits = (exp[0], exp[1:]) if exp[0] in "+-" else ("+", exp)
    return f"{mantissa}e{sign}{int(digits):02d}"
