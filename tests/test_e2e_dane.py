"""DANE, end to end: a real ``twistd pymta`` relaying by MX through a
loopback DNS server that sets the AD bit as a validating resolver does
(tests/dnssec_zone.py), to a second real pymta on 127.0.0.2 and 127.0.0.3
that presents a certificate issued by a test CA for the MX names.

Each recipient domain has its own MX name (all on the one receiver) with
its own TLSA records: the server's key (3 1 1), another key, the issuing
CA (2 0 1), another CA, none in an unsigned zone. The 127.0.0.3 listener
asks for and requires a client certificate (smtpd_tls_req_ccert), which
only a relay with smtp_tls_cert_file has. Every wait is on a log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dane_pki import PKI, make_pki
from tests.dns_zone_server import zone_server
from tests.harness import DEFAULT_MASTER_CF, PymtaServer
from tests.test_e2e_relay import MASTER_CF, free_port, relay_main_cf, submit

NAMES = ["mx-ee", "mx-badee", "mx-ta", "mx-badta", "mx-plain", "mx-cc"]


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PKI]:
    base = tmp_path_factory.mktemp("pki")
    return {
        "server": make_pki(base / "server", [f"{n}.dane.test" for n in NAMES]),
        "other": make_pki(base / "other", ["mx-ee.dane.test"], "another CA"),
        "client": make_pki(base / "client", ["relay.example.test"], "client CA", client=True),
    }


def _zone(pkis: dict[str, PKI], port: int) -> dict[str, object]:
    server, other = pkis["server"], pkis["other"]
    tlsa = {
        "mx-ee": server.tlsa("3 1 1"),
        "mx-badee": other.tlsa("3 1 1"),
        "mx-ta": server.tlsa("2 0 1"),
        "mx-badta": other.tlsa("2 0 1"),
        "mx-plain": server.tlsa("3 1 1"),  # present, but in an unsigned zone
        "mx-cc": server.tlsa("3 1 1"),
    }
    zone: dict[str, object] = {"_insecure": ["plain.dane.test", "mx-plain.dane.test"]}
    for name in NAMES:
        domain = name[3:] + ".dane.test"
        host = f"{name}.dane.test"
        zone[domain] = [["MX", f"10 {host}", 60]]
        zone[host] = [["A", "127.0.0.3" if name == "mx-cc" else "127.0.0.2", 60]]
        zone[f"_{port}._tcp.{host}"] = [["TLSA", tlsa[name], 60]]
    return zone


@pytest.fixture
def dns_port(tmp_path: Path, pkis: dict[str, PKI], mx_port: int) -> Iterator[int]:
    with zone_server(tmp_path, _zone(pkis, mx_port), module="tests.dnssec_zone") as port:
        yield port


@pytest.fixture
def mx_port() -> int:
    return free_port("127.0.0.2")


@pytest.fixture
def receiver(tmp_path: Path, pkis: dict[str, PKI], mx_port: int) -> Iterator[PymtaServer]:
    server, client = pkis["server"], pkis["client"]
    master_cf = DEFAULT_MASTER_CF.replace(
        "127.0.0.1:0 inet n - n - - smtpd",
        f"127.0.0.2:{mx_port} inet n - n - - smtpd\n"
        f"127.0.0.3:{mx_port} inet n - n - - smtpd -o smtpd_tls_security_level=encrypt"
        " -o smtpd_tls_req_ccert=yes",
    )
    domains = [n[3:] + ".dane.test" for n in NAMES]
    main_cf = (
        "myhostname = mx.dane.test\n"
        f"virtual_mailbox_domains = {', '.join(domains)}\n"
        "smtpd_tls_security_level = may\n"
        f"smtpd_tls_cert_file = {server.cert_file}\n"
        f"smtpd_tls_key_file = {server.key_file}\n"
        "smtpd_tls_ask_ccert = yes\n"
        f"smtpd_tls_CAfile = {client.ca_file}\n"
    )
    vmailbox = "".join(f"ann@{d} {d}/ann/\n" for d in domains)
    with PymtaServer(
        tmp_path / "receiver", main_cf_extra=main_cf, master_cf=master_cf, vmailbox=vmailbox
    ) as process:
        process.start()
        yield process


def _relay(tmp_path: Path, name: str, dns_port: int, mx_port: int, **params: str) -> PymtaServer:
    main_cf = relay_main_cf(
        pymta_dns_servers=f"127.0.0.1:{dns_port}",
        smtp_dns_support_level="dnssec",
        smtp_tcp_port=str(mx_port),
        **params,
    )
    return PymtaServer(tmp_path / name, main_cf_extra=main_cf, master_cf=MASTER_CF)


def _host(name: str, port: int) -> str:
    address = "127.0.0.3" if name == "mx-cc" else "127.0.0.2"
    return re.escape(f"{name}.dane.test[{address}]:{port}")


def test_dane_matches_defers_and_falls_back(
    tmp_path: Path, receiver: PymtaServer, dns_port: int, mx_port: int
) -> None:
    """Level dane: a 3 1 1 record of the server's key and a 2 0 1 record of
    its issuing CA verify the server ("Verified TLS connection") and the
    mail is sent; records of another key or CA defer it (4.7.5, "Untrusted
    TLS connection"); an unsigned zone gets opportunistic TLS (may) and the
    mail is sent; without smtp_tls_cert_file the listener that requires a
    client certificate turns the relay away."""
    with _relay(tmp_path, "relay", dns_port, mx_port, smtp_tls_security_level="dane") as relay:
        relay.start()
        qids = {n: submit(relay.smtp_port, [f"ann@{n[3:]}.dane.test"]) for n in NAMES}
        for name in ("mx-ee", "mx-ta"):
            relay.wait_for_log(rf"Verified TLS connection established to {_host(name, mx_port)}")
            relay.wait_for_log(
                rf"{qids[name]}: to=<ann@{name[3:]}\.dane\.test>, "
                rf"relay={_host(name, mx_port)}, .*status=sent"
            )
        for name in ("mx-badee", "mx-badta"):
            relay.wait_for_log(rf"Untrusted TLS connection established to {_host(name, mx_port)}")
            relay.wait_for_log(
                rf"{qids[name]}: to=<ann@{name[3:]}\.dane\.test>, .*dsn=4\.7\.5, "
                r"status=deferred \(Server certificate not verified"
            )
        relay.wait_for_log(rf"Untrusted TLS connection established to {_host('mx-plain', mx_port)}")
        relay.wait_for_log(rf"{qids['mx-plain']}: to=<ann@plain\.dane\.test>, .*status=sent")
        relay.wait_for_log(rf"{qids['mx-cc']}: to=<ann@cc\.dane\.test>, .*status=deferred")
        relay.stop()
    receiver.wait_for_log(r"abort: TLS from .*: No client certificate presented")
    for domain in ("ee", "ta", "plain"):
        receiver.wait_for_log(rf"to=<ann@{domain}\.dane\.test>, relay=virtual, .*status=sent")
        assert len(receiver.messages("ann", f"{domain}.dane.test")) == 1
    for domain in ("badee", "badta", "cc"):
        assert receiver.messages("ann", f"{domain}.dane.test") == []


def test_dane_only_and_the_client_certificate(
    tmp_path: Path, receiver: PymtaServer, dns_port: int, mx_port: int, pkis: dict[str, PKI]
) -> None:
    """Level dane-only defers mail to the unsigned zone without connecting
    (4.7.5); with smtp_tls_cert_file the client certificate is presented,
    trusted by the listener that requires one, and the mail is sent over a
    DANE-verified session."""
    client = pkis["client"]
    with _relay(
        tmp_path,
        "relay",
        dns_port,
        mx_port,
        smtp_tls_security_level="dane-only",
        smtp_tls_cert_file=str(client.cert_file),
        smtp_tls_key_file=str(client.key_file),
    ) as relay:
        relay.start()
        plain = submit(relay.smtp_port, ["ann@plain.dane.test"])
        cc = submit(relay.smtp_port, ["ann@cc.dane.test"])
        relay.wait_for_log(
            rf"{plain}: to=<ann@plain\.dane\.test>, relay=none, .*dsn=4\.7\.5, status=deferred "
            r"\(no usable DANE TLSA records for mx-plain\.dane\.test.*non-DNSSEC destination"
        )
        relay.wait_for_log(rf"Verified TLS connection established to {_host('mx-cc', mx_port)}")
        relay.wait_for_log(rf"{cc}: to=<ann@cc\.dane\.test>, .*status=sent")
        relay.stop()
    receiver.wait_for_log(r"to=<ann@cc\.dane\.test>, relay=virtual, .*status=sent")
    assert len(receiver.messages("ann", "cc.dane.test")) == 1
    assert receiver.messages("ann", "plain.dane.test") == []
    assert "Untrusted TLS connection established to mx-plain" not in relay.log()


@pytest.mark.parametrize("right", [True, False], ids=["match", "mismatch"])
def test_fingerprint_level(
    tmp_path: Path, receiver: PymtaServer, mx_port: int, pkis: dict[str, PKI], right: bool
) -> None:
    """Level fingerprint (no DNS involved): the server's public-key
    fingerprint in smtp_tls_fingerprint_cert_match verifies it and the mail
    is sent; another certificate's fingerprint defers the mail (4.7.5)."""
    fingerprint = (
        pkis["server"].fingerprint(public_key=True) if right else pkis["other"].fingerprint()
    )
    main_cf = relay_main_cf(
        relayhost=f"[127.0.0.2]:{mx_port}",
        smtp_tls_security_level="fingerprint",
        smtp_tls_fingerprint_cert_match=fingerprint,
    )
    with PymtaServer(tmp_path / "relay", main_cf_extra=main_cf, master_cf=MASTER_CF) as relay:
        relay.start()
        qid = submit(relay.smtp_port, ["ann@ee.dane.test"])
        trust = "Verified" if right else "Untrusted"
        relay.wait_for_log(rf"{trust} TLS connection established to 127\.0\.0\.2\[127\.0\.0\.2\]")
        outcome = "status=sent" if right else r"dsn=4\.7\.5, status=deferred"
        relay.wait_for_log(rf"{qid}: to=<ann@ee\.dane\.test>, .*{outcome}")
        relay.stop()
    if right:
        receiver.wait_for_log(r"to=<ann@ee\.dane\.test>, relay=virtual, .*status=sent")
    assert len(receiver.messages("ann", "ee.dane.test")) == (1 if right else 0)


@pytest.mark.parametrize("listed", [True, False], ids=["listed-name", "default-hostname"])
def test_verify_match_list(
    tmp_path: Path, receiver: PymtaServer, mx_port: int, pkis: dict[str, PKI], listed: bool
) -> None:
    """Level verify with the test CA trusted: the next hop [127.0.0.2] is not
    a name the certificate carries, so by default (match = hostname) the
    mail is deferred (4.7.5) after an "Untrusted" session; with a name of
    the certificate in smtp_tls_verify_cert_match it is verified and sent."""
    params = {
        "relayhost": f"[127.0.0.2]:{mx_port}",
        "smtp_tls_security_level": "verify",
        "smtp_tls_CAfile": str(pkis["server"].ca_file),
    }
    if listed:
        params["smtp_tls_verify_cert_match"] = "hostname, mx-ta.dane.test"
    main_cf = relay_main_cf(**params)
    with PymtaServer(tmp_path / "relay", main_cf_extra=main_cf, master_cf=MASTER_CF) as relay:
        relay.start()
        qid = submit(relay.smtp_port, ["ann@ta.dane.test"])
        trust = "Verified" if listed else "Untrusted"
        relay.wait_for_log(rf"{trust} TLS connection established to 127\.0\.0\.2\[127\.0\.0\.2\]")
        outcome = "status=sent" if listed else r"dsn=4\.7\.5, status=deferred \(Server certificate"
        relay.wait_for_log(rf"{qid}: to=<ann@ta\.dane\.test>, .*{outcome}")
        relay.stop()
