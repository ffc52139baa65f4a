"""discard, error/retry agents and the master.cf agent registry."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pymta.cleanup.interface import ICleanup
from pymta.config import Config
from pymta.config.master_cf import parse_master_cf
from pymta.delivery.discard import DiscardAgent
from pymta.delivery.error import ErrorAgent, parse_nexthop
from pymta.delivery.interface import (
    DeliveryRecipient,
    DeliveryRequest,
    IDeliveryAgent,
    RecipientStatus,
)
from pymta.delivery.local import LocalAgent
from pymta.delivery.lookup import DictLookup
from pymta.delivery.registry import AgentContext, build_agents, process_limits
from pymta.delivery.virtual import VirtualAgent
from pymta.queue.model import Envelope
from pymta.queue.reference import BytesContent
from pymta.sync import ImmediateSyncBarrier


def request(nexthop: str) -> DeliveryRequest:
    return DeliveryRequest(
        "0123456789ABC000001",
        Envelope("a@example.org", []),
        BytesContent(b"\n"),
        "error",
        nexthop,
        [
            DeliveryRecipient(0, "x@example.org", "x@example.org"),
            DeliveryRecipient(3, "y@e", "y@e"),
        ],
    )


def result(d: Deferred[list[RecipientStatus]]) -> list[RecipientStatus]:
    out: list[list[RecipientStatus]] = []
    d.addCallback(out.append)
    return out[0]


def test_discard_reports_sent_with_nexthop_reason() -> None:
    """discard answers 2.0.0 for every recipient, the next hop as reason (default 'discarded')."""
    statuses = result(DiscardAgent().deliver(request("spam trap")))
    assert [(s.index, s.status, s.reason) for s in statuses] == [
        (0, "2.0.0", "spam trap"),
        (3, "2.0.0", "spam trap"),
    ]
    assert result(DiscardAgent().deliver(request("")))[0].reason == "discarded"


def test_error_agent_uses_nexthop_status() -> None:
    """error bounces with the status and text of the next hop; no code means 5.0.0."""
    [first, _] = result(ErrorAgent().deliver(request("5.1.1 User unknown in virtual alias table")))
    assert (first.status, first.reason) == ("5.1.1", "User unknown in virtual alias table")
    assert parse_nexthop("mail for example.org loops back") == (
        "5.0.0",
        "mail for example.org loops back",
    )


def test_retry_agent_defers() -> None:
    """retry (error in retry mode) turns every status into a 4.x.x deferral."""
    [first, _] = result(ErrorAgent(retry=True).deliver(request("5.1.1 later")))
    assert first.status == "4.1.1"
    assert first.outcome == "deferred"


@implementer(ICleanup)
class NullCleanup:
    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        return succeed("X")


def test_build_agents_from_master_cf() -> None:
    """Delivery services of a stock-like master.cf become agents keyed by
    service name, with -o overrides applied; other services are skipped."""
    master = parse_master_cf(
        "smtp      inet  n       -       n       -       -       smtpd\n"
        "local     unix  -       n       n       -       -       local\n"
        "virtual   unix  -       n       n       -       7       virtual\n"
        "slowvirt  unix  -       n       n       -       1       virtual\n"
        "  -o virtual_mailbox_base=/srv/slow\n"
        "discard   unix  -       -       n       -       -       discard\n"
        "error     unix  -       -       n       -       -       error\n"
        "retry     unix  -       -       n       -       -       error\n"
    )
    config = Config.from_text("virtual_mailbox_base = /srv/mail\nalias_maps = inline:{}\n")
    context = AgentContext(
        config,
        ImmediateSyncBarrier(),
        NullCleanup(),
        Clock(),
        object(),
        open_maps=lambda specs, cfg: DictLookup({}),
    )
    agents = build_agents(master, context)
    assert sorted(agents) == ["discard", "error", "local", "retry", "slowvirt", "virtual"]
    for agent in agents.values():
        assert verifyObject(IDeliveryAgent, agent)
    assert isinstance(agents["local"], LocalAgent)
    slow, virtual = agents["slowvirt"], agents["virtual"]
    assert isinstance(slow, VirtualAgent) and isinstance(virtual, VirtualAgent)
    assert slow._base == "/srv/slow"
    assert virtual._base == "/srv/mail"
    assert isinstance(agents["retry"], ErrorAgent) and agents["retry"].retry
    assert isinstance(agents["error"], ErrorAgent) and not agents["error"].retry
    assert process_limits(master, config) == {
        "local": 100,
        "virtual": 7,
        "slowvirt": 1,
        "discard": 100,
        "error": 100,
        "retry": 100,
    }
