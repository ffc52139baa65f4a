"""MTA-STS beside DANE in the smtp agent (RFC 8461 section 2), in memory.

Under ``smtp_tls_security_level = dane`` with an MTA-STS policy in mode
enforce: an MX host with secure, usable TLSA records is DANE's; a host
DANE lets fall back (insecure DNS) gets MTA-STS's verified TLS instead of
DANE's opportunistic may. Skipped where pymta has no DANE
(pymta.delivery.dane).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.config import Config
from pymta.delivery.lookup import DictLookup, Lookup
from pymta.delivery.smtp import SMTPAgent
from pymta.dns.memory import MemoryResolver
from pymta.mtasts.client import MTASTS
from pymta.mtasts.policy import Policy
from tests.test_delivery_smtp import Peer, _config, _greet, _request, _result
from tests.test_mtasts_client import FixedPolicies

dane = pytest.importorskip("pymta.delivery.dane")

ENFORCE = Policy("enforce", ("*.dane.test",), 86400)


def _zone() -> dict[tuple[str, str], list[Any]]:
    from pymta.dns.tlsa import parse

    return {
        ("dane.test", "MX"): [(10, "mx1.dane.test"), (20, "mx2.dane.test")],
        ("mx1.dane.test", "A"): ["192.0.2.1"],
        ("mx2.dane.test", "A"): ["192.0.2.2"],
        ("_25._tcp.mx2.dane.test", "TLSA"): [parse("3 1 1 " + "ab" * 32)],
    }


def _agent(peer: Peer, secure: list[str], servfail: list[str] = ()) -> SMTPAgent:
    def open_maps(specs: list[str], config: Config) -> Lookup:
        return DictLookup({})

    config = _config(
        smtp_tls_security_level="dane", smtp_dns_support_level="dnssec", pymta_mta_sts="yes"
    )
    return SMTPAgent(
        config,
        peer.clock,
        MemoryResolver(_zone(), servfail=servfail, secure=secure),
        peer.connect,
        open_maps=open_maps,
        mta_sts=MTASTS(FixedPolicies(ENFORCE), config),
    )


def test_insecure_domain_gets_mta_sts_instead_of_may() -> None:
    """dane on a domain without DNSSEC would be opportunistic (may); with an
    enforce policy the host must offer STARTTLS (4.7.4 otherwise) and is
    verified for its name."""
    peer = Peer(Clock())
    d = _agent(peer, secure=[]).deliver(_request(["a@dane.test"], "dane.test"))
    _greet(peer, "250 mx1.dane.test")
    _greet(peer, "250 mx2.dane.test")
    (a,) = _result(d)
    assert peer.addresses == [("192.0.2.1", 25), ("192.0.2.2", 25)]
    assert a.status == "4.7.4" and "TLS is required" in a.reason


def test_secure_tlsa_records_keep_dane() -> None:
    """A host with secure, usable TLSA records is verified by DANE (its
    context names the MX host for SNI), not by MTA-STS's CA check."""
    peer = Peer(Clock())
    secure = ["dane.test", "mx1.dane.test", "mx2.dane.test", "_25._tcp.mx2.dane.test"]
    agent = _agent(peer, secure=secure, servfail=["_25._tcp.mx1.dane.test"])
    agent.deliver(_request(["a@dane.test"], "dane.test"))
    _greet(peer, "250-mx2.dane.test", "250 STARTTLS")
    assert peer.written() == ["STARTTLS"]
    peer.reply("220 go")
    transport: Any = peer.chat.transport
    assert transport.tls_context.name == "mx2.dane.test"
