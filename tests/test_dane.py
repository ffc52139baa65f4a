"""DANE (RFC 7672), level fingerprint and the verify/secure name lists in
memory: which TLSA records an SMTP client uses, how a presented chain is
judged, and what the policy of an MX host becomes from DNS answers that
are, or are not, DNSSEC-secure (the agent with an in-memory resolver and
StringTransport peers)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from OpenSSL import crypto
from twisted.internet.task import Clock

from pymta.config import Config
from pymta.delivery.dane import dane_verified, fingerprint_verified, host_policy, names_verified
from pymta.delivery.lookup import DictLookup, Lookup
from pymta.delivery.smtp import SMTPAgent
from pymta.delivery.smtp_chat import SessionError
from pymta.delivery.smtp_tls import TLSPolicy, reference_names
from pymta.dns.memory import MemoryResolver
from pymta.dns.mx import Host
from pymta.dns.tlsa import TLSARecord, parse, usable
from tests.dane_pki import PKI, make_pki
from tests.test_delivery_smtp import Peer, _config, _greet, _request, _result

MX = "mx.dane.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"), [MX])


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("other"), [MX], "another CA")


def _chain(pki: PKI) -> list[Any]:
    return [crypto.X509.from_cryptography(pki.server), crypto.X509.from_cryptography(pki.ca)]


def _dane(*records: str, names: tuple[str, ...] = (MX,)) -> TLSPolicy:
    return TLSPolicy("dane", names, source="dane", tlsa=tuple(parse(r) for r in records))


def test_usable_records_for_smtp() -> None:
    """Usages 2 and 3 with known selectors and well-formed digests are
    usable; PKIX-TA/EE (0, 1), unknown matching types and digests of the
    wrong length are not (RFC 7672 section 3.1.3)."""
    good = [parse("3 1 1 " + "ab" * 32), parse("2 0 2 " + "cd" * 64), parse("3 0 0 0102")]
    bad = [
        parse("1 1 1 " + "ab" * 32),
        parse("0 0 1 " + "ab" * 32),
        parse("3 1 1 abcd"),
        parse("3 2 1 " + "ab" * 32),
        parse("3 1 9 " + "ab" * 32),
    ]
    assert usable(good + bad) == tuple(good)


@pytest.mark.parametrize("kind", ["3 1 1", "3 0 1", "3 1 2", "3 0 0"])
def test_dane_ee_matches_the_server_certificate(pki: PKI, other: PKI, kind: str) -> None:
    """A DANE-EE record of the server's certificate or key (any matching
    type) verifies its chain; the same kind of record of another key does not."""
    assert dane_verified(_dane(pki.tlsa(kind)), _chain(pki))
    assert not dane_verified(_dane(other.tlsa(kind)), _chain(pki))


def test_dane_ee_ignores_names(pki: PKI) -> None:
    """DANE-EE checks no name (RFC 7672 section 3.1.1)."""
    assert dane_verified(_dane(pki.tlsa("3 1 1"), names=("elsewhere.test",)), _chain(pki))


def test_dane_ta_matches_the_issuing_ca(pki: PKI, other: PKI) -> None:
    """A DANE-TA 2 0 1 record of the issuing CA verifies the chain when the
    server's certificate carries the MX name; not for another CA's record,
    not when the name differs, not when the server's certificate was not
    issued by the matched CA."""
    assert dane_verified(_dane(pki.tlsa("2 0 1")), _chain(pki))
    assert dane_verified(_dane(pki.tlsa("2 1 1")), _chain(pki))
    assert not dane_verified(_dane(other.tlsa("2 0 1")), _chain(pki))
    assert not dane_verified(_dane(pki.tlsa("2 0 1"), names=("other.test",)), _chain(pki))
    forged = [crypto.X509.from_cryptography(other.server), crypto.X509.from_cryptography(pki.ca)]
    assert not dane_verified(_dane(pki.tlsa("2 0 1")), forged)


def test_pkix_usages_never_verify(pki: PKI) -> None:
    """A PKIX-EE (1) record of the very certificate is not used for SMTP."""
    assert usable([parse(pki.tlsa("1 1 1"))]) == ()


def test_fingerprint_of_certificate_or_key(pki: PKI, other: PKI) -> None:
    """Level fingerprint accepts the certificate's or the public key's
    digest, in any case, with or without colons; not another's."""
    chain = _chain(pki)
    cert, key = pki.fingerprint(), pki.fingerprint(public_key=True)
    assert fingerprint_verified(TLSPolicy("fingerprint", (cert,)), chain, "sha256")
    assert fingerprint_verified(TLSPolicy("fingerprint", (key,)), chain, "sha256")
    lower = cert.replace(":", "").lower()
    assert fingerprint_verified(TLSPolicy("fingerprint", (lower,)), chain, "sha256")
    sha1 = pki.fingerprint("sha1")
    assert fingerprint_verified(TLSPolicy("fingerprint", (sha1,)), chain, "sha1")
    assert not fingerprint_verified(TLSPolicy("fingerprint", (sha1,)), chain, "sha256")
    assert not fingerprint_verified(
        TLSPolicy("fingerprint", (other.fingerprint(),)), chain, "sha256"
    )


# --- the policy of one MX host ------------------------------------------------

TLSA_NAME = f"_25._tcp.{MX}"
SECURE_HOST = Host(MX, "192.0.2.7", 10, secure=True)


def _resolver(records: list[str] | None, secure: bool = True, fail: bool = False) -> Any:
    zone: dict[tuple[str, str], list[Any]] = {(MX, "A"): ["192.0.2.7"]}
    if records is not None:
        zone[(TLSA_NAME, "TLSA")] = [parse(r) for r in records]
    return MemoryResolver(
        zone, servfail=[TLSA_NAME] if fail else [], secure=[MX, TLSA_NAME] if secure else []
    )


async def _host(level: str, resolver: Any, host: Host = SECURE_HOST) -> TLSPolicy:
    return await host_policy(resolver, TLSPolicy(level), host, 25, "dane.test")


@pytest_twisted.ensureDeferred
async def test_secure_usable_records_give_level_dane() -> None:
    """Secure usable TLSA records: level dane with them and the MX name."""
    policy = await _host("dane", _resolver(["3 1 1 " + "ab" * 32, "1 1 1 " + "ab" * 32]))
    assert policy.level == "dane" and policy.match == (MX,)
    assert policy.tlsa == (TLSARecord(3, 1, 1, bytes.fromhex("ab" * 32)),)


@pytest_twisted.ensureDeferred
async def test_insecure_destinations_fall_back_to_may_or_defer() -> None:
    """An insecure MX host, an insecure TLSA answer, or a secure "no TLSA":
    dane falls back to may, dane-only defers (4.7.5)."""
    insecure_host = Host(MX, "192.0.2.7", 10, secure=False)
    cases = [
        (_resolver(["3 1 1 " + "ab" * 32]), insecure_host, "non-DNSSEC destination"),
        (_resolver(["3 1 1 " + "ab" * 32], secure=False), SECURE_HOST, "insecure TLSA"),
        (_resolver(None), SECURE_HOST, "no TLSA records"),
    ]
    for resolver, host, why in cases:
        policy = await _host("dane", resolver, host)
        assert policy.level == "may" and why in policy.source
        with pytest.raises(SessionError) as caught:
            await _host("dane-only", resolver, host)
        assert caught.value.dsn == "4.7.5" and why in caught.value.reason


@pytest_twisted.ensureDeferred
async def test_tlsa_lookup_failure_skips_the_host() -> None:
    """SERVFAIL on the TLSA lookup never becomes may: 4.7.5, next host."""
    for level in ("dane", "dane-only"):
        with pytest.raises(SessionError) as caught:
            await _host(level, _resolver([], fail=True))
        assert caught.value.dsn == "4.7.5" and "TLSA lookup error" in caught.value.reason
        assert caught.value.next_host


@pytest_twisted.ensureDeferred
async def test_only_unusable_records_mean_encrypt() -> None:
    """Secure records none of which is usable: mandatory unauthenticated TLS
    under dane (RFC 7672 section 2.2), a deferral under dane-only."""
    resolver = _resolver(["1 1 1 " + "ab" * 32])
    assert (await _host("dane", resolver)).level == "encrypt"
    with pytest.raises(SessionError):
        await _host("dane-only", resolver)


# --- the agent ------------------------------------------------------------------

ZONE: dict[tuple[str, str], list[Any]] = {
    ("dane.test", "MX"): [(10, "mx1.dane.test"), (20, "mx2.dane.test")],
    ("mx1.dane.test", "A"): ["192.0.2.1"],
    ("mx2.dane.test", "A"): ["192.0.2.2"],
    ("_25._tcp.mx2.dane.test", "TLSA"): [parse("3 1 1 " + "ab" * 32)],
}


def _dane_agent(peer: Peer, level: str, secure: list[str], servfail: list[str] = ()) -> SMTPAgent:
    def open_maps(specs: list[str], config: Config) -> Lookup:
        return DictLookup({})

    return SMTPAgent(
        _config(smtp_tls_security_level=level, smtp_dns_support_level="dnssec"),
        peer.clock,
        MemoryResolver(ZONE, servfail=servfail, secure=secure),
        peer.connect,
        open_maps=open_maps,
    )


def test_dane_only_defers_an_insecure_domain_without_connecting() -> None:
    """dane-only and an MX answer without the AD bit: no connection at all,
    the mail is deferred 4.7.5."""
    clock = Clock()
    peer = Peer(clock)
    d = _dane_agent(peer, "dane-only", secure=[]).deliver(_request(["a@dane.test"], "dane.test"))
    (a,) = _result(d)
    assert peer.addresses == []
    assert a.status == "4.7.5" and "non-DNSSEC destination" in a.reason


def test_dane_on_an_insecure_domain_is_opportunistic() -> None:
    """dane and an insecure MX answer: STARTTLS as under may, and a server
    without STARTTLS still gets the mail in plain text."""
    clock = Clock()
    peer = Peer(clock)
    d = _dane_agent(peer, "dane", secure=[]).deliver(_request(["a@dane.test"], "dane.test"))
    _greet(peer, "250 mx1.dane.test")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert not d.called


def test_tlsa_failure_moves_to_the_next_mx_with_dane() -> None:
    """The TLSA lookup of mx1 fails (SERVFAIL): mx1 is not contacted; mx2,
    secure with a usable record, is, and must offer STARTTLS (dane)."""
    clock = Clock()
    peer = Peer(clock)
    secure = ["dane.test", "mx1.dane.test", "mx2.dane.test", "_25._tcp.mx2.dane.test"]
    agent = _dane_agent(peer, "dane", secure=secure, servfail=["_25._tcp.mx1.dane.test"])
    d = agent.deliver(_request(["a@dane.test"], "dane.test"))
    assert peer.addresses == [("192.0.2.2", 25)]
    _greet(peer, "250 mx2.dane.test")
    (a,) = _result(d)
    assert a.status == "4.7.4" and "TLS is required" in a.reason


def test_dane_sends_the_mx_name_as_sni() -> None:
    """Under level dane the STARTTLS connection names the MX host (SNI,
    RFC 7672 section 8.1)."""
    clock = Clock()
    peer = Peer(clock)
    secure = ["dane.test", "mx1.dane.test", "mx2.dane.test", "_25._tcp.mx2.dane.test"]
    agent = _dane_agent(peer, "dane", secure=secure, servfail=["_25._tcp.mx1.dane.test"])
    agent.deliver(_request(["a@dane.test"], "dane.test"))
    _greet(peer, "250-mx2.dane.test", "250 STARTTLS")
    assert peer.written() == ["STARTTLS"]
    peer.reply("220 go")
    transport: Any = peer.chat.transport
    assert transport.tls_context.name == "mx2.dane.test"


def test_verify_and_secure_names_as_postfix(tmp_path_factory: pytest.TempPathFactory) -> None:
    """verify/secure match lists: hostname, nexthop and dot-nexthop expand
    to the MX host and the next-hop domain; '.example.net' matches names
    under it, a '*.' certificate name one label; an IP reference needs an
    IP subjectAltName."""
    pki = make_pki(tmp_path_factory.mktemp("names"), ["mx1.example.net", "*.mail.example.org"])
    chain = _chain(pki)
    verify = reference_names(TLSPolicy("verify"), "mx1.example.net", "example.net")
    secure = reference_names(TLSPolicy("secure"), "mx1.example.net", "example.net")
    assert verify == ("mx1.example.net",)
    assert secure == ("example.net", ".example.net")

    def ok(*names: str) -> bool:
        return names_verified(TLSPolicy("verify", names), chain)

    assert ok(*verify) and ok(*secure)
    assert ok("in.mail.example.org") and not ok("a.in.mail.example.org")
    assert ok(".example.org") and not ok("example.net", "mx2.example.net")
    assert not ok("127.0.0.1")
    listed = TLSPolicy("secure", ("hostname", "mx9.example.com"))
    assert reference_names(listed, "MX1.example.net.", "x") == (
        "mx1.example.net",
        "mx9.example.com",
    )
