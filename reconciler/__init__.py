"""A controller-runtime style reconciler framework on anyio.

A controller author touches ``Reconciler``/``Request``/``Result`` and the
``Builder``; everything else is wiring the ``Manager`` does. Helpers for what every
controller needs (finalizers, owner references, create-or-update) live in
``reconciler.controllerutil``, as in controller-runtime's package of that name; typed
pydantic objects (``Kind``, ``KubeObject``, ``TypedClient``, ``TypedCache``) in
``reconciler.typed``, with the dict path kept for speed and for unmodelled types.
"""

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
from reconciler.workqueue import QueueShutDown, RateLimitingQueue

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
