"""transport_maps: per-address and per-domain (transport, nexthop) overrides.

Mirrors Postfix's trivial-rewrite transport.c and transport(5). For a
recipient ``user+ext@domain`` the tables are searched, first match wins:

1. ``user+ext@domain``, then ``user@domain`` (recipient_delimiter);
2. ``domain``;
3. each parent domain, as ``.parent`` (or as ``parent`` when
   ``transport_maps`` is listed in parent_domain_matches_subdomains);
4. the wildcard ``*``.

A value is ``transport:nexthop`` and its fields mean (transport(5)):

=====================  ==============================================
``smtp:[mx]:587``      both replaced
``smtp:``              transport replaced, nexthop reset to the domain
``:[mx]``              transport kept, nexthop replaced
``:`` or empty         nothing changes (as if the table did not exist)
``error:5.1.2 text``   the error agent bounces with that status and text
=====================  ==============================================

The result overrides the transport of every address class (Postfix's
"the transport map overrides any transport and next-hop host info that is
set up above"). Untrusted input: the address. Writes and logs nothing;
TableError from a table propagates (qmgr defers).
"""

from __future__ import annotations

from pymta.tables import Maps
from pymta.tables.addrmaps import split_extension


def parse_value(value: str) -> tuple[str, str]:
    """Split ``transport:nexthop`` at the first colon (either may be empty)."""
    transport, _, nexthop = value.strip().partition(":")
    return transport.strip(), nexthop.strip()


def apply_value(value: str, transport: str, nexthop: str, domain: str) -> tuple[str, str]:
    """The (transport, nexthop) after a table value, per transport(5)."""
    new_transport, new_nexthop = parse_value(value)
    if new_transport:
        return new_transport, new_nexthop or domain
    if new_nexthop:
        return transport, new_nexthop
    return transport, nexthop


class TransportMaps:
    """The transport_maps search of one configuration (see module doc)."""

    def __init__(self, maps: Maps, delimiter: str = "", parent_matches: bool = False) -> None:
        self._maps = maps
        self._delimiter = delimiter
        self._parent_matches = parent_matches

    def __bool__(self) -> bool:
        return bool(self._maps)

    def keys(self, local: str, domain: str) -> list[str]:
        """The lookup keys for an address, in search order."""
        keys: list[str] = []
        domain = domain.lower()
        if domain:
            keys.append(f"{local}@{domain}")
            user, _, ext = split_extension(local, self._delimiter)
            if ext:
                keys.append(f"{user}@{domain}")
            keys.append(domain)
            labels = domain.split(".")
            for i in range(1, len(labels)):
                parent = ".".join(labels[i:])
                if not parent:
                    continue
                keys.append(parent if self._parent_matches else f".{parent}")
        keys.append("*")
        return keys

    def find(self, local: str, domain: str) -> str | None:
        """The first table value for the address, or None."""
        for key in self.keys(local, domain):
            value = self._maps.lookup(key)
            if value is not None:
                return value
        return None
