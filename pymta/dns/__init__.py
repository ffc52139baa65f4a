"""dns: asynchronous DNS for the SMTP client — MX, A and AAAA, as values.

Mirrors Postfix's dns_lookup(3) and the MX logic of smtp_addr.c. The
pieces:

- :mod:`pymta.dns.interface` — :class:`IDNSResolver` (``lookup(name,
  rrtype)`` fires with a :class:`DNSAnswer`, never errbacks for a DNS
  failure) and the answer values;
- :mod:`pymta.dns.names` — the real resolver on twisted.names (servers
  from ``pymta_dns_servers``, else /etc/resolv.conf);
- :mod:`pymta.dns.cache` — answers kept for their TTL (injected clock);
- :mod:`pymta.dns.memory` — in-memory zones for tests and embedding;
- :mod:`pymta.dns.mx` — the next hop to an ordered list of hosts: MX by
  preference with equal preferences shuffled (injected random), A/AAAA when
  there is no MX, RFC 7505 null MX, ``[brackets]`` without MX lookup.

Untrusted input: every DNS answer (names are checked, nothing reaches a
path or a shell). Writes nothing. Logs nothing (the agent logs results).
"""

from pymta.dns.interface import DNSAnswer, IDNSResolver
from pymta.dns.mx import Host, HostList, find_hosts

__all__ = ["DNSAnswer", "Host", "HostList", "IDNSResolver", "find_hosts"]
