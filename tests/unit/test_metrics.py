"""Metrics: controller-runtime's names, types, labels and buckets, with real sample values."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from reconciler._kubeconfig import Configuration
from reconciler.client import Client
from reconciler.manager import Manager, ManagerOptions
from reconciler.metrics import (
    RECONCILE_TIME_BUCKETS,
    UNFINISHED_WORK_UPDATE_PERIOD,
    Metrics,
    ReconcileResult,
    rest_client_host,
)
from reconciler.ratelimit import ItemExponentialFailureRateLimiter
from reconciler.workqueue import RateLimitingQueue

DEADLINE = 5.0
CONTROLLER = "workspace"
QUEUE_LABELS = {"name": CONTROLLER, "controller": CONTROLLER}


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: FakeClock) -> Metrics:
    return Metrics(registry, clock=clock)


def make_queue(metrics: Metrics, clock: FakeClock) -> RateLimitingQueue[str]:
    return RateLimitingQueue(
        ItemExponentialFailureRateLimiter(1.0, 10.0),
        metrics=metrics.queue_metrics(CONTROLLER),
        clock=clock,
    )


def exported_types(registry: CollectorRegistry) -> dict[str, str]:
    """Metric name -> type, as a Prometheus server scraping /metrics would see them."""
    types = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
    return types


def bucket_bounds(registry: CollectorRegistry, name: str) -> list[float]:
    for family in registry.collect():
        if family.name == name:
            return sorted(
                float(sample.labels["le"])
                for sample in family.samples
                if sample.name == f"{name}_bucket" and sample.labels["le"] != "+Inf"
            )
    raise AssertionError(f"{name} not registered")


# -- names, types, labels, buckets --------------------------------------------------------


def test_families_have_controller_runtime_names_and_types(registry: CollectorRegistry) -> None:
    Metrics(registry)
    types = exported_types(registry)
    expected = {
        "controller_runtime_reconcile_total": "counter",
        "controller_runtime_reconcile_errors_total": "counter",
        "controller_runtime_terminal_reconcile_errors_total": "counter",
        "controller_runtime_reconcile_panics_total": "counter",
        "controller_runtime_reconcile_timeouts_total": "counter",
        "controller_runtime_reconcile_time_seconds": "histogram",
        "controller_runtime_max_concurrent_reconciles": "gauge",
        "controller_runtime_active_workers": "gauge",
        "workqueue_depth": "gauge",
        "workqueue_adds_total": "counter",
        "workqueue_queue_duration_seconds": "histogram",
        "workqueue_work_duration_seconds": "histogram",
        "workqueue_unfinished_work_seconds": "gauge",
        "workqueue_longest_running_processor_seconds": "gauge",
        "workqueue_retries_total": "counter",
        "leader_election_master_status": "gauge",
        "rest_client_requests_total": "counter",
        "rest_client_request_duration_seconds": "histogram",
    }
    assert {name: types.get(name) for name in expected} == expected


def test_families_have_controller_runtime_labels(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.init_controller(CONTROLLER, 1)
    metrics.reconcile_time_seconds.labels(CONTROLLER)
    metrics.queue_metrics(CONTROLLER)
    metrics.leader_election_master_status.labels("lease")
    metrics.rest_client_requests_total.labels("200", "GET", "host")
    metrics.rest_client_request_duration_seconds.labels("GET", "host")
    controller, queue = {"controller"}, {"name", "controller"}
    expected = {
        "controller_runtime_reconcile_total": {"controller", "result"},
        "controller_runtime_reconcile_errors_total": controller,
        "controller_runtime_terminal_reconcile_errors_total": controller,
        "controller_runtime_reconcile_panics_total": controller,
        "controller_runtime_reconcile_timeouts_total": controller,
        "controller_runtime_reconcile_time_seconds_count": controller,
        "controller_runtime_max_concurrent_reconciles": controller,
        "controller_runtime_active_workers": controller,
        "workqueue_depth": {"name", "controller", "priority"},
        "workqueue_adds_total": queue,
        "workqueue_queue_duration_seconds_count": queue,
        "workqueue_work_duration_seconds_count": queue,
        "workqueue_unfinished_work_seconds": queue,
        "workqueue_longest_running_processor_seconds": queue,
        "workqueue_retries_total": queue,
        "leader_election_master_status": {"name"},
        "rest_client_requests_total": {"code", "method", "host"},
        "rest_client_request_duration_seconds_count": {"verb", "host"},
    }
    exported = {
        sample.name: set(sample.labels)
        for family in registry.collect()
        for sample in family.samples
        if sample.name in expected
    }
    assert exported == expected


def test_histogram_buckets(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.reconcile_time_seconds.labels(CONTROLLER)
    metrics.queue_metrics(CONTROLLER)
    metrics.rest_client_request_duration_seconds.labels("GET", "api")
    assert bucket_bounds(registry, "controller_runtime_reconcile_time_seconds") == list(
        RECONCILE_TIME_BUCKETS
    )
    assert len(RECONCILE_TIME_BUCKETS) == 40
    assert RECONCILE_TIME_BUCKETS[0] == 0.005
    assert RECONCILE_TIME_BUCKETS[-1] == 60.0
    exponential = [1e-8 * 10**i for i in range(12)]  # ExponentialBuckets(10e-9, 10, 12)
    for name in ["workqueue_queue_duration_seconds", "workqueue_work_duration_seconds"]:
        assert bucket_bounds(registry, name) == pytest.approx(exponential, rel=1e-9)
    assert bucket_bounds(registry, "rest_client_request_duration_seconds") == [
        *(0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
    ]


def test_nothing_lands_on_the_global_registry(registry: CollectorRegistry) -> None:
    # A second instance on another registry would collide if either used the global one.
    Metrics(registry).init_controller(CONTROLLER, 1)
    Metrics(CollectorRegistry()).init_controller(CONTROLLER, 1)
    labels = {"controller": CONTROLLER, "result": "success"}
    assert REGISTRY.get_sample_value("controller_runtime_reconcile_total", labels) is None
    assert registry.get_sample_value("controller_runtime_reconcile_total", labels) == 0.0


# -- controller metrics -------------------------------------------------------------------


def test_init_controller_exports_every_series_at_its_start_value(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.init_controller(CONTROLLER, max_concurrent_reconciles=4)
    controller = {"controller": CONTROLLER}
    for result in ["success", "error", "requeue", "requeue_after"]:
        labels = {**controller, "result": result}
        assert registry.get_sample_value("controller_runtime_reconcile_total", labels) == 0.0
    for name in [
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_reconcile_timeouts_total",
        "controller_runtime_active_workers",
    ]:
        assert registry.get_sample_value(name, controller) == 0.0, name
    value = registry.get_sample_value("controller_runtime_max_concurrent_reconciles", controller)
    assert value == 4.0


def test_result_label_values() -> None:
    assert [result.value for result in ReconcileResult] == [
        "success",
        "error",
        "requeue",
        "requeue_after",
    ]


def test_reconcile_families_record_values(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.init_controller(CONTROLLER, 1)
    metrics.reconcile_total.labels(CONTROLLER, ReconcileResult.REQUEUE_AFTER).inc()
    metrics.reconcile_time_seconds.labels(CONTROLLER).observe(0.3)
    metrics.active_workers.labels(CONTROLLER).inc()
    labels = {"controller": CONTROLLER}
    requeue_after = {**labels, "result": "requeue_after"}
    assert registry.get_sample_value("controller_runtime_reconcile_total", requeue_after) == 1.0
    for le, count in [("0.25", 0.0), ("0.3", 1.0), ("60.0", 1.0)]:
        bucket = {**labels, "le": le}
        sample = registry.get_sample_value(
            "controller_runtime_reconcile_time_seconds_bucket", bucket
        )
        assert sample == count
    assert registry.get_sample_value("controller_runtime_active_workers", labels) == 1.0


def test_leader_election_and_rest_client_families(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.leader_election_master_status.labels("workspace-operator").set(1)
    metrics.rest_client_requests_total.labels("200", "GET", "10.0.0.1:6443").inc()
    metrics.rest_client_request_duration_seconds.labels("GET", "10.0.0.1:6443").observe(0.02)
    status = registry.get_sample_value(
        "leader_election_master_status", {"name": "workspace-operator"}
    )
    assert status == 1.0
    requests = {"code": "200", "method": "GET", "host": "10.0.0.1:6443"}
    assert registry.get_sample_value("rest_client_requests_total", requests) == 1.0
    duration = {"verb": "GET", "host": "10.0.0.1:6443", "le": "0.025"}
    assert registry.get_sample_value("rest_client_request_duration_seconds_bucket", duration) == 1


@pytest.mark.parametrize(
    ("server", "host"),
    [
        ("https://10.0.0.1:6443/", "10.0.0.1:6443"),
        ("https://admin:secret@10.0.0.1:6443", "10.0.0.1:6443"),
        ("https://[fd00::1]", "[fd00::1]"),
        ("10.0.0.1:6443", "10.0.0.1:6443"),
        ("localhost:8080", "localhost:8080"),
        ("", "none"),
    ],
)
def test_rest_client_host_strips_scheme_credentials_and_path(server: str, host: str) -> None:
    assert rest_client_host(server) == host


@pytest.mark.parametrize(
    ("server", "host"),
    [
        ("https://10.0.0.1:6443", "10.0.0.1:6443"),
        ("https://kubernetes.default.svc", "kubernetes.default.svc"),
        ("https://[fd00::1]:6443/", "[fd00::1]:6443"),
        ("http://localhost:8080/prefix", "localhost:8080"),
    ],
)
async def test_rest_client_host_label_is_the_servers_host_and_port(server: str, host: str) -> None:
    # client-go labels with the rest client's base URL's Host (rest/request.go, sanitize):
    # host[:port], no scheme, no path.
    client = Client(Configuration(host=server))
    try:
        manager = Manager(client, ManagerOptions(handle_signals=False))
        assert client.observer is not None
        client.observer("GET", 200, 0.02)
        client.observer("PATCH", 0, 0.5)  # no HTTP answer
    finally:
        await client.close()
    registry = manager.registry
    hosts = {
        sample.labels["host"]
        for family in registry.collect()
        if family.name.startswith("rest_client_")
        for sample in family.samples
    }
    assert hosts == {host}
    requests = "rest_client_requests_total"
    assert registry.get_sample_value(requests, {"code": "200", "method": "GET", "host": host})
    assert registry.get_sample_value(requests, {"code": "<error>", "method": "PATCH", "host": host})
    duration = "rest_client_request_duration_seconds_count"
    assert registry.get_sample_value(duration, {"verb": "GET", "host": host}) == 1.0


# -- work queue metrics -------------------------------------------------------------------


def queue_sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**QUEUE_LABELS, **labels})


def test_queue_series_exist_from_the_start(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.queue_metrics(CONTROLLER)
    assert queue_sample(registry, "workqueue_depth", priority="") == 0.0
    for name in [
        "workqueue_adds_total",
        "workqueue_retries_total",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "workqueue_queue_duration_seconds_count",
        "workqueue_work_duration_seconds_count",
    ]:
        assert queue_sample(registry, name) == 0.0, name


async def test_depth_counts_dirty_items_and_adds_count_only_new_ones(
    registry: CollectorRegistry, metrics: Metrics, clock: FakeClock
) -> None:
    queue = make_queue(metrics, clock)
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert queue_sample(registry, "workqueue_adds_total") == 2.0
    assert queue_sample(registry, "workqueue_depth", priority="") == 2.0
    with anyio.fail_after(DEADLINE):
        item = await queue.get()
    assert queue_sample(registry, "workqueue_depth", priority="") == 1.0
    queue.add(item)  # dirty again while processing: counted in depth
    assert queue_sample(registry, "workqueue_depth", priority="") == 2.0
    assert queue_sample(registry, "workqueue_adds_total") == 3.0


async def test_queue_and_work_durations_are_observed_per_item(
    registry: CollectorRegistry, metrics: Metrics, clock: FakeClock
) -> None:
    queue = make_queue(metrics, clock)
    queue.add("a")
    clock.advance(1.5)
    queue.add("a")  # deduplicated: the wait is measured from the first add
    clock.advance(1.0)
    with anyio.fail_after(DEADLINE):
        await queue.get()
    clock.advance(4.0)
    queue.done("a")
    assert queue_sample(registry, "workqueue_queue_duration_seconds_count") == 1.0
    assert queue_sample(registry, "workqueue_queue_duration_seconds_sum") == 2.5
    assert queue_sample(registry, "workqueue_queue_duration_seconds_bucket", le="1.0") == 0.0
    assert queue_sample(registry, "workqueue_queue_duration_seconds_bucket", le="10.0") == 1.0
    assert queue_sample(registry, "workqueue_work_duration_seconds_count") == 1.0
    assert queue_sample(registry, "workqueue_work_duration_seconds_sum") == 4.0


async def test_retries_count_every_delayed_add(
    registry: CollectorRegistry, metrics: Metrics, clock: FakeClock
) -> None:
    queue = make_queue(metrics, clock)
    queue.add_after("a", 0)
    queue.add_after("b", 5)
    queue.add_rate_limited("c")
    queue.add("d")  # not a retry
    assert queue_sample(registry, "workqueue_retries_total") == 3.0
    # Delayed items are not dirty yet, so not in depth either.
    assert queue_sample(registry, "workqueue_depth", priority="") == 2.0


async def test_unfinished_work_sums_and_maxes_processing_ages(
    registry: CollectorRegistry, metrics: Metrics, clock: FakeClock
) -> None:
    queue = make_queue(metrics, clock)
    queue.add("a")
    queue.add("b")
    with anyio.fail_after(DEADLINE):
        await queue.get()
        clock.advance(2.0)
        await queue.get()
    clock.advance(1.0)
    metrics.update_unfinished_work(queue, CONTROLLER)
    assert queue_sample(registry, "workqueue_unfinished_work_seconds") == 4.0
    assert queue_sample(registry, "workqueue_longest_running_processor_seconds") == 3.0
    queue.done("a")
    queue.done("b")
    metrics.update_unfinished_work(queue, CONTROLLER)
    assert queue_sample(registry, "workqueue_unfinished_work_seconds") == 0.0
    assert queue_sample(registry, "workqueue_longest_running_processor_seconds") == 0.0


class FixedAges:
    def __init__(self, ages: list[float]) -> None:
        self.ages = ages

    def processing_ages(self) -> list[float]:
        return self.ages


async def test_unfinished_work_updater_refreshes_until_cancelled(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    assert UNFINISHED_WORK_UPDATE_PERIOD == 0.5
    queue = FixedAges([7.0, 2.0])
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(metrics.run_unfinished_work_updates, queue, CONTROLLER)
            await anyio.wait_all_tasks_blocked()  # the first refresh happens at once
            assert queue_sample(registry, "workqueue_unfinished_work_seconds") == 9.0
            assert queue_sample(registry, "workqueue_longest_running_processor_seconds") == 7.0
            tg.cancel_scope.cancel()
