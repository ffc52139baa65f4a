"""Client certificates against a real twistd pymta with smtplib (Python's
ssl): smtpd_tls_ask_ccert with permit_tls_clientcerts / relay_clientcerts
and permit_tls_all_clientcerts, and smtpd_tls_req_ccert's 421 4.7.1."""

from __future__ import annotations

import datetime
import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pymta.tls_ccert import fingerprint
from tests.harness import PymtaServer
from tests.test_tls_settings import write_chain


@dataclass(frozen=True)
class ClientFiles:
    ca_file: Path
    trusted: tuple[Path, Path]  # (cert, key) signed by the CA
    stranger: tuple[Path, Path]  # self-signed, unknown to the CA file


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer_key: object | None, issuer: str, path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer_key if issuer_key is not None else key
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_files(directory: Path) -> ClientFiles:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("client CA"))
        .issuer_name(_name("client CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "client-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    trusted = _issue("laptop.example", ca_key, "client CA", directory / "trusted")
    stranger = _issue("stranger.example", None, "stranger.example", directory / "stranger")
    return ClientFiles(ca_file, trusted, stranger)


def _context(cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def _relay_reply(port: int, cert: tuple[Path, Path] | None) -> tuple[int, bytes]:
    """RCPT to a domain this server does not serve, after STARTTLS."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("laptop.example")
        client.starttls(context=_context(cert))
        client.ehlo("laptop.example")
        client.mail("me@laptop.example")
        return client.rcpt("someone@elsewhere.example")


def _der_fingerprint(cert: Path) -> str:
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    return fingerprint(loaded.public_bytes(serialization.Encoding.DER), "sha256")


def test_permit_tls_clientcerts_relays_for_a_listed_fingerprint(tmp_path: Path) -> None:
    """smtpd_tls_ask_ccert = yes: a client whose certificate fingerprint is
    in relay_clientcerts may relay (permit_tls_clientcerts), whether or not
    its CA is trusted; another certificate, or none, gets Relay access denied."""
    files = client_files(tmp_path)
    chain = tmp_path / "server.pem"
    write_chain(chain, "localhost")
    table = tmp_path / "relay_clientcerts"
    table.write_text(f"{_der_fingerprint(files.stranger[0])} stranger.example\n")
    settings = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {chain}\n"
        f"smtpd_tls_ask_ccert = yes\nrelay_clientcerts = texthash:{table}\n"
        "smtpd_relay_restrictions = permit_tls_clientcerts, reject_unauth_destination\n"
        "mynetworks = 192.0.2.0/24\n"
    )
    with PymtaServer(tmp_path / "site", settings) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        assert _relay_reply(port, files.stranger)[0] == 250
        code, text = _relay_reply(port, files.trusted)
        assert code == 554 and b"Relay access denied" in text
        code, text = _relay_reply(port, None)
        assert code == 554 and b"Relay access denied" in text
        server.stop()


def test_permit_tls_all_clientcerts_needs_a_trusted_certificate(tmp_path: Path) -> None:
    """permit_tls_all_clientcerts relays for a certificate that verifies
    against smtpd_tls_CAfile, not for a self-signed one."""
    files = client_files(tmp_path)
    chain = tmp_path / "server.pem"
    write_chain(chain, "localhost")
    settings = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {chain}\n"
        f"smtpd_tls_ask_ccert = yes\nsmtpd_tls_CAfile = {files.ca_file}\n"
        "smtpd_relay_restrictions = permit_tls_all_clientcerts, reject_unauth_destination\n"
        "mynetworks = 192.0.2.0/24\n"
    )
    with PymtaServer(tmp_path / "site", settings) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        assert _relay_reply(port, files.trusted)[0] == 250
        assert _relay_reply(port, files.stranger)[0] == 554
        server.stop()


def test_req_ccert_ends_sessions_without_a_trusted_certificate(tmp_path: Path) -> None:
    """smtpd_tls_req_ccert = yes at level encrypt: after STARTTLS a client
    without a certificate, or with an untrusted one, gets 421 4.7.1 and the
    abort is logged; a trusted one carries on."""
    files = client_files(tmp_path)
    chain = tmp_path / "server.pem"
    write_chain(chain, "localhost")
    settings = (
        f"smtpd_tls_security_level = encrypt\nsmtpd_tls_chain_files = {chain}\n"
        f"smtpd_tls_req_ccert = yes\nsmtpd_tls_CAfile = {files.ca_file}\n"
    )
    with PymtaServer(tmp_path / "site", settings) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        for cert, why in (
            (None, b"No client certificate presented"),
            (files.stranger, b"Client certificate not trusted"),
        ):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("laptop.example")
                client.starttls(context=_context(cert))
                code, text = client.ehlo("laptop.example")
                assert code == 421, text
                assert text.endswith(b"Error: " + why), text
        server.wait_for_log(r"NOQUEUE: abort: TLS from .*127\.0\.0\.1\]: No client certificate")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("laptop.example")
            client.starttls(context=_context(files.trusted))
            code, _ = client.ehlo("laptop.example")
            assert code == 250
            client.mail("me@laptop.example")
            assert client.rcpt("alice@example.test")[0] == 250
        server.stop()
