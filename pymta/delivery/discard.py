"""discard: accept every recipient and throw the message away.

Mirrors Postfix's discard(8). The next hop, when there is one, is the reason
shown in the log (``status=sent (reason)``); otherwise ``discarded``. Reads
nothing from the message; writes nothing.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from pymta.delivery.interface import DeliveryRequest, IDeliveryAgent, RecipientStatus


@implementer(IDeliveryAgent)
class DiscardAgent:
    """Reports 2.0.0 for every recipient without delivering anything."""

    name = "discard"

    def close(self) -> None:
        """Nothing is kept between deliveries (IDeliveryAgent.close)."""

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        reason = request.nexthop or "discarded"
        return succeed(
            [RecipientStatus(r.index, "2.0.0", reason, relay="none") for r in request.recipients]
        )
