"""The resolver contract: recipient -> (transport, nexthop, recipient).

Mirrors Postfix's trivial-rewrite resolve service.
"""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Interface


@dataclass(frozen=True)
class Resolution:
    """Where one recipient goes: the master.cf transport name, the next hop
    (a domain, ``[host]:port``, or the error text for the error transport),
    and the recipient as the agent should see it."""

    transport: str
    nexthop: str
    recipient: str


class IResolver(Interface):
    def resolve(address: str) -> Resolution:
        """Resolve a rewritten recipient address; raises TableError when a
        lookup failed (qmgr then defers)."""
