"""pymta.output.send: replies go straight to a plain TCP socket when
nothing is buffered, otherwise through the transport's buffer, never out of
order; pymta.output.lose_connection closes without a write event when
nothing is left to send. Real sockets (a socketpair) under
twisted.internet.tcp.Connection with a MemoryReactorClock: no reactor
runs, nothing waits."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from pymta.output import lose_connection, quick_ack, send


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket, MemoryReactorClock]]:
    ours, theirs = socket.socketpair()
    reactor = MemoryReactorClock()
    conn = Connection(ours, Protocol(), reactor)
    conn.connected = True
    theirs.settimeout(5)
    yield conn, theirs, reactor
    ours.close()
    theirs.close()


def _drain(theirs: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += theirs.recv(size - len(data))
    return data


def test_direct_when_idle(pair: tuple[Connection, socket.socket, MemoryReactorClock]) -> None:
    """With an empty buffer the reply is on the socket at once and the
    connection is never registered for write events. (This also fails when
    a Twisted upgrade renames the private buffer attributes send() reads:
    every reply would then take the buffered path.)"""
    conn, theirs, reactor = pair
    send(conn, b"+OK hello\r\n")
    assert theirs.recv(100) == b"+OK hello\r\n"
    assert reactor.getWriters() == []


def test_buffered_bytes_keep_their_place(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """When earlier bytes wait in the buffer, a reply queues behind them."""
    conn, theirs, reactor = pair
    conn.write(b"first\r\n")
    send(conn, b"second\r\n")
    assert reactor.getWriters() == [conn]
    conn.doWrite()
    assert _drain(theirs, 15) == b"first\r\nsecond\r\n"


def test_rest_of_a_big_reply_is_buffered(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """What the socket does not take at once is buffered and follows in order."""
    conn, theirs, reactor = pair
    data = bytes(range(256)) * 16384  # 4 MiB: more than a socket buffer
    send(conn, data)
    assert reactor.getWriters() == [conn]
    received = b""
    while len(received) < len(data):
        conn.doWrite()
        received += theirs.recv(1 << 20)
    assert received == data


def test_tls_and_closing_take_the_buffer(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """After STLS (TLS) or loseConnection, replies go through transport.write."""
    conn, _theirs, _reactor = pair
    conn.TLS = True
    written: list[bytes] = []
    conn.write = written.append  # type: ignore[method-assign]
    send(conn, b"+OK secret\r\n")
    conn.TLS = False
    conn.disconnecting = True
    send(conn, b"+OK bye\r\n")
    assert written == [b"+OK secret\r\n", b"+OK bye\r\n"]


def test_other_transports_use_write() -> None:
    """A transport that is not a TCP connection (tests, TLS wrappers) gets write()."""
    transport = StringTransport()
    send(transport, b"+OK\r\n")
    assert transport.value() == b"+OK\r\n"


class _Lost(Protocol):
    def __init__(self) -> None:
        self.reasons: list[Failure] = []

    def connectionLost(self, reason: Failure | None = None) -> None:
        assert reason is not None
        self.reasons.append(reason)


def _lose(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> tuple[Connection, socket.socket, MemoryReactorClock, _Lost]:
    conn, theirs, reactor = pair
    protocol = _Lost()
    conn.protocol = protocol
    protocol.makeConnection(conn)
    reactor.addReader(conn)
    return conn, theirs, reactor, protocol


def test_close_without_write_event_when_idle(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """With the last reply sent, lose_connection stops reading at once,
    never registers for write events, and closes on the next reactor turn
    (not inside the caller): the peer gets the reply, then end of file,
    and the protocol hears ConnectionDone once."""
    conn, theirs, reactor, protocol = _lose(pair)
    send(conn, b"221 2.0.0 Bye\r\n")
    lose_connection(conn)
    assert reactor.getReaders() == [] and reactor.getWriters() == []
    assert protocol.reasons == []
    reactor.advance(0)
    assert [r.type for r in protocol.reasons] == [ConnectionDone]
    assert not conn.connected
    assert _drain(theirs, 15) == b"221 2.0.0 Bye\r\n"
    assert theirs.recv(100) == b""
    reactor.advance(0)
    assert len(protocol.reasons) == 1


def test_close_flushes_what_was_written_after(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """Bytes written after lose_connection, before the close, are sent
    first: the close waits for Twisted's write event, as loseConnection's."""
    conn, theirs, reactor, protocol = _lose(pair)
    lose_connection(conn)
    send(conn, b"late\r\n")
    reactor.advance(0)
    assert protocol.reasons == []
    assert reactor.getWriters() == [conn]
    assert conn.doWrite() is not None  # Twisted's "done": the reactor closes it
    assert _drain(theirs, 6) == b"late\r\n"


def test_close_with_bytes_buffered_is_twisteds(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """With bytes still buffered, lose_connection is Twisted's
    loseConnection: write event, flush, then close."""
    conn, theirs, reactor, _protocol = _lose(pair)
    conn.write(b"first\r\n")
    lose_connection(conn)
    assert conn.disconnecting
    assert reactor.getWriters() == [conn]
    assert reactor.getDelayedCalls() == []
    conn.doWrite()
    assert _drain(theirs, 7) == b"first\r\n"


def test_close_of_other_transports() -> None:
    """A transport that is not a plain TCP connection gets loseConnection()."""
    transport = StringTransport()
    lose_connection(transport)
    assert transport.disconnecting


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def _quickack_on(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))


def test_quick_ack_leaves_delayed_ack_mode(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    """quick_ack takes a TCP socket out of delayed-ACK (ping-pong) mode, so
    what it has received is acknowledged now; other transports are left
    alone."""
    server, _client = tcp_pair
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    assert not _quickack_on(server)
    conn = Connection(server, Protocol(), MemoryReactor())
    quick_ack(conn)
    assert _quickack_on(server)
    quick_ack(StringTransport())  # no socket: nothing to do, no error


def test_quick_ack_looks_through_a_tls_wrapper(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Behind IMAPS the protocol's transport is Twisted's TLS wrapper, whose
    handle is the OpenSSL connection: quick_ack reaches the TCP socket
    under it."""
    server, _client = tcp_pair
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    conn = Connection(server, Protocol(), MemoryReactor())
    factory = TLSMemoryBIOFactory(
        optionsForClientTLS("example.org"), isClient=True, wrappedFactory=Factory()
    )
    wrapper = TLSMemoryBIOProtocol(factory, Protocol())
    wrapper.makeConnection(conn)
    assert not isinstance(wrapper.getHandle(), socket.socket)
    quick_ack(wrapper)
    assert _quickack_on(server)


def test_send_to_a_closed_peer_is_buffered_not_raised(
    pair: tuple[Connection, socket.socket, MemoryReactorClock],
) -> None:
    """When the socket refuses the reply (the peer is gone: EPIPE), send()
    raises nothing: the reply goes to Twisted's buffer, whose write event
    then reports the lost connection as usual."""
    conn, theirs, reactor = pair
    theirs.close()
    send(conn, b"250 2.0.0 Ok\r\n")
    assert reactor.getWriters() == [conn]
    assert conn.doWrite() is not None  # Twisted's answer: the connection is lost
