"""The IQueueStore rule for changes, run against both stores: changes apply
in call order, each fires True once applied (False when it failed, and the
later ones still apply), and a reader sees a change once it has fired.

FileQueueStore runs here with its changes held back on a barrier thread
that the test runs by hand, so "later" is really later; MemoryQueueStore
applies them at once. The same tests must hold for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.queue.interface import IQueueStore
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.queue.store import FileQueueStore
from pymta.sync import SyncBarrier


class HeldThread:
    """A barrier thread that keeps its work until the test runs it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((work, d))
        return d

    def run_all(self) -> None:
        while self.jobs:
            work, d = self.jobs.pop(0)
            try:
                result = work()
            except Exception:
                d.errback()
            else:
                d.callback(result)


@dataclass
class Rig:
    store: FileQueueStore | MemoryQueueStore
    settle: Callable[[], None]


@pytest.fixture(params=["file", "memory"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    clock = Clock()
    clock.advance(1700000000)
    if request.param == "memory":
        yield Rig(MemoryQueueStore(clock), lambda: None)
        return
    thread = HeldThread()
    barrier = SyncBarrier(
        str(tmp_path), "syncfs", run_in_thread=thread, sync_function=lambda f, d: None
    )
    yield Rig(FileQueueStore(str(tmp_path / "queue"), barrier, clock), thread.run_all)


def _queued(rig: Rig, recipients: int = 2) -> str:
    envelope = Envelope(
        "s@example.org", [Recipient(f"r{i}@example.com") for i in range(recipients)]
    )
    ids: list[str] = []
    rig.store.enqueue(envelope, b"Subject: x\n\nbody\n").addCallback(ids.append)
    rig.settle()
    assert len(ids) == 1
    return ids[0]


def _fired(d: Deferred[bool], order: list[tuple[str, bool]], name: str) -> None:
    d.addCallback(lambda ok: order.append((name, ok)))


def test_both_stores_provide_the_interface(rig: Rig) -> None:
    """remove_stale_temporaries is part of the interface, and both stores have it."""
    assert verifyObject(IQueueStore, rig.store)
    assert rig.store.remove_stale_temporaries(0) == []


def test_a_chain_of_changes_applies_in_call_order(rig: Rig) -> None:
    """move, mark_done on the new queue, move again, set_next_attempt and
    record_defer, called without waiting, end as if each waited for the one
    before; their Deferreds fire True, in call order."""
    store = rig.store
    qid = _queued(rig)
    order: list[tuple[str, bool]] = []
    _fired(store.move(qid, "incoming", "active"), order, "move")
    _fired(store.mark_done(qid, "active", 0), order, "mark")
    _fired(store.move(qid, "active", "deferred"), order, "defer")
    _fired(store.set_next_attempt(qid, 1700000500.0), order, "touch")
    _fired(store.record_defer(qid, 1, "4.4.1", "no answer"), order, "log")
    rig.settle()
    assert order == [
        ("move", True),
        ("mark", True),
        ("defer", True),
        ("touch", True),
        ("log", True),
    ]
    assert store.find(qid) == "deferred"
    envelope, _content = store.read(qid, "deferred")
    assert [r.done for r in envelope.recipients] == [True, False]
    assert store.next_attempt(qid) == 1700000500.0
    assert store.defer_reasons(qid) == {1: ("4.4.1", "no answer")}


def test_a_reader_sees_a_change_once_it_fired(rig: Rig) -> None:
    """In the callback of a move, find() and list() show the file where it went."""
    store = rig.store
    qid = _queued(rig)
    seen: list[object] = []
    store.move(qid, "incoming", "active").addCallback(
        lambda _: seen.append((store.find(qid), store.list("active"), store.list("incoming")))
    )
    rig.settle()
    assert seen == [("active", [qid], [])]


def test_remove_after_move_removes_the_file_and_its_defer_log(rig: Rig) -> None:
    """remove names the queue the earlier move put the file in."""
    store = rig.store
    qid = _queued(rig)
    order: list[tuple[str, bool]] = []
    _fired(store.record_defer(qid, 0, "4.0.0", "later"), order, "log")
    _fired(store.move(qid, "incoming", "active"), order, "move")
    _fired(store.remove(qid, "active"), order, "remove")
    rig.settle()
    assert order == [("log", True), ("move", True), ("remove", True)]
    assert store.find(qid) is None
    assert store.defer_reasons(qid) == {}


def test_a_failed_change_fires_false_and_later_ones_still_apply(rig: Rig) -> None:
    """A change that cannot be applied (the file is not where it says) fires
    False, never errbacks, and the changes called after it are applied."""
    store = rig.store
    qid = _queued(rig)
    order: list[tuple[str, bool]] = []
    _fired(store.move(qid, "active", "deferred"), order, "wrong move")
    _fired(store.mark_done(qid, "incoming", 1), order, "mark")
    _fired(store.move(qid, "incoming", "hold"), order, "hold")
    rig.settle()
    assert order == [("wrong move", False), ("mark", True), ("hold", True)]
    assert store.find(qid) == "hold"
    assert [r.done for r in store.read(qid, "hold")[0].recipients] == [False, True]


def test_quarantine_follows_earlier_changes(rig: Rig) -> None:
    """quarantine after a move takes the file from the queue the move put it in."""
    store = rig.store
    qid = _queued(rig)
    order: list[tuple[str, bool]] = []
    _fired(store.move(qid, "incoming", "active"), order, "move")
    _fired(store.quarantine(qid, "active", "test"), order, "quarantine")
    rig.settle()
    assert order == [("move", True), ("quarantine", True)]
    assert store.find(qid) == "corrupt"


def test_programming_errors_raise_at_the_call(rig: Rig) -> None:
    """A bad queue name, a malformed queue id or a recipient index out of
    range is a programming error: it raises at once in both stores."""
    store = rig.store
    qid = _queued(rig)
    with pytest.raises(ValueError):
        store.move(qid, "incoming", "nowhere")
    with pytest.raises(ValueError):
        store.move("../etc", "incoming", "active")
    with pytest.raises(IndexError):
        store.mark_done(qid, "incoming", 5)
