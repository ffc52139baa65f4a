"""MTA-STS in the smtp agent (pymta.mtasts.client), in memory.

The peers are StringTransports (tests/test_delivery_smtp.py's Peer), DNS an
in-memory zone with two MX hosts, the policy a fixed value instead of a
discovery: these tests prove what the agent does with a policy (which MX
hosts, which TLS, what testing logs); discovery, fetch and cache have their
own tests, the real TLS handshakes the end-to-end test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import crypto
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from pymta.config import Config
from pymta.delivery.lookup import DictLookup, Lookup
from pymta.delivery.smtp import SMTPAgent
from pymta.delivery.smtp_tls import TLSPolicy
from pymta.dns.memory import MemoryResolver
from pymta.mtasts.client import MTASTS, MTASTSPolicy
from pymta.mtasts.policy import Policy
from pymta.smtpd.testing import LogCapture
from tests.mtasts_hosts import issue
from tests.test_delivery_smtp import ZONE, Peer, _config, _greet, _request, _result

ENFORCE = Policy("enforce", ("mx2.example.net",), 86400)
TESTING = Policy("testing", ("mx2.example.net",), 86400)


class FixedPolicies:
    def __init__(self, policy: Policy | None) -> None:
        self.value = policy
        self.asked: list[str] = []

    def policy(self, domain: str) -> Deferred[Policy | None]:
        self.asked.append(domain)
        return succeed(self.value)


@pytest.fixture
def maillog() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


def _agent(peer: Peer, policy: Policy | None, **extra: str) -> tuple[SMTPAgent, FixedPolicies]:
    source = FixedPolicies(policy)
    tables = {"example.net": extra.pop("table")} if "table" in extra else {}

    def open_maps(specs: list[str], config: Config) -> Lookup:
        return DictLookup(tables)

    if tables:
        extra["smtp_tls_policy_maps"] = "inline:p"
    config = _config(pymta_mta_sts="yes", **extra)
    agent = SMTPAgent(
        config,
        peer.clock,
        MemoryResolver(ZONE),
        peer.connect,
        open_maps=open_maps,
        mta_sts=MTASTS(source, config),
    )
    return agent, source


def _starttls(peer: Peer) -> Any:
    """The peer offers STARTTLS and accepts it; the client's TLS context."""
    _greet(peer, "250-mx2.example.net", "250 STARTTLS")
    assert peer.written() == ["STARTTLS"]
    peer.reply("220 2.0.0 Ready to start TLS")
    transport: Any = peer.chat.transport
    return transport.tls_context


def test_enforce_uses_only_the_policy_mx_with_verified_tls(maillog: list[str]) -> None:
    """Under enforce, mx1 (preferred, not in the policy) is never connected
    to: mx2 is, with STARTTLS verifying the certificate for the name
    mx2.example.net (RFC 8461 4.1, 4.2); mx1 is logged as not permitted."""
    peer = Peer(Clock())
    agent, source = _agent(peer, ENFORCE)
    agent.deliver(_request(["a@example.net"]))
    context = _starttls(peer)
    assert peer.addresses == [("192.0.2.2", 25)]
    assert context.name == "mx2.example.net"  # SNI; the names are checked after the handshake
    assert source.asked == ["example.net"]
    assert (
        "smtp: QID1: MTA-STS policy of example.net: MX host mx1.example.net is not "
        "permitted (mode enforce)" in maillog
    )


def test_enforce_without_starttls_defers() -> None:
    """Under enforce, an MX in the policy that offers no STARTTLS defers the
    mail (4.7.4), although main.cf says may."""
    peer = Peer(Clock())
    agent, _ = _agent(peer, ENFORCE)
    d = agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx2.example.net")
    (status,) = _result(d)
    assert status.status == "4.7.4"
    assert "TLS is required" in status.reason


def test_enforce_with_no_permitted_mx_defers_without_connecting() -> None:
    """Under enforce, when no MX matches the policy the mail is deferred 4.7.5
    and no connection is made."""
    peer = Peer(Clock())
    agent, _ = _agent(peer, Policy("enforce", ("*.elsewhere.test",), 86400))
    (status,) = _result(agent.deliver(_request(["a@example.net"])))
    assert status.status == "4.7.5"
    assert "no MX host is permitted" in status.reason
    assert peer.addresses == []


def test_testing_delivers_and_logs_what_enforce_would_refuse(maillog: list[str]) -> None:
    """Under testing the main.cf level (may) applies and mx1 is used, with a
    line for the MX outside the policy; a peer without STARTTLS gets the mail
    in plain text (no line: mx1 was already named)."""
    peer = Peer(Clock())
    agent, _ = _agent(peer, TESTING)
    d = agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert peer.addresses == [("192.0.2.1", 25)]
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert not d.called
    assert (
        "smtp: QID1: MTA-STS policy of example.net (testing): would not deliver to MX host "
        "mx1.example.net: not in the policy's mx" in maillog
    )


def test_testing_logs_a_session_without_tls(maillog: list[str]) -> None:
    """Under testing, a session with a permitted MX but without TLS is
    logged as one enforce would not have used, and goes on."""
    peer = Peer(Clock(), refuse={"192.0.2.1"})
    agent, _ = _agent(peer, TESTING)
    agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx2.example.net")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert (
        "smtp: QID1: MTA-STS policy of example.net (testing): would not deliver to "
        "mx2.example.net[192.0.2.2]:25: TLS was not used" in maillog
    )


def test_policy_table_wins_over_mta_sts() -> None:
    """An smtp_tls_policy_maps entry for the domain is used and MTA-STS is not
    asked (as with Postfix and postfix-mta-sts-resolver)."""
    peer = Peer(Clock())
    agent, source = _agent(peer, ENFORCE, table="may")
    agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert source.asked == []
    assert peer.addresses == [("192.0.2.1", 25)]


def test_no_policy_and_bracketed_next_hops() -> None:
    """A domain without a policy is delivered as main.cf says; a [host] next
    hop (no MX lookup) is never looked up for MTA-STS."""
    peer = Peer(Clock())
    agent, source = _agent(peer, None)
    agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    agent.deliver(_request(["a@example.net"], nexthop="[relay.example.net]"))
    assert source.asked == ["example.net"]


def test_dane_wins_where_it_has_tlsa_records() -> None:
    """Under main.cf dane, an enforce policy keeps the dane level; a host that
    DANE gave usable TLSA records keeps DANE's policy, one DANE let fall back
    to may (no DNSSEC) or encrypt (unusable records) gets MTA-STS's verified
    TLS (RFC 8461 section 2)."""
    config = _config()
    sts = MTASTS(FixedPolicies(ENFORCE), config)
    dane = MTASTSPolicy("dane", source="mta-sts", sts=ENFORCE)
    with_tlsa = MTASTSPolicy("dane", source="mta-sts", sts=ENFORCE, tlsa=("3 1 1 ab",))
    assert sts.host_policy(dane) == TLSPolicy("verify", ("hostname",), source="mta-sts")
    assert sts.host_policy(with_tlsa) is with_tlsa
    fallback = MTASTSPolicy("may", source="dane: non-DNSSEC destination", sts=ENFORCE)
    unusable = MTASTSPolicy("encrypt", source="dane: unusable TLSA records", sts=ENFORCE)
    assert sts.host_policy(fallback).level == sts.host_policy(unusable).level == "verify"
    testing = MTASTSPolicy("dane", source="mta-sts", sts=TESTING)
    assert sts.host_policy(testing) is testing


def test_enforce_keeps_a_stricter_main_cf_level() -> None:
    """Under main.cf secure, an enforce policy keeps secure (the certificate
    must name the next-hop domain) instead of lowering it to verify; the MX
    filter still applies."""
    peer = Peer(Clock())
    agent, _ = _agent(peer, ENFORCE, smtp_tls_security_level="secure")
    agent.deliver(_request(["a@example.net"]))
    context = _starttls(peer)
    assert peer.addresses == [("192.0.2.2", 25)]
    assert context.name == "example.net"  # secure: the next-hop domain, verify would send mx2


def test_testing_judges_the_chain_as_enforce_would(tmp_path: Path) -> None:
    """The testing check passes a chain from the trusted CA naming the MX,
    and names the problem of one for another name and of a self-signed one."""
    good = issue(tmp_path, "mx2.example.net")
    other = issue(tmp_path, "wrong.example.net")
    alone = issue(tmp_path, "mx2.example.net", self_signed=True)
    sts = MTASTS(FixedPolicies(TESTING), _config(), cafile=str(tmp_path / "ca.pem"))

    def chain(paths: tuple[Path, Path]) -> list[crypto.X509]:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, paths[0].read_bytes())]

    assert sts.chain_problem(chain(good), "mx2.example.net") == ""
    assert sts.chain_problem(chain(other), "mx2.example.net") == (
        "certificate does not name mx2.example.net"
    )
    assert sts.chain_problem(chain(alone), "mx2.example.net").startswith(
        "certificate not trusted: "
    )
