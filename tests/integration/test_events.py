"""The EventRecorder against a real API server: aggregation, spam cap, failed writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.events import SPAM_BURST, EventRecorder
from reconciler.resource import CONFIG_MAP, CORE_EVENT, Obj

DEADLINE = 15.0


@asynccontextmanager
async def running(k8s: Client) -> AsyncIterator[EventRecorder]:
    # A context manager, not a fixture: the task group must be entered and left by the
    # test's own task.
    rec = EventRecorder(k8s, "test-controller", instance="test-host")
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        yield rec
        tg.cancel_scope.cancel()


async def config_map(k8s: Client, namespace: str, name: str) -> Obj:
    return await k8s.create(CONFIG_MAP, {"metadata": {"name": name, "namespace": namespace}})


async def events_about(k8s: Client, namespace: str, name: str) -> list[Obj]:
    items, _ = await k8s.list_all(
        CORE_EVENT, namespace, field_selector=f"involvedObject.name={name}"
    )
    return items


async def eventually(check: Callable[[], bool]) -> None:
    """Poll the recorder's counters (its observable outcome) until ``check`` holds."""
    with anyio.fail_after(DEADLINE):
        while not check():
            await anyio.sleep(0.02)


async def test_ten_identical_events_become_one_with_count_ten(k8s: Client, namespace: str) -> None:
    cm = await config_map(k8s, namespace, "hot")
    async with running(k8s) as recorder:
        for _ in range(10):
            recorder.record(cm, "Warning", "BackOff", "image pull failed")
        await eventually(lambda: recorder.stats.sent + recorder.stats.aggregated == 10)
    [event] = await events_about(k8s, namespace, "hot")
    assert event["count"] == 10
    assert event["reason"] == "BackOff"
    assert event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == cm["metadata"]["uid"]
    assert event["involvedObject"]["kind"] == "ConfigMap"
    assert event["source"]["component"] == "test-controller"
    assert event["reportingInstance"] == "test-host"
    assert event["lastTimestamp"] >= event["firstTimestamp"]
    assert (recorder.stats.sent, recorder.stats.aggregated) == (1, 9)


async def test_different_messages_are_separate_events(k8s: Client, namespace: str) -> None:
    cm = await config_map(k8s, namespace, "c")
    async with running(k8s) as recorder:
        recorder.record(cm, "Normal", "Progressing", "1 of 3 ready")
        recorder.record(cm, "Normal", "Progressing", "2 of 3 ready")
        recorder.record(cm, "Normal", "Progressing", "2 of 3 ready")
        recorder.record(cm, "Warning", "Progressing", "2 of 3 ready")
        await eventually(lambda: recorder.stats.sent + recorder.stats.aggregated == 4)
    events = await events_about(k8s, namespace, "c")
    seen = sorted((e["type"], e["message"], e["count"]) for e in events)
    assert seen == [
        ("Normal", "1 of 3 ready", 1),
        ("Normal", "2 of 3 ready", 2),
        ("Warning", "2 of 3 ready", 1),
    ]


async def test_spam_filter_caps_a_hot_object(k8s: Client, namespace: str) -> None:
    hot = await config_map(k8s, namespace, "hot")
    calm = await config_map(k8s, namespace, "calm")
    async with running(k8s) as recorder:
        for i in range(SPAM_BURST + 15):
            recorder.record(hot, "Warning", "Flapping", f"state {i}")
        recorder.record(calm, "Normal", "Created", "created")
        assert recorder.stats.filtered == 15
        await eventually(lambda: recorder.stats.sent == SPAM_BURST + 1)
    assert len(await events_about(k8s, namespace, "hot")) == SPAM_BURST
    assert len(await events_about(k8s, namespace, "calm")) == 1


async def test_failed_write_is_dropped_and_later_events_still_flow(
    k8s: Client, namespace: str
) -> None:
    gone = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "orphan", "namespace": "no-such-namespace", "uid": "u-gone"},
    }
    cm = await config_map(k8s, namespace, "alive")
    async with running(k8s) as recorder:
        recorder.record(gone, "Normal", "Orphaned", "its namespace is gone")  # must not raise
        recorder.record(cm, "Normal", "Fine", "still recording")
        await eventually(lambda: recorder.stats.failed == 1 and recorder.stats.sent == 1)
    [event] = await events_about(k8s, namespace, "alive")
    assert event["message"] == "still recording"


async def test_kubectl_describe_shows_the_event(
    k8s: Client, namespace: str, control_plane: ControlPlane | None
) -> None:
    if control_plane is None:
        pytest.skip("needs the local control plane's kubectl")
    cm = await config_map(k8s, namespace, "described")
    async with running(k8s) as recorder:
        for _ in range(3):
            recorder.record(cm, "Normal", "Reconciled", "all good")
        await eventually(lambda: recorder.stats.sent + recorder.stats.aggregated == 3)
    out = await anyio.to_thread.run_sync(
        control_plane.kubectl, "describe", "configmap", "described", "-n", namespace
    )
    events = out[out.index("Events:") :]
    assert "Reconciled" in events
    assert "all good" in events
    assert "x3" in events
    assert "test-controller" in events
