"""resolver: the DNS lookups of the mail authentication checks, in a worker thread.

dkimpy and pyspf ask DNS synchronously. pymta runs every check in the
reactor's thread pool (pymta.mailauth.service), so the lookups here may
block that worker thread, never the reactor. A :class:`Lookup` answers
``lookup(name, rrtype)`` for TXT, A, AAAA, MX and PTR:

- ``[]`` for "no such name" and "no such record" (permanent);
- :class:`DNSTempError` for a timeout, SERVFAIL or refusal, which the
  checks turn into ``temperror`` (RFC 7208 2.6.6, RFC 6376 6.1.2,
  RFC 7489 6.6.3) — a lookup never hangs: each has a lifetime of
  ``pymta_mailauth_dns_timeout``.

Implementations: :class:`DnspythonLookup`, a stub resolver (dnspython)
pointed at the servers of ``pymta_dns_servers`` — the same servers as
pymta.dns uses for MX lookups — else /etc/resolv.conf, with a cache of
answers kept for their TTL; and
:class:`MemoryLookup`, zones in a dict, for tests and embedding.

Records come back as: TXT a list of the character strings (bytes, not
joined); A/AAAA the address text; MX (preference, host); PTR the host.
Untrusted input: every answer. Writes and logs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from pymta.config import Config
from pymta.dns.names import parse_servers

RRTYPES = ("TXT", "A", "AAAA", "MX", "PTR")
CACHE_SIZE = 10000  # answers; a few MB at most


class DNSTempError(Exception):
    """The lookup failed for now (timeout, SERVFAIL): a temperror result."""


class Lookup(Protocol):
    def lookup(self, name: str, rrtype: str) -> list[Any]:
        """The records of ``rrtype`` at ``name``; [] when there are none."""


class DnspythonLookup:
    """A stub resolver on dnspython with a bounded lifetime per lookup."""

    def __init__(self, servers: Sequence[tuple[str, int]], timeout: float) -> None:
        if servers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in servers
            ]
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        # Answers (and NXDOMAIN) kept for their TTL, shared by the worker
        # threads (dnspython's LRUCache locks): the same sender domains come
        # back message after message.
        self._resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)
        self._timeout = timeout

    @classmethod
    def from_config(cls, config: Config) -> DnspythonLookup:
        servers = parse_servers(config.get_list("pymta_dns_servers"))
        return cls(servers, config.get_time("pymta_mailauth_dns_timeout"))

    def lookup(self, name: str, rrtype: str) -> list[Any]:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return []  # a name DNS cannot carry (label too long, bad IDNA) has no records
        try:
            answer = self._resolver.resolve(qname, rrtype, lifetime=self._timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as e:
            raise DNSTempError(f"DNS timeout for {name}/{rrtype}") from e
        except dns.exception.DNSException as e:
            # SERVFAIL or refusal from every server (NoNameservers), a
            # malformed answer: temporary, as Postfix treats them.
            raise DNSTempError(f"DNS failure for {name}/{rrtype}: {e}") from e
        records: list[Any] = []
        for rdata in answer:
            if rrtype in ("A", "AAAA"):
                records.append(rdata.address)
            elif rrtype == "MX":
                records.append((int(rdata.preference), rdata.exchange.to_text(True)))
            elif rrtype == "PTR":
                records.append(rdata.target.to_text(True))
            else:
                records.append(list(rdata.strings))
        return records


class MemoryLookup:
    """Zones in memory: ``{(name, rrtype): records}``; a name in
    ``failing`` answers DNSTempError (as a timeout would)."""

    def __init__(
        self,
        records: Mapping[tuple[str, str], list[Any]] | None = None,
        failing: Sequence[str] = (),
    ) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}
        for (name, rrtype), values in (records or {}).items():
            self.add(name, rrtype, *values)
        self.failing = {n.lower().rstrip(".") for n in failing}
        self.queries: list[tuple[str, str]] = []

    def add(self, name: str, rrtype: str, *values: Any) -> None:
        key = (name.lower().rstrip("."), rrtype.upper())
        for value in values:
            if rrtype.upper() == "TXT" and isinstance(value, str | bytes):
                value = _txt_strings(value if isinstance(value, bytes) else value.encode())
            self.records.setdefault(key, []).append(value)

    def lookup(self, name: str, rrtype: str) -> list[Any]:
        key = (name.lower().rstrip("."), rrtype.upper())
        self.queries.append(key)
        if key[0] in self.failing:
            raise DNSTempError(f"DNS timeout for {name}/{rrtype}")
        return list(self.records.get(key, []))


def _txt_strings(value: bytes) -> list[bytes]:
    """A long TXT value as DNS carries it: character strings of 255 bytes at most."""
    return [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]


def txt_values(lookup: Lookup, name: str) -> list[bytes]:
    """The TXT records of ``name``, each one's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
    return [b"".join(strings) for strings in lookup.lookup(name, "TXT")]
