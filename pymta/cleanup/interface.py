"""The cleanup contract: what smtpd, pickup, local and bounce submit to.

Mirrors Postfix's cleanup(8) service: one entry point that turns an accepted
message into a durable queue file and tells the queue manager about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Interface

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


class ICleanup(Interface):
    def submit(envelope: Envelope, content: bytes, milters: Milters | None = None) -> Deferred[str]:
        """Rewrite the envelope and headers, queue the message durably and
        fire with the queue id (only then may smtpd answer 250).

        content is the message as received, with LF line endings and
        dot-unstuffed. Errbacks with CleanupRejected for a message it will not
        take (too many hops, too big, table lookup failed: a 4xx).

        ``milters`` (pymta.milter.chain.Milters) are smtpd's milters of
        the session, which get the content before it is queued."""
