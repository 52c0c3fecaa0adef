"""Admission and conversion webhooks, served by the manager (controller-runtime's
``pkg/webhook``). One concept per module: :mod:`.server` (HTTPS, bounds, metrics),
:mod:`.certwatcher` (the reloaded serving certificate), :mod:`.admission` (defaulting
and validating a typed kind), :mod:`.conversion` (hub and spokes), :mod:`.builder`
(wiring into a manager), :mod:`.metrics`. Facts taken from controller-runtime and the
API server: ``docs/webhooks.md``.
"""

from reconciler.webhook.admission import (
    Defaulter,
    Denied,
    FieldError,
    Invalid,
    Validator,
    Warnings,
    defaulting_handler,
    defaulting_path,
    validating_handler,
    validating_path,
)
from reconciler.webhook.builder import WebhookBuilder
from reconciler.webhook.certwatcher import CertificateError
from reconciler.webhook.conversion import CONVERT_PATH, ConversionError, Conversions, Spoke
from reconciler.webhook.server import (
    DEFAULT_CERT_DIR,
    DEFAULT_PORT,
    BadRequest,
    Handler,
    WebhookServer,
    WebhookServerOptions,
)

__all__ = [
    "CONVERT_PATH",
    "DEFAULT_CERT_DIR",
    "DEFAULT_PORT",
    "BadRequest",
    "CertificateError",
    "ConversionError",
    "Conversions",
    "Defaulter",
    "Denied",
    "FieldError",
    "Handler",
    "Invalid",
    "Spoke",
    "Validator",
    "Warnings",
    "WebhookBuilder",
    "WebhookServer",
    "WebhookServerOptions",
    "defaulting_handler",
    "defaulting_path",
    "validating_handler",
    "validating_path",
]
