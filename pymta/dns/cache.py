"""cache: DNS answers kept for their TTL, per (name, type).

Positive answers live for their smallest record TTL, negative ones
(NXDOMAIN, NODATA) for the SOA minimum they came with, both capped by
``max_ttl``; SERVFAIL is never cached (a temporary failure is retried at
the next delivery). Concurrent lookups of one key share one query. The
clock is injected.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymta.dns.interface import SERVFAIL, DNSAnswer, IDNSResolver


@implementer(IDNSResolver)
class CachingResolver:
    def __init__(self, resolver: IDNSResolver, clock: IReactorTime, max_ttl: int = 3600) -> None:
        self._resolver = resolver
        self._clock = clock
        self._max_ttl = max_ttl
        self._entries: dict[tuple[str, str], tuple[float, DNSAnswer]] = {}
        self._pending: dict[tuple[str, str], list[Deferred[DNSAnswer]]] = {}

    def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
        key = (name.lower().rstrip("."), rrtype.upper())
        now = self._clock.seconds()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > now:
                d: Deferred[DNSAnswer] = Deferred()
                d.callback(entry[1])
                return d
            del self._entries[key]
        waiter: Deferred[DNSAnswer] = Deferred()
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._pending[key] = [waiter]
        self._resolver.lookup(name, rrtype).addCallback(self._answered, key)
        return waiter

    def _answered(self, answer: DNSAnswer, key: tuple[str, str]) -> None:
        ttl = min(answer.ttl, self._max_ttl)
        if answer.status != SERVFAIL and ttl > 0:
            self._entries[key] = (self._clock.seconds() + ttl, answer)
        for waiter in self._pending.pop(key, []):
            waiter.callback(answer)
