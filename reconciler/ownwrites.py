"""Own-write echoes: the watch event a controller's own write causes, recognised so that
it need not be reconciled again.

Every write a reconciler makes to the object it reconciles comes back on the watch as
an update, and controller-runtime reconciles it: a second reconcile per change that,
for a reconciler whose result depends only on the object, finds nothing to do.
:class:`OwnWrites` learns the resourceVersion the API server answered for each own
write, and its predicate drops the one update event that carries exactly that version.

Why it is safe: a resourceVersion names one state of one object, so that event holds
nothing the writer did not already see in the answer to its write. Every other update
passes. The echo often outruns the write's answer (measured against kube-apiserver
1.36: for six of eight fresh workspaces the watch event was handled first), so an
update that arrives while a write to its object is in flight is held back, not
dropped: when the answer names that same version it was the echo; otherwise (the write
failed, or the update was another writer's) its request is added to the queue, exactly
as it would have been. At most one remembered version per object: the first update of
the object after the answer forgets it either way, and so does a delete.

Only for reconcilers whose outcome is a function of the object they read: one that
also reads other objects, or the clock without returning ``requeue_after``, must see the
echo. Wrap each write to the reconciled object in :meth:`OwnWrites.writing`, and
hand the controller's queue to :meth:`OwnWrites.requeue_with` (without it nothing is
held back: only echoes that come after the answer are dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from reconciler.handler import request_for
from reconciler.request import Request
from reconciler.resource import Obj


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _uid(obj: Obj) -> str | None:
    uid = _meta(obj).get("uid")
    return uid if isinstance(uid, str) else None


@dataclass
class _InFlight:
    held_version: str | None = None  # the update held back meanwhile, if one came
    held_request: Request | None = None


class Write:
    """One write in flight; tell it the API server's answer with :meth:`answered`."""

    def __init__(self) -> None:
        self.answer: Obj | None = None

    def answered(self, written: Obj) -> None:
        self.answer = written


class OwnWrites:
    """A predicate for a controller's ``for_`` watch that drops the echo of each write
    made inside :meth:`writing`. Shared by one reconciler and that watch."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._requeue: Callable[[Request], None] | None = None

    def __len__(self) -> int:
        """Objects with a remembered version or a write in flight."""
        return len(self._versions) + len(self._in_flight)

    def requeue_with(self, add: Callable[[Request], None]) -> None:
        """Where a held-back update goes when it was not the echo: the controller's
        ``queue.add``."""
        self._requeue = add

    @contextmanager
    def writing(self, read: Obj) -> Iterator[Write]:
        """Around one write to ``read`` (the object as the reconciler read it)::

            with own_writes.writing(obj) as w:
                w.answered(await client.patch_status(...))

        Leaving without an answer (the write raised) releases any held-back update."""
        uid = _uid(read)
        write = Write()
        if uid is None:
            yield write
            return
        flight = _InFlight()
        self._in_flight[uid] = flight
        self._versions.pop(uid, None)
        try:
            yield write
        finally:
            del self._in_flight[uid]
            version = _meta(write.answer).get("resourceVersion") if write.answer else None
            if flight.held_request is not None:
                if version is None or flight.held_version != version:
                    self._release(flight.held_request)
            elif isinstance(version, str):
                self._versions[uid] = version

    def _release(self, request: Request) -> None:
        if self._requeue is not None:
            self._requeue(request)

    def create(self, obj: Obj) -> bool:
        return True

    def update(self, old: Obj, new: Obj) -> bool:
        uid = _uid(new)
        if uid is None:
            return True
        flight = self._in_flight.get(uid)
        if flight is not None:
            version = _meta(new).get("resourceVersion")
            if self._requeue is None or flight.held_request is not None:
                return True
            if not isinstance(version, str):
                return True
            flight.held_version, flight.held_request = version, request_for(new)
            return False
        expected = self._versions.pop(uid, None)
        return expected is None or expected != _meta(new).get("resourceVersion")

    def delete(self, obj: Obj) -> bool:
        uid = _uid(obj)
        if uid is not None:
            self._versions.pop(uid, None)
        return True
