"""switch: the resolver a reload replaces under every part at once.

The queue manager, cleanup and the smtpd sessions share one
:class:`ResolverSwitch`; :mod:`pymta.master.reload` points it at the
resolver of the new configuration (``switch.current = Resolver(config)``),
so that mail accepted under the new domains is routed by the same rules
that accepted it, as Postfix's trivial-rewrite restarts with a reload.
Each call goes to the resolver current at the time of the call.

Untrusted input: addresses (passed on). Writes: nothing. Logs: nothing.
"""

from __future__ import annotations

from zope.interface import implementer

from pymta.rewrite.interface import IResolver, Resolution


@implementer(IResolver)
class ResolverSwitch:
    """An IResolver that forwards each call to ``current`` (see module doc)."""

    def __init__(self, resolver: IResolver) -> None:
        self.current = resolver

    def resolve(self, address: str) -> Resolution:
        return self.current.resolve(address)

    def address_class(self, domain: str) -> str:
        return self.current.address_class(domain)

    def is_local_domain(self, domain: str) -> bool:
        return self.current.is_local_domain(domain)

    def is_listed_recipient(self, address: str) -> bool:
        return self.current.is_listed_recipient(address)
