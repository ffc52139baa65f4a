"""pymta.tls: self-signed certificates, server contexts, the log description."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from OpenSSL import SSL

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.tls import ServerTLS, describe, ensure_self_signed

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[str, str]:
    cert_path = tmp_path / "certs" / "smtpd.pem"
    key_path = tmp_path / "private" / "smtpd.key"
    assert ensure_self_signed(cert_path, key_path, "mx.example.com", now=NOW)
    return str(cert_path), str(key_path)


def test_self_signed_certificate(cert: tuple[str, str]) -> None:
    """The certificate names the host and the loopback names (localhost,
    127.0.0.1, ::1) in its SAN, lasts ten years, and the key is 0600."""
    cert_path, key_path = cert
    loaded = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.com", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert loaded.not_valid_after_utc - NOW == datetime.timedelta(days=3650)
    assert stat.S_IMODE(Path(key_path).stat().st_mode) == 0o600
    assert not [p for p in Path(key_path).parent.iterdir() if p.name.startswith(".")]


def test_self_signed_is_made_only_once(cert: tuple[str, str]) -> None:
    """Existing files are kept: a second call writes nothing."""
    cert_path, key_path = cert
    before = Path(cert_path).read_bytes()
    assert not ensure_self_signed(cert_path, key_path, "other.example", now=NOW)
    assert Path(cert_path).read_bytes() == before


def _config(text: str) -> Config:
    return Config.from_text("myhostname = mx.example.com\n" + text)


def test_from_config_levels(cert: tuple[str, str]) -> None:
    """none/"" give no TLS; may gives a context; encrypt a required one."""
    cert_path, key_path = cert
    files = f"smtpd_tls_cert_file = {cert_path}\nsmtpd_tls_key_file = {key_path}\n"
    assert ServerTLS.from_config(_config(files)) is None
    assert ServerTLS.from_config(_config(files + "smtpd_tls_security_level = none\n")) is None
    may = ServerTLS.from_config(_config(files + "smtpd_tls_security_level = may\n"))
    assert may is not None and not may.required
    assert isinstance(may.getContext(), SSL.Context)
    enc = ServerTLS.from_config(_config(files + "smtpd_tls_security_level = encrypt\n"))
    assert enc is not None and enc.required


def test_from_config_errors(tmp_path: Path) -> None:
    """A bad level, a missing certificate or an unreadable file is a ConfigError."""
    with pytest.raises(ConfigError) as info:
        ServerTLS.from_config(_config("smtpd_tls_security_level = sometimes\n"))
    assert info.value.parameter == "smtpd_tls_security_level"
    with pytest.raises(ConfigError) as info:
        ServerTLS.from_config(_config("smtpd_tls_security_level = may\n"))
    assert info.value.parameter == "smtpd_tls_cert_file"
    with pytest.raises(ConfigError):
        ServerTLS.from_config(
            _config(f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path}/nope\n")
        )


def _handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """Drive a handshake between two memory-BIO connections."""
    for _ in range(20):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                b.bio_write(data)
        if server.get_cipher_name() and client.get_cipher_name():
            try:
                server.do_handshake()
                client.do_handshake()
                return
            except SSL.WantReadError:
                continue
    raise AssertionError("handshake did not finish")


class _Transport:
    def __init__(self, conn: object) -> None:
        self.conn = conn

    def getHandle(self) -> object:
        return self.conn


def test_describe_after_a_real_handshake(cert: tuple[str, str]) -> None:
    """describe() gives Postfix's "TLSv1.3 with cipher ... (N/N bits)" text."""
    server_tls = ServerTLS(*cert)
    server = SSL.Connection(server_tls.getContext(), None)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    _handshake(server, client)
    text = describe(_Transport(server))
    assert text.startswith("TLSv1.3 with cipher TLS_")
    assert text.endswith(" bits)")
    assert describe(_Transport(object())) == ""


def test_old_protocols_are_refused(cert: tuple[str, str]) -> None:
    """A client limited to TLS 1.1 cannot complete a handshake (TLS 1.2+ only)."""
    server = SSL.Connection(ServerTLS(*cert).getContext(), None)
    server.set_accept_state()
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
    ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    with pytest.raises(SSL.Error):
        _handshake(server, client)


def test_tls12_uses_forward_secret_aead(cert: tuple[str, str]) -> None:
    """With TLS 1.2 the negotiated cipher is ECDHE with GCM or ChaCha20."""
    server = SSL.Connection(ServerTLS(*cert).getContext(), None)
    server.set_accept_state()
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    _handshake(server, client)
    name = server.get_cipher_name() or ""
    assert name.startswith("ECDHE-")
    assert "GCM" in name or "CHACHA20" in name
    assert describe(_Transport(server)).startswith("TLSv1.2 with cipher ECDHE-")


def test_obsolete_use_tls_and_enforce_tls(cert: tuple[str, str]) -> None:
    """With no smtpd_tls_security_level, smtpd_use_tls / smtpd_enforce_tls decide."""
    cert_path, key_path = cert
    files = f"smtpd_tls_cert_file = {cert_path}\nsmtpd_tls_key_file = {key_path}\n"
    may = ServerTLS.from_config(_config(files + "smtpd_use_tls = yes\n"))
    assert may is not None and not may.required
    enc = ServerTLS.from_config(_config(files + "smtpd_enforce_tls = yes\n"))
    assert enc is not None and enc.required
