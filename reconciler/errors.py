"""Typed API errors, built from the metav1.Status the API server returns."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class ApiError(Exception):
    """A request the API server answered with a non-2xx status."""

    code: ClassVar[int] = 0

    def __init__(
        self, status: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or {}


class BadRequest(ApiError):
    code = 400


class Unauthorized(ApiError):
    code = 401


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError):
    code = 404


class Conflict(ApiError):
    """409: a stale resourceVersion (optimistic concurrency lost)."""

    code = 409


class AlreadyExists(Conflict):
    """409 with reason AlreadyExists."""


class Gone(ApiError):
    """410 / Expired: the resourceVersion is too old; the caller must relist."""

    code = 410


class UnsupportedMediaType(ApiError):
    code = 415


class Invalid(ApiError):
    """422: the object failed validation."""

    code = 422


class TooManyRequests(ApiError):
    code = 429


class ServerError(ApiError):
    """5xx, including timeouts and unavailability."""

    code = 500


class TransportError(Exception):
    """The request never got an HTTP answer (connection refused, reset, timed out)."""


_BY_CODE: dict[int, type[ApiError]] = {
    c.code: c
    for c in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        UnsupportedMediaType,
        Invalid,
        TooManyRequests,
    )
}


def error_from_status(status_code: int, status: dict[str, Any] | bytes | None) -> ApiError:
    """The typed error for an HTTP status and a metav1.Status body (if any)."""
    body: dict[str, Any] = {}
    if isinstance(status, bytes):
        try:
            parsed = orjson.loads(status) if status else {}
            body = parsed if isinstance(parsed, dict) else {}
        except orjson.JSONDecodeError:
            body = {"message": status[:512].decode(errors="replace")}
    elif isinstance(status, dict):
        body = status
    code = int(body.get("code") or status_code)
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or "")
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    if reason == "AlreadyExists":
        cls: type[ApiError] = AlreadyExists
    elif reason in ("Expired", "Gone"):
        cls = Gone
    elif code >= 500:
        cls = ServerError
    else:
        cls = _BY_CODE.get(code, ApiError)
    return cls(code, reason or cls.__name__, message, details)
