"""Wire a kind's webhooks into a manager, as controller-runtime's ``pkg/builder/webhook.go``::

    WebhookBuilder(mgr).for_(CRON_JOBS).with_defaulter(CronJobDefaulter()).with_validator(
        CronJobValidator()
    ).with_conversion(Spoke(CRON_JOBS_V2, to_hub=v2_to_v1, from_hub=v1_to_v2)).complete()

registers the defaulter at :func:`~reconciler.webhook.admission.defaulting_path`, the
validator at :func:`~reconciler.webhook.admission.validating_path` (both for ``for_``'s
version) and the conversions at ``/convert``, with ``for_``'s kind as the hub. Every
kind's conversions share the one ``/convert`` handler, as controller-runtime's share the
manager's converter registry. Registering a path twice raises ``ValueError``
(controller-runtime skips a path already served; two builders for one kind are a
wiring mistake worth hearing about).
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from reconciler.typed import Kind, KubeObject
from reconciler.webhook.admission import (
    Defaulter,
    Validator,
    defaulting_handler,
    defaulting_path,
    validating_handler,
    validating_path,
)
from reconciler.webhook.conversion import CONVERT_PATH, ConversionHandler, Conversions, Spoke
from reconciler.webhook.server import WebhookServer

__all__ = ["WebhookBuilder"]

ObjT = TypeVar("ObjT", bound=KubeObject)
_T = TypeVar("_T", bound=KubeObject)


class _HasWebhookServer(Protocol):
    """What the builder needs of a manager (:class:`reconciler.manager.Manager` has it)."""

    @property
    def webhook_server(self) -> WebhookServer: ...


class WebhookBuilder(Generic[ObjT]):
    """Collects one kind's webhooks; :meth:`complete` registers them."""

    def __init__(self, mgr: _HasWebhookServer) -> None:
        self._mgr = mgr
        self._kind: Kind[Any] | None = None
        self._defaulter: Defaulter[Any] | None = None
        self._validator: Validator[Any] | None = None
        self._spokes: tuple[Spoke[Any, Any], ...] | None = None

    def for_(self, kind: Kind[_T]) -> WebhookBuilder[_T]:
        """The kind the webhooks serve (the hub, when conversions are given)."""
        if self._kind is not None:
            raise ValueError("for_() was already called")
        built: WebhookBuilder[_T] = WebhookBuilder(self._mgr)
        built._kind = kind
        return built

    def with_defaulter(self, defaulter: Defaulter[ObjT]) -> WebhookBuilder[ObjT]:
        self._defaulter = defaulter
        return self

    def with_validator(self, validator: Validator[ObjT]) -> WebhookBuilder[ObjT]:
        self._validator = validator
        return self

    def with_conversion(self, *spokes: Spoke[ObjT, Any]) -> WebhookBuilder[ObjT]:
        """Serve conversion between ``for_``'s kind (the hub) and these versions."""
        self._spokes = spokes
        return self

    def complete(self) -> None:
        """Register the handlers on the manager's webhook server."""
        kind = self._kind
        if kind is None:
            raise ValueError("for_() must be called with the kind the webhooks serve")
        if self._defaulter is None and self._validator is None and self._spokes is None:
            raise ValueError(
                f"no webhook for {kind.resource}: add a defaulter, validator or conversion"
            )
        server = self._mgr.webhook_server
        if self._defaulter is not None:
            server.register(
                defaulting_path(kind.resource), defaulting_handler(kind, self._defaulter)
            )
        if self._validator is not None:
            server.register(
                validating_path(kind.resource), validating_handler(kind, self._validator)
            )
        if self._spokes is not None:
            _conversions(server).add(kind, *self._spokes)


def _conversions(server: WebhookServer) -> Conversions:
    """The registry behind ``/convert``, registered on first use."""
    existing = server.handler(CONVERT_PATH)
    if existing is None:
        conversions = Conversions()
        server.register(CONVERT_PATH, conversions.handler())
        return conversions
    if isinstance(existing, ConversionHandler):
        return existing.conversions
    raise ValueError(f"{CONVERT_PATH} is served by another handler")
