"""TLS settings honoured by the servers: protocol lists, cipher grades and
exclusions, RSA + ECDSA chain files, SNI certificates, reload on renewal.

Handshakes run in memory (two pyOpenSSL connections, no sockets); the
end-to-end checks with openssl s_client are in test_e2e_tls_settings.py.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.tls import ServerTLS
from pymta.tls_grades import cipher_string, protocol_range

T12, T13 = SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION


def write_chain(path: Path, name: str, kind: str = "ec") -> bytes:
    """A self-signed certificate for ``name`` with its key first (Postfix's
    chain-file order); returns the certificate's DER."""
    key: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else None
    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with open(path, "ab") as f:
        f.write(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    return cert.public_bytes(serialization.Encoding.DER)


def _config(text: str) -> Config:
    return Config.from_text("myhostname = mx.example.com\n" + text)


def _handshake(
    server_tls: ServerTLS,
    max_version: int = T13,
    ciphers: str | None = None,
    sni: bytes | None = None,
) -> tuple[SSL.Connection, SSL.Connection]:
    """A client limited to ``max_version`` (and ``ciphers``) against
    server_tls; SSL.Error when the server refuses it."""
    server = SSL.Connection(server_tls.getContext(), None)
    server.set_accept_state()
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(max_version)
    if ciphers:
        ctx.set_cipher_list(ciphers.encode())
    client = SSL.Connection(ctx, None)
    if sni:
        client.set_tlsext_host_name(sni)
    client.set_connect_state()
    for _ in range(20):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        for a, b in ((client, server), (server, client)):
            try:
                b.bio_write(a.bio_read(65536))
            except SSL.WantReadError:
                pass
        if server.get_protocol_version_name() != "Unknown" and client.get_peer_certificate():
            try:
                server.do_handshake()
                client.do_handshake()
                return server, client
            except SSL.WantReadError:
                continue
    raise AssertionError("handshake did not finish")


def _peer_name(client: SSL.Connection) -> str:
    cert = client.get_peer_certificate()
    assert cert is not None
    (name,) = cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(name.value)


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    path = tmp_path / "chain.pem"
    write_chain(path, "mx.example.com", "rsa")
    write_chain(path, "mx.example.com", "ec")
    return path


def test_protocol_lists_in_postfix_syntax() -> None:
    """Each Postfix form gives the TLS 1.2 to 1.3 range it allows, and a list
    that allows neither (or names no protocol) stops the start."""
    assert protocol_range(">=TLSv1", "p") == (T12, T13)
    assert protocol_range("!SSLv2, !SSLv3", "p") == (T12, T13)
    assert protocol_range(">=TLSv1.3", "p") == (T13, T13)
    assert protocol_range("!TLSv1.2", "p") == (T13, T13)
    assert protocol_range("TLSv1.2", "p") == (T12, T12)
    assert protocol_range("<=TLSv1.2", "p") == (T12, T12)
    assert protocol_range("TLSv1 TLSv1.1 TLSv1.2", "p") == (T12, T12)
    for bad in ("<=TLSv1.1", "TLSv1.1", "!TLSv1.2 !TLSv1.3", "TLSv1.4"):
        with pytest.raises(ConfigError) as caught:
            protocol_range(bad, "smtpd_tls_protocols")
        assert caught.value.parameter == "smtpd_tls_protocols"


def test_cipher_grades_and_exclusions() -> None:
    """A grade names its tls_*_cipherlist and each exclusion is appended as
    !name; null, an unknown grade, or exclusions leaving nothing stop the start."""
    config = _config("smtpd_tls_exclude_ciphers = aNULL, RC4\n")
    text = cipher_string(config, "smtpd_tls_ciphers", ["smtpd_tls_exclude_ciphers"])
    assert text == "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH:!aNULL:!RC4"
    for bad in ("smtpd_tls_ciphers = null\n", "smtpd_tls_ciphers = strong\n"):
        with pytest.raises(ConfigError):
            cipher_string(_config(bad), "smtpd_tls_ciphers", [])
    with pytest.raises(ConfigError):
        cipher_string(
            _config("smtpd_tls_exclude_ciphers = ALL\n"),
            "smtpd_tls_ciphers",
            ["smtpd_tls_exclude_ciphers"],
        )


def test_tls13_only_refuses_a_tls12_client(chain: Path) -> None:
    """smtpd_tls_protocols = >=TLSv1.3 at level may: a TLS 1.2-only client
    is refused, a TLS 1.3 client is served."""
    tls = ServerTLS.from_config(
        _config(
            f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {chain}\n"
            "smtpd_tls_protocols = >=TLSv1.3\n"
        )
    )
    assert tls is not None
    with pytest.raises(SSL.Error):
        _handshake(tls, max_version=T12)
    server, _ = _handshake(tls)
    assert server.get_protocol_version_name() == "TLSv1.3"


def test_mandatory_protocols_apply_at_encrypt(chain: Path) -> None:
    """At level encrypt smtpd_tls_mandatory_protocols decides, not
    smtpd_tls_protocols; at may the other way round."""
    base = f"smtpd_tls_chain_files = {chain}\nsmtpd_tls_mandatory_protocols = !TLSv1.2\n"
    encrypt = ServerTLS.from_config(_config(base + "smtpd_tls_security_level = encrypt\n"))
    may = ServerTLS.from_config(_config(base + "smtpd_tls_security_level = may\n"))
    assert encrypt is not None and may is not None
    with pytest.raises(SSL.Error):
        _handshake(encrypt, max_version=T12)
    server, _ = _handshake(may, max_version=T12)
    assert server.get_protocol_version_name() == "TLSv1.2"


def test_excluded_cipher_is_never_chosen(chain: Path) -> None:
    """A TLS 1.2 client offering only an excluded cipher is refused; with
    another one left it gets that one."""
    offered = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"
    text = f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {chain}\n"
    plain = ServerTLS.from_config(_config(text))
    assert plain is not None
    server, _ = _handshake(plain, T12, offered)
    assert server.get_cipher_name() == "ECDHE-RSA-AES256-GCM-SHA384"
    excluded = ServerTLS.from_config(_config(text + "smtpd_tls_exclude_ciphers = AES256\n"))
    assert excluded is not None
    server, _ = _handshake(excluded, T12, offered)
    assert server.get_cipher_name() == "ECDHE-RSA-AES128-GCM-SHA256"
    with pytest.raises(SSL.Error):
        _handshake(excluded, T12, "ECDHE-RSA-AES256-GCM-SHA384")


def test_high_grade_refuses_a_medium_only_client(chain: Path) -> None:
    """smtpd_tls_mandatory_ciphers = high with !SHA1 excluded at encrypt:
    a client offering only a SHA-1 CBC cipher is refused."""
    tls = ServerTLS.from_config(
        _config(
            f"smtpd_tls_security_level = encrypt\nsmtpd_tls_chain_files = {chain}\n"
            "smtpd_tls_mandatory_ciphers = high\nsmtpd_tls_mandatory_exclude_ciphers = SHA1\n"
        )
    )
    assert tls is not None
    with pytest.raises(SSL.Error):
        _handshake(tls, T12, "ECDHE-RSA-AES128-SHA")
    server, _ = _handshake(tls, T12)
    assert "SHA384" in (server.get_cipher_name() or "") or "SHA256" in (
        server.get_cipher_name() or ""
    )


def test_rsa_and_ecdsa_chain_files(tmp_path: Path) -> None:
    """smtpd_tls_chain_files with an RSA and an ECDSA key: an ECDSA client
    gets the ECDSA certificate, an RSA-only client the RSA one."""
    rsa_file, ec_file = tmp_path / "rsa.pem", tmp_path / "ec.pem"
    rsa_der = write_chain(rsa_file, "rsa.example.com", "rsa")
    ec_der = write_chain(ec_file, "ec.example.com", "ec")
    tls = ServerTLS.from_config(
        _config(f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {rsa_file} {ec_file}\n")
    )
    assert tls is not None
    _, client = _handshake(tls, T12, "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert (
        client.get_peer_certificate()
        .to_cryptography()
        .public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.DER
        )
        == ec_der
    )
    _, client = _handshake(tls, T12, "ECDHE-RSA-AES128-GCM-SHA256")
    assert (
        client.get_peer_certificate()
        .to_cryptography()
        .public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.DER
        )
        == rsa_der
    )


def test_ecdsa_pair_next_to_rsa_pair(tmp_path: Path) -> None:
    """smtpd_tls_eccert_file/eckey_file add an ECDSA certificate to the
    cert_file/key_file one."""
    rsa_file, ec_file = tmp_path / "rsa.pem", tmp_path / "ec.pem"
    write_chain(rsa_file, "rsa.example.com", "rsa")
    write_chain(ec_file, "ec.example.com", "ec")
    tls = ServerTLS.from_config(
        _config(
            f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {rsa_file}\n"
            f"smtpd_tls_eccert_file = {ec_file}\n"
        )
    )
    assert tls is not None
    _, client = _handshake(tls, T12, "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _peer_name(client) == "ec.example.com"
    _, client = _handshake(tls, T12, "ECDHE-RSA-AES128-GCM-SHA256")
    assert _peer_name(client) == "rsa.example.com"


def test_bad_chain_files_stop_the_start(tmp_path: Path) -> None:
    """A key that does not match the certificate after it, a certificate
    without key, or a missing file stops the start naming the parameter."""
    one, two = tmp_path / "one.pem", tmp_path / "two.pem"
    write_chain(one, "one.example", "ec")
    write_chain(two, "two.example", "ec")
    text = one.read_bytes()
    key_end = text.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----\n")
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(text[:key_end] + two.read_bytes()[two.read_bytes().index(b"-----BEGIN C") :])
    certonly = tmp_path / "certonly.pem"
    certonly.write_bytes(text[key_end:])
    for path in (mixed, certonly, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError) as caught:
            ServerTLS.from_config(
                _config(f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {path}\n")
            )
        assert caught.value.parameter == "smtpd_tls_chain_files", caught.value


def test_sni_maps_pick_a_certificate_per_name(tmp_path: Path) -> None:
    """tls_server_sni_maps: the SNI name, else its parent domain as
    .parent, picks the chain file; an unknown or absent name gets the
    default certificate."""
    default, other, wild = tmp_path / "d.pem", tmp_path / "o.pem", tmp_path / "w.pem"
    write_chain(default, "mx.example.com")
    write_chain(other, "mail.example.org")
    write_chain(wild, "any.example.net")
    table = tmp_path / "sni"
    table.write_text(f"mail.example.org {other}\n.example.net {wild}\n")
    tls = ServerTLS.from_config(
        _config(
            f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {default}\n"
            f"tls_server_sni_maps = texthash:{table}\n"
        )
    )
    assert tls is not None
    assert _peer_name(_handshake(tls, sni=b"MAIL.example.org")[1]) == "mail.example.org"
    assert _peer_name(_handshake(tls, sni=b"mx.sub.example.net")[1]) == "any.example.net"
    assert _peer_name(_handshake(tls, sni=b"other.example")[1]) == "mx.example.com"
    assert _peer_name(_handshake(tls)[1]) == "mx.example.com"


def test_renewed_certificate_is_used_by_new_connections(tmp_path: Path) -> None:
    """After the files change, the next connection (once the check interval
    passed) gets the new certificate; a session opened before keeps
    working; a broken renewal keeps the old certificate."""
    now = [0.0]
    cert = tmp_path / "chain.pem"
    write_chain(cert, "old.example")
    tls = ServerTLS(
        str(cert),
        str(cert),
        source=None,
        clock=lambda: now[0],
    )
    old_server, old_client = _handshake(tls)
    assert _peer_name(old_client) == "old.example"
    new = tmp_path / "new.pem"
    write_chain(new, "new.example")
    new.replace(cert)
    assert _peer_name(_handshake(tls)[1]) == "old.example"  # not checked yet
    now[0] += 2
    assert _peer_name(_handshake(tls)[1]) == "new.example"
    old_client.sendall(b"still here")
    old_server.bio_write(old_client.bio_read(65536))
    assert old_server.recv(100) == b"still here"
    cert.write_bytes(b"-----BEGIN PRIVATE KEY-----\ntruncated")
    now[0] += 2
    assert _peer_name(_handshake(tls)[1]) == "new.example"
