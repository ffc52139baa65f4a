"""A session that ends must end: IMAP LOGOUT and POP3 QUIT close the
connection over TLS too.

The servers run behind Twisted's real TLS layer (``TLSMemoryBIOProtocol``,
the object both STARTTLS and the implicit-TLS ports use) and talk to a TLS
client through an in-memory pump (twisted.test.iosim): no sockets, no
sleeps. Twisted's TLS layer postpones its close while a producer is
registered on it; these tests fail when a protocol asks for the close with
its producer still registered.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer

from pymta.hangup import CLOSE_TIMEOUT
from pymta.pop3.protocol import INPUT_BACKLOG
from pymta.tls import ServerTLS
from tests import test_imap_harness, test_pop3_harness
from tests.tls_ca import make_ca


class Recorder(Protocol):
    """The client application: keeps what it receives and whether the end came."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


@implementer(IOpenSSLClientConnectionCreator)
class VerifyingClient:
    """A TLS client that checks the server's certificate against the test CA."""

    def __init__(self, ca_file: Path) -> None:
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.context.load_verify_locations(str(ca_file).encode())
        self.context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))

    def clientConnectionForTLS(self, tls_protocol: object) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tls_protocol)
        connection.set_tlsext_host_name(b"localhost")
        return connection


def tls_pair(server_factory: Factory, tmp_path: Path, clock: Clock) -> tuple[Recorder, IOPump]:
    """server_factory's protocol behind TLS, connected to a verifying TLS client."""
    ca = make_ca(tmp_path / "ca")
    tls = ServerTLS(str(ca.cert_file), str(ca.key_file))
    server = TLSMemoryBIOFactory(tls, False, server_factory, clock=clock).buildProtocol(
        IPv4Address("TCP", "127.0.0.1", 40001)
    )
    client_app = Recorder()
    client = TLSMemoryBIOFactory(
        VerifyingClient(ca.ca_file), True, Factory.forProtocol(lambda: client_app), clock=clock
    ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 993))
    pump = connect(
        server,
        FakeTransport(server, True, IPv4Address("TCP", "127.0.0.1", 993)),
        client,
        FakeTransport(client, False, IPv4Address("TCP", "127.0.0.1", 40001)),
        greet=True,
        clock=clock,
    )
    return client_app, pump


def say(client_app: Recorder, pump: IOPump, line: bytes) -> None:
    assert client_app.transport is not None
    client_app.transport.write(line)
    pump.flush()


def test_imap_logout_over_tls_closes_the_connection(tmp_path: Path) -> None:
    """After LOGOUT over TLS the client gets BYE, the tagged OK, and then the
    end of the connection (a TLS close and EOF), not a session left open."""
    world = test_imap_harness.World(tmp_path)
    client, pump = tls_pair(world.factory, tmp_path, world.clock)
    assert client.received.startswith(b"* OK [CAPABILITY ")
    say(client, pump, b"a LOGIN alice@example.org secret\r\n")
    assert b"a OK [CAPABILITY " in client.received
    say(client, pump, b"b LOGOUT\r\n")
    assert client.received.endswith(b"* BYE Logging out\r\nb OK Logout completed.\r\n")
    assert client.lost is not None


def test_pop3_quit_over_tls_closes_the_connection(tmp_path: Path) -> None:
    """After QUIT over TLS the client gets +OK and then the end of the connection."""
    world = test_pop3_harness.World(tmp_path)
    world.inbox().append(b"Subject: x\n\nbody\n")
    client, pump = tls_pair(world.factory, tmp_path, world.clock)
    assert client.received.startswith(b"+OK pymta ready.")
    say(client, pump, b"USER alice@example.org\r\nPASS secret\r\n")
    say(client, pump, b"RETR 1\r\n")
    say(client, pump, b"QUIT\r\n")
    assert client.received.endswith(b"+OK Logging out.\r\n")
    assert client.lost is not None


def test_imap_idle_timeout_over_tls_closes_the_connection(tmp_path: Path) -> None:
    """The inactivity BYE also ends a TLS connection."""
    world = test_imap_harness.World(tmp_path)
    client, pump = tls_pair(world.factory, tmp_path, world.clock)
    world.clock.advance(world.settings.login_timeout + 1)
    pump.flush()
    assert b"* BYE Disconnected for inactivity." in client.received
    assert client.lost is not None


def test_ended_session_is_aborted_when_the_client_never_finishes(tmp_path: Path) -> None:
    """LOGOUT unregisters the session's producer and closes; a client that
    neither reads the rest nor finishes the close is cut off after
    CLOSE_TIMEOUT seconds."""
    world = test_imap_harness.World(tmp_path)
    session = world.connect()
    session.send("a LOGOUT")
    transport = session.transport
    assert transport.producer is None and transport.disconnecting
    aborted: list[bool] = []
    transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    world.clock.advance(CLOSE_TIMEOUT - 1)
    assert aborted == []
    world.clock.advance(1)
    assert aborted == [True]


def test_lost_connection_cancels_the_abort(tmp_path: Path) -> None:
    """A POP3 session whose connection ends after QUIT leaves no timer behind."""
    world = test_pop3_harness.World(tmp_path)
    session = world.connect()
    session.send("QUIT")
    assert session.transport.producer is None and session.transport.disconnecting
    session.proto.connectionLost(Failure(ConnectionDone()))
    assert world.clock.getDelayedCalls() == []


def test_pop3_keeps_reading_while_paused_below_the_backlog(tmp_path: Path) -> None:
    """A paused POP3 session (the TLS handshake of POP3S pauses it before the
    greeting is out) keeps the socket readable; it stops reading only once
    INPUT_BACKLOG bytes of commands wait."""
    world = test_pop3_harness.World(tmp_path)
    session = world.connect()
    session.proto.pauseProducing()
    assert session.transport.producerState == "producing"
    session.proto.dataReceived(b"NOOP\r\n" * (INPUT_BACKLOG // 6 + 1))
    assert session.transport.producerState == "paused"
    session.proto.resumeProducing()
    assert session.transport.producerState == "producing"
