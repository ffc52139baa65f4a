"""pymta.auth.dovecot: Dovecot's auth client protocol over a StringTransport,
time from a task.Clock (no sockets, no Dovecot: see test_e2e_dovecot_sasl)."""

from __future__ import annotations

from base64 import b64decode
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pymta.auth.credentials import PasswordCredentials
from pymta.auth.dovecot import ANSWER_TIMEOUT, DovecotAuthChecker, auth_endpoint
from pymta.auth.errors import AuthTemporaryError
from pymta.config.config import Config
from pymta.config.errors import ConfigError

HANDSHAKE = (
    b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
    b"SPID\t1\nCUID\t1\nCOOKIE\tabc\nDONE\n"
)


class FakeEndpoint:
    """Connects each protocol to a new StringTransport, or fails."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []
        self.refuse = False

    def connect(self, factory: Any) -> Deferred[Any]:
        if self.refuse:
            from twisted.internet.defer import fail

            return fail(ConnectionRefusedError("refused"))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def _sent_lines(transport: StringTransport) -> list[list[str]]:
    return [line.split("\t") for line in transport.value().decode().splitlines()]


def _outcome(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "no result yet"
    return box[0]


def _checker() -> tuple[DovecotAuthChecker, FakeEndpoint, Clock]:
    endpoint, clock = FakeEndpoint(), Clock()
    return DovecotAuthChecker(endpoint, clock), endpoint, clock


def test_handshake_then_ok() -> None:
    """VERSION and CPID go first; after the server's DONE the login is one
    AUTH PLAIN line with service, nologin, rip, secured and the base64
    response; OK's user= is the avatar id."""
    checker, endpoint, _ = _checker()
    d = checker.requestAvatarId(
        PasswordCredentials("Alice@Example.test", "s3cret", "192.0.2.1", "smtp", secured=True)
    )
    protocol, transport = endpoint.connections[0]
    assert _sent_lines(transport)[0] == ["VERSION", "1", "2"]
    assert _sent_lines(transport)[1][0] == "CPID"
    transport.clear()
    protocol.dataReceived(HANDSHAKE)
    (auth,) = _sent_lines(transport)
    assert auth[:5] == ["AUTH", "1", "PLAIN", "service=smtp", "nologin"]
    assert "rip=192.0.2.1" in auth and "secured" in auth
    assert b64decode(auth[-1].removeprefix("resp=")) == b"\0Alice@Example.test\0s3cret"
    protocol.dataReceived(b"OK\t1\tuser=alice@example.test\n")
    assert _outcome(d) == b"alice@example.test"


def test_fail_is_a_wrong_password_and_temp_is_temporary() -> None:
    """FAIL answers UnauthorizedLogin; FAIL with temp an AuthTemporaryError;
    the connection is kept and reused (one connect, ids 1, 2, 3)."""
    checker, endpoint, _ = _checker()
    first = checker.requestAvatarId(PasswordCredentials("a", "b", "192.0.2.1"))
    protocol, _ = endpoint.connections[0]
    protocol.dataReceived(HANDSHAKE)
    protocol.dataReceived(b"FAIL\t1\tuser=a\n")
    first_failure = _outcome(first)
    assert isinstance(first_failure, Failure) and first_failure.check(UnauthorizedLogin)
    second = checker.requestAvatarId(PasswordCredentials("a", "b", "192.0.2.1"))
    third = checker.requestAvatarId(PasswordCredentials("c", "d", "192.0.2.1"))
    protocol.dataReceived(b"FAIL\t3\ttemp\treason=db down\nOK\t2\tuser=a\n")
    assert _outcome(second) == b"a"
    outcome = _outcome(third)
    assert isinstance(outcome, Failure) and outcome.check(AuthTemporaryError)
    assert len(endpoint.connections) == 1


def test_no_answer_is_temporary_and_the_next_login_reconnects() -> None:
    """A server that does not answer within ANSWER_TIMEOUT: the login is a
    temporary failure, the connection is dropped, the next login connects
    again."""
    checker, endpoint, clock = _checker()
    d = checker.requestAvatarId(PasswordCredentials("a", "b", "192.0.2.1"))
    protocol, transport = endpoint.connections[0]
    protocol.dataReceived(HANDSHAKE)
    clock.advance(ANSWER_TIMEOUT)
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionError()))
    outcome = _outcome(d)
    assert isinstance(outcome, Failure) and outcome.check(AuthTemporaryError)
    checker.requestAvatarId(PasswordCredentials("a", "b", "192.0.2.1"))
    assert len(endpoint.connections) == 2


def test_refused_connection_and_missing_plain_are_temporary() -> None:
    """No auth server listening, or one without PLAIN: AuthTemporaryError
    (SMTP 454), never a wrong-password answer."""
    checker, endpoint, _ = _checker()
    endpoint.refuse = True
    outcome = _outcome(checker.requestAvatarId(PasswordCredentials("a", "b")))
    assert isinstance(outcome, Failure) and outcome.check(AuthTemporaryError)
    endpoint.refuse = False
    d = checker.requestAvatarId(PasswordCredentials("a", "b"))
    protocol, _ = endpoint.connections[0]
    protocol.dataReceived(b"VERSION\t1\t2\nMECH\tCRAM-MD5\nDONE\n")
    outcome = _outcome(d)
    assert isinstance(outcome, Failure) and outcome.check(AuthTemporaryError)


def test_sasl_path_forms() -> None:
    """inet:host:port is TCP; a relative path is under queue_directory; an
    absolute one (unix: optional) stays as it is; a bad inet form stops the start."""
    clock = Clock()

    def endpoint(path: str) -> Any:
        config = Config.from_text(f"queue_directory = /var/spool/pymta\nsmtpd_sasl_path = {path}\n")
        return auth_endpoint(config, clock)

    tcp = endpoint("inet:127.0.0.1:12345")
    assert (tcp._host, tcp._port) == ("127.0.0.1", 12345)
    assert endpoint("private/auth")._path == "/var/spool/pymta/private/auth"
    assert endpoint("unix:/run/dovecot/auth-client")._path == "/run/dovecot/auth-client"
    with pytest.raises(ConfigError):
        endpoint("inet:nowhere")
