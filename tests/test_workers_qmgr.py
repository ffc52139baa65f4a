"""The queue manager's worker mode (``scan=False``) and claims: a worker's
qmgr delivers only what its own cleanup handed it, and the master recovers
only the messages no live process owns. A real FileQueueStore in a temporary
directory (flock needs real files), task.Clock and fake agents."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pymta.bounce.bouncer import Bouncer
from pymta.config import Config
from pymta.master.claims import QueueClaims
from pymta.qmgr.manager import QueueManager
from pymta.queue.model import Envelope, Recipient
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier
from tests.test_qmgr_manager import T0, FakeAgent, FakeCleanup, FakeResolver

CONTENT = b"Subject: test\n\nhello\n"


class Process:
    """One reactor process's queue manager over a shared queue directory."""

    def __init__(
        self, queue: Path, *, scan: bool, claims: bool = True, pid: int = 1, sync: Any = None
    ) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        config = Config.from_text("myhostname = mx.example.org\nmyorigin = example.org\n")
        sync = self.sync = sync or ImmediateSyncBarrier()
        self.store = FileQueueStore(str(queue), sync, clock=self.clock, pid=pid)
        self.agent = FakeAgent("virtual", manual=True)
        self.claims = QueueClaims(self.store.path, sync) if claims else None
        self.qmgr = QueueManager(
            config,
            self.store,
            FakeResolver(),
            {"virtual": self.agent},
            Bouncer(config, FakeCleanup(), self.clock),
            self.clock,
            scan=scan,
            claims=self.claims,
        )

    def enqueue(self) -> tuple[str, Envelope]:
        envelope = Envelope(
            "alice@example.org",
            [Recipient("bob@virt.example", original="bob@virt.example")],
            arrival_time=self.clock.seconds(),
        )
        ids: list[str] = []
        self.store.enqueue(envelope, CONTENT).addCallback(ids.append)
        flush = getattr(self.sync, "flush", None)
        if flush is not None:
            flush()
        return ids[0], envelope


def test_worker_qmgr_never_recovers_or_scans(tmp_path: Path) -> None:
    """With scan=False, start() leaves incoming/, active/ and deferred/ alone,
    now and at every queue_run_delay: they are the master's to recover."""
    queue = tmp_path / "queue"
    master = Process(queue, scan=True, pid=1)
    left, _ = master.enqueue()  # in incoming/, nobody told qmgr
    worker = Process(queue, scan=False, pid=2)
    worker.qmgr.start()
    worker.clock.advance(3600)
    assert worker.agent.requests == []
    assert worker.store.find(left) == "incoming"
    master.qmgr.start()
    assert [r.queue_id for r in master.agent.requests] == [left]


def test_worker_qmgr_delivers_what_its_cleanup_handed_it(tmp_path: Path) -> None:
    """notify_new still works in worker mode: the message is claimed, moved to
    active/, delivered, removed, and the claim released."""
    worker = Process(tmp_path / "queue", scan=False, pid=2)
    worker.qmgr.start()
    qid, envelope = worker.enqueue()
    worker.qmgr.notify_new(qid, envelope)
    assert worker.claims is not None and worker.claims.held() == [qid]
    assert worker.store.find(qid) == "active"
    worker.agent.fire_all()
    assert worker.store.find(qid) is None
    assert worker.claims.held() == []


def test_master_recovers_only_orphans(tmp_path: Path) -> None:
    """recover_orphans takes the messages in incoming/ and active/ that no
    live process has claimed, and leaves a live worker's in-flight ones alone."""
    queue = tmp_path / "queue"
    master = Process(queue, scan=True, pid=1)
    master.qmgr.start()
    live = Process(queue, scan=False, pid=2)
    live.qmgr.start()
    busy, envelope = live.enqueue()
    live.qmgr.notify_new(busy, envelope)  # in flight in the live worker
    dead = Process(queue, scan=False, pid=3)
    dead.qmgr.start()
    orphan_active, envelope = dead.enqueue()
    dead.qmgr.notify_new(orphan_active, envelope)
    orphan_incoming, _ = dead.enqueue()  # accepted, not yet handed to qmgr
    assert dead.claims is not None
    for qid in dead.claims.held():  # the kernel drops a dead process's locks
        dead.claims.release(qid)
    master.qmgr.recover_orphans()
    taken = sorted(r.queue_id for r in master.agent.requests)
    assert taken == sorted([orphan_active, orphan_incoming])
    assert busy in live.qmgr.in_flight() and busy not in master.qmgr.in_flight()


def test_a_message_the_master_took_is_not_delivered_by_its_worker(tmp_path: Path) -> None:
    """If the master recovers a message from incoming/ before the worker's
    cleanup hands it over, the worker's notify_new finds it claimed and skips
    it: delivered once."""
    queue = tmp_path / "queue"
    master = Process(queue, scan=True, pid=1)
    master.qmgr.start()
    worker = Process(queue, scan=False, pid=2)
    worker.qmgr.start()
    qid, envelope = worker.enqueue()
    master.qmgr.recover_orphans()
    worker.qmgr.notify_new(qid, envelope)
    assert [r.queue_id for r in master.agent.requests] == [qid]
    assert worker.agent.requests == []


def test_without_claims_nothing_changes(tmp_path: Path) -> None:
    """A single-process qmgr (no claims) recovers at start as before, and
    recover_orphans is a no-op (it could not tell orphans from live mail)."""
    queue = tmp_path / "queue"
    solo = Process(queue, scan=True, claims=False)
    qid, _ = solo.enqueue()
    solo.qmgr.start()
    assert [r.queue_id for r in solo.agent.requests] == [qid]
    other, _ = solo.enqueue()
    solo.qmgr.recover_orphans()
    assert solo.store.find(other) == "incoming"


def test_the_master_deferred_scan_also_recovers_orphans(tmp_path: Path) -> None:
    """Every queue_run_delay scan of the master takes unclaimed messages from
    active/ too (left by a process whose death nobody reported), not those a
    live worker holds."""
    queue = tmp_path / "queue"
    master = Process(queue, scan=True, pid=1)
    master.qmgr.start()
    live = Process(queue, scan=False, pid=2)
    live.qmgr.start()
    busy, envelope = live.enqueue()
    live.qmgr.notify_new(busy, envelope)
    gone = Process(queue, scan=False, pid=3, claims=False)  # holds no lock
    gone.qmgr.start()
    orphan, envelope = gone.enqueue()
    gone.qmgr.notify_new(orphan, envelope)
    assert master.agent.requests == []
    master.clock.advance(300)  # queue_run_delay
    assert [r.queue_id for r in master.agent.requests] == [orphan]


class ManualBarrier:
    """The store's background thread, run by hand: flush() runs the queued
    work in order and fires each caller's Deferred right after its work."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(
        self,
        work: Callable[[], Any],
        durable: bool = True,
        files: Sequence[str] = (),
        dirs: Sequence[str] = (),
        soon: bool = False,
    ) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((work, d))
        return d

    def sync(self, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        return self.run(lambda: None)

    def flush(self) -> None:
        while self.pending:
            work, d = self.pending.pop(0)
            d.callback(work())


def test_orphan_recovery_skips_what_the_master_settled_while_listing(tmp_path: Path) -> None:
    """A message the master delivers from deferred/ (it holds no claim on it)
    and settles while an orphan listing is under way is still listed in
    active/ (its removal is queued behind the listing): it must not be taken
    a second time."""
    barrier = ManualBarrier()
    master = Process(tmp_path / "queue", scan=True, pid=1, sync=barrier)
    qid, _ = master.enqueue()
    master.store.move(qid, "incoming", "deferred")
    master.store.set_next_attempt(qid, T0)
    barrier.flush()
    master.qmgr.start()  # takes it from deferred/ (moved to active/ in the background)
    barrier.flush()
    assert master.store.find(qid) == "active"
    assert [r.queue_id for r in master.agent.requests] == [qid]
    master.qmgr.recover_orphans()  # the listing is queued ...
    master.agent.fire_all()  # ... before the removal of the delivered message
    barrier.flush()
    assert [r.queue_id for r in master.agent.requests] == [qid]
    assert master.store.find(qid) is None


def test_master_start_removes_unfinished_queue_files_only(tmp_path: Path) -> None:
    """A queue file a process died writing (``incoming/ID.tmp``, never
    acknowledged) is removed when the master's queue manager starts; a
    worker's queue manager leaves it alone, and finished queue files stay."""
    import os

    queue = tmp_path / "queue"
    master = Process(queue, scan=True, pid=1)
    kept, _ = master.enqueue()
    leftover = queue / "incoming" / f"{kept[:-1]}0.tmp"
    leftover.write_bytes(b"half a queue file")
    os.utime(leftover, (T0 - 60, T0 - 60))
    Process(queue, scan=False, pid=2).qmgr.start()
    assert leftover.exists()
    master.qmgr.start()
    assert not leftover.exists()
    assert master.store.find(kept) is not None
