"""The harness's own view of status.status: one list, then one watch of every Workspace.

Every time is taken when the event is read from the watch, the same way for every
controller. The observer answers four questions:

- convergence: when did the first state appear, and when did the last workspace reach
  the state it must end in (``expect`` / ``converged``);
- latency: when did a given workspace reach a given state, and when did the watch
  deliver the condition write that asked for it (``wait_for``);
- the blank window: for a version in which status.status disappeared (KAITO's status
  PUT drops it), when the watch delivered it and when it delivered the first version
  that has the expected state again (``Waiter.blanked_at`` → ``Waiter.done_at``);
- the resourceVersion and generation of every workspace, for the raw limit's patches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from controllers.workspace.reconciler import WORKSPACE
from hack.bench.workload import Key
from reconciler.client import Client
from reconciler.errors import Gone, TransportError

WATCH_IDLE_TIMEOUT = 30.0
RETRY_DELAY = 0.2

Obj = dict[str, Any]


@dataclass
class Waiter:
    """One write's answer on the watch, for a workspace nothing else writes meanwhile.

    Invariants: ``blanked_at`` is the delivery of the first version since registration
    without status.status; ``done_at`` is the delivery of the first version with
    ``expected`` that is, when ``after_blank``, at or after that one (a write that keeps
    the state is answered only by the field coming back, not by the value it had before).
    """

    expected: str
    after_blank: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    done_at: float | None = None
    blanked_at: float | None = None
    # resourceVersion → when the watch delivered it; the condition write is among them.
    seen: dict[str, float] = field(default_factory=dict)

    @property
    def blank_s(self) -> float | None:
        """Seconds status.status was missing on the watch, if it went missing and came back."""
        if self.blanked_at is None or self.done_at is None:
            return None
        return self.done_at - self.blanked_at


class StateObserver:
    def __init__(self, client: Client) -> None:
        self._client = client
        self.states: dict[Key, str | None] = {}
        self.versions: dict[Key, str] = {}
        self.generations: dict[Key, int] = {}
        self.events = 0
        # Versions in which status.status disappeared (it was there in the one before).
        self.disappearances = 0
        self._expected: dict[Key, str] = {}
        self._matched = 0
        self.first_write_at: float | None = None
        self.first_write = anyio.Event()
        self.converged_at: float | None = None
        self.converged = anyio.Event()
        self._waiters: dict[Key, Waiter] = {}

    # -- what the scenarios ask -----------------------------------------------------------
    def expect(self, expected: dict[Key, str]) -> None:
        """Start counting towards ``expected``; states already right count at once.

        A workspace counts while status.status holds its expected state: a version
        without the field (what every KAITO status write leaves) does not count, whatever
        a contender remembers elsewhere."""
        self._expected = dict(expected)
        self._matched = sum(1 for k, s in self._expected.items() if self.states.get(k) == s)
        self.first_write_at = None
        self.first_write = anyio.Event()
        self.converged_at = None
        self.converged = anyio.Event()
        self._check_converged(time.monotonic())

    @property
    def matched(self) -> int:
        return self._matched

    def wrong(self, limit: int = 5) -> list[str]:
        """A few workspaces not (yet) in their expected state, for error messages."""
        out = []
        for k, s in self._expected.items():
            if self.states.get(k) != s:
                out.append(f"{k.namespace}/{k.name}: {self.states.get(k)!r}, want {s!r}")
                if len(out) >= limit:
                    break
        return out

    def wait_for(self, key: Key, expected: str, *, after_blank: bool = False) -> Waiter:
        """Register before writing: the answer may arrive before the write's response.
        ``after_blank`` for a write that keeps the state: only status.status coming back
        after it went missing answers it."""
        waiter = Waiter(expected, after_blank)
        self._waiters[key] = waiter
        return waiter

    def forget(self, key: Key) -> None:
        self._waiters.pop(key, None)

    # -- the watch ----------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        rv = await self._relist()
        task_status.started()
        while True:
            try:
                async with self._client.watch(
                    WORKSPACE, resource_version=rv, idle_timeout=WATCH_IDLE_TIMEOUT
                ) as events:
                    async for ev in events:
                        now = time.monotonic()
                        rv = ev.object["metadata"].get("resourceVersion", rv)
                        if ev.type in ("ADDED", "MODIFIED"):
                            self._observe(ev.object, now)
            except Gone:
                rv = await self._relist()
            except (TimeoutError, TransportError):
                await anyio.sleep(RETRY_DELAY)

    async def _relist(self) -> str:
        # Only what _observe reads is kept: at 100,000 workspaces the full objects of a
        # listing would take over a GiB of the harness's memory.
        items, rv = await self._client.list_all(WORKSPACE, transform=_slim)
        now = time.monotonic()
        for obj in items:
            self._observe(obj, now)
        return rv

    def _observe(self, obj: Obj, now: float) -> None:
        self.events += 1
        meta = obj["metadata"]
        key = Key(meta["namespace"], meta["name"])
        state = (obj.get("status") or {}).get("status")
        previous = self.states.get(key)
        self.states[key] = state
        self.versions[key] = meta["resourceVersion"]
        self.generations[key] = int(meta.get("generation") or 0)
        if state is None and previous is not None:
            self.disappearances += 1
        if state is not None and previous is None and self.first_write_at is None:
            self.first_write_at = now
            self.first_write.set()
        want = self._expected.get(key)
        if want is not None and previous != state:
            self._matched += (state == want) - (previous == want)
            self._check_converged(now)
        waiter = self._waiters.get(key)
        if waiter is not None and waiter.done_at is None:
            waiter.seen[meta["resourceVersion"]] = now
            if state is None and waiter.blanked_at is None:
                waiter.blanked_at = now
            elif state == waiter.expected and (
                waiter.blanked_at is not None or not waiter.after_blank
            ):
                waiter.done_at = now
                waiter.done.set()

    def _check_converged(self, now: float) -> None:
        if self._expected and self._matched == len(self._expected):
            if self.converged_at is None:
                self.converged_at = now
            self.converged.set()


def _slim(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "metadata": {
            k: meta.get(k) for k in ("namespace", "name", "resourceVersion", "generation")
        },
        "status": {"status": (obj.get("status") or {}).get("status")},
    }
