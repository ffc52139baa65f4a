"""pymta.output.send: replies go straight to a plain TCP socket when
nothing is buffered, otherwise through the transport's buffer, never out of
order. Real sockets (a socketpair) under twisted.internet.tcp.Connection
with a MemoryReactor: no reactor runs, nothing waits."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from pymta.output import quick_ack, send


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket, MemoryReactor]]:
    ours, theirs = socket.socketpair()
    reactor = MemoryReactor()
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


def test_direct_when_idle(pair: tuple[Connection, socket.socket, MemoryReactor]) -> None:
    """With an empty buffer the reply is on the socket at once and the
    connection is never registered for write events. (This also fails when
    a Twisted upgrade renames the private buffer attributes send() reads:
    every reply would then take the buffered path.)"""
    conn, theirs, reactor = pair
    send(conn, b"+OK hello\r\n")
    assert theirs.recv(100) == b"+OK hello\r\n"
    assert reactor.getWriters() == []


def test_buffered_bytes_keep_their_place(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    """When earlier bytes wait in the buffer, a reply queues behind them."""
    conn, theirs, reactor = pair
    conn.write(b"first\r\n")
    send(conn, b"second\r\n")
    assert reactor.getWriters() == [conn]
    conn.doWrite()
    assert _drain(theirs, 15) == b"first\r\nsecond\r\n"


def test_rest_of_a_big_reply_is_buffered(
    pair: tuple[Connection, socket.socket, MemoryReactor],
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
    pair: tuple[Connection, socket.socket, MemoryReactor],
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
