"""pymta.dns.names with smtp_dns_support_level = dnssec, against a real
loopback DNS server that sets the AD bit as a validating resolver does
(tests/dnssec_zone.py): the AD bit is asked for and believed, TLSA records
come back as values, and a resolver off loopback is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from pymta.config import Config, ConfigError
from pymta.dns.interface import NODATA, NXDOMAIN, OK
from pymta.dns.mx import find_hosts
from pymta.dns.names import NamesResolver
from pymta.dns.tlsa import parse
from tests.dnssec_zone import ValidatingServer, listen

RECORD = "3 1 1 " + "ab" * 32
ZONE: dict[str, Any] = {
    "signed.test": [["MX", "10 mx.signed.test", 300]],
    "mx.signed.test": [["A", "127.0.0.2", 300]],
    "_25._tcp.mx.signed.test": [["TLSA", RECORD, 300], ["TLSA", "2 0 1 " + "cd" * 32, 300]],
    "plain.test": [["MX", "10 mx.plain.test", 300]],
    "mx.plain.test": [["A", "127.0.0.3", 300]],
    "_insecure": ["plain.test", "mx.plain.test"],
}


@pytest.fixture
def validating() -> Iterator[tuple[ValidatingServer, int]]:
    from twisted.internet import reactor

    factory, udp_port, tcp_port = listen(reactor, ZONE)
    yield factory, udp_port.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(udp_port.stopListening))
    pytest_twisted.blockon(defer.maybeDeferred(tcp_port.stopListening))


def _resolver(port: int, dnssec: bool) -> NamesResolver:
    from twisted.internet import reactor

    config = Config({"pymta_dns_servers": f"127.0.0.1:{port}"})
    return NamesResolver.from_config(config, reactor, dnssec=dnssec)


@pytest_twisted.ensureDeferred
async def test_ad_bit_is_asked_for_and_believed(validating: tuple[ValidatingServer, int]) -> None:
    """With dnssec the query carries AD and a signed answer is authentic,
    an unsigned one is not; TLSA records come back as values."""
    factory, port = validating
    resolver = _resolver(port, dnssec=True)
    mx = await resolver.lookup("signed.test", "MX")
    plain = await resolver.lookup("plain.test", "MX")
    tlsa = await resolver.lookup("_25._tcp.mx.signed.test", "TLSA")
    assert factory.asked_ad and all(factory.asked_ad)
    assert (mx.status, mx.authentic) == (OK, True)
    assert (plain.status, plain.authentic) == (OK, False)
    assert tlsa.authentic and tlsa.records == (parse(RECORD), parse("2 0 1 " + "cd" * 32))
    hosts = await find_hosts(resolver, "signed.test")
    assert [(h.name, h.secure) for h in hosts.hosts] == [("mx.signed.test", True)]
    insecure = await find_hosts(resolver, "plain.test")
    assert [(h.name, h.secure) for h in insecure.hosts] == [("mx.plain.test", False)]


@pytest_twisted.ensureDeferred
async def test_secure_denial_is_authentic(validating: tuple[ValidatingServer, int]) -> None:
    """NODATA and NXDOMAIN answers of a signed zone are authentic too (a
    secure "no TLSA records")."""
    _factory, port = validating
    resolver = _resolver(port, dnssec=True)
    nodata = await resolver.lookup("mx.signed.test", "TLSA")
    missing = await resolver.lookup("_25._tcp.nothing.signed.test", "TLSA")
    assert (nodata.status, nodata.authentic) == (NODATA, True)
    assert (missing.status, missing.authentic) == (NXDOMAIN, True)


@pytest_twisted.ensureDeferred
async def test_without_dnssec_nothing_is_authentic(
    validating: tuple[ValidatingServer, int],
) -> None:
    """The ordinary resolver does not ask for AD and reports nothing as
    authentic."""
    factory, port = validating
    answer = await _resolver(port, dnssec=False).lookup("signed.test", "MX")
    assert answer.ok and not answer.authentic
    assert factory.asked_ad == [False]


def test_remote_resolver_is_refused_for_dnssec() -> None:
    """An AD bit that crossed a network proves nothing: dnssec with a
    resolver off loopback stops the start."""
    from twisted.internet import reactor

    config = Config({"pymta_dns_servers": "192.0.2.53 127.0.0.1"})
    with pytest.raises(ConfigError, match=r"192\.0\.2\.53 is not"):
        NamesResolver.from_config(config, reactor, dnssec=True)
    assert NamesResolver.from_config(Config({"pymta_dns_servers": "::1"}), reactor, dnssec=True)
