"""SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.

Mirrors Postfix's smtpd_sasl_proto.c and smtpd_sasl_glue.c with pymta's own
SASL server (``smtpd_sasl_type = pymta``): the credentials go to the same
twisted.cred checker as POP3 and IMAP logins (``pymta_passdb``), so the
failure delays and penalties are shared by every protocol.

This module is the pure part: which mechanisms a session may use, and the
exchange of one AUTH command as a small state machine fed with the
client's lines (:class:`SaslExchange`). It neither reads the network nor
checks a password; the protocol does both.

Untrusted input: every line of the exchange (base64, user names,
passwords). Passwords are never logged or kept beyond the check.

Parameters (Postfix's meanings): ``smtpd_sasl_auth_enable``,
``smtpd_tls_auth_only`` (pymta's default is ``yes``: Postfix's ``no``
would let clients send passwords in clear text), ``smtpd_sasl_security_options``
and ``smtpd_sasl_tls_security_options`` (``noplaintext`` removes PLAIN and
LOGIN, ``mutual_auth`` every mechanism pymta has; ``noanonymous`` and
``nodictionary`` are what PLAIN and LOGIN already are),
``smtpd_sasl_exceptions_networks`` (clients not offered AUTH),
``broken_sasl_auth_clients`` (also say ``AUTH=PLAIN LOGIN``, for Outlook
Express 4 and Microsoft Exchange 5.0), ``smtpd_sasl_type`` (``pymta``, or
``dovecot`` with ``smtpd_sasl_path``: the credentials go to a Dovecot auth
server through :mod:`pymta.auth.dovecot`; Cyrus is refused at start).
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from dataclasses import dataclass

from pymta.config.config import Config
from pymta.config.errors import ConfigError

__all__ = [
    "Challenge",
    "Credentials",
    "SaslExchange",
    "SaslFailure",
    "SaslSettings",
    "decode_plain",
]

MECHANISMS = ("PLAIN", "LOGIN")
# Security properties a mechanism lacks (Cyrus SASL's flags): PLAIN and
# LOGIN send the password in clear text inside the exchange.
_PLAINTEXT = {"PLAIN", "LOGIN"}
_KNOWN_OPTIONS = {
    "noanonymous",
    "noplaintext",
    "nodictionary",
    "noactive",
    "mutual_auth",
    "forward_secrecy",
}


@dataclass(frozen=True)
class Challenge:
    """A ``334`` continuation: base64 text the client must answer."""

    text: str


@dataclass(frozen=True)
class Credentials:
    """The exchange ended with a user name and password to check."""

    mechanism: str
    username: str
    password: str


@dataclass(frozen=True)
class SaslFailure:
    """The exchange ended without credentials: the SMTP reply to send."""

    reply: bytes


Step = Challenge | Credentials | SaslFailure

R_CANCELLED = b"501 5.7.0 Authentication aborted\r\n"
R_BAD_BASE64 = b"501 5.5.2 Cannot decode response\r\n"
R_BAD_PLAIN = b"535 5.7.8 Error: authentication failed: malformed PLAIN response\r\n"


class SaslError(ValueError):
    """A PLAIN message that is not RFC 4616's authzid NUL authcid NUL passwd."""


def _decode(line: str) -> bytes:
    try:
        return b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("not base64") from None


def decode_plain(message: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of an RFC 4616 PLAIN message."""
    parts = message.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SaslError("malformed PLAIN message")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SaslError("PLAIN message is not UTF-8") from None
    return authzid, authcid, password


class SaslExchange:
    """One AUTH command's exchange: :meth:`start` with the command's
    mechanism and initial response, then :meth:`feed` with each line the
    client sends after a :class:`Challenge`."""

    def __init__(self) -> None:
        self.mechanism = ""
        self._username: str | None = None

    def start(self, mechanism: str, initial: str | None) -> Step:
        self.mechanism = mechanism
        if initial == "=":  # RFC 4954 section 4: an empty initial response
            initial = ""
        if mechanism == "PLAIN":
            return Challenge("") if initial is None else self._plain(initial)
        if initial is None:
            return Challenge(b64encode(b"Username:").decode())
        return self._login_user(initial)

    def feed(self, line: str) -> Step:
        if line.strip() == "*":
            return SaslFailure(R_CANCELLED)
        if self.mechanism == "PLAIN":
            return self._plain(line)
        if self._username is None:
            return self._login_user(line)
        try:
            password = _decode(line).decode("utf-8")
        except (SaslError, UnicodeDecodeError):
            return SaslFailure(R_BAD_BASE64)
        return Credentials("LOGIN", self._username, password)

    def _plain(self, line: str) -> Step:
        try:
            authzid, authcid, password = decode_plain(_decode(line))
        except SaslError as e:
            return SaslFailure(R_BAD_BASE64 if str(e) == "not base64" else R_BAD_PLAIN)
        if authzid and authzid != authcid:
            # Acting as another user (proxy authorization) is not offered.
            return SaslFailure(
                b"535 5.7.8 Error: authentication failed: authorization identity refused\r\n"
            )
        return Credentials("PLAIN", authcid, password)

    def _login_user(self, line: str) -> Step:
        try:
            username = _decode(line).decode("utf-8")
        except (SaslError, UnicodeDecodeError):
            return SaslFailure(R_BAD_BASE64)
        if not username:
            return SaslFailure(R_BAD_BASE64)
        self._username = username
        return Challenge(b64encode(b"Password:").decode())


def _options(config: Config, name: str) -> frozenset[str]:
    options = frozenset(o.lower() for o in config.get_list(name))
    unknown = options - _KNOWN_OPTIONS
    if unknown:
        src = config.source(name)
        raise ConfigError(
            f"bad value {config.get(name)!r}: unknown option {sorted(unknown)[0]!r}",
            src.filename if src else None,
            src.lineno if src else None,
            name,
        )
    return options


def _allowed(options: frozenset[str]) -> tuple[str, ...]:
    if "mutual_auth" in options:
        return ()
    if "noplaintext" in options:
        return tuple(m for m in MECHANISMS if m not in _PLAINTEXT)
    return MECHANISMS


@dataclass(frozen=True)
class SaslSettings:
    """One smtpd service's AUTH settings (after its master.cf overrides)."""

    enabled: bool
    tls_only: bool
    plain_mechanisms: tuple[str, ...]  # offered before TLS
    tls_mechanisms: tuple[str, ...]  # offered over TLS
    broken_clients: bool
    authenticated_header: bool

    @classmethod
    def from_config(cls, config: Config) -> SaslSettings:
        enabled = config.get_bool("smtpd_sasl_auth_enable")
        kind = config.get("smtpd_sasl_type").strip().lower()
        if enabled and kind not in ("pymta", "dovecot"):
            src = config.source("smtpd_sasl_type")
            raise ConfigError(
                f"smtpd_sasl_type = {kind} is not implemented by pymta: use pymta "
                "(the passwd-file of pymta_passdb, shared with POP3 and IMAP) or dovecot",
                src.filename if src else None,
                src.lineno if src else None,
                "smtpd_sasl_type",
            )
        return cls(
            enabled=enabled,
            tls_only=config.get_bool("smtpd_tls_auth_only"),
            plain_mechanisms=_allowed(_options(config, "smtpd_sasl_security_options")),
            tls_mechanisms=_allowed(_options(config, "smtpd_sasl_tls_security_options")),
            broken_clients=config.get_bool("broken_sasl_auth_clients"),
            authenticated_header=config.get_bool("smtpd_sasl_authenticated_header"),
        )

    def mechanisms(self, tls_active: bool) -> tuple[str, ...]:
        """What a session may use now: nothing before TLS with
        smtpd_tls_auth_only, else the options of its state."""
        if not self.enabled:
            return ()
        if not tls_active:
            return () if self.tls_only else self.plain_mechanisms
        return self.tls_mechanisms
