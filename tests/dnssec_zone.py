"""A loopback DNS server that speaks for a DNSSEC-validating resolver (no tests here).

It answers like :class:`tests.test_dns_names.ZoneAuthority` (zones given as
``{name: [[type, data, ttl], ...]}``) and also serves TLSA records
(``["TLSA", "3 1 1 <hex>", 60]``). It sets the AD bit as a validating
resolver (unbound) does: only when the query asked for it (RFC 6840
section 5.7, so a client that does not ask gets no AD), and only for names
not listed under the zone's ``"_insecure"`` key (an unsigned zone).

Run as ``python -m tests.dnssec_zone ZONE.json``: serves on 127.0.0.1 and
prints its port.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import dns, server

from pymta.dns.tlsa import TLSA_TYPE, parse
from tests.test_dns_names import ZoneAuthority


class SignedZone(ZoneAuthority):
    """ZoneAuthority with TLSA records."""

    def _lookup(self, name: bytes, cls: int, qtype: int, timeout: Any) -> defer.Deferred[Any]:
        if qtype != TLSA_TYPE:
            return super()._lookup(name, cls, qtype, timeout)
        entry = self.zone.get(name.decode().lower().rstrip("."))
        if entry is None or entry == "SERVFAIL":
            return super()._lookup(name, cls, qtype, timeout)
        answers = []
        for rtype, data, ttl in entry:
            if rtype == "TLSA":
                record = parse(data)
                rdata = bytes([record.usage, record.selector, record.matching]) + record.data
                payload = dns.UnknownRecord(rdata, ttl=ttl)
                answers.append(dns.RRHeader(name, TLSA_TYPE, dns.IN, ttl, payload, auth=True))
        soa = dns.Record_SOA(b"ns.test", b"root.test", minimum=30, ttl=30)
        authority = [] if answers else [dns.RRHeader(name, dns.SOA, dns.IN, 30, soa, auth=True)]
        return defer.succeed((answers, authority, []))


class ValidatingServer(server.DNSServerFactory):
    """Sets AD on answers for signed names to queries that asked for it."""

    def __init__(self, zone: dict[str, Any]) -> None:
        super().__init__(authorities=[SignedZone(zone)])
        self.insecure = {n.lower().rstrip(".") for n in zone.get("_insecure", [])}
        self.asked_ad: list[bool] = []

    def _responseFromMessage(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        response = super()._responseFromMessage(message, *args, **kwargs)
        self.asked_ad.append(bool(message.authenticData))
        names = {q.name.name.decode().lower().rstrip(".") for q in message.queries}
        response.authenticData = bool(message.authenticData) and not (names & self.insecure)
        return response


def listen(reactor: Any, zone: dict[str, Any]) -> tuple[ValidatingServer, Any, Any]:
    """UDP and TCP listeners on one port of 127.0.0.1."""
    factory = ValidatingServer(zone)
    for _ in range(20):
        udp_port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        try:
            tcp_port = reactor.listenTCP(udp_port.getHost().port, factory, interface="127.0.0.1")
        except CannotListenError:
            udp_port.stopListening()
            continue
        return factory, udp_port, tcp_port
    raise RuntimeError("no port free for both UDP and TCP")


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    with open(argv[1]) as f:
        zone = json.load(f)
    _factory, udp_port, _tcp = listen(reactor, zone)
    print(udp_port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv)
