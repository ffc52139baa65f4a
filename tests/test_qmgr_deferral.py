"""qmgr deferral features: dead destinations, delay warnings (once, across a
restart), success DSNs, NOTIFY=NEVER, flush — with task.Clock and fakes."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from pymta.bounce.bouncer import Bouncer
from pymta.config import Config
from pymta.delivery.interface import DeliveryRequest, RecipientStatus
from pymta.qmgr.manager import QueueManager
from pymta.queue.model import Envelope, Recipient
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier
from tests.test_qmgr_manager import T0, FakeAgent, FakeCleanup, FakeResolver, Rig, maillines

__all__ = ["maillines"]

CONTENT = b"Subject: test\n\nhello\n"


class SiteAgent(FakeAgent):
    """Answers with a configurable status and relay (``none``: the site was
    not reached, as an smtp agent reports a refused connection)."""

    def __init__(self, name: str, status: str, relay: str, manual: bool = False) -> None:
        super().__init__(name, status, manual)
        self.relay = relay
        self.reason = "connect to nowhere.example[192.0.2.1]:25: Connection refused"

    def answer(self, request: DeliveryRequest, status: str | None = None) -> list[RecipientStatus]:
        code = status or self.status
        return [
            RecipientStatus(r.index, code, self.reason, relay=self.relay)
            for r in request.recipients
        ]


def _dsns(cleanup: FakeCleanup) -> list[bytes]:
    return [content for _, content in cleanup.submitted]


def test_dead_destination_suspends_its_queued_mail(maillines: list[str]) -> None:
    """After failed_cohort_limit worth of site failures the destination is
    dead: its waiting jobs and new mail for it are deferred with "delivery
    temporarily suspended: <last reason>" without calling the agent, until
    minimal_backoff_time has passed."""
    agent = SiteAgent("smtp", "4.4.1", "none", manual=True)
    rig = Rig(agents={"smtp": agent})
    rig.qmgr.start()
    qids = [rig.submit(f"u{i}@nowhere.example") for i in range(10)]
    assert len(agent.requests) == 5  # initial_destination_concurrency
    agent.fire_all()
    # 4 failures kill it (0.2 + 0.25 + 0.33 + 0.5); the rest never reach the agent.
    assert len(agent.requests) == 5
    assert all(rig.store.find(q) == "deferred" for q in qids)
    suspended = [line for line in maillines if "delivery temporarily suspended" in line]
    assert len(suspended) == 5
    assert suspended[0].endswith(
        "status=deferred (delivery temporarily suspended: connect to"
        " nowhere.example[192.0.2.1]:25: Connection refused)"
    )
    assert any("destination smtp is dead" in line for line in maillines)
    late = rig.submit("late@nowhere.example")
    assert len(agent.requests) == 5
    assert rig.store.find(late) == "deferred"
    rig.clock.advance(300)  # minimal_backoff_time: alive again, deferred mail retried
    assert len(agent.requests) > 5


def test_rcpt_level_deferral_does_not_kill_the_destination() -> None:
    """4xx answers from a server that was reached (relay set) are deliveries
    for the scheduler: the destination stays alive and every message is tried."""
    agent = SiteAgent("smtp", "4.2.0", "mx.nowhere.example[192.0.2.1]:25")
    rig = Rig(agents={"smtp": agent})
    rig.qmgr.start()
    for i in range(10):
        rig.submit(f"u{i}@nowhere.example")
    assert len(agent.requests) == 10


def test_flush_revives_dead_destinations_and_retries_now() -> None:
    """flush (postqueue -f) forgets dead destinations and retries all deferred mail now."""
    agent = SiteAgent("smtp", "4.4.1", "none")
    rig = Rig("initial_destination_concurrency = 1\n", agents={"smtp": agent})
    rig.qmgr.start()
    qid = rig.submit("u@nowhere.example")
    assert len(agent.requests) == 1
    rig.submit("v@nowhere.example")  # dead: not tried
    assert len(agent.requests) == 1
    agent.status, agent.relay = "2.0.0", "mx[192.0.2.1]:25"
    rig.qmgr.flush()
    assert len(agent.requests) == 3
    assert rig.store.find(qid) is None


def test_success_dsn_for_notify_success_only() -> None:
    """A recipient with NOTIFY=SUCCESS delivered by a final delivery agent
    gets a "delivered" DSN with Original-Envelope-Id and Original-Recipient;
    recipients without it get none."""
    rig = Rig()
    rig.qmgr.start()
    envelope = Envelope(
        "alice@example.org",
        [
            Recipient("bob@virt.example", "bob@virt.example", "rfc822;Bob@virt.example", "SUCCESS"),
            Recipient("carol@virt.example", "carol@virt.example"),
        ],
        arrival_time=rig.clock.seconds(),
        attributes={"envid": "ENV-42"},
    )
    qid = rig.store.enqueue(envelope, CONTENT)
    ids: list[str] = []
    qid.addCallback(ids.append)
    rig.qmgr.notify_new(ids[0], envelope)
    assert rig.store.find(ids[0]) is None
    (dsn,) = _dsns(rig.cleanup)
    text = dsn.decode()
    assert "Subject: Successful Mail Delivery Report" in text
    assert "Original-Envelope-Id: ENV-42" in text
    assert "Original-Recipient: rfc822;Bob@virt.example" in text
    assert "Action: delivered" in text
    assert "carol@virt.example" not in text.split("Delivery report")[1]
    assert "Content-Type: text/rfc822-headers" in text
    (dsn_envelope, _) = rig.cleanup.submitted[0]
    assert dsn_envelope.sender == "" and dsn_envelope.recipients[0].address == "alice@example.org"


def test_notify_never_suppresses_the_bounce() -> None:
    """A hard failure for a NOTIFY=NEVER recipient is marked done without a DSN;
    another recipient without NOTIFY in the same message still bounces."""
    agent = FakeAgent("virtual", status="5.1.1")
    rig = Rig(agents={"virtual": agent})
    rig.qmgr.start()
    envelope = Envelope(
        "alice@example.org",
        [
            Recipient("bob@virt.example", "bob@virt.example", None, "NEVER"),
            Recipient("carol@virt.example", "carol@virt.example"),
        ],
        arrival_time=rig.clock.seconds(),
    )
    ids: list[str] = []
    rig.store.enqueue(envelope, CONTENT).addCallback(ids.append)
    rig.qmgr.notify_new(ids[0], envelope)
    assert rig.store.find(ids[0]) is None
    (dsn,) = _dsns(rig.cleanup)
    report = dsn.decode().split("Delivery report")[1]
    assert "carol@virt.example" in report and "bob@virt.example" not in report


def _file_rig(
    tmp_path: Path, clock: Clock, agent: FakeAgent, cleanup: FakeCleanup
) -> tuple[QueueManager, FileQueueStore]:
    config = Config.from_text(
        "myhostname = mx.example.org\nmyorigin = example.org\n"
        "delay_warning_time = 1h\nqueue_run_delay = 300s\n"
    )
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), clock)
    qmgr = QueueManager(
        config,
        store,
        FakeResolver(),
        {"virtual": agent},
        Bouncer(config, cleanup, clock),
        clock,
    )
    return qmgr, store


def test_delay_warning_once_across_a_restart(tmp_path: Path) -> None:
    """A message still deferred after delay_warning_time gets one "Delayed
    Mail" notice; the fact is kept in the queue, so a restarted queue
    manager does not send it again."""
    clock = Clock()
    clock.advance(T0)
    agent = FakeAgent("virtual", status="4.2.0")
    cleanup = FakeCleanup()
    qmgr, store = _file_rig(tmp_path, clock, agent, cleanup)
    qmgr.start()
    envelope = Envelope(
        "alice@example.org",
        [Recipient("bob@virt.example", "bob@virt.example")],
        arrival_time=clock.seconds(),
    )
    ids: list[str] = []
    store.enqueue(envelope, CONTENT).addCallback(ids.append)
    qid = ids[0]
    qmgr.notify_new(qid, envelope)
    assert store.find(qid) == "deferred"
    assert cleanup.submitted == []  # younger than delay_warning_time
    for _ in range(20):  # attempts at 300, 600, 1200, 2400, 4800 seconds
        clock.advance(300)
    assert clock.seconds() - T0 >= 3600
    assert len(agent.requests) >= 4
    warnings = [c for c in _dsns(cleanup) if b"Delayed Mail (still being retried)" in c]
    assert len(warnings) == 1
    assert store.delay_warning_sent(qid)
    stopped: list[object] = []
    qmgr.stop().addCallback(stopped.append)
    assert stopped

    # A restart: a new queue manager on the same queue directory.
    agent2 = FakeAgent("virtual", status="4.2.0")
    cleanup2 = FakeCleanup()
    qmgr2, store2 = _file_rig(tmp_path, clock, agent2, cleanup2)
    qmgr2.start()
    qmgr2.flush()
    for _ in range(20):
        clock.advance(300)
    assert len(agent2.requests) >= 2
    assert cleanup2.submitted == []
    assert store2.find(qid) == "deferred"


def test_no_delay_warning_when_disabled_or_notify_excludes_delay() -> None:
    """delay_warning_time = 0 (the default) sends none; with it set, a
    recipient whose NOTIFY lacks DELAY gets none either."""
    for main_cf, notify in (("", None), ("delay_warning_time = 1h\n", "FAILURE")):
        agent = FakeAgent("virtual", status="4.2.0")
        rig = Rig(main_cf, agents={"virtual": agent})
        rig.qmgr.start()
        envelope = Envelope(
            "alice@example.org",
            [Recipient("bob@virt.example", "bob@virt.example", None, notify)],
            arrival_time=rig.clock.seconds(),
        )
        ids: list[str] = []
        rig.store.enqueue(envelope, CONTENT).addCallback(ids.append)
        rig.qmgr.notify_new(ids[0], envelope)
        for _ in range(30):
            rig.clock.advance(600)
        assert len(agent.requests) > 3
        assert rig.cleanup.submitted == []


def test_stop_waits_for_notifications() -> None:
    """stop() fires only after the success DSN handed to cleanup is queued."""
    rig = Rig()
    pending: list[Deferred[str]] = []

    def submit(envelope: Envelope, content: bytes) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        pending.append(d)
        return d

    rig.cleanup.submit = submit  # type: ignore[method-assign]
    rig.qmgr.start()
    envelope = Envelope(
        "alice@example.org",
        [Recipient("bob@virt.example", "bob@virt.example", None, "SUCCESS")],
        arrival_time=rig.clock.seconds(),
    )
    ids: list[str] = []
    rig.store.enqueue(envelope, CONTENT).addCallback(ids.append)
    rig.qmgr.notify_new(ids[0], envelope)
    assert len(pending) == 1
    stopped: list[object] = []
    rig.qmgr.stop().addCallback(stopped.append)
    assert not stopped
    pending[0].callback("DSN0001")
    assert stopped


_ = succeed


def test_defer_transports_holds_mail_until_a_flush(maillines: list[str]) -> None:
    """Mail for a transport in defer_transports is deferred with "deferred
    transport" without reaching its agent, also at the next scheduled queue
    run; a flush (postqueue -f) delivers it, as Postfix's qmgr does."""
    agent = SiteAgent("smtp", "2.0.0", "mx[192.0.2.1]:25")
    rig = Rig("defer_transports = smtp\nqueue_run_delay = 300s\n", agents={"smtp": agent})
    rig.qmgr.start()
    qid = rig.submit("u@nowhere.example")
    assert agent.requests == []
    assert rig.store.find(qid) == "deferred"
    assert any(line.endswith("status=deferred (deferred transport)") for line in maillines)
    rig.clock.advance(4000)  # past maximal_backoff_time: a scheduled run still holds it
    assert agent.requests == []
    assert rig.store.find(qid) == "deferred"
    rig.qmgr.flush()
    assert len(agent.requests) == 1
    assert rig.store.find(qid) is None
