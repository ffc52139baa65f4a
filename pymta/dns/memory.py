"""memory: an in-memory IDNSResolver for tests and embedding.

Zones are a dict ``{(name, rrtype): records}``; a name present with other
types only answers NODATA, an absent name NXDOMAIN, and names listed in
``servfail`` answer SERVFAIL. Names listed in ``secure`` answer (positively
or negatively) with ``authentic`` set, as a DNSSEC-signed zone behind a
trusted validating resolver would. ``queries`` records every lookup (tests
use it to prove caching and bracket handling).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from pymta.dns.interface import NODATA, NXDOMAIN, OK, SERVFAIL, DNSAnswer, IDNSResolver, MXRecord
from pymta.dns.tlsa import TLSARecord


@implementer(IDNSResolver)
class MemoryResolver:
    def __init__(
        self,
        records: Mapping[tuple[str, str], Sequence[MXRecord | str | TLSARecord]],
        servfail: Iterable[str] = (),
        ttl: int = 300,
        secure: Iterable[str] = (),
    ) -> None:
        self.records = {
            (n.lower().rstrip("."), t.upper()): tuple(r) for (n, t), r in records.items()
        }
        self.servfail = {n.lower() for n in servfail}
        self.secure = {n.lower().rstrip(".") for n in secure}
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []

    def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
        key = (name.lower().rstrip("."), rrtype.upper())
        self.queries.append(key)
        if key[0] in self.servfail:
            return succeed(DNSAnswer(name, rrtype, SERVFAIL, reason="Host not found, try again"))
        found = self.records.get(key)
        authentic = key[0] in self.secure
        if found:
            return succeed(DNSAnswer(name, rrtype, OK, found, self.ttl, authentic=authentic))
        if any(n == key[0] for n, _ in self.records):
            return succeed(
                DNSAnswer(
                    name,
                    rrtype,
                    NODATA,
                    ttl=self.ttl,
                    reason="No address associated with hostname",
                    authentic=authentic,
                )
            )
        return succeed(
            DNSAnswer(
                name, rrtype, NXDOMAIN, ttl=self.ttl, reason="Host not found", authentic=authentic
            )
        )
