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
    """What the queue manager, cleanup and smtpd ask trivial-rewrite."""

    def resolve(address: str) -> Resolution:
        """Resolve a rewritten recipient address; raises TableError when a
        lookup failed (qmgr then defers)."""

    def address_class(domain: str) -> str:
        """The address class of a domain: local, virtual_alias,
        virtual_mailbox, relay or default (Postfix's ADDRESS_CLASS_README)."""

    def is_local_domain(domain: str) -> bool:
        """True for mydestination, the empty domain and our address literals."""

    def is_listed_recipient(address: str) -> bool:
        """Whether a recipient is known (smtpd's reject_unlisted_recipient);
        may raise TableError (the check then defers)."""
