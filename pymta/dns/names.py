"""names: the real IDNSResolver, on twisted.names (asynchronous, never blocks).

Servers come from ``pymta_dns_servers`` (``host`` or ``host:port`` or
``[v6]:port``, comma/space separated; empty means /etc/resolv.conf, as the
system's own resolver would). Exceptions of twisted.names become answer
statuses: DNSNameError is NXDOMAIN, an empty answer is NODATA, and
everything else (server failure, refusal, timeout) is SERVFAIL, which the
caller treats as temporary. CNAMEs are followed by the server; only records
of the asked type are kept. TXT answers are text (the strings of one record
joined), PTR answers lower-case names. Untrusted: the answers (only names and
addresses are taken from them).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.names import client, dns, error
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.config import Config, ConfigError
from pymta.dns.interface import NODATA, NXDOMAIN, OK, SERVFAIL, DNSAnswer, IDNSResolver

_TYPES = {"MX": dns.MX, "A": dns.A, "AAAA": dns.AAAA, "TXT": dns.TXT, "PTR": dns.PTR}


def parse_servers(value: list[str]) -> list[tuple[str, int]]:
    """``127.0.0.1:5353``, ``[::1]:53``, ``10.0.0.1`` -> (host, port) pairs."""
    servers: list[tuple[str, int]] = []
    for item in value:
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not port.isdigit() or not host:
            raise ConfigError(
                f"bad DNS server {item!r}: expected host or host:port",
                parameter="pymta_dns_servers",
            )
        servers.append((host, int(port)))
    return servers


@implementer(IDNSResolver)
class NamesResolver:
    """IDNSResolver over a twisted.names client.Resolver."""

    def __init__(self, resolver: Any) -> None:
        self._resolver = resolver

    @classmethod
    def from_config(cls, config: Config, reactor: Any) -> NamesResolver:
        servers = parse_servers(config.get_list("pymta_dns_servers"))
        if servers:
            resolver = client.Resolver(servers=servers, reactor=reactor)
        else:
            resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
        return cls(resolver)

    def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
        qtype = _TYPES[rrtype.upper()]
        d = self._query(name, qtype)
        return d.addCallbacks(
            self._answer,
            self._failure,
            callbackArgs=(name, rrtype, qtype),
            errbackArgs=(name, rrtype),
        )

    def _query(self, name: str, qtype: int) -> Deferred[Any]:
        lookup = {
            dns.MX: self._resolver.lookupMailExchange,
            dns.A: self._resolver.lookupAddress,
            dns.AAAA: self._resolver.lookupIPV6Address,
            dns.TXT: self._resolver.lookupText,
            dns.PTR: self._resolver.lookupPointer,
        }[qtype]
        result: Deferred[Any] = lookup(name)
        return result

    @staticmethod
    def _answer(result: Any, name: str, rrtype: str, qtype: int) -> DNSAnswer:
        answers, authority, _additional = result
        records: list[Any] = []
        ttls: list[int] = []
        for rr in answers:
            if rr.type != qtype:
                continue
            ttls.append(rr.ttl)
            payload = rr.payload
            if qtype == dns.MX:
                records.append((int(payload.preference), str(payload.name).rstrip(".").lower()))
            elif qtype == dns.TXT:
                # One TXT record is one or more strings, joined (RFC 7208 3.3).
                records.append(b"".join(payload.data).decode("utf-8", "replace"))
            elif qtype == dns.PTR:
                records.append(str(payload.name).rstrip(".").lower())
            else:
                records.append(payload.dottedQuad() if qtype == dns.A else _v6(payload))
        if records:
            return DNSAnswer(name, rrtype, OK, tuple(records), min(ttls))
        ttl = min((int(rr.payload.minimum) for rr in authority if rr.type == dns.SOA), default=0)
        return DNSAnswer(
            name, rrtype, NODATA, ttl=ttl, reason="No address associated with hostname"
        )

    @staticmethod
    def _failure(failure: Failure, name: str, rrtype: str) -> DNSAnswer:
        if failure.check(error.DNSNameError):
            return DNSAnswer(name, rrtype, NXDOMAIN, reason="Host not found")
        if failure.check(error.AuthoritativeDomainError):
            return DNSAnswer(name, rrtype, NXDOMAIN, reason="Host not found")
        return DNSAnswer(name, rrtype, SERVFAIL, reason="Host not found, try again")


def _v6(payload: Any) -> str:
    import socket

    return socket.inet_ntop(socket.AF_INET6, payload.address)
