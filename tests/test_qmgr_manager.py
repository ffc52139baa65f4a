"""Queue manager scheduling, with task.Clock, an in-memory store and fake agents."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from pymta.bounce.bouncer import Bouncer
from pymta.cleanup.interface import ICleanup
from pymta.config import Config
from pymta.delivery.interface import DeliveryRequest, IDeliveryAgent, RecipientStatus
from pymta.qmgr.manager import QueueManager
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite.interface import IResolver, Resolution
from pymta.tables.interface import TableError

T0 = 1_800_000_000.0


@implementer(IResolver)
class FakeResolver:
    """Domain -> transport; ``fail`` domains raise TableError."""

    def __init__(self, transports: dict[str, str] | None = None) -> None:
        self.transports = transports or {
            "virt.example": "virtual",
            "other.example": "virtual",
            "local.example": "local",
            "nowhere.example": "smtp",
        }
        self.fail: set[str] = set()

    def resolve(self, address: str) -> Resolution:
        domain = address.rpartition("@")[2].lower()
        if domain in self.fail:
            raise TableError("texthash:/etc/transport: cannot read")
        transport = self.transports.get(domain, "error")
        return Resolution(transport, domain, address)


@implementer(IDeliveryAgent)
class FakeAgent:
    """Records requests; answers with ``status`` at once, or leaves the
    Deferred pending when ``manual`` (fire it through ``pending``)."""

    def __init__(self, name: str, status: str = "2.0.0", manual: bool = False) -> None:
        self.name = name
        self.status = status
        self.manual = manual
        self.requests: list[DeliveryRequest] = []
        self.pending: list[tuple[DeliveryRequest, Deferred[list[RecipientStatus]]]] = []
        self.broken = False

    def answer(self, request: DeliveryRequest, status: str | None = None) -> list[RecipientStatus]:
        code = status or self.status
        return [
            RecipientStatus(r.index, code, f"reason {code}", relay=self.name)
            for r in request.recipients
        ]

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        self.requests.append(request)
        if self.broken:
            return fail(RuntimeError("agent bug"))
        if self.manual:
            d: Deferred[list[RecipientStatus]] = Deferred()
            self.pending.append((request, d))
            return d
        return succeed(self.answer(request))

    def fire_all(self, status: str | None = None) -> None:
        pending, self.pending = self.pending, []
        for request, d in pending:
            d.callback(self.answer(request, status))


@implementer(ICleanup)
class FakeCleanup:
    """Takes DSNs; ``refuse`` makes submit errback."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []
        self.refuse = False

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        if self.refuse:
            return fail(OSError("cleanup unavailable"))
        self.submitted.append((envelope, content))
        return succeed(f"BOUNCE{len(self.submitted):04X}")


@pytest.fixture
def maillines() -> Iterator[list[str]]:
    lines: list[str] = []

    @implementer(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        if event.get("pymta_maillog"):
            lines.append(event["text"])

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


class Rig:
    """A queue manager wired to fakes."""

    def __init__(
        self,
        main_cf: str = "",
        agents: dict[str, FakeAgent] | None = None,
        process_limits: dict[str, int] | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.config = Config.from_text(
            "myhostname = mx.example.org\nmyorigin = example.org\n" + main_cf
        )
        self.store = MemoryQueueStore(self.clock)
        self.resolver = FakeResolver()
        self.agents = (
            agents
            if agents is not None
            else {"virtual": FakeAgent("virtual"), "local": FakeAgent("local")}
        )
        self.cleanup = FakeCleanup()
        self.bouncer = Bouncer(self.config, self.cleanup, self.clock)
        self.qmgr = QueueManager(
            self.config,
            self.store,
            self.resolver,
            self.agents,
            self.bouncer,
            self.clock,
            process_limits=process_limits,
        )

    def envelope(self, *recipients: str, sender: str = "alice@example.org") -> Envelope:
        return Envelope(
            sender,
            [Recipient(r, original=r) for r in recipients],
            arrival_time=self.clock.seconds(),
        )

    def enqueue(self, *recipients: str, sender: str = "alice@example.org") -> tuple[str, Envelope]:
        envelope = self.envelope(*recipients, sender=sender)
        d = self.store.enqueue(envelope, b"Subject: test\n\nhello\n")
        result: list[str] = []
        d.addCallback(result.append)
        return result[0], envelope

    def submit(self, *recipients: str, sender: str = "alice@example.org") -> str:
        qid, envelope = self.enqueue(*recipients, sender=sender)
        self.qmgr.notify_new(qid, envelope)
        return qid


def test_fast_path_delivers_marks_done_and_removes(maillines: list[str]) -> None:
    """A new message to a virtual user is delivered at once, without timers,
    and logged with Postfix's from=/to=/removed lines."""
    rig = Rig()
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example")
    assert rig.store.find(qid) is None
    assert rig.clock.getDelayedCalls() and all(
        c.getTime() >= T0 + 300 for c in rig.clock.getDelayedCalls()
    )
    # Only this message's lines: a connection of an earlier test may log its
    # disconnect while this one runs.
    maillines = [line for line in maillines if line.startswith(qid)]
    assert maillines[0] == f"{qid}: from=<alice@example.org>, size=21, nrcpt=1 (queue active)"
    assert maillines[1] == (
        f"{qid}: to=<bob@virt.example>, relay=virtual, delay=0, delays=0/0/0/0, "
        "dsn=2.0.0, status=sent (reason 2.0.0)"
    )
    assert maillines[2] == f"{qid}: removed"


def test_mark_done_only_after_agent_success() -> None:
    """Until the agent reports success the recipient is not done on disk; a
    pending delivery leaves the message in active/."""
    agent = FakeAgent("virtual", manual=True)
    rig = Rig(agents={"virtual": agent})
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example", "carol@virt.example")
    envelope, _ = rig.store.read(qid, "active")
    assert [r.done for r in envelope.recipients] == [False, False]
    agent.fire_all()
    assert rig.store.find(qid) is None


def test_grouping_and_recipient_limit() -> None:
    """Recipients are grouped by (transport, nexthop) and split by
    <transport>_destination_recipient_limit."""
    rig = Rig("virtual_destination_recipient_limit = 2\n")
    rig.qmgr.start()
    rig.submit(
        "a@virt.example", "b@virt.example", "c@other.example", "d@virt.example", "e@virt.example"
    )
    sizes = sorted(
        (r.nexthop, [x.address for x in r.recipients]) for r in rig.agents["virtual"].requests
    )
    assert sizes == [
        ("other.example", ["c@other.example"]),
        ("virt.example", ["a@virt.example", "b@virt.example"]),
        ("virt.example", ["d@virt.example", "e@virt.example"]),
    ]


def test_process_and_destination_concurrency_limits() -> None:
    """No more than maxproc deliveries run per transport, nor more than the
    destination concurrency limit per destination; the rest wait and run later."""
    agent = FakeAgent("virtual", manual=True)
    rig = Rig(
        "virtual_destination_concurrency_limit = 2\n",
        agents={"virtual": agent},
        process_limits={"virtual": 3},
    )
    rig.qmgr.start()
    for i in range(4):
        rig.submit(f"u{i}@virt.example")
    rig.submit("x@other.example")
    rig.submit("y@other.example")
    # 2 for virt.example (destination limit) + 1 for other.example (process limit 3)
    running = sorted(r.nexthop for r, _ in agent.pending)
    assert running == ["other.example", "virt.example", "virt.example"]
    delivered = 0
    while agent.pending:
        assert len(agent.pending) <= 3
        assert sum(1 for r, _ in agent.pending if r.nexthop == "virt.example") <= 2
        request, d = agent.pending.pop(0)
        d.callback(agent.answer(request))
        delivered += 1
    assert delivered == 6
    assert rig.store.list("active") == []


def test_per_recipient_transport_limits_each_recipient() -> None:
    """For a transport with recipient limit 1 (local) the destination is the
    recipient: local_destination_concurrency_limit applies per user."""
    agent = FakeAgent("local", manual=True)
    rig = Rig(agents={"local": agent})
    rig.qmgr.start()
    for _ in range(3):
        rig.submit("bob@local.example")
    rig.submit("carol@local.example")
    running = sorted(r.recipients[0].address for r, _ in agent.pending)
    assert running == ["bob@local.example", "bob@local.example", "carol@local.example"]
    agent.fire_all()
    assert [r.recipients[0].address for r, _ in agent.pending] == ["bob@local.example"]


def test_backoff_doubles_and_is_clamped() -> None:
    """A message that keeps deferring is retried at minimal_backoff_time, then
    at doubling intervals, never more than maximal_backoff_time apart."""
    agent = FakeAgent("virtual", status="4.2.0")
    rig = Rig(
        "minimal_backoff_time = 100s\nmaximal_backoff_time = 500s\nqueue_run_delay = 10s\n",
        agents={"virtual": agent},
    )
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example")
    assert rig.store.find(qid) == "deferred"
    attempts = [rig.clock.seconds()]
    for _ in range(2000):
        rig.clock.advance(10)
        if len(agent.requests) > len(attempts):
            attempts.append(rig.clock.seconds())
        if len(attempts) == 7:
            break
    gaps = [round(b - a) for a, b in itertools.pairwise(attempts)]
    assert gaps == [100, 100, 200, 400, 500, 500]
    assert rig.store.defer_reasons(qid) == {0: ("4.2.0", "reason 4.2.0")}


def test_expired_message_is_returned_with_last_reason(maillines: list[str]) -> None:
    """Past maximal_queue_lifetime the deferred recipients are bounced with
    their last deferral reason, the DSN is queued and the message removed."""
    agent = FakeAgent("virtual", status="4.4.1")
    rig = Rig("maximal_queue_lifetime = 1h\nqueue_run_delay = 60s\n", agents={"virtual": agent})
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example")
    rig.clock.advance(3600 + 600)
    assert rig.store.find(qid) is None
    assert f"{qid}: from=<alice@example.org>, status=expired, returned to sender" in maillines
    [(envelope, dsn)] = rig.cleanup.submitted
    assert envelope.sender == ""
    assert [r.address for r in envelope.recipients] == ["alice@example.org"]
    assert b"Status: 4.4.1" in dsn and b"reason 4.4.1" in dsn and b"Action: failed" in dsn
    assert f"{qid}: sender non-delivery notification: BOUNCE0001" in maillines


def test_null_sender_expiry_uses_bounce_queue_lifetime() -> None:
    """A deferred bounce (null sender) expires after bounce_queue_lifetime and,
    without 2bounce in notify_classes, is dropped without a DSN."""
    agent = FakeAgent("virtual", status="4.4.1")
    rig = Rig(
        "maximal_queue_lifetime = 5d\nbounce_queue_lifetime = 1h\nqueue_run_delay = 60s\n",
        agents={"virtual": agent},
    )
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example", sender="")
    rig.clock.advance(3600 + 600)
    assert rig.store.find(qid) is None
    assert rig.cleanup.submitted == []


def test_hard_failure_bounces_then_marks_done() -> None:
    """A 5.x.x recipient is marked done only after the DSN was queued; the
    successful recipient of the same message is done too, and it is removed."""
    rig = Rig(agents={"virtual": FakeAgent("virtual"), "error": FakeAgent("error", "5.1.1")})
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example", "nobody@unknown.example")
    assert rig.store.find(qid) is None
    [(_, dsn)] = rig.cleanup.submitted
    assert b"Final-Recipient: rfc822; nobody@unknown.example" in dsn
    assert b"bob@virt.example" not in dsn.split(b"Content-Type: message/rfc822")[0]


def test_bounce_failure_keeps_recipient_queued() -> None:
    """When cleanup refuses the DSN the bounced recipient is not marked done:
    the message goes to deferred/ and is retried."""
    rig = Rig(agents={"error": FakeAgent("error", "5.1.1")})
    rig.cleanup.refuse = True
    rig.qmgr.start()
    qid = rig.submit("nobody@unknown.example")
    assert rig.store.find(qid) == "deferred"
    envelope, _ = rig.store.read(qid, "deferred")
    assert envelope.recipients[0].done is False


def test_null_sender_bounce_goes_to_2bounce_recipient() -> None:
    """A null-sender message that bounces is reported to 2bounce_notice_recipient
    when notify_classes contains 2bounce, never to its (null) sender."""
    rig = Rig(
        "notify_classes = 2bounce\n2bounce_notice_recipient = hostmaster\n",
        agents={"error": FakeAgent("error", "5.1.1")},
    )
    rig.qmgr.start()
    qid = rig.submit("nobody@unknown.example", sender="")
    assert rig.store.find(qid) is None
    [(envelope, _)] = rig.cleanup.submitted
    assert [r.address for r in envelope.recipients] == ["hostmaster@example.org"]


def test_agent_errback_defers_and_logs_traceback() -> None:
    """An agent errback is a bug: its traceback is logged and the recipients
    are deferred, not bounced nor lost."""
    agent = FakeAgent("virtual")
    agent.broken = True
    rig = Rig(agents={"virtual": agent})
    failures: list[dict[str, Any]] = []

    @implementer(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        rig.qmgr.start()
        qid = rig.submit("bob@virt.example")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert rig.store.find(qid) == "deferred"
    assert failures and failures[0]["log_failure"].check(RuntimeError)
    assert rig.store.defer_reasons(qid)[0][0] == "4.3.0"


def test_missing_transport_defers_with_postfix_text(maillines: list[str]) -> None:
    """A transport without an agent defers with 4.3.0 mail transport unavailable."""
    rig = Rig()
    rig.qmgr.start()
    qid = rig.submit("x@nowhere.example")
    assert rig.store.find(qid) == "deferred"
    assert rig.store.defer_reasons(qid) == {0: ("4.3.0", "mail transport unavailable")}
    assert any("status=deferred (mail transport unavailable)" in line for line in maillines)


def test_resolver_failure_defers() -> None:
    """A resolver TableError defers the recipient (never bounces it)."""
    rig = Rig()
    rig.resolver.fail.add("virt.example")
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example")
    assert rig.store.find(qid) == "deferred"
    assert rig.store.defer_reasons(qid)[0][0] == "4.3.0"
    assert rig.cleanup.submitted == []


def test_recovery_on_start() -> None:
    """start() delivers what is in incoming/ and active/, and the deferred
    messages whose next attempt is due; a deferred one not yet due waits."""
    rig = Rig()
    _incoming, _ = rig.enqueue("a@virt.example")
    active, _ = rig.enqueue("b@virt.example")
    rig.store.move(active, "incoming", "active")
    due, _ = rig.enqueue("c@virt.example")
    rig.store.move(due, "incoming", "deferred")
    rig.store.set_next_attempt(due, T0 - 1)
    later, _ = rig.enqueue("d@virt.example")
    rig.store.move(later, "incoming", "deferred")
    rig.store.set_next_attempt(later, T0 + 1000)
    rig.qmgr.start()
    delivered = {r.recipients[0].address for r in rig.agents["virtual"].requests}
    assert delivered == {"a@virt.example", "b@virt.example", "c@virt.example"}
    assert rig.store.list("deferred") == [later]
    rig.clock.advance(1200)
    assert rig.store.list("deferred") == []


def test_recovery_skips_recipients_already_done() -> None:
    """A recovered message is delivered only to recipients not marked done."""
    rig = Rig()
    qid, _ = rig.enqueue("a@virt.example", "b@virt.example")
    rig.store.move(qid, "incoming", "active")
    rig.store.mark_done(qid, "active", 0)
    rig.qmgr.start()
    [request] = rig.agents["virtual"].requests
    assert [r.address for r in request.recipients] == ["b@virt.example"]


def test_corrupt_file_is_quarantined_while_others_deliver() -> None:
    """A queue file that fails validation goes to corrupt/; the others are delivered."""
    rig = Rig()
    bad, _ = rig.enqueue("a@virt.example")
    good, _ = rig.enqueue("b@virt.example")
    rig.store.corrupt(bad)
    rig.qmgr.start()
    assert rig.store.list("corrupt") == [bad]
    assert rig.store.find(good) is None
    assert [r.queue_id for r in rig.agents["virtual"].requests] == [good]


def test_flush_retries_deferred_now() -> None:
    """flush() retries every deferred message at once, due or not."""
    agent = FakeAgent("virtual", status="4.2.0")
    rig = Rig(agents={"virtual": agent})
    rig.qmgr.start()
    qid = rig.submit("bob@virt.example")
    agent.status = "2.0.0"
    rig.qmgr.flush()
    assert rig.store.find(qid) is None
    assert len(agent.requests) == 2


def test_stop_waits_for_deliveries_in_flight() -> None:
    """stop() fires only when the running delivery is over; jobs not started
    stay queued in active/ and are delivered after the next start."""
    agent = FakeAgent("virtual", manual=True)
    rig = Rig(agents={"virtual": agent}, process_limits={"virtual": 1})
    rig.qmgr.start()
    first = rig.submit("a@virt.example")
    second = rig.submit("b@virt.example")
    stopped: list[None] = []
    rig.qmgr.stop().addCallback(stopped.append)
    assert stopped == []
    agent.fire_all()
    assert stopped == [None]
    assert rig.store.find(first) is None
    assert rig.store.find(second) == "active"
    rig.qmgr.start()
    agent.fire_all()
    assert rig.store.find(second) is None


def test_notify_new_after_stop_leaves_message_for_recovery() -> None:
    """A message announced after stop() stays in incoming/ (durable) for the next start."""
    rig = Rig()
    rig.qmgr.start()
    rig.qmgr.stop()
    qid = rig.submit("a@virt.example")
    assert rig.store.find(qid) == "incoming"
