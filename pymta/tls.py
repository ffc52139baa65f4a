"""TLS for every pymta server: certificates, contexts, and the log description.

Mirrors Postfix's tls_mgr/tls_server pieces. Shared by smtpd (STARTTLS),
POP3 (STLS) and IMAP (STARTTLS), and by implicit-TLS ports: a
:class:`ServerTLS` is an old-style Twisted context factory (``getContext``),
so ``transport.startTLS(server_tls)`` and
``SSL4ServerEndpoint(reactor, port, server_tls)`` both take it.

Parameters: ``smtpd_tls_security_level`` (none/"" = no TLS, may = offer,
encrypt = require), ``smtpd_tls_cert_file`` and ``smtpd_tls_key_file``
(PEM). Contexts allow TLS 1.2 and later with forward-secret AEAD ciphers
only. :func:`ensure_self_signed` writes a certificate and a 0600 private
key (atomically: temporary name, fsync, rename) when they are missing, for
the embedded default configuration. It logs what it creates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from pymta.config.config import Config
from pymta.config.errors import ConfigError

__all__ = ["CIPHERS_TLS12", "ServerTLS", "describe", "ensure_self_signed", "implicit_tls"]

_log = Logger()

# TLS 1.2: ECDHE/DHE key exchange (forward secrecy) with AEAD ciphers only.
# TLS 1.3 suites are all forward secret and AEAD already.
CIPHERS_TLS12 = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"
)

_LEVELS = ("", "none", "may", "encrypt")


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """A server TLS context from a certificate chain and key (PEM files).

    ``required`` is True for ``smtpd_tls_security_level = encrypt``.
    """

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        required: bool = False,
        parameter: str = "smtpd_tls_cert_file",
        config: Config | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.required = required
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(
            SSL.OP_NO_COMPRESSION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_SINGLE_ECDH_USE
            | SSL.OP_SINGLE_DH_USE
            | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
        )
        ctx.set_cipher_list(CIPHERS_TLS12.encode("ascii"))
        key_parameter = parameter.replace("_cert_file", "_key_file")
        # Read both files first: OpenSSL's own error for a missing file is a
        # tuple that names neither the file nor "No such file or directory".
        _readable(cert_file, "certificate", parameter, config)
        _readable(key_file, "private key", key_parameter, config)
        step = (parameter, f"cannot load certificate {cert_file}")
        try:
            ctx.use_certificate_chain_file(cert_file.encode())
            step = (key_parameter, f"cannot load private key {key_file}")
            ctx.use_privatekey_file(key_file.encode())
            step = (key_parameter, f"private key {key_file} does not match certificate {cert_file}")
            ctx.check_privatekey()
        except SSL.Error as e:
            raise _error(f"{step[1]}: {_openssl_reason(e)}", step[0], config) from None
        self._context = ctx

    def getContext(self) -> SSL.Context:
        return self._context

    @classmethod
    def from_config(cls, config: Config, prefix: str = "smtpd") -> ServerTLS | None:
        """None for security level none/"", else a context (may, encrypt).

        ``prefix`` picks the parameter family (``smtpd_tls_*``).
        """
        level_name = f"{prefix}_tls_security_level"
        level = config.get(level_name).strip().lower()
        if not level and prefix == "smtpd":
            # Postfix's obsolete switches, used when the level is not set.
            if config.is_known("smtpd_enforce_tls") and config.get_bool("smtpd_enforce_tls"):
                level = "encrypt"
            elif config.is_known("smtpd_use_tls") and config.get_bool("smtpd_use_tls"):
                level = "may"
        if level not in _LEVELS:
            raise ConfigError(
                f"bad value {level!r}: expected none, may or encrypt", parameter=level_name
            )
        if level in ("", "none"):
            return None
        cert = config.get(f"{prefix}_tls_cert_file").strip()
        key = config.get(f"{prefix}_tls_key_file").strip() or cert
        if not cert:
            raise ConfigError(
                f"{level_name} = {level} needs a certificate",
                parameter=f"{prefix}_tls_cert_file",
            )
        return cls(
            cert,
            key,
            required=(level == "encrypt"),
            parameter=f"{prefix}_tls_cert_file",
            config=config,
        )


def _error(message: str, parameter: str, config: Config | None) -> ConfigError:
    """A ConfigError naming where parameter was set (file and line), if known."""
    src = config.source(parameter) if config is not None else None
    if src is not None:
        return ConfigError(message, src.filename, src.lineno or None, parameter)
    return ConfigError(message, parameter=parameter)


def _readable(path: str, what: str, parameter: str, config: Config | None) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise _error(f"cannot read {what} {path}: {e.strerror}", parameter, config) from None


def _openssl_reason(error: SSL.Error) -> str:
    """The reasons of an OpenSSL error queue ([(lib, func, reason), ...]) as text."""
    reasons = [str(entry[2]) for entry in (error.args[0] if error.args else []) if len(entry) > 2]
    return "; ".join(r for r in reasons if r) or str(error)


def describe(transport: Any) -> str:
    """Postfix-style ``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``.

    ``transport`` is a TLS transport (after startTLS, or on an implicit-TLS
    port); "" when it carries no TLS connection or the handshake has not
    finished.
    """
    try:
        conn = transport.getHandle()
    except Exception:
        return ""
    if not isinstance(conn, SSL.Connection):
        return ""
    version = conn.get_protocol_version_name()
    cipher = conn.get_cipher_name()
    bits = conn.get_cipher_bits()
    if not cipher or version == "Unknown":
        return ""
    return f"{version} with cipher {cipher} ({bits}/{bits} bits)"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def self_signed_names(hostname: str) -> list[Any]:
    """The subject alternative names of the self-signed certificate:
    hostname, then ``localhost``, ``127.0.0.1`` and ``::1`` (no duplicates)."""
    from cryptography import x509

    names: list[Any] = []
    for text in (hostname, "localhost", "127.0.0.1", "::1"):
        try:
            name: Any = x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            name = x509.DNSName(text.lower())
        if text and name not in names:
            names.append(name)
    return names


def ensure_self_signed(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    hostname: str,
    now: datetime.datetime | None = None,
) -> bool:
    """Make a self-signed certificate for ``hostname`` unless both files exist.

    EC P-256 key, valid ten years from ``now``. Its subject alternative
    names are hostname and the loopback names (``localhost``, ``127.0.0.1``,
    ``::1``): the embedded default listens on loopback, and a verifying
    client (curl ``--cacert``, fetchmail, msmtp, Python's ssl) connects to
    one of those, since myhostname need not resolve. Key usage and the key
    identifiers are set, as strict verifiers (Python 3.13's
    VERIFY_X509_STRICT) require. The key is written 0600. Returns True when
    new files were written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_file = Path(cert_path)
    key_file = Path(key_path)
    if cert_file.exists() and key_file.exists():
        return False
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(self_signed_names(hostname)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(key_file, key_pem, 0o600)
    _write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _log.info(
        "created a self-signed certificate for {hostname} in {cert} (key {key})",
        hostname=hostname,
        cert=str(cert_file),
        key=str(key_file),
    )
    return True


def listener_tls(config: Config, prefix: str) -> ServerTLS | None:
    """The TLS context of one listener (``smtpd``, ``pop3d``, ``imapd``
    parameter family), or None when its security level is none or empty.

    With ``pymta_tls_create_self_signed = yes`` a missing certificate is made
    first (the embedded default's first start).
    """
    cert = config.get(f"{prefix}_tls_cert_file").strip()
    level = config.get(f"{prefix}_tls_security_level").strip().lower()
    if cert and level not in ("", "none") and config.get_bool("pymta_tls_create_self_signed"):
        key = config.get(f"{prefix}_tls_key_file").strip() or cert
        Path(cert).parent.mkdir(parents=True, exist_ok=True)
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        ensure_self_signed(cert, key, config.get("myhostname"))
    return ServerTLS.from_config(config, prefix)


def implicit_tls(factory: IProtocolFactory, tls: ServerTLS | None, prefix: str) -> Any:
    """``factory`` behind TLS from the first byte (``<prefix>_tls_wrappermode
    = yes``: smtps/submissions on 465, RFC 8314), or a ConfigError when the
    service has no certificate: a wrapper-mode port never answers in clear
    text. The protocol sees an ISSLTransport and offers no STARTTLS."""
    if tls is None:
        raise ConfigError(
            f"{prefix}_tls_wrappermode = yes needs {prefix}_tls_cert_file and "
            f"{prefix}_tls_key_file and {prefix}_tls_security_level may or encrypt",
            parameter=f"{prefix}_tls_wrappermode",
        )
    return TLSMemoryBIOFactory(tls, False, factory)
