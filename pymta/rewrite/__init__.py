"""pymta.rewrite: Postfix's trivial-rewrite (see docs/architecture.md).

- :class:`Resolver` (``pymta.rewrite.resolve``): recipient -> (transport,
  nexthop, recipient); address classes and reject_unlisted_recipient.
- :class:`AddressRewriter` (``pymta.rewrite.canonical``): standard form,
  append_at_myorigin.
- :class:`DomainList` (``pymta.rewrite.domains``): mydestination-style lists.
"""

from pymta.rewrite.canonical import AddressRewriter
from pymta.rewrite.domains import DomainList
from pymta.rewrite.interface import IResolver, Resolution
from pymta.rewrite.resolve import Resolver

__all__ = ["AddressRewriter", "DomainList", "IResolver", "Resolution", "Resolver"]
