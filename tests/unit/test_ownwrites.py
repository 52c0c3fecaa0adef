"""OwnWrites: the echo of an own write is dropped, whichever of the echo and the write's
answer comes first, and no other update is ever lost."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import Conflict
from reconciler.ownwrites import OwnWrites, Write
from reconciler.predicate import Predicate
from reconciler.request import Request
from reconciler.resource import Obj


def ws(uid: str, rv: str) -> Obj:
    return {"metadata": {"name": f"w-{uid}", "namespace": "ns", "uid": uid, "resourceVersion": rv}}


def bound() -> tuple[OwnWrites, list[Request]]:
    own, queued = OwnWrites(), []
    own.requeue_with(queued.append)
    return own, queued


def test_is_a_predicate_that_passes_creates_and_deletes() -> None:
    p: Predicate = OwnWrites()
    assert p.create(ws("a", "1"))
    assert p.delete(ws("a", "1"))


def test_an_echo_after_the_answer_is_dropped_once() -> None:
    own, queued = bound()
    with own.writing(ws("a", "4")) as w:
        w.answered(ws("a", "5"))
    assert not own.update(ws("a", "4"), ws("a", "5"))
    assert own.update(ws("a", "5"), ws("a", "5"))  # replayed later: not remembered
    assert (queued, len(own)) == ([], 0)


def test_an_echo_before_the_answer_is_held_and_then_dropped() -> None:
    own, queued = bound()
    with own.writing(ws("a", "4")) as w:
        assert not own.update(ws("a", "4"), ws("a", "5"))
        w.answered(ws("a", "5"))
    assert (queued, len(own)) == ([], 0)
    assert own.update(ws("a", "5"), ws("a", "6"))


def test_another_writers_update_held_during_a_failed_write_is_queued() -> None:
    own, queued = bound()
    with pytest.raises(Conflict), own.writing(ws("a", "4")):
        assert not own.update(ws("a", "4"), ws("a", "5"))  # theirs: ours gets 409
        raise Conflict(409, "Conflict", "the object has been modified")
    assert queued == [Request("ns", "w-a")]
    assert len(own) == 0


def test_an_update_held_that_is_not_the_answered_version_is_queued() -> None:
    # A relist can deliver a later version than ours in one update.
    own, queued = bound()
    with own.writing(ws("a", "4")) as w:
        assert not own.update(ws("a", "4"), ws("a", "7"))
        assert own.update(ws("a", "7"), ws("a", "8"))  # only one is held
        w.answered(ws("a", "5"))
    assert queued == [Request("ns", "w-a")]


def test_another_writers_update_after_the_answer_passes_and_forgets() -> None:
    own, _ = bound()
    with own.writing(ws("a", "4")) as w:
        w.answered(ws("a", "6"))
    assert own.update(ws("a", "4"), ws("a", "5"))  # older, still on its way
    assert own.update(ws("a", "5"), ws("a", "6"))  # forgotten: reconciled as usual


def test_unbound_it_holds_nothing_back() -> None:
    own = OwnWrites()
    with own.writing(ws("a", "4")) as w:
        assert own.update(ws("a", "4"), ws("a", "5"))
        w.answered(ws("a", "5"))
    assert len(own) == 1  # remembered: harmless, the next update forgets it


def test_objects_and_incarnations_do_not_share_expectations() -> None:
    own, _ = bound()
    with own.writing(ws("a", "4")) as w:
        assert own.update(ws("b", "4"), ws("b", "5"))
        w.answered(ws("a", "5"))
    assert own.update(ws("new-uid", "4"), ws("new-uid", "5"))
    assert not own.update(ws("a", "4"), ws("a", "5"))


def test_delete_forgets() -> None:
    own, _ = bound()
    with own.writing(ws("a", "4")) as w:
        w.answered(ws("a", "5"))
    assert own.delete(ws("a", "5"))
    assert len(own) == 0


def test_objects_without_uid_or_version_are_never_held_or_remembered() -> None:
    own, queued = bound()
    with own.writing({"metadata": {"name": "x"}}) as w:
        w.answered({"metadata": {"name": "x", "resourceVersion": "2"}})
    with own.writing(ws("a", "4")) as w:
        assert own.update({}, {"metadata": {"uid": "a", "resourceVersion": 5}})
        w.answered({"metadata": {"uid": "a"}})
    assert own.update({}, {"metadata": "garbage"})
    assert (queued, len(own)) == ([], 0)


# -- any interleaving over a few objects: nothing but an own write's version is lost -------

_steps = st.lists(
    st.tuples(
        st.sampled_from(["begin", "update", "answer", "fail", "delete"]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=40,
)


@given(_steps)
def test_an_update_is_lost_only_when_it_is_an_own_writes_answered_version(
    steps: list[tuple[str, str]],
) -> None:
    own, queued = bound()
    version = {"a": 1, "b": 1}  # the object's version on the server
    flights: dict[str, tuple[ExitStack, Write]] = {}
    answered: dict[str, set[str]] = {"a": set(), "b": set()}
    lost: list[tuple[str, str]] = []  # (uid, version) of updates not let through
    held: dict[str, str] = {}
    for op, uid in steps:
        version[uid] += 1
        rv = str(version[uid])
        if op == "begin" and uid not in flights:
            stack = ExitStack()
            flights[uid] = (stack, stack.enter_context(own.writing(ws(uid, rv))))
        elif op in ("answer", "fail") and uid in flights:
            stack, w = flights.pop(uid)
            if op == "answer":
                w.answered(ws(uid, rv))
                answered[uid].add(rv)
            before = len(queued)
            stack.close()
            if uid in held and len(queued) == before:
                lost.append((uid, held[uid]))
            held.pop(uid, None)
        elif op == "update":
            if not own.update(ws(uid, str(version[uid] - 1)), ws(uid, rv)):
                if uid in flights:
                    held[uid] = rv
                else:
                    lost.append((uid, rv))
        elif op == "delete":
            assert own.delete(ws(uid, rv))
    for uid, rv in lost:
        assert rv in answered[uid], f"{uid}@{rv} was lost, yet no own write answered it"
    assert all(r.name in ("w-a", "w-b") for r in queued)
