"""error and retry: fail every recipient with the status in the next hop.

Mirrors Postfix's error(8). The next hop carries the status and text, e.g.
``5.1.1 User unknown in virtual alias table`` (a bare text gets 5.0.0). In
retry mode (master.cf ``retry`` service, Postfix's ``error`` with
``-o`` retry semantics) every status is turned into 4.x.x so the mail is
deferred instead of bounced. Untrusted input: none (the next hop comes from
the resolver). Writes nothing.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from pymta.delivery.interface import DeliveryRequest, IDeliveryAgent, RecipientStatus

_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\s*(.*)$", re.DOTALL)


def parse_nexthop(nexthop: str, default_class: str = "5") -> tuple[str, str]:
    """Split ``X.Y.Z text`` into (status, text); no code gives ``<class>.0.0``."""
    match = _STATUS.match(nexthop)
    if match:
        status = f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        text = match.group(4).strip()
    else:
        status = f"{default_class}.0.0"
        text = nexthop.strip()
    return status, text or "delivery failed"


@implementer(IDeliveryAgent)
class ErrorAgent:
    """Bounces (or, with ``retry=True``, defers) every recipient of a request."""

    def __init__(self, retry: bool = False) -> None:
        self.retry = retry
        self.name = "retry" if retry else "error"

    def close(self) -> None:
        """Nothing is kept between deliveries (IDeliveryAgent.close)."""

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        status, text = parse_nexthop(request.nexthop, "4" if self.retry else "5")
        if self.retry and status[0] != "4":
            status = "4" + status[1:]
        return succeed(
            [RecipientStatus(r.index, status, text, relay="none") for r in request.recipients]
        )
