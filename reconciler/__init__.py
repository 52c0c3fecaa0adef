"""A controller-runtime style reconciler framework on anyio.

A controller author touches ``Reconciler``/``Request``/``Result`` and the
``Builder``; everything else is wiring the ``Manager`` does. Helpers for what every
controller needs (finalizers, owner references, create-or-update) live in
``reconciler.controllerutil``, as in controller-runtime's package of that name; typed
pydantic objects (``Kind``, ``KubeObject``, ``TypedClient``, ``TypedCache``) in
``reconciler.typed``, with the dict path kept for speed and for unmodelled types.
Admission and conversion webhooks live in ``reconciler.webhook``; its
``WebhookBuilder`` is exported here beside ``Builder``.

Names are imported when first used (PEP 562), so that importing one light submodule
(``reconciler.typed``, ``reconciler.resource``) does not import the whole framework:
the benchmark's kopf peer reads the Workspace models this way, in a venv without the
framework's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.builder import Builder, BuilderError
    from reconciler.cache import CacheNotStarted, CacheNotSynced, InformerCache
    from reconciler.client import Client, KubeconfigError, PatchType, WatchEvent
    from reconciler.controller import CacheSyncError, Controller, ControllerOptions, Reconciler
    from reconciler.errors import (
        AlreadyExists,
        ApiError,
        BadRequest,
        Conflict,
        Forbidden,
        Gone,
        Invalid,
        NotFound,
        ServerError,
        TooManyRequests,
        TransportError,
        Unauthorized,
    )
    from reconciler.events import EventRecorder
    from reconciler.handler import Mapper, enqueue_for_object, enqueue_for_owner
    from reconciler.informer import Informer, InformerOptions, strip_managed_fields
    from reconciler.labels import Selector, SelectorError, parse_selector
    from reconciler.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLost
    from reconciler.logging import configure as configure_logging
    from reconciler.manager import Manager, ManagerOptions, Runnable
    from reconciler.metrics import Metrics
    from reconciler.predicate import (
        Funcs,
        Predicate,
        and_,
        annotations_changed,
        generation_changed,
        labels_changed,
        new_predicate,
        not_,
        or_,
        resource_version_changed,
    )
    from reconciler.probes import HealthCheck, ListenError
    from reconciler.ratelimit import (
        BucketRateLimiter,
        ItemExponentialFailureRateLimiter,
        MaxOfRateLimiter,
        RateLimiter,
        default_controller_rate_limiter,
    )
    from reconciler.request import Request, Result, TerminalError
    from reconciler.resource import Obj, ResourceType
    from reconciler.typed import Kind, KubeObject, ParseError, TypedCache, TypedClient
    from reconciler.webhook.builder import WebhookBuilder
    from reconciler.workqueue import QueueShutDown, RateLimitingQueue

_EXPORTS: dict[str, tuple[str, str]] = {
    "AlreadyExists": ("reconciler.errors", "AlreadyExists"),
    "ApiError": ("reconciler.errors", "ApiError"),
    "BadRequest": ("reconciler.errors", "BadRequest"),
    "BucketRateLimiter": ("reconciler.ratelimit", "BucketRateLimiter"),
    "Builder": ("reconciler.builder", "Builder"),
    "BuilderError": ("reconciler.builder", "BuilderError"),
    "CacheNotStarted": ("reconciler.cache", "CacheNotStarted"),
    "CacheNotSynced": ("reconciler.cache", "CacheNotSynced"),
    "CacheSyncError": ("reconciler.controller", "CacheSyncError"),
    "Client": ("reconciler.client", "Client"),
    "Conflict": ("reconciler.errors", "Conflict"),
    "Controller": ("reconciler.controller", "Controller"),
    "ControllerOptions": ("reconciler.controller", "ControllerOptions"),
    "EventRecorder": ("reconciler.events", "EventRecorder"),
    "Forbidden": ("reconciler.errors", "Forbidden"),
    "Funcs": ("reconciler.predicate", "Funcs"),
    "Gone": ("reconciler.errors", "Gone"),
    "HealthCheck": ("reconciler.probes", "HealthCheck"),
    "Informer": ("reconciler.informer", "Informer"),
    "InformerCache": ("reconciler.cache", "InformerCache"),
    "InformerOptions": ("reconciler.informer", "InformerOptions"),
    "Invalid": ("reconciler.errors", "Invalid"),
    "ItemExponentialFailureRateLimiter": (
        "reconciler.ratelimit",
        "ItemExponentialFailureRateLimiter",
    ),
    "Kind": ("reconciler.typed", "Kind"),
    "KubeObject": ("reconciler.typed", "KubeObject"),
    "KubeconfigError": ("reconciler.client", "KubeconfigError"),
    "LeaderElectionConfig": ("reconciler.leaderelection", "LeaderElectionConfig"),
    "LeaderElector": ("reconciler.leaderelection", "LeaderElector"),
    "LeadershipLost": ("reconciler.leaderelection", "LeadershipLost"),
    "ListenError": ("reconciler.probes", "ListenError"),
    "Manager": ("reconciler.manager", "Manager"),
    "ManagerOptions": ("reconciler.manager", "ManagerOptions"),
    "Mapper": ("reconciler.handler", "Mapper"),
    "MaxOfRateLimiter": ("reconciler.ratelimit", "MaxOfRateLimiter"),
    "Metrics": ("reconciler.metrics", "Metrics"),
    "NotFound": ("reconciler.errors", "NotFound"),
    "Obj": ("reconciler.resource", "Obj"),
    "ParseError": ("reconciler.typed", "ParseError"),
    "PatchType": ("reconciler.client", "PatchType"),
    "Predicate": ("reconciler.predicate", "Predicate"),
    "QueueShutDown": ("reconciler.workqueue", "QueueShutDown"),
    "RateLimiter": ("reconciler.ratelimit", "RateLimiter"),
    "RateLimitingQueue": ("reconciler.workqueue", "RateLimitingQueue"),
    "Reconciler": ("reconciler.controller", "Reconciler"),
    "Request": ("reconciler.request", "Request"),
    "ResourceType": ("reconciler.resource", "ResourceType"),
    "Result": ("reconciler.request", "Result"),
    "Runnable": ("reconciler.manager", "Runnable"),
    "Selector": ("reconciler.labels", "Selector"),
    "SelectorError": ("reconciler.labels", "SelectorError"),
    "ServerError": ("reconciler.errors", "ServerError"),
    "TerminalError": ("reconciler.request", "TerminalError"),
    "TooManyRequests": ("reconciler.errors", "TooManyRequests"),
    "TransportError": ("reconciler.errors", "TransportError"),
    "TypedCache": ("reconciler.typed", "TypedCache"),
    "TypedClient": ("reconciler.typed", "TypedClient"),
    "Unauthorized": ("reconciler.errors", "Unauthorized"),
    "WatchEvent": ("reconciler.client", "WatchEvent"),
    "WebhookBuilder": ("reconciler.webhook.builder", "WebhookBuilder"),
    "and_": ("reconciler.predicate", "and_"),
    "annotations_changed": ("reconciler.predicate", "annotations_changed"),
    "configure_logging": ("reconciler.logging", "configure"),
    "default_controller_rate_limiter": ("reconciler.ratelimit", "default_controller_rate_limiter"),
    "enqueue_for_object": ("reconciler.handler", "enqueue_for_object"),
    "enqueue_for_owner": ("reconciler.handler", "enqueue_for_owner"),
    "generation_changed": ("reconciler.predicate", "generation_changed"),
    "labels_changed": ("reconciler.predicate", "labels_changed"),
    "new_predicate": ("reconciler.predicate", "new_predicate"),
    "not_": ("reconciler.predicate", "not_"),
    "or_": ("reconciler.predicate", "or_"),
    "parse_selector": ("reconciler.labels", "parse_selector"),
    "resource_version_changed": ("reconciler.predicate", "resource_version_changed"),
    "strip_managed_fields": ("reconciler.informer", "strip_managed_fields"),
}
"""Public name → (module, attribute)."""


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'reconciler' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AlreadyExists",
    "ApiError",
    "BadRequest",
    "BucketRateLimiter",
    "Builder",
    "BuilderError",
    "CacheNotStarted",
    "CacheNotSynced",
    "CacheSyncError",
    "Client",
    "Conflict",
    "Controller",
    "ControllerOptions",
    "EventRecorder",
    "Forbidden",
    "Funcs",
    "Gone",
    "HealthCheck",
    "Informer",
    "InformerCache",
    "InformerOptions",
    "Invalid",
    "ItemExponentialFailureRateLimiter",
    "Kind",
    "KubeObject",
    "KubeconfigError",
    "LeaderElectionConfig",
    "LeaderElector",
    "LeadershipLost",
    "ListenError",
    "Manager",
    "ManagerOptions",
    "Mapper",
    "MaxOfRateLimiter",
    "Metrics",
    "NotFound",
    "Obj",
    "ParseError",
    "PatchType",
    "Predicate",
    "QueueShutDown",
    "RateLimiter",
    "RateLimitingQueue",
    "Reconciler",
    "Request",
    "ResourceType",
    "Result",
    "Runnable",
    "Selector",
    "SelectorError",
    "ServerError",
    "TerminalError",
    "TooManyRequests",
    "TransportError",
    "TypedCache",
    "TypedClient",
    "Unauthorized",
    "WatchEvent",
    "WebhookBuilder",
    "and_",
    "annotations_changed",
    "configure_logging",
    "default_controller_rate_limiter",
    "enqueue_for_object",
    "enqueue_for_owner",
    "generation_changed",
    "labels_changed",
    "new_predicate",
    "not_",
    "or_",
    "parse_selector",
    "resource_version_changed",
    "strip_managed_fields",
]
