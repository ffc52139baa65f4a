"""The smtp client's per-destination TLS policy: smtp_tls_policy_maps
entries as Postfix parses them, and the hook other policy sources (MTA-STS)
fill, in memory (StringTransport peers, Clock, in-memory DNS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from pymta.config import Config, ConfigError
from pymta.delivery.lookup import DictLookup, Lookup
from pymta.delivery.smtp import SMTPAgent
from pymta.delivery.smtp_tls import (
    ClientCertificate,
    TLSPolicy,
    client_identity,
    grades_of,
    parse_policy,
    policy_for,
)
from pymta.dns.memory import MemoryResolver
from pymta.service import check
from tests.dane_pki import make_pki
from tests.test_check_agrees import write_config
from tests.test_delivery_smtp import ZONE, Peer, _config, _greet, _request, _result
from tests.test_e2e_relay import MASTER_CF


def test_policy_entry_attributes() -> None:
    """match= names split on ':', several match= add up, ciphers= and
    protocols= are kept; the source says where the policy came from."""
    policy = parse_policy("secure match=nexthop:.example.net match=mx.example.org ciphers=high")
    assert policy.level == "secure"
    assert policy.match == ("nexthop", ".example.net", "mx.example.org")
    assert policy.ciphers == "high" and policy.protocols == ""
    assert policy.source == "smtp_tls_policy_maps"


def test_unknown_policy_attribute_is_an_error() -> None:
    """An attribute pymta does not act on (tafile=) makes the entry an
    error (the delivery defers) instead of being ignored."""
    with pytest.raises(ValueError, match="unsupported TLS policy attribute"):
        parse_policy("verify tafile=/etc/ta.pem")


def test_per_destination_ciphers_and_protocols_shape_the_grades() -> None:
    """ciphers=high and protocols=TLSv1.3 replace main.cf's grade and list
    for that destination; a bad grade is a ConfigError."""
    config = Config({"myhostname": "mx.ours.test"})
    grades = grades_of(parse_policy("encrypt ciphers=high protocols=TLSv1.3"), config)
    assert grades is not None
    assert grades[True].ciphers == config.get("tls_high_cipherlist")
    assert grades[True].min_version == grades[True].max_version
    assert grades_of(parse_policy("encrypt"), config) is None
    with pytest.raises(ConfigError):
        grades_of(parse_policy("encrypt ciphers=null"), config)


def test_table_beats_main_cf() -> None:
    """A table entry for the parent domain (.example.net) wins over main.cf."""
    table = DictLookup({".example.net": "encrypt"})
    config = Config({"smtp_tls_security_level": "may"})
    assert policy_for("sub.example.net", "sub.example.net", config, table).level == "encrypt"
    assert policy_for("example.org", "example.org", config, table).source == "main.cf"


def _hooked_agent(
    peer: Peer, hook_policy: TLSPolicy | None, tables: dict[str, str] | None = None
) -> tuple[SMTPAgent, list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []

    def hook(nexthop: str, domain: str) -> Deferred[TLSPolicy | None]:
        calls.append((nexthop, domain))
        return succeed(hook_policy)

    def open_maps(specs: list[str], config: Config) -> Lookup:
        return DictLookup(tables or {})

    extra = {"smtp_tls_policy_maps": "inline:p"} if tables else {}
    agent = SMTPAgent(
        _config(**extra),
        peer.clock,
        MemoryResolver(ZONE),
        peer.connect,
        open_maps=open_maps,
        policy_hooks=[hook],
    )
    return agent, calls


def test_hook_policy_replaces_the_main_cf_level() -> None:
    """A hook (MTA-STS) that says encrypt makes a peer without STARTTLS a
    4.7.4 deferral although main.cf says may."""
    clock = Clock()
    peer = Peer(clock)
    agent, calls = _hooked_agent(peer, TLSPolicy("encrypt", source="mta-sts"))
    d = agent.deliver(_request(["a@example.net"], nexthop="[relay.example.net]"))
    _greet(peer, "250 relay.example.net")
    (a,) = _result(d)
    assert calls == [("[relay.example.net]", "relay.example.net")]
    assert a.status == "4.7.4" and "TLS is required" in a.reason


def test_hook_without_policy_leaves_main_cf() -> None:
    """A hook that has nothing to say (None) leaves main.cf's may."""
    clock = Clock()
    peer = Peer(clock)
    agent, _ = _hooked_agent(peer, None)
    d = agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert not d.called


def test_policy_table_is_asked_before_the_hook() -> None:
    """smtp_tls_policy_maps is the administrator's word: its entry is used
    and the hook is not asked."""
    clock = Clock()
    peer = Peer(clock)
    agent, calls = _hooked_agent(peer, TLSPolicy("encrypt"), {"example.net": "none"})
    d = agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250-mx1.example.net", "250 STARTTLS")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert calls == [] and not d.called


def test_fingerprint_entry_splits_on_bars() -> None:
    """Fingerprints contain ':', so a fingerprint entry separates them with
    '|' (and several match= add up), as Postfix; one without match= or with
    a value that is not hex is an error."""
    a, b, c = "AA:BB", "cc:dd", "EEFF"
    policy = parse_policy(f"fingerprint match={a}|{b} match={c}")
    assert policy.level == "fingerprint" and policy.match == (a, b, c)
    with pytest.raises(ValueError, match="without match"):
        parse_policy("fingerprint")
    with pytest.raises(ConfigError, match="bad fingerprint"):
        parse_policy("fingerprint match=zz:yy")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("smtp_tls_security_level = dane-only\n", "needs smtp_dns_support_level = dnssec"),
        (
            "smtp_dns_support_level = dnssec\npymta_dns_servers = 192.0.2.1\n",
            r"192\.0\.2\.1 is not",
        ),
        ("smtp_dns_support_level = disabled\n", "always looks up hosts in DNS"),
        ("smtp_tls_security_level = fingerprint\n", "needs smtp_tls_fingerprint_cert_match"),
        ("smtp_tls_fingerprint_digest = sha3\n", "bad digest"),
        ("smtp_tls_cert_file = /nonexistent/client.pem\n", "cannot read"),
    ],
)
def test_check_refuses_what_the_client_cannot_honour(
    tmp_path: Path, extra: str, message: str
) -> None:
    """`pymta check` (the start's own code) refuses DANE without a trusted
    DNSSEC resolver, fingerprint without fingerprints, and a client
    certificate it cannot read: never a start that would send weaker."""
    etc = write_config(tmp_path, extra, MASTER_CF)
    with pytest.raises(ConfigError, match=message):
        check(etc)


def test_client_certificate_is_loaded(tmp_path: Path) -> None:
    """smtp_tls_cert_file (leaf then CA) with smtp_tls_key_file gives the
    key, the leaf and the chain sent after it; the same from one
    smtp_tls_chain_files file; a key without its certificate is an error."""
    pki = make_pki(tmp_path / "pki", ["relay.example.test"], client=True)
    identity = client_identity(
        Config({"smtp_tls_cert_file": str(pki.cert_file), "smtp_tls_key_file": str(pki.key_file)})
    )
    assert identity is not None
    assert identity.certificate.to_cryptography() == pki.server
    assert [c.to_cryptography() for c in identity.chain] == [pki.ca]
    combined = tmp_path / "chain.pem"
    combined.write_bytes(pki.key_file.read_bytes() + pki.cert_file.read_bytes())
    again = client_identity(Config({"smtp_tls_chain_files": str(combined)}))
    assert again is not None and again.certificate.to_cryptography() == pki.server
    assert client_identity(Config({})) is None
    with pytest.raises(ConfigError, match="without smtp_tls_cert_file"):
        client_identity(Config({"smtp_tls_key_file": str(pki.key_file)}))


def test_client_certificate_renewal(tmp_path: Path) -> None:
    """A renewed client certificate (new files) is used from the next check
    on, without a restart; a renewal that cannot be loaded (a key that does
    not match) keeps the previous certificate."""
    now = [0.0]
    first = make_pki(tmp_path / "a", ["relay.example.test"], client=True)
    second = make_pki(tmp_path / "b", ["relay.example.test"], client=True)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(first.cert_file.read_bytes())
    key.write_bytes(first.key_file.read_bytes())
    config = Config({"smtp_tls_cert_file": str(cert), "smtp_tls_key_file": str(key)})
    holder = ClientCertificate(config, clock=lambda: now[0])

    def leaf() -> object:
        identity = holder.current()
        assert identity is not None
        return identity.certificate.to_cryptography()

    assert leaf() == first.server
    cert.write_bytes(second.cert_file.read_bytes())
    key.write_bytes(second.key_file.read_bytes())
    assert leaf() == first.server  # not checked again within the second
    now[0] = 2.0
    assert leaf() == second.server
    key.write_bytes(first.key_file.read_bytes())  # half-way through a renewal
    now[0] = 4.0
    assert leaf() == second.server
