"""assemble.build: the mail system as a short list of named parts, and
cleanup's trigger reaching the queue manager only while it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.assemble import MailSystem, build
from pymta.config import Config
from pymta.config.master_cf import parse_master_cf
from pymta.qmgr.manager import QueueManager
from pymta.queue.model import Envelope, Recipient
from pymta.queue.trigger import IQueueTrigger, TriggerChannel
from tests.harness import DEFAULT_MAIN_CF, DEFAULT_MASTER_CF


class Receiver:
    def __init__(self) -> None:
        self.heard: list[str] = []

    def queued(self, queue_id: str, envelope: Envelope) -> None:
        self.heard.append(queue_id)


class InlinePool:
    """A thread pool that runs the work at once."""

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        on_result(True, f(*a, **kw))


class FakeReactor:
    """Timers on a task.Clock, thread-pool work at once."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.pool = InlinePool()

    def getThreadPool(self) -> InlinePool:
        return self.pool

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, f, *a, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()

    def addSystemEventTrigger(self, *args: Any) -> None:
        pass


def _build(root: Path) -> MailSystem:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    for table in ("aliases", "virtual", "vmailbox"):
        (root / "etc" / table).write_text("")
    config = Config.from_text(DEFAULT_MAIN_CF.format(root=root)).with_overrides(
        {"config_directory": str(root / "etc"), "maillog_file": ""}
    )
    # Check mode: the same parts, the queue in memory, nothing bound.
    return build(config, parse_master_cf(DEFAULT_MASTER_CF), FakeReactor(), check=True)


def test_trigger_channel_passes_triggers_only_while_someone_listens() -> None:
    """A trigger with nobody listening is lost (the file waits in incoming/
    for the queue manager's next start, as a write to Postfix's qmgr FIFO
    with no qmgr); one with a listener reaches it; after close, none does."""
    channel = TriggerChannel()
    verifyObject(IQueueTrigger, channel)
    receiver = Receiver()
    envelope = Envelope("a@example.org", [Recipient("b@example.org")])
    channel.queued("A1", envelope)
    channel.listen(receiver)
    channel.queued("B2", envelope)
    channel.close()
    channel.queued("C3", envelope)
    assert receiver.heard == ["B2"]


def test_build_is_named_parts_in_start_order(tmp_path: Path) -> None:
    """The system's children are the queue part, then the delivery part
    (queue manager, agents, barriers), then the listeners, so that stopping
    (in reverse) closes the listeners first and drains the queue's
    barrier last; every delivery agent is closed at the stop; the queue
    manager is an IQueueTrigger."""
    system = _build(tmp_path)
    names = [s.name for s in system]
    assert names[:2] == ["queue", "delivery"]
    assert all("@" in name for name in names[2:]) and names[2:]
    assert system.getServiceNamed("queue") is system.queue
    delivery = [s.name for s in system.delivery]
    assert delivery.index("delivery-sync") < delivery.index("qmgr")
    # Every agent is closed at the stop (IDeliveryAgent.close), none by guesswork.
    assert {f"agent-{name}" for name in system.agents} <= set(delivery)
    assert next(s.name for s in system.queue) == "sync"
    assert isinstance(system.qmgr, QueueManager)
    verifyObject(IQueueTrigger, system.qmgr)


def test_cleanup_triggers_the_queue_manager_while_it_runs(tmp_path: Path) -> None:
    """A message cleanup queues before the queue manager runs stays in
    incoming/ (the start recovers it); once the qmgr part has started,
    cleanup's trigger makes the queue manager take the new message into
    active/ at once; after the stop, a new message stays in incoming/."""
    system = _build(tmp_path)
    envelope = Envelope("a@example.org", [Recipient("nobody@example.net")])
    early: list[str] = []
    system.cleanup.submit(envelope, b"Subject: early\n\nbody\n").addCallback(early.append)
    assert system.store.list("incoming") == early

    qmgr_part = system.delivery.getServiceNamed("qmgr")
    qmgr_part.startService()
    # The start recovered the early message from incoming/.
    assert early[0] not in system.store.list("incoming")
    taken: list[str] = []
    system.cleanup.submit(
        Envelope("a@example.org", [Recipient("nobody@example.net")]), b"Subject: x\n\nbody\n"
    ).addCallback(taken.append)
    assert taken and taken[0] not in system.store.list("incoming")
    assert system.store.find(taken[0]) != "incoming"

    system.delivery.abort_stop_waits()
    qmgr_part.stopService()
    late: list[str] = []
    system.cleanup.submit(
        Envelope("a@example.org", [Recipient("nobody@example.net")]), b"Subject: y\n\nbody\n"
    ).addCallback(late.append)
    assert late and system.store.find(late[0]) == "incoming"
