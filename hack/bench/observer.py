"""The harness's own view of status.status: one list, then one watch of every Workspace.

Every time is taken when the event is read from the watch, the same way for every
controller. The observer answers three questions:

- convergence: when did the first state appear, and when did the last workspace reach
  the state it must end in (``expect`` / ``converged``);
- latency: when did a given workspace reach a given state, and when did the watch
  deliver the condition write that asked for it (``wait_for``);
- the resourceVersion of every workspace, for the raw limit's patches.
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
    expected: str
    done: anyio.Event = field(default_factory=anyio.Event)
    done_at: float | None = None
    # resourceVersion → when the watch delivered it; the condition write is among them.
    seen: dict[str, float] = field(default_factory=dict)


class StateObserver:
    def __init__(self, client: Client) -> None:
        self._client = client
        self.states: dict[Key, str | None] = {}
        self.versions: dict[Key, str] = {}
        self.events = 0
        self._expected: dict[Key, str] = {}
        self._matched = 0
        self.first_write_at: float | None = None
        self.first_write = anyio.Event()
        self.converged_at: float | None = None
        self.converged = anyio.Event()
        self._waiters: dict[Key, Waiter] = {}

    # -- what the scenarios ask -----------------------------------------------------------
    def expect(self, expected: dict[Key, str]) -> None:
        """Start counting towards ``expected``; states already right count at once."""
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

    def wait_for(self, key: Key, expected: str) -> Waiter:
        """Register before writing: the answer may arrive before the write's response."""
        waiter = Waiter(expected)
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
        items, rv = await self._client.list_all(WORKSPACE)
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
        if state is not None and previous is None and self.first_write_at is None:
            self.first_write_at = now
            self.first_write.set()
        want = self._expected.get(key)
        if want is not None and previous != state:
            self._matched += (state == want) - (previous == want)
            self._check_converged(now)
        waiter = self._waiters.get(key)
        if waiter is not None:
            waiter.seen[meta["resourceVersion"]] = now
            if state == waiter.expected and waiter.done_at is None:
                waiter.done_at = now
                waiter.done.set()

    def _check_converged(self, now: float) -> None:
        if self._expected and self._matched == len(self._expected):
            if self.converged_at is None:
                self.converged_at = now
            self.converged.set()
