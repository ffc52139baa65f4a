"""TLS for every pymta server: certificates, contexts, and the log description.

Mirrors Postfix's tls_mgr/tls_server pieces. Shared by smtpd (STARTTLS),
POP3 (STLS) and IMAP (STARTTLS), and by implicit-TLS ports: a
:class:`ServerTLS` is an old-style Twisted context factory (``getContext``),
so ``transport.startTLS(server_tls)`` and
``SSL4ServerEndpoint(reactor, port, server_tls)`` both take it.

Parameters: ``smtpd_tls_security_level`` (none/"" = no TLS, may = offer,
encrypt = require); the certificates (``smtpd_tls_cert_file`` +
``smtpd_tls_key_file``, ``smtpd_tls_eccert_file`` + ``smtpd_tls_eckey_file``,
or ``smtpd_tls_chain_files``: :mod:`pymta.tls_certs`); a certificate per
SNI name (``tls_server_sni_maps``); protocols and ciphers
(``smtpd_tls_protocols``, ``smtpd_tls_ciphers``, their ``mandatory_``
twins at level encrypt, ``smtpd_tls_exclude_ciphers``:
:mod:`pymta.tls_grades`). pop3d and imapd read the same names with their
own prefix (``pop3d_tls_protocols`` ...), which default to smtpd's.

Renewed certificate files are picked up without a restart: new
connections stat them (at most once a second) and a change loads them
again; open sessions keep the context they started with.
:func:`ensure_self_signed` writes a certificate and a 0600 private
key (atomically: temporary name, fsync, rename) when they are missing, for
the embedded default configuration. It logs what it creates and each
reload.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.tables.interface import TableError
from pymta.tls_ccert import DIGESTS, verify_callback
from pymta.tls_certs import CertSource, Stamp, openssl_reason, stamps
from pymta.tls_grades import TLSSettings, settings_for

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


#: Contexts made without a configuration (tests, embedding) keep pymta's
#: own floor: TLS 1.2 and 1.3, forward-secret AEAD ciphers.
DEFAULT_SETTINGS = TLSSettings(SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION, CIPHERS_TLS12)


@dataclass(frozen=True)
class ClientCertPolicy:
    """smtpd_tls_ask_ccert / smtpd_tls_req_ccert, smtpd_tls_CAfile and
    smtpd_tls_fingerprint_digest (:mod:`pymta.tls_ccert`)."""

    require: bool = False
    ca_file: str = ""
    digest: str = "sha256"


#: How often (seconds) new connections look at the certificate files.
RELOAD_CHECK_INTERVAL = 1.0


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """A server TLS context from certificate chains and keys (PEM files).

    ``required`` is True for ``smtpd_tls_security_level = encrypt``.
    ``source`` (default: the ``cert_file``/``key_file`` pair) says where the
    certificates are, ``settings`` the protocols and ciphers, ``sni`` a
    table from TLS SNI names to chain files (``tls_server_sni_maps``).

    Renewals: at most once per :data:`RELOAD_CHECK_INTERVAL` a new
    connection stats the files; when one changed, the files are loaded
    again and new connections get the new context (sessions already open
    keep theirs, so none is dropped). A renewal that cannot be loaded (a
    half-written key, a mismatch) is logged and the old certificate stays
    in use until the files are right.
    """

    #: None: no client certificate is asked for (a class default, so that
    #: stand-ins made with ``object.__new__`` in tests have one too).
    client_certs: ClientCertPolicy | None = None

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        required: bool = False,
        parameter: str = "smtpd_tls_cert_file",
        config: Config | None = None,
        *,
        source: CertSource | None = None,
        settings: TLSSettings = DEFAULT_SETTINGS,
        sni: Any = None,
        client_certs: ClientCertPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.required = required
        self.settings = settings
        self.client_certs = client_certs
        key_parameter = parameter.replace("_cert_file", "_key_file")
        self.source = source or CertSource(((cert_file, key_file, parameter, key_parameter),))
        self._config = config
        self._sni = sni
        self._sni_contexts: dict[str, _Loaded] = {}
        self._clock = clock
        self._checked = clock()
        self._default = self._load(self.source, sni_callback=sni is not None)

    def _load(self, source: CertSource, sni_callback: bool = False) -> _Loaded:
        """A new context from ``source`` (ConfigError when it cannot be)."""
        stamp = stamps(source.files)
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_options(
            SSL.OP_NO_COMPRESSION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_SINGLE_ECDH_USE
            | SSL.OP_SINGLE_DH_USE
            | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
        )
        self.settings.apply(ctx)
        try:
            source.load(ctx)
        except ConfigError as e:
            raise _error(e.message, e.parameter or "smtpd_tls_cert_file", self._config) from None
        if self.client_certs is not None:
            self._ask_client_certificate(ctx, self.client_certs)
        if sni_callback:
            ctx.set_tlsext_servername_callback(self._servername)
        return _Loaded(ctx, source, stamp)

    def _ask_client_certificate(self, ctx: SSL.Context, policy: ClientCertPolicy) -> None:
        """Ask for a client certificate (never require one in the
        handshake) and name the CAs of smtpd_tls_CAfile to the client."""
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, verify_callback)
        # Resumed sessions keep their peer certificate; OpenSSL refuses to
        # resume a verified session without a session id context.
        ctx.set_session_id(b"pymta")
        if policy.ca_file:
            try:
                ctx.load_verify_locations(policy.ca_file.encode())
                ctx.load_client_ca(policy.ca_file.encode())
            except SSL.Error as e:
                raise _error(
                    f"cannot load CA certificates {policy.ca_file}: {openssl_reason(e)}",
                    "smtpd_tls_CAfile",
                    self._config,
                ) from None

    def getContext(self) -> SSL.Context:
        now = self._clock()
        if now - self._checked >= RELOAD_CHECK_INTERVAL:
            self._checked = now
            self._default = self._fresh(self._default, sni_callback=self._sni is not None)
            for value, loaded in list(self._sni_contexts.items()):
                self._sni_contexts[value] = self._fresh(loaded)
        return self._default.context

    def _fresh(self, loaded: _Loaded, sni_callback: bool = False) -> _Loaded:
        """``loaded``, or a new context when its files changed since."""
        if stamps(loaded.source.files) == loaded.stamp:
            return loaded
        try:
            renewed = self._load(loaded.source, sni_callback)
        except ConfigError as e:
            _log.error(
                "TLS certificate files changed but cannot be loaded; "
                "keeping the previous certificate: {error}",
                error=str(e),
            )
            # Try again only when they change again.
            return _Loaded(loaded.context, loaded.source, stamps(loaded.source.files))
        _log.info("reloaded TLS certificates from {files}", files=loaded.source.describe())
        return renewed

    def _servername(self, conn: SSL.Connection) -> None:
        """tls_server_sni_maps: switch to the context of the name the
        client asked for (RFC 6066 section 3), trying the name, then its
        parent domains as ``.parent``, as Postfix does; no entry keeps the
        default certificate."""
        raw = conn.get_servername()
        if not raw:
            return
        name = raw.decode("ascii", "replace").lower().rstrip(".")
        keys = [name]
        labels = name.split(".")
        keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
        try:
            value = next((v for v in map(self._sni.lookup, keys) if v), None)
        except TableError as e:
            _log.warn("tls_server_sni_maps lookup of {name} failed: {error}", name=name, error=e)
            return
        if value is None:
            return
        loaded = self._sni_contexts.get(value)
        if loaded is None:
            files = tuple(f for f in re.split(r"[\s,]+", value.strip()) if f)
            source = CertSource(chain_files=files, chain_parameter="tls_server_sni_maps")
            try:
                loaded = self._load(source)
            except ConfigError as e:
                _log.error("tls_server_sni_maps entry of {name}: {error}", name=name, error=e)
                return
            self._sni_contexts[value] = loaded
        conn.set_context(loaded.context)

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
        required = level == "encrypt"
        try:
            settings = settings_for(config, prefix, mandatory=required)
        except ConfigError as e:
            raise _error(e.message, e.parameter or level_name, config) from None
        source = _cert_source(config, prefix, level)
        sni = None
        sni_maps = config.get("tls_server_sni_maps").strip()
        if sni_maps:
            from pymta.tables import open_table

            sni = open_table(sni_maps, config)
        return cls(
            source.pairs[0][0] if source.pairs else "",
            source.pairs[0][1] if source.pairs else "",
            required=required,
            parameter=f"{prefix}_tls_cert_file",
            config=config,
            source=source,
            settings=settings,
            sni=sni,
            client_certs=_client_cert_policy(config, prefix, required),
        )


@dataclass(frozen=True)
class _Loaded:
    """One context and the stamps of the files it was made from."""

    context: SSL.Context
    source: CertSource
    stamp: tuple[Stamp, ...]


def _client_cert_policy(config: Config, prefix: str, required: bool) -> ClientCertPolicy | None:
    """smtpd's client-certificate settings, None when none is asked for.
    As in Postfix, smtpd_tls_req_ccert implies asking, and is ignored with
    a warning unless TLS is mandatory (level encrypt)."""
    if prefix != "smtpd":
        return None
    require = config.get_bool("smtpd_tls_req_ccert")
    if require and not required:
        _log.warn("smtpd_tls_req_ccert = yes is ignored unless smtpd_tls_security_level = encrypt")
        require = False
    if not (require or config.get_bool("smtpd_tls_ask_ccert")):
        return None
    digest = config.get("smtpd_tls_fingerprint_digest").strip().lower()
    if digest not in DIGESTS:
        raise _error(
            f"bad value {digest!r}: expected one of {', '.join(DIGESTS)}",
            "smtpd_tls_fingerprint_digest",
            config,
        )
    return ClientCertPolicy(require, config.get("smtpd_tls_CAfile").strip(), digest)


def _cert_source(config: Config, prefix: str, level: str) -> CertSource:
    """``<prefix>_tls_chain_files`` when set, else the cert/key pair and,
    for smtpd, the ECDSA pair (``smtpd_tls_eccert_file``)."""
    chain_parameter = f"{prefix}_tls_chain_files"
    chain = tuple(config.get_list(chain_parameter)) if config.is_known(chain_parameter) else ()
    if chain:
        return CertSource(chain_files=chain, chain_parameter=chain_parameter)
    pairs: list[tuple[str, str, str, str]] = []
    for cert_parameter, key_parameter in (
        (f"{prefix}_tls_cert_file", f"{prefix}_tls_key_file"),
        (f"{prefix}_tls_eccert_file", f"{prefix}_tls_eckey_file"),
    ):
        if not config.is_known(cert_parameter):
            continue
        cert = config.get(cert_parameter).strip()
        if cert:
            key = config.get(key_parameter).strip() or cert
            pairs.append((cert, key, cert_parameter, key_parameter))
    if not pairs:
        raise ConfigError(
            f"{prefix}_tls_security_level = {level} needs a certificate",
            parameter=f"{prefix}_tls_cert_file",
        )
    return CertSource(tuple(pairs))


def _error(message: str, parameter: str, config: Config | None) -> ConfigError:
    """A ConfigError naming where parameter was set (file and line), if known."""
    src = config.source(parameter) if config is not None else None
    if src is not None:
        return ConfigError(message, src.filename, src.lineno or None, parameter)
    return ConfigError(message, parameter=parameter)


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
