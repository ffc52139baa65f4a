"""The delivery agent contract: results are values, not exceptions.

Mirrors Postfix's delivery agents (local, virtual, smtp, pipe, discard,
error): qmgr hands an agent a request for one message and some of its
recipients that share a transport and next hop; the agent answers with one
status per recipient. Only qmgr decides what happens next.

The message travels by reference, as in Postfix (deliver_request.c): the
request names the queue file (``message``: queue, queue id, content offset
and size) and the agent reads the content from it in blocks
(:mod:`pymta.queue.reference`). An agent may mark a recipient done in the
queue file itself (``message.mark_done``) the moment its delivery is safe,
before it reports (Postfix's deliver_completed): the Maildir writer does so
right after its rename, on its own thread. qmgr marks the others before it
logs them sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from pymta.queue.model import Envelope
from pymta.queue.reference import IMessageContent


@dataclass(frozen=True)
class DeliveryRecipient:
    """One recipient of a request: its index in the envelope, the address to
    deliver to, and the original address (for logs and DSNs)."""

    index: int
    address: str
    original: str


@dataclass
class DeliveryRequest:
    """One message (by reference) and the recipients of one job."""

    queue_id: str
    envelope: Envelope
    message: IMessageContent  # the queue file's content: LF line ends, as queued
    transport: str
    nexthop: str
    recipients: list[DeliveryRecipient]
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipientStatus:
    """The outcome for one recipient.

    ``status`` is an RFC 3463 enhanced code: 2.x.x sent, 4.x.x deferred,
    5.x.x bounced. ``reason`` is the human text for the log and the DSN;
    ``relay`` the log's relay= value (e.g. ``virtual``, ``mx.example[192.0.2.1]:25``);
    ``diagnostic`` the remote server's reply, when there was one;
    ``timings`` the connection setup and transmission times when known.
    """

    index: int
    status: str
    reason: str
    relay: str = "none"
    diagnostic: str = ""
    #: (connection setup, transmission) seconds, for the log's delays=c/d
    #: (agents that talk to a network fill it; None: qmgr's own figures).
    timings: tuple[float, float] | None = None

    @property
    def outcome(self) -> str:
        """``sent``, ``deferred`` or ``bounced``, as in the log's status=."""
        return {"2": "sent", "4": "deferred"}.get(self.status[:1], "bounced")


class IDeliveryAgent(Interface):
    name = Attribute("The agent's name as in master.cf's command column (virtual, local, ...).")

    def deliver(request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        """Deliver to every recipient of the request and fire with one status
        each. Must not errback for an expected failure: a 4.x.x or 5.x.x
        status says it. An errback is a bug; qmgr logs it and defers."""

    def close() -> Deferred[None] | None:
        """At shutdown, after the queue manager stopped: release what the
        agent keeps between deliveries (smtp: QUIT on its cached
        connections). None, or a Deferred that fires when done."""
