"""Prometheus metrics under the names controller-runtime and client-go export.

Dashboards and alerts written for Go controllers work unchanged: every family below has
controller-runtime's name, type, labels and buckets. All families live on the
:class:`~prometheus_client.CollectorRegistry` given to :class:`Metrics` (owned by the
manager), never on the process-global default registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from enum import StrEnum
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

from reconciler.workqueue import QueueMetrics

__all__ = [
    "RECONCILE_TIME_BUCKETS",
    "REST_CLIENT_REQUEST_DURATION_BUCKETS",
    "UNFINISHED_WORK_UPDATE_PERIOD",
    "WORKQUEUE_DURATION_BUCKETS",
    "Metrics",
    "ReconcileResult",
    "rest_client_host",
]

UNFINISHED_WORK_UPDATE_PERIOD = 0.5
"""How often (seconds) client-go refreshes the unfinished-work gauges of a queue."""

RECONCILE_TIME_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    *(0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5),
    *(5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)
"""controller_runtime_reconcile_time_seconds buckets (seconds), as in controller-runtime."""

WORKQUEUE_DURATION_BUCKETS = (
    *(1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3),
    *(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
)
"""Queue wait and work duration buckets: ExponentialBuckets(1e-8, 10, 12), 10 ns to 1000 s."""

REST_CLIENT_REQUEST_DURATION_BUCKETS = (
    *(0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
)
"""rest_client_request_duration_seconds buckets (seconds), as in Kubernetes components."""


def rest_client_host(server: str) -> str:
    """The ``host`` label of the rest_client_* families for the API server at ``server``.

    client-go labels requests with its base URL's ``Host`` (rest/request.go, ``sanitize``):
    host and port as written in the URL, without scheme, credentials or path
    (``https://10.0.0.1:6443/`` → ``10.0.0.1:6443``); ``none`` when there is no URL.
    """
    if "//" not in server:
        server = "//" + server  # a bare host[:port], which client-go also accepts
    host = urlsplit(server).netloc.rpartition("@")[2]
    return host or "none"


class ReconcileResult(StrEnum):
    """Values of the ``result`` label of controller_runtime_reconcile_total."""

    SUCCESS = "success"
    ERROR = "error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"


class _HasProcessingAges(Protocol):
    def processing_ages(self) -> list[float]: ...


class Metrics:
    """Every metric family of the framework, registered on one registry.

    Families are public attributes named like the metric they export (without the
    ``controller_runtime_`` prefix for the reconcile ones); label them with ``.labels``.
    Controllers call :meth:`init_controller` once, build their queue with
    :meth:`queue_metrics`, and run :meth:`run_unfinished_work_updates` beside it.
    """

    def __init__(
        self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock

        # Reconcile loop (controller-runtime pkg/internal/controller/metrics).
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller, by result.",
            ["controller", "result"],
            registry=registry,
        )
        self.reconcile_errors_total = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller.",
            ["controller"],
            registry=registry,
        )
        self.terminal_reconcile_errors_total = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal (not retried) reconciliation errors per controller.",
            ["controller"],
            registry=registry,
        )
        self.reconcile_panics_total = Counter(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliations that failed with a programming error "
            "(what Go reports as a panic; see reconciler.controller).",
            ["controller"],
            registry=registry,
        )
        self.reconcile_timeouts_total = Counter(
            "controller_runtime_reconcile_timeouts_total",
            "Total number of reconciliations cut off by the controller's reconcile timeout.",
            ["controller"],
            registry=registry,
        )
        self.reconcile_time_seconds = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Duration of one reconciliation per controller.",
            ["controller"],
            buckets=RECONCILE_TIME_BUCKETS,
            registry=registry,
        )
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller.",
            ["controller"],
            registry=registry,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of workers currently reconciling, per controller.",
            ["controller"],
            registry=registry,
        )

        # Work queue (client-go util/workqueue, as registered by controller-runtime).
        # ``name`` and ``controller`` both carry the controller name.
        self.workqueue_depth = Gauge(
            "workqueue_depth",
            "Current depth of the workqueue: items waiting to be processed.",
            ["name", "controller", "priority"],
            registry=registry,
        )
        self.workqueue_adds_total = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by the workqueue (after deduplication).",
            ["name", "controller"],
            registry=registry,
        )
        self.workqueue_queue_duration_seconds = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in the workqueue before being handed out.",
            ["name", "controller"],
            buckets=WORKQUEUE_DURATION_BUCKETS,
            registry=registry,
        )
        self.workqueue_work_duration_seconds = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from the workqueue takes.",
            ["name", "controller"],
            buckets=WORKQUEUE_DURATION_BUCKETS,
            registry=registry,
        )
        self.workqueue_unfinished_work_seconds = Gauge(
            "workqueue_unfinished_work_seconds",
            "Seconds of work in progress not yet observed by work_duration; a steadily "
            "growing value indicates stuck workers.",
            ["name", "controller"],
            registry=registry,
        )
        self.workqueue_longest_running_processor_seconds = Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds the longest running worker of the workqueue has been running.",
            ["name", "controller"],
            registry=registry,
        )
        self.workqueue_retries_total = Counter(
            "workqueue_retries_total",
            "Total number of delayed adds (retries and requeue-after) handled by the workqueue.",
            ["name", "controller"],
            registry=registry,
        )

        # Leader election (client-go tools/leaderelection).
        self.leader_election_master_status = Gauge(
            "leader_election_master_status",
            "1 if this process holds the lease identified by 'name', 0 if it is a backup.",
            ["name"],
            registry=registry,
        )

        # API client (client-go rest client).
        self.rest_client_requests_total = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            ["code", "method", "host"],
            registry=registry,
        )
        self.rest_client_request_duration_seconds = Histogram(
            "rest_client_request_duration_seconds",
            "Request latency in seconds, by verb and host.",
            ["verb", "host"],
            buckets=REST_CLIENT_REQUEST_DURATION_BUCKETS,
            registry=registry,
        )

        # Process metrics, as controller-runtime registers its process collector.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)

    def init_controller(self, controller: str, max_concurrent_reconciles: int) -> None:
        """Export a controller's series at their starting values before any reconcile.

        So that rate() and alerts see 0 rather than a missing series.
        """
        for result in ReconcileResult:
            self.reconcile_total.labels(controller, result.value)
        self.reconcile_errors_total.labels(controller)
        self.terminal_reconcile_errors_total.labels(controller)
        self.reconcile_panics_total.labels(controller)
        self.reconcile_timeouts_total.labels(controller)
        self.max_concurrent_reconciles.labels(controller).set(max_concurrent_reconciles)
        self.active_workers.labels(controller).set(0)

    def queue_metrics(self, controller: str) -> QueueMetrics:
        """Hooks for the work queue of ``controller``; pass them to its queue."""
        return _WorkqueueMetrics(self, controller, self._clock)

    def update_unfinished_work(self, queue: _HasProcessingAges, controller: str) -> None:
        """Refresh the unfinished-work gauges of ``controller`` from its queue."""
        ages = queue.processing_ages()
        self.workqueue_unfinished_work_seconds.labels(controller, controller).set(sum(ages))
        self.workqueue_longest_running_processor_seconds.labels(controller, controller).set(
            max(ages, default=0.0)
        )

    async def run_unfinished_work_updates(
        self,
        queue: _HasProcessingAges,
        controller: str,
        *,
        period: float = UNFINISHED_WORK_UPDATE_PERIOD,
    ) -> NoReturn:
        """Call :meth:`update_unfinished_work` every ``period`` seconds until cancelled."""
        while True:
            self.update_unfinished_work(queue, controller)
            await anyio.sleep(period)


class _WorkqueueMetrics:
    """The :class:`QueueMetrics` of one controller's queue.

    Like client-go, it remembers when each item became dirty and when it was handed
    out, to observe how long it waited and how long it was worked on.
    """

    def __init__(self, metrics: Metrics, controller: str, clock: Callable[[], float]) -> None:
        labels = (controller, controller)
        # Creating the children here exports them at 0 from the start.
        self._depth = metrics.workqueue_depth.labels(*labels, "")
        self._adds = metrics.workqueue_adds_total.labels(*labels)
        self._queue_duration = metrics.workqueue_queue_duration_seconds.labels(*labels)
        self._work_duration = metrics.workqueue_work_duration_seconds.labels(*labels)
        self._retries = metrics.workqueue_retries_total.labels(*labels)
        metrics.workqueue_unfinished_work_seconds.labels(*labels)
        metrics.workqueue_longest_running_processor_seconds.labels(*labels)
        self._clock = clock
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}

    def add(self, item: Hashable) -> None:
        self._adds.inc()
        self._depth.inc()
        # Dirty-while-processing items get a timestamp too; it is consumed by their next get.
        self._added_at.setdefault(item, self._clock())

    def get(self, item: Hashable) -> None:
        now = self._clock()
        self._depth.dec()
        self._started_at[item] = now
        added_at = self._added_at.pop(item, None)
        if added_at is not None:
            self._queue_duration.observe(now - added_at)

    def done(self, item: Hashable) -> None:
        started_at = self._started_at.pop(item, None)
        if started_at is not None:
            self._work_duration.observe(self._clock() - started_at)

    def retry(self) -> None:
        self._retries.inc()
