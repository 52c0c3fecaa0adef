"""The informer's reflector against a fake API server at the ``Client`` boundary.

The fake answers ``list_all`` (and the one-item ``list`` the watchdog's probe sends)
from the objects a test sets, and plays one scripted stream per ``watch`` call: events,
ERROR events (raised as typed errors, as the real client does), time passing, a broken
connection, the client's watchdog. When the scripts run out it serves watches from a
small model of the server (a compacted history answers 410; a version it has not reached
answers "too large" or, as kube-apiserver 1.36's watch cache does, silence), or parks the
watch so the test can look. Time is a fake clock: backoff sleeps are recorded and jump.

What this pins: where every list and watch starts, bookmarks as resume points, resume
without relist, 410 and relist notifications, the backoff sequence and the table of
what follows each way a watch ends (reconciler/informer.py's docstring).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from reconciler.client import Client, WatchEvent
from reconciler.errors import (
    ApiError,
    Gone,
    ServerError,
    TooManyRequests,
    TransportError,
    error_from_status,
)
from reconciler.informer import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    BACKOFF_RESET,
    NEXT_STEP,
    VERY_SHORT_WATCH,
    Backoff,
    Informer,
    InformerOptions,
    Step,
    WatchEnd,
    classify,
    next_step,
    strip_managed_fields,
)
from reconciler.resource import CONFIG_MAP, ResourceType

Obj = dict[str, Any]
NS = "ns"
DEADLINE = 5.0  # real seconds any single wait in these tests may take
IDLE = 90.0


# -- the fake clock -------------------------------------------------------------------------
class FakeClock:
    """Monotonic time that moves only when slept on or advanced; sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 10_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


# -- the fake API server --------------------------------------------------------------------
def cm(name: str, rv: int, **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": str(rv),
            "managedFields": [{"manager": "kubectl"}],
        },
        "data": data,
    }


def bookmark(rv: int) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"resourceVersion": str(rv)}}


def status(code: int, reason: str, message: str, cause: str | None = None) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if cause:
        body["details"] = {"causes": [{"reason": cause, "message": message}]}
    return body


def expired(rv: str, oldest: int) -> Obj:
    # The watch cache's words (apiserver storage/cacher/watch_cache.go).
    return status(410, "Expired", f"too old resource version: {rv} ({oldest})")


def too_large(rv: str, current: int) -> Obj:
    # storage.NewTooLargeResourceVersionError: a 504 Timeout with cause ResourceVersionTooLarge.
    return status(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {rv}, current: {current}",
        "ResourceVersionTooLarge",
    )


@dataclass(frozen=True)
class Ev:
    type: str
    object: Obj


@dataclass(frozen=True)
class ErrorEvent:
    """An ERROR event; the real client raises it as the typed ApiError."""

    status: Obj


@dataclass(frozen=True)
class Wait:
    """Time passes on the open stream."""

    seconds: float


@dataclass(frozen=True)
class Break:
    """The connection breaks mid-stream (the client raises TransportError)."""


@dataclass(frozen=True)
class Silence:
    """Nothing arrives for the idle timeout: the client's watchdog raises TimeoutError."""


@dataclass(frozen=True)
class Do:
    """The world changes at this point of the stream (e.g. etcd is restored)."""

    change: Callable[[], None]


StreamStep = Ev | ErrorEvent | Wait | Break | Silence | Do
# A scripted watch: the stream's steps (ending normally after the last one), or an
# exception the watch request itself fails with (no response: never opened).
Steps = list[StreamStep]
Script = Steps | BaseException


@dataclass(frozen=True)
class WatchCall:
    resource_version: str | None
    timeout_seconds: int | None
    allow_bookmarks: bool
    idle_timeout: float
    label_selector: str | None
    field_selector: str | None


@dataclass
class FakeApi:
    clock: FakeClock
    items: list[Obj] = field(default_factory=list)
    list_rv: int = 0
    list_failures: deque[BaseException] = field(default_factory=deque)
    scripts: deque[Script] = field(default_factory=deque)
    # The model that answers watches once the scripts are used up.
    current_rv: int | None = None  # versions above it are not reached yet
    silent_when_too_large: bool = False  # kube-apiserver 1.36's watch cache: no answer
    oldest_rv: int | None = None  # versions below it are compacted: 410
    lists: list[Obj] = field(default_factory=list)
    probes: list[str | None] = field(default_factory=list)
    watches: list[WatchCall] = field(default_factory=list)
    list_gate: anyio.Event | None = None
    parked: anyio.Event = field(default_factory=anyio.Event)
    max_watches: int = 200  # a runaway loop parks here instead of spinning forever

    def set_listing(self, rv: int, *objs: Obj) -> None:
        self.list_rv = rv
        self.items = [copy.deepcopy(o) for o in objs]

    def restore_etcd(self, rv: int, *objs: Obj, silent: bool = False) -> None:
        """etcd restored from a snapshot: the server is back at ``rv``, below what it
        served before; ``silent``: it holds watches at later versions without a word."""
        self.current_rv = rv
        self.silent_when_too_large = silent
        self.set_listing(rv, *objs)

    # -- Client's surface ------------------------------------------------------------------
    async def list_all(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> tuple[list[Obj], str]:
        self.lists.append(
            {
                "namespace": namespace,
                "label_selector": label_selector,
                "field_selector": field_selector,
                "page_size": page_size,
                "transform": transform,
            }
        )
        await anyio.lowlevel.checkpoint()
        if self.list_gate is not None:
            await self.list_gate.wait()
        if self.list_failures:
            raise self.list_failures.popleft()
        out = []
        for item in copy.deepcopy(self.items):
            # As the real client: kind/apiVersion filled in, transform per item.
            item.setdefault("kind", rt.kind)
            item.setdefault("apiVersion", rt.api_version)
            out.append(transform(item) if transform is not None else item)
        return out, str(self.list_rv)

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        """Only the watchdog's probe: one item at exactly ``resource_version``."""
        assert limit == 1
        self.probes.append(resource_version)
        await anyio.lowlevel.checkpoint()
        if self.rejects(resource_version) is not None:
            raise error_from_status(0, self.rejects(resource_version))
        return {"metadata": {"resourceVersion": resource_version}, "items": self.items[:1]}

    @asynccontextmanager
    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
        label_selector: str | None = None,
        field_selector: str | None = None,
        idle_timeout: float = 90.0,
        send_initial_events: bool = False,
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        assert not send_initial_events
        self.watches.append(
            WatchCall(
                resource_version,
                timeout_seconds,
                allow_bookmarks,
                idle_timeout,
                label_selector,
                field_selector,
            )
        )
        await anyio.lowlevel.checkpoint()
        script = self._script_for(resource_version)
        if script is None:
            self.parked.set()
            await anyio.sleep_forever()
        if isinstance(script, BaseException):
            raise script
        yield self._stream(cast(Steps, script), idle_timeout)

    # -- the model ---------------------------------------------------------------------------
    def rejects(self, rv: str | None) -> Obj | None:
        """The Status the server answers a request at ``rv`` with, if it cannot serve it."""
        if rv is None or not rv.isdigit():
            return None
        if self.current_rv is not None and int(rv) > self.current_rv:
            return too_large(rv, self.current_rv)
        if self.oldest_rv is not None and int(rv) < self.oldest_rv:
            return expired(rv, self.oldest_rv)
        return None

    def _script_for(self, rv: str | None) -> Script | None:
        if self.scripts:
            return self.scripts.popleft()
        if len(self.watches) > self.max_watches:
            return None
        answer = self.rejects(rv)
        if answer is None:
            return None  # a healthy, quiet stream
        if answer["code"] == 504 and self.silent_when_too_large:
            return [Silence()]
        return [ErrorEvent(answer)]

    async def _stream(self, steps: Steps, idle_timeout: float) -> AsyncIterator[WatchEvent]:
        for step in steps:
            await anyio.lowlevel.checkpoint()
            if isinstance(step, Ev):
                yield WatchEvent(step.type, copy.deepcopy(step.object))  # type: ignore[arg-type]
            elif isinstance(step, ErrorEvent):
                raise error_from_status(int(step.status["code"]), step.status)
            elif isinstance(step, Wait):
                self.clock.now += step.seconds
            elif isinstance(step, Break):
                raise TransportError("watch stream broken: connection reset by peer")
            elif isinstance(step, Do):
                step.change()
            else:
                self.clock.now += idle_timeout
                raise TimeoutError(f"watch stream silent for {idle_timeout}s")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_add(self, obj: Obj, initial: bool) -> None:
        self.events.append(("add", obj["metadata"]["name"], _rv(obj), initial))

    def on_update(self, old: Obj, new: Obj) -> None:
        self.events.append(("update", new["metadata"]["name"], _rv(old), _rv(new)))

    def on_delete(self, obj: Obj) -> None:
        self.events.append(("delete", obj["metadata"]["name"], _rv(obj)))


def _rv(obj: Obj) -> str:
    return str(obj["metadata"]["resourceVersion"])


def informer(
    api: FakeApi, options: InformerOptions | None = None
) -> tuple[Informer, Recorder, FakeClock]:
    inf = Informer(
        cast(Client, api),
        CONFIG_MAP,
        options or InformerOptions(namespace=NS),
        clock=api.clock,
        sleep=api.clock.sleep,
    )
    rec = Recorder()
    inf.add_handler(rec)
    return inf, rec, api.clock


@asynccontextmanager
async def running(inf: Informer) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(inf.run)
        yield
        tg.cancel_scope.cancel()


async def until_parked(api: FakeApi) -> None:
    """Until the informer asks for a watch the script and the model leave open."""
    with anyio.fail_after(DEADLINE):
        await api.parked.wait()


def watched_from(api: FakeApi) -> list[str | None]:
    return [w.resource_version for w in api.watches]


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(FakeClock())


# -- Backoff: the pure sequence ---------------------------------------------------------------
def test_backoff_starts_at_initial_doubles_and_caps() -> None:
    now = [0.0]
    b = Backoff(BACKOFF_INITIAL, BACKOFF_MAX, clock=lambda: now[0], rand=lambda: 0.0)
    delays = []
    for _ in range(9):
        delays.append(b.next_delay())
        now[0] += 1.0
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


def test_backoff_jitter_draws_from_d_to_2d() -> None:
    draws = iter([0.0, 0.5, 0.999999])
    b = Backoff(1.0, 30.0, clock=lambda: 0.0, rand=lambda: next(draws))
    assert b.next_delay() == 1.0
    assert b.next_delay() == pytest.approx(3.0)  # 2 × 1.5
    assert b.next_delay() == pytest.approx(8.0, rel=1e-5)  # just under 2 × 4


def test_backoff_restarts_after_two_minutes_without_a_delay() -> None:
    now = [0.0]
    b = Backoff(BACKOFF_INITIAL, BACKOFF_MAX, clock=lambda: now[0], rand=lambda: 0.0)
    assert [b.next_delay(), b.next_delay(), b.next_delay()] == [0.8, 1.6, 3.2]
    now[0] += BACKOFF_RESET  # exactly 2 min: not yet
    assert b.next_delay() == 6.4
    now[0] += BACKOFF_RESET + 0.001
    assert b.next_delay() == 0.8
    assert b.next_delay() == 1.6


# -- the decision table -----------------------------------------------------------------------
def test_every_way_a_watch_ends_has_a_next_step() -> None:
    assert set(NEXT_STEP) == set(WatchEnd)
    # Only an answer about the version itself, or a very short watch, relists.
    assert {e for e, s in NEXT_STEP.items() if s.relist} == {
        WatchEnd.EXPIRED,
        WatchEnd.FAILED,
        WatchEnd.VERY_SHORT,
    }
    # Anything that is not a plain end, a dead stream or a routine 410 waits first.
    assert {e for e, s in NEXT_STEP.items() if s.backoff} == {
        WatchEnd.FAILED,
        WatchEnd.VERY_SHORT,
        WatchEnd.THROTTLED,
        WatchEnd.UNREACHABLE,
    }


def test_a_410_before_anything_arrived_since_the_list_backs_off() -> None:
    assert next_step(WatchEnd.EXPIRED, seen_since_list=True) is Step.RELIST
    assert next_step(WatchEnd.EXPIRED, seen_since_list=False) is Step.BACKOFF_RELIST
    for end in set(WatchEnd) - {WatchEnd.EXPIRED}:
        assert next_step(end, seen_since_list=False) is NEXT_STEP[end]


@pytest.mark.parametrize(
    ("error", "opened", "events", "seconds", "end"),
    [
        (None, True, 3, 0.1, WatchEnd.ENDED),
        (None, True, 0, VERY_SHORT_WATCH, WatchEnd.ENDED),
        (None, True, 0, 0.2, WatchEnd.VERY_SHORT),
        (TransportError("watch stream broken"), True, 1, 0.1, WatchEnd.ENDED),
        (TransportError("watch stream broken"), True, 0, 0.1, WatchEnd.VERY_SHORT),
        (TransportError("connection refused"), False, 0, 0.0, WatchEnd.UNREACHABLE),
        (TimeoutError("no headers"), False, 0, 90.0, WatchEnd.UNREACHABLE),
        (TimeoutError("silent"), True, 2, 200.0, WatchEnd.SILENT),
        (TimeoutError("silent"), True, 0, 90.0, WatchEnd.SILENT_FROM_START),
        (error_from_status(410, expired("5", 9)), True, 0, 0.0, WatchEnd.EXPIRED),
        (error_from_status(410, b""), False, 0, 0.0, WatchEnd.EXPIRED),
        (error_from_status(429, b""), False, 0, 0.0, WatchEnd.THROTTLED),
        (error_from_status(504, too_large("9", 5)), True, 0, 3.0, WatchEnd.FAILED),
        (error_from_status(500, b"internal"), True, 4, 9.0, WatchEnd.FAILED),
        (error_from_status(403, b""), False, 0, 0.0, WatchEnd.FAILED),
    ],
)
def test_classify(
    error: BaseException | None, opened: bool, events: int, seconds: float, end: WatchEnd
) -> None:
    assert classify(error, opened=opened, events=events, seconds=seconds) is end


# -- where lists and watches start ----------------------------------------------------------
async def test_lists_consistently_then_watches_from_the_list_version(api: FakeApi) -> None:
    api.set_listing(100, cm("a", 7))
    opts = InformerOptions(namespace=NS, label_selector="app=x", field_selector="f=y", page_size=50)
    inf, rec, _ = informer(api, opts)
    async with running(inf):
        await until_parked(api)
    assert api.lists == [
        {
            "namespace": NS,
            "label_selector": "app=x",
            "field_selector": "f=y",
            "page_size": 50,
            "transform": strip_managed_fields,
        }
    ]
    [w] = api.watches
    assert w.resource_version == "100"
    assert w.allow_bookmarks
    assert w.idle_timeout == opts.watch_idle_timeout
    assert w.timeout_seconds is not None
    assert opts.min_watch_timeout <= w.timeout_seconds <= 2 * opts.min_watch_timeout
    assert (w.label_selector, w.field_selector) == ("app=x", "f=y")
    assert rec.events == [("add", "a", "7", True)]


async def test_every_event_moves_the_resume_point(api: FakeApi) -> None:
    api.set_listing(100)
    api.scripts.append(
        [
            Ev("ADDED", cm("a", 101)),
            Ev("MODIFIED", cm("a", 102, k="v")),
            Ev("ADDED", cm("b", 103)),
            Ev("DELETED", cm("b", 104)),
        ]
    )
    inf, rec, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "104"]
    assert inf.resource_version == "104"
    assert rec.events == [
        ("add", "a", "101", False),
        ("update", "a", "101", "102"),
        ("add", "b", "103", False),
        ("delete", "b", "104"),
    ]
    assert inf.store.keys() == [f"{NS}/a"]
    assert len(api.lists) == 1
    assert clock.sleeps == []


async def test_a_bookmark_moves_the_resume_point_and_nothing_else(api: FakeApi) -> None:
    api.set_listing(100, cm("a", 90))
    api.scripts.append([Ev("ADDED", cm("b", 101)), Wait(60), Ev("BOOKMARK", bookmark(150))])
    inf, rec, _ = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "150"]
    assert inf.resource_version == "150"
    assert sorted(inf.store.keys()) == [f"{NS}/a", f"{NS}/b"]
    assert rec.events == [("add", "a", "90", True), ("add", "b", "101", False)]


async def test_resuming_at_the_bookmark_avoids_a_410_and_a_relist(api: FakeApi) -> None:
    """The server has moved on and compacted: version 101 is gone, 150 is not."""
    api.set_listing(100)
    api.oldest_rv = 140
    api.scripts.append([Ev("ADDED", cm("b", 101)), Wait(60), Ev("BOOKMARK", bookmark(150))])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "150"]
    assert inf.stats.relists_on_gone == 0
    assert len(api.lists) == 1
    assert clock.sleeps == []


async def test_a_watch_the_server_ends_resumes_without_a_relist(api: FakeApi) -> None:
    api.set_listing(100)
    # The server's timeoutSeconds: streams end normally, the second one quiet throughout.
    api.scripts.extend([[Ev("ADDED", cm("a", 101)), Wait(400)], [Wait(450)]])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "101", "101"]
    assert len(api.lists) == 1
    assert clock.sleeps == []
    assert inf.stats.errors == 0


async def test_a_stream_that_breaks_resumes_from_the_last_version(api: FakeApi) -> None:
    api.set_listing(100)
    api.scripts.append([Ev("ADDED", cm("a", 101)), Wait(2), Break()])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "101"]
    assert len(api.lists) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("ending", [[], [Break()]], ids=["closed", "broken"])
async def test_a_very_short_watch_backs_off_and_relists(api: FakeApi, ending: Script) -> None:
    api.set_listing(100)
    api.scripts.append(ending)
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert len(api.lists) == 2
    assert len(clock.sleeps) == 1
    assert BACKOFF_INITIAL <= clock.sleeps[0] < 2 * BACKOFF_INITIAL
    assert inf.stats.errors == 1


# -- 410 and what a relist tells the handlers --------------------------------------------------
async def test_a_410_relists_at_once_and_notifies_every_object(api: FakeApi) -> None:
    api.set_listing(100, cm("kept", 1), cm("changed", 2), cm("vanished", 3))
    # Meanwhile, unseen: "changed" changes, "vanished" goes, "new" comes.
    later = (cm("kept", 101), cm("changed", 350), cm("new", 390))
    api.scripts.append(
        [
            Ev("MODIFIED", cm("kept", 101)),
            Do(lambda: api.set_listing(400, *later)),
            ErrorEvent(expired("101", 300)),
        ]
    )
    inf, rec, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert rec.events == [
        ("add", "kept", "1", True),
        ("add", "changed", "2", True),
        ("add", "vanished", "3", True),
        ("update", "kept", "1", "101"),
        # The relist: vanished objects first, then the listing in order, every object
        # that was cached an update even when its resourceVersion did not change.
        ("delete", "vanished", "3"),
        ("update", "kept", "101", "101"),
        ("update", "changed", "2", "350"),
        ("add", "new", "390", False),
    ]
    assert watched_from(api) == ["100", "400"]
    assert inf.stats.relists_on_gone == 1
    assert clock.sleeps == [], "a 410 after a healthy watch relists at once"
    assert sorted(inf.store.keys()) == [f"{NS}/changed", f"{NS}/kept", f"{NS}/new"]


async def test_a_410_straight_after_a_list_backs_off_before_relisting(api: FakeApi) -> None:
    """A server that cannot serve the version it just listed at must not be hammered."""
    api.set_listing(100)
    api.scripts.extend([Gone(410, "Expired", "too old"), Gone(410, "Expired", "too old")])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert len(api.lists) == 3
    assert len(clock.sleeps) == 2
    assert BACKOFF_INITIAL <= clock.sleeps[0] < 2 * BACKOFF_INITIAL
    assert 2 * BACKOFF_INITIAL <= clock.sleeps[1] < 4 * BACKOFF_INITIAL


# -- the loop case: a version the server will never serve ------------------------------------
async def test_too_large_resource_version_relists_instead_of_rewatching(api: FakeApi) -> None:
    """After an etcd restore the server's revisions are below ours: every watch at our
    version answers "too large"; only a relist gets a version it can serve."""
    api.set_listing(900, cm("a", 850))
    api.scripts.append(
        [
            Ev("MODIFIED", cm("a", 905)),
            Do(lambda: api.restore_etcd(500, cm("a", 480, restored="yes"))),
            Break(),
        ]
    )
    api.scripts.append(TransportError("connection refused"))  # the API server restarts
    inf, rec, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["900", "905", "905", "500"], "relisted, then watched at 500"
    assert len(api.lists) == 2
    assert len(clock.sleeps) == 2  # one before each retry
    assert inf.store.get(f"{NS}/a")["data"] == {"restored": "yes"}  # type: ignore[index]
    assert rec.events[-1] == ("update", "a", "905", "480")


async def test_any_other_error_answer_backs_off_and_relists(api: FakeApi) -> None:
    api.set_listing(100)
    api.scripts.extend(
        [
            [
                Ev("ADDED", cm("a", 101)),
                Do(lambda: api.set_listing(200, cm("a", 101))),
                ErrorEvent(status(500, "InternalError", "boom")),
            ],
            ServerError(503, "ServiceUnavailable", "try later"),
        ]
    )
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "200", "200"]
    assert len(api.lists) == 3
    assert len(clock.sleeps) == 2
    assert inf.stats.errors == 2


async def test_1_36_silence_at_a_version_not_reached_is_probed_and_relisted(
    api: FakeApi,
) -> None:
    """kube-apiserver 1.36's watch cache accepts a watch at a version it has not reached
    and sends nothing; the watchdog fires, the probe gets "too large", we relist."""
    api.set_listing(900)
    api.scripts.append([Wait(30), Do(lambda: api.restore_etcd(500, silent=True)), Break()])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["900", "900", "500"]
    assert api.probes == ["900"]
    assert inf.stats.watchdog_fired == 1
    assert len(api.lists) == 2
    assert clock.sleeps == []


# -- the watchdog -----------------------------------------------------------------------------
async def test_a_stream_gone_silent_is_reopened_at_once_without_a_probe(api: FakeApi) -> None:
    api.set_listing(100)
    api.scripts.append([Ev("ADDED", cm("a", 101)), Silence()])
    inf, _, clock = informer(api, InformerOptions(namespace=NS, watch_idle_timeout=IDLE))
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "101"]
    assert inf.stats.watchdog_fired == 1
    assert api.probes == []
    assert clock.sleeps == []
    assert len(api.lists) == 1


async def test_a_quiet_stream_is_probed_then_reopened_at_the_same_version(
    api: FakeApi,
) -> None:
    api.set_listing(100)
    api.scripts.append([Silence()])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100", "100"]
    assert api.probes == ["100"]
    assert len(api.lists) == 1
    assert clock.sleeps == []


async def test_a_probe_that_finds_the_version_compacted_relists(api: FakeApi) -> None:
    api.set_listing(100)

    def compact() -> None:
        api.oldest_rv = 150
        api.set_listing(200)

    api.scripts.append([Do(compact), Silence()])
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert api.probes == ["100"]
    assert watched_from(api) == ["100", "200"]
    assert inf.stats.relists_on_gone == 1
    # Nothing arrived since the list, so this 410 waits one backoff step.
    assert len(clock.sleeps) == 1


# -- backoff in the loop ----------------------------------------------------------------------
async def test_unreachable_and_throttled_watches_back_off_and_resume(api: FakeApi) -> None:
    api.set_listing(100)
    api.scripts.extend(
        [
            TransportError("connection refused"),
            TransportError("connection reset"),
            TooManyRequests(429, "TooManyRequests", "slow down"),
            [ErrorEvent(status(429, "TooManyRequests", "slow down"))],
        ]
    )
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert watched_from(api) == ["100"] * 5
    assert len(api.lists) == 1
    d = BACKOFF_INITIAL
    assert len(clock.sleeps) == 4
    for i, slept in enumerate(clock.sleeps):
        assert d * 2**i <= slept < 2 * d * 2**i


async def test_a_failing_list_backs_off_and_the_cache_is_not_synced_meanwhile(
    api: FakeApi,
) -> None:
    api.set_listing(100, cm("a", 1))
    api.list_failures.extend([TransportError("refused"), ServerError(500, "x", "y")])
    inf, rec, clock = informer(api)
    assert not inf.has_synced
    async with running(inf):
        await until_parked(api)
        assert inf.has_synced
    assert len(api.lists) == 3
    assert len(clock.sleeps) == 2
    assert clock.sleeps[1] >= 2 * BACKOFF_INITIAL
    assert rec.events == [("add", "a", "1", True)]


async def test_backoff_grows_while_failing_and_restarts_after_two_healthy_minutes(
    api: FakeApi,
) -> None:
    api.set_listing(100)
    refused = TransportError("connection refused")
    api.scripts.extend(
        [refused, refused, refused, [Ev("ADDED", cm("a", 101)), Wait(BACKOFF_RESET + 1)], refused]
    )
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert len(clock.sleeps) == 4
    bounds = [(0.8, 1.6), (1.6, 3.2), (3.2, 6.4), (0.8, 1.6)]
    for slept, (low, high) in zip(clock.sleeps, bounds, strict=True):
        assert low <= slept < high


async def test_backoff_is_capped(api: FakeApi) -> None:
    api.set_listing(100)
    api.scripts.extend([TransportError("connection refused")] * 12)
    inf, _, clock = informer(api)
    async with running(inf):
        await until_parked(api)
    assert len(clock.sleeps) == 12
    assert all(BACKOFF_MAX <= s < 2 * BACKOFF_MAX for s in clock.sleeps[6:])
    assert 25.6 <= clock.sleeps[5] < 51.2  # the last step below the cap
    assert max(clock.sleeps) < 2 * BACKOFF_MAX


# -- transform, handlers, sync ----------------------------------------------------------------
async def test_the_transform_runs_before_anything_is_stored_or_handed_out(
    api: FakeApi,
) -> None:
    def label(obj: Obj) -> Obj:
        obj["metadata"].pop("managedFields", None)
        obj["metadata"]["labels"] = {"seen": "yes"}
        return obj

    api.set_listing(100, cm("listed", 1))
    api.scripts.append([Ev("ADDED", cm("watched", 101))])

    class Keep(Recorder):
        def on_add(self, obj: Obj, initial: bool) -> None:
            seen.append(obj)

    inf, _, _ = informer(api, InformerOptions(namespace=NS, transform=label))
    seen: list[Obj] = []
    inf.add_handler(Keep())
    async with running(inf):
        await until_parked(api)
    assert api.lists[0]["transform"] is label  # the client applies it page by page
    assert len(seen) == 2
    for obj in [*inf.store.list(), *seen]:
        assert obj["metadata"]["labels"] == {"seen": "yes"}
        assert "managedFields" not in obj["metadata"]


async def test_the_default_transform_strips_managed_fields(api: FakeApi) -> None:
    api.set_listing(100, cm("listed", 1))
    api.scripts.append([Ev("ADDED", cm("watched", 101))])
    inf, _, _ = informer(api)
    async with running(inf):
        await until_parked(api)
    assert all("managedFields" not in o["metadata"] for o in inf.store.list())
    assert len(inf.store) == 2


async def test_has_synced_only_after_the_first_list_is_stored(api: FakeApi) -> None:
    api.set_listing(100, cm("a", 1))
    api.list_gate = anyio.Event()
    inf, _, _ = informer(api)
    async with running(inf):
        with anyio.fail_after(DEADLINE):
            while not api.lists:
                await anyio.lowlevel.checkpoint()
        assert not inf.has_synced
        assert len(inf.store) == 0
        api.list_gate.set()
        with anyio.fail_after(DEADLINE):
            await inf.wait_synced()
        assert inf.has_synced
        assert inf.store.keys() == [f"{NS}/a"]
        late = Recorder()
        inf.add_handler(late)  # a handler added after sync gets the cache replayed
        assert late.events == [("add", "a", "1", True)]


async def test_a_handler_that_raises_does_not_stop_the_informer(api: FakeApi) -> None:
    class Broken(Recorder):
        def on_add(self, obj: Obj, initial: bool) -> None:
            raise RuntimeError("handler bug")

    api.set_listing(100, cm("a", 1))
    api.scripts.append([Ev("ADDED", cm("b", 101))])
    inf, rec, _ = informer(api)
    inf.add_handler(Broken())
    async with running(inf):
        await until_parked(api)
    assert ("add", "b", "101", False) in rec.events
    assert watched_from(api) == ["100", "101"]


def test_errors_raised_by_the_fake_are_the_clients_types() -> None:
    """The fake raises what the real client raises for the same Status bodies."""
    assert isinstance(error_from_status(0, expired("1", 2)), Gone)
    big = error_from_status(0, too_large("9", 5))
    assert isinstance(big, ServerError)
    assert isinstance(big, ApiError)
    assert big.details["causes"][0]["reason"] == "ResourceVersionTooLarge"
