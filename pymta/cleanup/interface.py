"""The cleanup contract: what smtpd, pickup, local and bounce submit to.

Mirrors Postfix's cleanup(8) service: one entry point that turns an accepted
message into a durable queue file and tells the queue manager about it.
A message is either handed over whole (``submit``: pickup, bounce, local
forwarding) or written as it arrives (``open_message``: smtpd), so that a
large message never sits in memory in one piece.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from pymta.queue.model import Envelope

if TYPE_CHECKING:
    from pymta.milter.chain import Milters


class CleanupRejected(Exception):
    """cleanup refused the message; ``status`` is the enhanced code + text for the client."""

    def __init__(self, code: int, status: str, text: str) -> None:
        self.code = code
        self.status = status
        self.text = text
        super().__init__(f"{code} {status} {text}")


class IMessageWriter(Interface):
    """One message on its way into cleanup, written as it arrives."""

    size = Attribute("bytes written so far")

    def write(data: bytes) -> Deferred[None] | None:
        """Append content (internal form: LF line endings, dot-unstuffed).
        None, or a Deferred when the writer holds more than it should: the
        caller stops reading its source until it fires."""

    def finish(envelope: Envelope, lines: int | None = None) -> Deferred[str]:
        """The content is complete: fires as ``submit`` does (the queue id
        once durable; CleanupRejected or another failure otherwise).
        ``lines`` is the content's LF count when the writer's caller
        counted it (smtpd's DATA reader), as for ``submit``."""

    def abort() -> None:
        """Drop the message: nothing stays behind (no spool, no queue file)."""


class ICleanup(Interface):
    def open_message(milters: Milters | None = None) -> IMessageWriter:
        """A writer for one message; ``finish(envelope)`` queues it.
        ``milters`` (smtpd's conversation) see the message at the end."""

    def submit(
        envelope: Envelope,
        content: bytes,
        milters: Milters | None = None,
        lines: int | None = None,
    ) -> Deferred[str]:
        """Rewrite the envelope and headers, queue the message durably and
        fire with the queue id (only then may smtpd answer 250).

        content is the message as received, with LF line endings and
        dot-unstuffed. Errbacks with CleanupRejected for a message it will not
        take (too many hops, too big, table lookup failed: a 4xx).

        ``milters`` (pymta.milter.chain.Milters) are smtpd's milters of
        the session, which get the content before it is queued. ``lines``,
        when the caller knows it, is the content's LF count: cleanup
        derives the queued message's from it (counting only the headers
        it changed), and the queue file carries it to delivery."""
