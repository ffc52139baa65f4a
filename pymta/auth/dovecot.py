"""A client of Dovecot's authentication protocol, as a twisted.cred checker.

Mirrors Postfix's xsasl_dovecot_server.c: with ``smtpd_sasl_type =
dovecot`` smtpd's AUTH asks a running Dovecot auth service instead of
pymta's passdb, so a site keeps the user database its IMAP server already
uses. ``smtpd_sasl_path`` names the service: ``inet:host:port``, or the
path of its UNIX socket (``unix:`` optional); a relative path is taken
relative to ``queue_directory``, as Postfix resolves it (Postfix's smtpd is
chrooted there), so Dovecot's usual ``unix_listener
/var/spool/postfix/private/auth`` is ``smtpd_sasl_path = private/auth``.

The protocol (Dovecot's auth client protocol, version 1.2): on connect the
client sends ``VERSION 1 2`` and ``CPID <pid>``; the server answers with
its VERSION, one ``MECH <name> <flags...>`` line per mechanism, SPID, CUID,
COOKIE and ``DONE``. Then each login is ``AUTH <id> PLAIN service=smtp
nologin rip=<client> [secured] resp=<base64>`` and the answer ``OK <id>
user=...``, ``FAIL <id> [temp] [reason=...]`` or ``CONT <id> <challenge>``
(fields separated by tabs). pymta runs the SMTP side of PLAIN and LOGIN
itself and hands Dovecot the user name and password as one PLAIN
response, so Dovecot must offer PLAIN (``auth_mechanisms = plain login``,
Debian's default is ``plain``); other Dovecot mechanisms are not offered
to SMTP clients. ``secured`` is sent when the SMTP session is under TLS,
so Dovecot's ``disable_plaintext_auth = yes`` accepts it.

One connection per checker (one per smtpd listener and process, as
Postfix keeps one per smtpd process), opened at the first login and kept;
logins in flight share it, told apart by their id. A lost connection, a
refused connect, a server that does not answer within
:data:`ANSWER_TIMEOUT`, or ``FAIL ... temp`` is
:class:`~pymta.auth.errors.AuthTemporaryError` (SMTP ``454 4.7.0``); a
plain FAIL (or CONT, which PLAIN with a response never needs) is
UnauthorizedLogin (``535 5.7.8``). Dovecot applies its own failure delay
and penalties; pymta's throttle is not used on this path.

Untrusted input: user names and passwords from SMTP clients (sent base64
inside one field, so they cannot break the line format) and the auth
server's lines (parsed, bounded to 64 KiB). Writes nothing; logs a
connection failure and a server without PLAIN as warnings.
"""

from __future__ import annotations

import os
from base64 import b64encode
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.auth.credentials import IClientCredentials
from pymta.auth.errors import AuthTemporaryError
from pymta.config.config import Config
from pymta.config.errors import ConfigError

__all__ = ["ANSWER_TIMEOUT", "DovecotAuthChecker", "auth_endpoint"]

_log = Logger(namespace="pymta.auth.dovecot")

#: Seconds to wait for the handshake or one answer before giving up (temporary).
ANSWER_TIMEOUT = 30.0


def auth_endpoint(config: Config, reactor: Any) -> Any:
    """The client endpoint of ``smtpd_sasl_path`` (see module doc)."""
    path = config.get("smtpd_sasl_path").strip()
    if path.startswith("inet:"):
        host, _, port = path[5:].rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigError(
                f"bad value {path!r}: expected inet:host:port or a socket path",
                parameter="smtpd_sasl_path",
            )
        return TCP4ClientEndpoint(reactor, host, int(port), timeout=int(ANSWER_TIMEOUT))
    if path.startswith("unix:"):
        path = path[5:]
    if not path:
        raise ConfigError("smtpd_sasl_type = dovecot needs a path", parameter="smtpd_sasl_path")
    if not os.path.isabs(path):
        path = os.path.join(config.get("queue_directory"), path)
    return UNIXClientEndpoint(reactor, path, timeout=int(ANSWER_TIMEOUT))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _fields(line: bytes) -> list[str]:
    return line.decode("utf-8", "replace").split("\t")


class _AuthClient(LineOnlyReceiver):
    """One connection to the auth server (see module doc)."""

    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.ready: Deferred[_AuthClient] = Deferred()
        self.mechanisms: set[str] = set()
        self._handshaking = True
        self.lost = False
        self._next_id = 0
        self._pending: dict[str, tuple[Deferred[str], Any]] = {}
        self._handshake_timer = clock.callLater(ANSWER_TIMEOUT, self._timed_out)

    def connectionMade(self) -> None:
        self.sendLine(b"VERSION\t1\t2")
        self.sendLine(f"CPID\t{os.getpid()}".encode())

    def lineReceived(self, line: bytes) -> None:
        fields = _fields(line)
        if self._handshaking:
            self._handshake_line(fields)
            return
        if len(fields) < 2 or fields[1] not in self._pending:
            return  # an answer to a request given up on, or a notice
        d, timer = self._pending.pop(fields[1])
        if timer.active():
            timer.cancel()
        verb = fields[0]
        if verb == "OK":
            user = next((f[5:] for f in fields[2:] if f.startswith("user=")), "")
            d.callback(user)
        elif verb == "FAIL" and "temp" in fields[2:]:
            reason = next((f[7:] for f in fields[2:] if f.startswith("reason=")), "")
            d.errback(AuthTemporaryError(f"Dovecot auth: temporary failure {reason}".strip()))
        else:
            # FAIL, or CONT: PLAIN with its response needs no continuation.
            d.errback(UnauthorizedLogin())

    def _handshake_line(self, fields: list[str]) -> None:
        verb = fields[0]
        if verb == "VERSION" and (len(fields) < 2 or fields[1] != "1"):
            self._abandon(f"Dovecot auth protocol version {fields[1:]!r} is not 1")
        elif verb == "MECH" and len(fields) > 1:
            self.mechanisms.add(fields[1].upper())
        elif verb == "DONE":
            self._handshaking = False
            if self._handshake_timer.active():
                self._handshake_timer.cancel()
            self.ready.callback(self)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._abandon("Dovecot auth server sent an over-long line")

    def authenticate(self, username: str, password: str, rip: str, secured: bool) -> Deferred[str]:
        """The user name Dovecot confirms, or UnauthorizedLogin / AuthTemporaryError."""
        if "PLAIN" not in self.mechanisms:
            _log.warn("the Dovecot auth server offers no PLAIN mechanism (auth_mechanisms)")
            return fail(AuthTemporaryError("Dovecot auth server offers no PLAIN mechanism"))
        self._next_id += 1
        request_id = str(self._next_id)
        response = b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
        fields = ["AUTH", request_id, "PLAIN", "service=smtp", "nologin"]
        if rip and all(c not in rip for c in "\t\n"):
            fields.append(f"rip={rip}")
        if secured:
            fields.append("secured")
        fields.append(f"resp={response}")
        d: Deferred[str] = Deferred()
        timer = self.clock.callLater(ANSWER_TIMEOUT, self._timed_out)
        self._pending[request_id] = (d, timer)
        self.sendLine("\t".join(fields).encode())
        return d

    def _timed_out(self) -> None:
        self._abandon("the Dovecot auth server did not answer in time")

    def _abandon(self, why: str) -> None:
        _log.warn("{why}", why=why)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True
        if self._handshake_timer.active():
            self._handshake_timer.cancel()
        if not self.ready.called:
            self.ready.errback(AuthTemporaryError("Dovecot auth connection lost"))
        pending, self._pending = self._pending, {}
        for d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(AuthTemporaryError("Dovecot auth connection lost"))


@implementer(ICredentialsChecker)
class DovecotAuthChecker:
    """Checks IUsernamePassword credentials against a Dovecot auth server.

    The avatar id is the user name Dovecot returns (``user=``), UTF-8.
    Credentials that provide
    :class:`~pymta.auth.credentials.IClientCredentials` also give the
    client's address and whether the session is under TLS.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, endpoint: Any, clock: Any) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._client: _AuthClient | None = None
        self._connecting: list[Deferred[_AuthClient]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        username = _text(credentials.username)
        password = _text(credentials.password)
        client = IClientCredentials(credentials, None)
        rip = (client.client_address or "") if client is not None else ""
        secured = bool(client.secured) if client is not None else False

        def ask(client: _AuthClient) -> Deferred[str]:
            return client.authenticate(username, password, rip, secured)

        def avatar(user: str) -> bytes | tuple[()]:
            return (user or username).encode("utf-8")

        d: Deferred[Any] = self._connection()
        return d.addCallback(ask).addCallback(avatar)

    def _connection(self) -> Deferred[_AuthClient]:
        client = self._client
        if client is not None and not client.lost:
            return succeed(client)
        waiter: Deferred[_AuthClient] = Deferred()
        self._connecting.append(waiter)
        if len(self._connecting) == 1:
            self._connect()
        return waiter

    def _connect(self) -> None:
        clock = self._clock
        factory = Factory.forProtocol(lambda: _AuthClient(clock))
        connected = self._endpoint.connect(factory)

        def handshake(client: _AuthClient) -> Deferred[_AuthClient]:
            return client.ready

        def done(result: Any) -> None:
            waiters, self._connecting = self._connecting, []
            if isinstance(result, Failure):
                if not result.check(AuthTemporaryError):
                    _log.warn(
                        "cannot connect to the Dovecot auth server: {error}",
                        error=result.getErrorMessage(),
                    )
                    result = Failure(AuthTemporaryError(result.getErrorMessage()))
                for waiter in waiters:
                    waiter.errback(result)
                return
            self._client = result
            for waiter in waiters:
                waiter.callback(result)

        connected.addCallback(handshake)
        connected.addBoth(done)
