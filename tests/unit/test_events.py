"""EventRecorder rules that need a controllable clock or API: buffer, spam filter, window.

What the API server makes of the written Events is proven in
tests/integration/test_events.py.
"""

from __future__ import annotations

import re

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from reconciler.errors import Forbidden, NotFound
from reconciler.events import MAX_MESSAGE_BYTES, SPAM_BURST, SPAM_REFILL_INTERVAL, EventRecorder
from reconciler.resource import CORE_EVENT, Obj, ResourceType

DEADLINE = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEventAPI:
    """Stores created Events; applies merge patches of count/lastTimestamp."""

    def __init__(self) -> None:
        self.events: dict[str, Obj] = {}
        self.patches: list[tuple[str, Obj]] = []
        self.fail_with: Exception | None = None

    async def create(self, rt: ResourceType, obj: Obj, namespace: str | None = None) -> Obj:
        assert rt == CORE_EVENT
        await anyio.lowlevel.checkpoint()
        if self.fail_with is not None:
            raise self.fail_with
        assert namespace == obj["metadata"]["namespace"]
        self.events[obj["metadata"]["name"]] = obj
        return obj

    async def patch(
        self, rt: ResourceType, name: str, patch: Obj, *, namespace: str | None = None
    ) -> Obj:
        await anyio.lowlevel.checkpoint()
        if self.fail_with is not None:
            raise self.fail_with
        if name not in self.events:
            raise NotFound(404, "NotFound", f'events "{name}" not found')
        self.patches.append((name, patch))
        self.events[name].update(patch)
        return self.events[name]


def pod(name: str = "p", namespace: str | None = "ns", uid: str = "u-1") -> Obj:
    meta: Obj = {"name": name, "uid": uid, "resourceVersion": "7"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"name": "not-meta"}}


async def drain(recorder: EventRecorder, api: FakeEventAPI, total: int) -> None:
    """Run the recorder until ``total`` occurrences have been handled."""
    s = recorder.stats
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            # Counters are the recorder's observable outcome; there is no event to wait on.
            while s.sent + s.aggregated + s.failed < total:
                await anyio.sleep(0.001)
            tg.cancel_scope.cancel()


def test_record_never_blocks_and_drops_when_the_buffer_is_full() -> None:
    recorder = EventRecorder(FakeEventAPI(), "c", buffer_size=3)
    for i in range(5):
        recorder.record(pod(), "Normal", "Tick", f"m{i}")  # no run() task, no event loop
    assert recorder.stats.dropped == 2
    assert recorder.stats.filtered == 0


async def test_event_body_is_a_core_v1_event() -> None:
    api = FakeEventAPI()
    recorder = EventRecorder(api, "workspace-controller", instance="host-1")
    recorder.record(pod("w1"), "Warning", "Failed", "boom", action="Reconcile")
    await drain(recorder, api, 1)
    [(name, event)] = api.events.items()
    assert re.fullmatch(r"w1\.[0-9a-f]{16}", name)
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "w1",
        "namespace": "ns",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "Failed", "boom")
    assert event["action"] == "Reconcile"
    assert event["count"] == 1
    assert event["source"] == {"component": "workspace-controller"}
    assert event["reportingComponent"] == "workspace-controller"
    assert event["reportingInstance"] == "host-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["firstTimestamp"])
    assert event["lastTimestamp"] == event["firstTimestamp"]


async def test_cluster_scoped_objects_get_events_in_default() -> None:
    api = FakeEventAPI()
    recorder = EventRecorder(api, "c")
    recorder.record(pod("node-1", namespace=None), "Normal", "Seen", "m")
    await drain(recorder, api, 1)
    [event] = api.events.values()
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]


async def test_long_names_and_messages_are_cut_to_api_limits() -> None:
    api = FakeEventAPI()
    recorder = EventRecorder(api, "c")
    recorder.record(pod("n" * 253), "Normal", "Long", "é" * 1000)  # 2000 bytes
    await drain(recorder, api, 1)
    [(name, event)] = api.events.items()
    assert len(name) == 253
    assert len(event["message"].encode()) <= MAX_MESSAGE_BYTES
    assert event["message"] == "é" * (MAX_MESSAGE_BYTES // 2)


async def test_identical_occurrences_patch_one_event_within_the_window() -> None:
    api, clock = FakeEventAPI(), FakeClock()
    recorder = EventRecorder(api, "c", clock=clock, aggregation_window=600)
    for _ in range(3):
        recorder.record(pod(), "Normal", "Synced", "same")
        clock.now += 100
    recorder.record(pod(), "Normal", "Synced", "other message")
    await drain(recorder, api, 4)
    assert recorder.stats.sent == 2
    assert recorder.stats.aggregated == 2
    assert [p["count"] for _, p in api.patches] == [2, 3]
    assert all(set(p) == {"count", "lastTimestamp"} for _, p in api.patches)
    # More than a window after the last one: a new Event rather than a patch.
    clock.now += 601
    recorder.record(pod(), "Normal", "Synced", "same")
    await drain(recorder, api, 5)
    assert recorder.stats.sent == 3
    assert len(api.events) == 3


async def test_a_patch_of_an_expired_event_creates_a_new_one() -> None:
    api = FakeEventAPI()
    recorder = EventRecorder(api, "c")
    recorder.record(pod(), "Normal", "Synced", "same")
    await drain(recorder, api, 1)
    api.events.clear()  # the server's event TTL removed it
    recorder.record(pod(), "Normal", "Synced", "same")
    await drain(recorder, api, 2)
    assert recorder.stats.sent == 2
    [event] = api.events.values()
    assert event["count"] == 1


async def test_spam_filter_caps_one_object_and_refills_slowly() -> None:
    api, clock = FakeEventAPI(), FakeClock()
    recorder = EventRecorder(api, "c", clock=clock)
    for i in range(SPAM_BURST + 10):
        recorder.record(pod(), "Warning", "Hot", f"attempt {i}")
    recorder.record(pod("q", uid="u-2"), "Normal", "Other", "another object is unaffected")
    assert recorder.stats.filtered == 10
    clock.now += SPAM_REFILL_INTERVAL - 1
    recorder.record(pod(), "Warning", "Hot", "still filtered")
    assert recorder.stats.filtered == 11
    clock.now += 1
    recorder.record(pod(), "Warning", "Hot", "one token back")
    assert recorder.stats.filtered == 11
    await drain(recorder, api, SPAM_BURST + 2)
    assert recorder.stats.sent == SPAM_BURST + 2


async def test_a_flood_of_normal_events_does_not_starve_warnings_of_the_same_object() -> None:
    # client-go's spam key (getSpamKey in tools/record/events_cache.go) includes the
    # event's type, so Normal and Warning occurrences of one object draw from separate
    # buckets.
    api, clock = FakeEventAPI(), FakeClock()
    recorder = EventRecorder(api, "c", clock=clock)
    for i in range(SPAM_BURST + 5):
        recorder.record(pod(), "Normal", "Progressing", f"step {i}")
    assert recorder.stats.filtered == 5
    for i in range(SPAM_BURST):
        recorder.record(pod(), "Warning", "Failed", f"failure {i}")
    assert recorder.stats.filtered == 5
    recorder.record(pod(), "Warning", "Failed", "one too many")
    assert recorder.stats.filtered == 6
    await drain(recorder, api, 2 * SPAM_BURST)
    types = [e["type"] for e in api.events.values()]
    assert types.count("Warning") == SPAM_BURST


async def test_failed_writes_are_logged_once_and_never_raised() -> None:
    api = FakeEventAPI()
    api.fail_with = Forbidden(403, "Forbidden", "events is forbidden")
    with capture_logs() as logs:
        recorder = EventRecorder(api, "c")
        for i in range(3):
            recorder.record(pod(), "Normal", "Denied", f"m{i}")
        await drain(recorder, api, 3)
    assert recorder.stats.failed == 3
    assert recorder.stats.sent == 0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "403" in warnings[0]["error"]
    # The recorder keeps working once writes succeed again.
    api.fail_with = None
    recorder.record(pod(), "Normal", "Allowed", "m")
    await drain(recorder, api, 4)
    assert recorder.stats.sent == 1


async def test_invalid_events_are_dropped_not_raised() -> None:
    api = FakeEventAPI()
    recorder = EventRecorder(api, "c")
    recorder.record(pod(), "Error", "R", "bad type")  # type: ignore[arg-type]
    recorder.record({"metadata": {}}, "Normal", "R", "no name")
    recorder.record(pod(), "Normal", "", "no reason")
    recorder.record(pod(), "Normal", "Valid", "ok")
    await drain(recorder, api, 1)
    assert [e["message"] for e in api.events.values()] == ["ok"]


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="component"):
        EventRecorder(FakeEventAPI(), "")
    with pytest.raises(ValueError, match="buffer_size"):
        EventRecorder(FakeEventAPI(), "c", buffer_size=0)


async def test_flush_waits_until_everything_recorded_is_written() -> None:
    api = FakeEventAPI()
    recorder = EventRecorder(api, "test")
    await recorder.flush()  # not running: nothing to wait for
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            await anyio.lowlevel.checkpoint()  # let run() start
            for i in range(5):
                recorder.record(pod(f"p{i}", uid=f"u{i}"), "Normal", "Flushed", "m")
            await recorder.flush()
            assert recorder.stats.sent == 5
            assert len(api.events) == 5
            tg.cancel_scope.cancel()
