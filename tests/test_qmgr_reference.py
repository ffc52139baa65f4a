"""The queue manager holds references, not messages: the active queue's
limits (qmgr_message_active_limit, qmgr_message_recipient_limit), queue
files read through the read runner (a worker thread in production), and
the done mark written before the status=sent line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from pymta.bounce.bouncer import Bouncer
from pymta.config import Config
from pymta.delivery.interface import DeliveryRequest, RecipientStatus
from pymta.qmgr.manager import QueueManager
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import read_all
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier
from tests.test_qmgr_manager import T0, FakeAgent, FakeCleanup, FakeResolver, Rig, maillines

__all__ = ["maillines"]  # the fixture, for pytest


def _delivered(agent: FakeAgent) -> list[str]:
    return [r.queue_id for r in agent.requests]


def test_active_limit_leaves_the_rest_in_incoming_until_there_is_room() -> None:
    """With qmgr_message_active_limit = 2, five new messages put two in the
    active queue; the others wait in incoming/ and are taken, in turn, as
    messages leave; all five are delivered."""
    agent = FakeAgent("virtual", manual=True)
    rig = Rig("qmgr_message_active_limit = 2\n", agents={"virtual": agent})
    rig.qmgr.start()
    qids = [rig.submit(f"u{i}@virt.example") for i in range(5)]
    assert len(agent.pending) == 2
    assert sorted(rig.qmgr.in_flight()) == sorted(qids[:2])
    assert sorted(rig.store.list("incoming")) == sorted(qids[2:])
    for _ in range(10):
        if not agent.pending:
            break
        agent.fire_all()
        rig.clock.advance(0)  # the refill runs once per reactor turn
        assert len(rig.qmgr.in_flight()) <= 2
    assert sorted(_delivered(agent)) == sorted(qids)
    assert rig.store.list("incoming") == [] and rig.store.list("active") == []


def test_recipient_limit_bounds_the_recipients_in_memory() -> None:
    """qmgr_message_recipient_limit = 3: a message of two recipients and
    then one of two more do not fit together; the second waits until the
    first is done. A single message over the limit still goes alone."""
    agent = FakeAgent("virtual", manual=True)
    rig = Rig("qmgr_message_recipient_limit = 3\n", agents={"virtual": agent})
    rig.qmgr.start()
    first = rig.submit("a@virt.example", "b@virt.example")
    second = rig.submit("c@virt.example", "d@virt.example")
    assert rig.qmgr.in_flight() == [first]
    assert rig.store.list("incoming") == [second]
    agent.fire_all()
    rig.clock.advance(0)
    assert rig.qmgr.in_flight() == [second]
    agent.fire_all()
    big = rig.submit(*(f"r{i}@virt.example" for i in range(5)))
    assert rig.qmgr.in_flight() == [big]


class HeldRunner:
    """A read runner that keeps the reads until the test runs them."""

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
                d.callback(work())
            except Exception:
                d.errback()


def _file_rig(
    tmp_path: Path, runner: Any = None, manual: bool = False
) -> tuple[QueueManager, FileQueueStore, FakeAgent]:
    clock = Clock()
    clock.advance(T0)
    config = Config.from_text("myhostname = mx.example.org\nmyorigin = example.org\n")
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), clock)
    agent = FakeAgent("virtual", manual=manual)
    kwargs = {"read_runner": runner} if runner is not None else {}
    qmgr = QueueManager(
        config,
        store,
        FakeResolver(),
        {"virtual": agent},
        Bouncer(config, FakeCleanup(), clock),
        clock,
        **kwargs,
    )
    return qmgr, store, agent


def _enqueue(store: FileQueueStore, content: bytes, *rcpts: str) -> str:
    ids: list[str] = []
    envelope = Envelope("s@example.org", [Recipient(r, r) for r in rcpts], T0)
    store.enqueue(envelope, content).addCallback(ids.append)
    return ids[0]


def test_queue_files_found_at_start_are_read_through_the_read_runner(tmp_path: Path) -> None:
    """Recovery reads queue files only through the read runner (the thread
    pool in production): nothing is delivered before the runner runs; then
    the agent gets the file by reference, content offset and size, and
    reads exactly the queued content from it."""
    runner = HeldRunner()
    qmgr, store, agent = _file_rig(tmp_path, runner, manual=True)
    content = b"Subject: big\n\n" + b"line of text\n" * 20000
    qid = _enqueue(store, content, "u@virt.example")
    qmgr.start()
    assert agent.requests == [] and len(runner.jobs) == 1
    runner.run_all()
    (request,) = agent.requests
    message = request.message
    assert (message.queue, message.queue_id, message.size) == ("active", qid, len(content))
    assert read_all(message) == content
    agent.fire_all()
    assert store.list("active") == [] and store.list("incoming") == []


def test_new_message_waits_for_its_move_and_carries_a_reference(tmp_path: Path) -> None:
    """notify_new needs no read: the reference comes from what the store
    remembers of the file it wrote, naming active/ where the move put it."""
    qmgr, store, agent = _file_rig(tmp_path, HeldRunner(), manual=True)
    qmgr.start()
    content = b"Subject: x\n\nbody\n"
    envelope = Envelope("s@example.org", [Recipient("u@virt.example")], T0)
    ids: list[str] = []
    store.enqueue(envelope, content).addCallback(ids.append)
    qmgr.notify_new(ids[0], envelope)
    (request,) = agent.requests
    assert read_all(request.message) == content
    assert request.message.queue == "active"


def test_done_mark_is_in_the_queue_file_before_the_sent_line(
    tmp_path: Path, maillines: list[str]
) -> None:
    """When qmgr logs status=sent the recipient is already marked done in
    the queue file (a process crash after that line never repeats it)."""
    qmgr, store, _agent = _file_rig(tmp_path)
    qid = _enqueue(store, b"Subject: x\n\nbody\n", "u@virt.example")
    done_when_logged: list[bool] = []

    @implementer(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        if event.get("pymta_maillog") and "status=sent" in event["text"]:
            envelope, _ = store.read_envelope(qid, "active")
            done_when_logged.append(envelope.recipients[0].done)

    globalLogPublisher.addObserver(observer)
    try:
        qmgr.start()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert done_when_logged == [True]
    assert any(f"{qid}: removed" in line for line in maillines)


def test_a_recipient_the_agent_marked_is_not_marked_again(tmp_path: Path) -> None:
    """An agent that marked a recipient itself (as the Maildir writer does
    on its thread) leaves qmgr nothing to write for it."""
    qmgr, store, agent = _file_rig(tmp_path)
    original = agent.deliver
    marks: list[int] = []

    def deliver(request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        request.message.mark_done(0)
        inner = request.message.mark_done
        request.message.mark_done = lambda i: (marks.append(i), inner(i))  # type: ignore[method-assign]
        return original(request)

    agent.deliver = deliver  # type: ignore[method-assign]
    _enqueue(store, b"Subject: x\n\nbody\n", "u@virt.example", "v@virt.example")
    qmgr.start()
    assert marks == [1]  # only the one the agent left


class _CountingRunner(HeldRunner):
    """A held read runner that knows when it is running a job."""

    running = False

    def run_all(self) -> None:
        self.running = True
        try:
            super().run_all()
        finally:
            self.running = False


def test_expiry_and_delay_warning_read_the_queue_only_in_the_read_runner(
    tmp_path: Path,
) -> None:
    """The defer log's last reasons (for an expiring message) and whether a
    delay warning went out are read by the read runner, never on the
    reactor thread; the expired message is still returned with its last
    reason and then removed."""
    clock = Clock()
    clock.advance(T0)
    config = Config.from_text(
        "myhostname = mx.example.org\nmyorigin = example.org\n"
        "maximal_queue_lifetime = 1h\nqueue_run_delay = 60s\n"
        "delay_warning_time = 10m\n"
    )
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), clock)
    runner = _CountingRunner()
    cleanup = FakeCleanup()
    # Answered by the test, on the reactor thread (not inside a read).
    agent = FakeAgent("virtual", status="4.4.1", manual=True)
    qmgr = QueueManager(
        config,
        store,
        FakeResolver(),
        {"virtual": agent},
        Bouncer(config, cleanup, clock),
        clock,
        read_runner=runner,
    )
    reads: list[str] = []

    def only_in_runner(name: str, real: Callable[[str], Any]) -> Callable[[str], Any]:
        def read(queue_id: str) -> Any:
            assert runner.running, f"{name} read on the reactor thread"
            reads.append(name)
            return real(queue_id)

        return read

    store.defer_reasons = only_in_runner("defer_reasons", store.defer_reasons)  # type: ignore[method-assign]
    store.delay_warning_sent = only_in_runner(  # type: ignore[method-assign]
        "delay_warning_sent", store.delay_warning_sent
    )
    qid = _enqueue(store, b"Subject: s\n\nbody\n", "bob@virt.example")
    qmgr.start()
    for _ in range(40):
        runner.run_all()
        agent.fire_all()
        clock.advance(300)
    runner.run_all()
    agent.fire_all()
    runner.run_all()
    assert {"defer_reasons", "delay_warning_sent"} <= set(reads)
    assert store.find(qid) is None
    dsns = [content for _envelope, content in cleanup.submitted]
    assert any(b"Delayed Mail" in c for c in dsns)
    assert any(b"Status: 4.4.1" in c and b"reason 4.4.1" in c for c in dsns)
