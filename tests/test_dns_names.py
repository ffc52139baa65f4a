"""pymta.dns.names against a real twisted.names DNS server on loopback.

The server (:class:`ZoneAuthority`, also runnable as ``python
tests/test_dns_names.py ZONE.json`` for the end-to-end tests, printing its
port) answers for test zones given as ``{name: [[type, data, ttl], ...]}``;
a name whose value is ``"SERVFAIL"`` fails, an absent name is NXDOMAIN.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase

from pymta.config import Config
from pymta.dns import find_hosts
from pymta.dns.interface import NODATA, NXDOMAIN, OK, SERVFAIL
from pymta.dns.names import NamesResolver, parse_servers

Zone = dict[str, Any]

ZONE: Zone = {
    "example.net": [["MX", "10 mx1.example.net", 300], ["MX", "20 mx2.example.net", 300]],
    "mx1.example.net": [["A", "127.0.0.2", 300]],
    "mx2.example.net": [["A", "127.0.0.3", 300], ["AAAA", "::1", 300]],
    "nomx.example.net": [["A", "127.0.0.4", 60]],
    "null.example.net": [["MX", "0 .", 300]],
    "broken.example.net": "SERVFAIL",
    "2.0.0.127.zen.example.net": [["A", "127.0.0.2", 60], ["TXT", "Listed: see zen", 60]],
    "7.0.0.127.in-addr.arpa": [["PTR", "Host.Example.Net.", 60]],
}


class ZoneAuthority(ResolverBase):
    """A twisted.names resolver answering from an in-memory zone."""

    def __init__(self, zone: Zone) -> None:
        super().__init__()
        self.zone = {k.lower(): v for k, v in zone.items()}

    def _lookup(self, name: bytes, cls: int, qtype: int, timeout: Any) -> defer.Deferred[Any]:
        key = name.decode().lower().rstrip(".")
        entry = self.zone.get(key)
        if entry == "SERVFAIL":
            # Not a DomainError: the server answers SERVFAIL (rcode 2).
            return defer.fail(RuntimeError(key))
        if entry is None:
            return defer.fail(error.DomainError(key))
        answers = []
        for rtype, data, ttl in entry:
            payload: Any
            if rtype == "MX" and qtype == dns.MX:
                pref, host = data.split()
                payload = dns.Record_MX(int(pref), host.rstrip(".").encode(), ttl=ttl)
            elif rtype == "A" and qtype == dns.A:
                payload = dns.Record_A(data, ttl=ttl)
            elif rtype == "AAAA" and qtype == dns.AAAA:
                payload = dns.Record_AAAA(data, ttl=ttl)
            elif rtype == "TXT" and qtype == dns.TXT:
                payload = dns.Record_TXT(data.encode(), ttl=ttl)
            elif rtype == "PTR" and qtype == dns.PTR:
                payload = dns.Record_PTR(data.encode(), ttl=ttl)
            else:
                continue
            answers.append(dns.RRHeader(name, payload.TYPE, dns.IN, ttl, payload, auth=True))
        soa = dns.Record_SOA(b"ns.test", b"root.test", minimum=30, ttl=30)
        authority = [] if answers else [dns.RRHeader(name, dns.SOA, dns.IN, 30, soa, auth=True)]
        return defer.succeed((answers, authority, []))


def listen(reactor: Any, zone: Zone, interface: str = "127.0.0.1") -> tuple[Any, Any]:
    """Start UDP and TCP DNS listeners on one kernel-chosen port."""
    factory = server.DNSServerFactory(authorities=[ZoneAuthority(zone)])
    for _ in range(20):
        udp_port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface=interface)
        try:
            tcp_port = reactor.listenTCP(udp_port.getHost().port, factory, interface=interface)
        except CannotListenError:
            # The kernel's free UDP port is taken for TCP: try another one.
            udp_port.stopListening()
            continue
        return udp_port, tcp_port
    raise RuntimeError("no port free for both UDP and TCP")


@pytest.fixture
def dns_server() -> Iterator[int]:
    from twisted.internet import reactor

    udp_port, tcp_port = listen(reactor, ZONE)
    yield udp_port.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(udp_port.stopListening))
    pytest_twisted.blockon(defer.maybeDeferred(tcp_port.stopListening))


def _resolver(port: int) -> NamesResolver:
    from twisted.internet import reactor

    config = Config({"pymta_dns_servers": f"127.0.0.1:{port}"})
    return NamesResolver.from_config(config, reactor)


def test_parse_servers() -> None:
    """Server lists take host, host:port and [v6]:port; port 53 by default."""
    assert parse_servers(["10.0.0.1", "127.0.0.1:5353", "[::1]:54"]) == [
        ("10.0.0.1", 53),
        ("127.0.0.1", 5353),
        ("::1", 54),
    ]


@pytest_twisted.ensureDeferred
async def test_mx_records_by_preference(dns_server: int) -> None:
    """MX records come back with their preferences and TTL from a real server."""
    answer = await _resolver(dns_server).lookup("example.net", "MX")
    assert answer.status == OK
    assert sorted(answer.records) == [(10, "mx1.example.net"), (20, "mx2.example.net")]
    assert answer.ttl == 300


@pytest_twisted.ensureDeferred
async def test_statuses(dns_server: int) -> None:
    """NXDOMAIN, NODATA (with the SOA minimum as TTL) and SERVFAIL are told apart."""
    resolver = _resolver(dns_server)
    missing = await resolver.lookup("missing.example.net", "MX")
    nodata = await resolver.lookup("nomx.example.net", "MX")
    broken = await resolver.lookup("broken.example.net", "MX")
    assert (missing.status, nodata.status, broken.status) == (NXDOMAIN, NODATA, SERVFAIL)
    assert nodata.ttl == 30


@pytest_twisted.ensureDeferred
async def test_find_hosts_through_server(dns_server: int) -> None:
    """find_hosts over the real resolver: MX order, A and AAAA addresses."""
    hosts = await find_hosts(_resolver(dns_server), "example.net", random=random.Random(1))
    assert [(h.name, h.address) for h in hosts.hosts] == [
        ("mx1.example.net", "127.0.0.2"),
        ("mx2.example.net", "127.0.0.3"),
        ("mx2.example.net", "::1"),
    ]


@pytest_twisted.ensureDeferred
async def test_fallback_null_nxdomain_servfail(dns_server: int) -> None:
    """No MX falls back to A; null MX, NXDOMAIN and SERVFAIL give 5.1.10, 5.1.2, 4.4.3."""
    resolver = _resolver(dns_server)
    fallback = await find_hosts(resolver, "nomx.example.net")
    assert [h.address for h in fallback.hosts] == ["127.0.0.4"]
    null = await find_hosts(resolver, "null.example.net")
    missing = await find_hosts(resolver, "missing.example.net")
    broken = await find_hosts(resolver, "broken.example.net")
    assert (null.status, missing.status, broken.status) == ("5.1.10", "5.1.2", "4.4.3")
    assert "Host not found, try again" in broken.reason


@pytest_twisted.ensureDeferred
async def test_txt_and_ptr(dns_server: int) -> None:
    """TXT answers come back as text, PTR answers as lower-case names."""
    resolver = _resolver(dns_server)
    txt = await resolver.lookup("2.0.0.127.zen.example.net", "TXT")
    ptr = await resolver.lookup("7.0.0.127.in-addr.arpa", "PTR")
    assert (txt.status, txt.records) == (OK, ("Listed: see zen",))
    assert (ptr.status, ptr.records) == (OK, ("host.example.net",))


def main(argv: list[str]) -> None:
    """Serve a zone file (JSON) on 127.0.0.1 and print the port."""
    from twisted.internet import reactor

    with open(argv[1]) as f:
        zone = json.load(f)
    udp_port, _tcp = listen(reactor, zone)
    print(udp_port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main(sys.argv)
