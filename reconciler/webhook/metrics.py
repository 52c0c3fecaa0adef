"""The webhook server's Prometheus families, under controller-runtime's names.

From controller-runtime's ``pkg/webhook/internal/metrics/metrics.go`` (requests, latency,
in flight: one child per registered path, the ``webhook`` label) and
``pkg/webhook/admission/metrics`` / ``pkg/webhook/conversion/metrics`` (the two panic
counters, label-less and exported at 0 from the start). ``code`` is the HTTP status the
server answered, as ``promhttp.InstrumentHandlerCounter`` records it: an admission
denial is an HTTP 200 whose review says ``allowed: false``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.metrics import WORKQUEUE_DURATION_BUCKETS

__all__ = ["WEBHOOK_LATENCY_BUCKETS", "WebhookMetrics"]

WEBHOOK_LATENCY_BUCKETS = WORKQUEUE_DURATION_BUCKETS
"""``ExponentialBuckets(10e-9, 10, 12)``: 10 ns to 1000 s, as controller-runtime has them
(the same series as the work queue's durations)."""


class WebhookMetrics:
    """The families, registered on one registry (the manager's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests_total = Counter(
            "controller_runtime_webhook_requests_total",
            "Total number of admission requests by HTTP status code.",
            ["webhook", "code"],
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            ["webhook"],
            buckets=WEBHOOK_LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests_in_flight = Gauge(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served.",
            ["webhook"],
            registry=registry,
        )
        self.panics_total = Counter(
            "controller_runtime_webhook_panics_total",
            "Total number of webhook panics",
            registry=registry,
        )
        self.conversion_panics_total = Counter(
            "controller_runtime_conversion_webhook_panics_total",
            "Total number of conversion webhook panics",
            registry=registry,
        )

    def register_path(self, path: str) -> None:
        """Export a path's series before its first request, as controller-runtime does
        for the likeliest codes (200 and 500)."""
        for code in ("200", "500"):
            self.requests_total.labels(path, code)
        self.latency_seconds.labels(path)
        self.requests_in_flight.labels(path)
