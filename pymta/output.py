"""Send a reply at once when the socket takes it (smtpd, pop3d and imapd),
close a connection without waiting for a write event when nothing is left
to send (smtpd), and acknowledge a partial command at once (imapd's
literals).

Twisted's ``transport.write`` always buffers: it registers the socket for
write events (an ``epoll_ctl``), the reactor goes round once more to find it
writable, sends, and unregisters it (another ``epoll_ctl``). A POP3 client
(and an SMTP client that does not pipeline) waits for each reply before it
sends the next command, so every reply paid that round trip. :func:`send`
tries the socket first, as Dovecot's output streams do, and hands Twisted
only what the kernel did not take (or everything, whenever the fast path
does not apply).

The fast path applies only to a plain TCP connection of the reactor
(``twisted.internet.tcp.Connection``) that is connected, not closing, not
TLS (after STLS every byte must go through the TLS layer) and has nothing
buffered (the reply must not overtake earlier bytes). Anything else —
``StringTransport`` in tests, a TLS wrapper — gets ``transport.write``.
Flow control is unchanged: what is left over is written with
``transport.write``, which pauses the producer when its buffer fills.

:func:`lose_connection` is the same shortcut for the end of a session.
Twisted's ``loseConnection`` always waits for a write event before it
closes: it unregisters the socket for reading and registers it for
writing (two ``epoll_ctl``), the reactor goes round to find it writable,
finds nothing to send, and unregisters it (a third) before the close.
When nothing is buffered — the last reply already went out by
:func:`send` — the kernel holds every byte, and closing now sends them
before the FIN as the write event would have: the socket is unregistered
for reading at once and closed on the reactor's next turn (after the
caller's handler has returned, so the protocol's ``connectionLost`` never
runs inside it). Anything written meanwhile is flushed by Twisted first,
as after ``loseConnection``.

Twisted has no public "nothing buffered" test, so :func:`_nothing_buffered`
reads the connection's private buffer state (``dataBuffer``,
``_tempDataLen``, ``_writeDisconnecting``), in that one place: when a
Twisted version lacks them every reply takes the buffered path (slower,
never wrong), and ``tests/test_output.py::test_direct_when_idle`` fails,
so an upgrade that changes them is noticed.

:func:`quick_ack` answers the other half of a request/response protocol's
latency. Linux delays the ACK of received bytes (up to 40 ms) hoping to
send it with the reply; a client that sends the end of a command in a
second small write (imaplib sends an APPEND's literal, then its CRLF)
holds that write back under Nagle's algorithm until the ACK comes. When a
read leaves a command incomplete and the server has nothing to reply,
``TCP_QUICKACK`` sends the pending ACK now. Elsewhere (no Linux, not a
TCP socket) it does nothing.

Untrusted input: none. Writes: the socket. Logs: nothing.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure


def send(transport: Any, data: bytes) -> None:
    """Write data to transport, sending at once what the socket takes."""
    if (
        isinstance(transport, Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and _nothing_buffered(transport)
    ):
        # The socket itself, not writeSomeData: the kernel takes what fits
        # (Twisted's SEND_LIMIT slice guards Windows), and CPython retries
        # a send interrupted by a signal (PEP 475).
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Full (EAGAIN) or broken: buffered as usual; the reactor
            # reports a lost connection on its next read.
            sent = 0
        if sent >= len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def lose_connection(transport: Any) -> None:
    """Close transport once what was written is sent: on the reactor's
    next turn when a plain TCP connection holds nothing unsent (see the
    module doc), else ``transport.loseConnection()``."""
    if (
        isinstance(transport, Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and transport.producer is None
        and _nothing_buffered(transport)
    ):
        transport.stopReading()
        # As loseConnection: no more reads, later writes are buffered and
        # flushed before the close (send() takes the buffered path now).
        transport.disconnecting = True
        reactor: Any = transport.reactor
        # pymta's reactor closes it on its next turn without a timer
        # (pymta.reactor.PymtaEPollReactor.call_next_turn).
        next_turn = getattr(reactor, "call_next_turn", None)
        if next_turn is not None:
            next_turn(_close_now, transport)
        else:
            reactor.callLater(0, _close_now, transport)
        return
    transport.loseConnection()


#: The reason a closed connection reports, shared as the reactor's own is.
_DONE = Failure(ConnectionDone())


def _close_now(connection: Connection) -> None:
    """The second half of :func:`lose_connection`, a reactor turn later."""
    if not connection.connected:
        return  # lost meanwhile (a write failed): already closed
    if not _nothing_buffered(connection):
        # Written since: Twisted sends it, then closes (disconnecting is set).
        connection.startWriting()
        return
    connection.stopWriting()
    connection.connectionLost(_DONE)


def _nothing_buffered(connection: Connection) -> bool:
    """Whether Twisted's FileDescriptor holds no bytes for ``connection``
    and is not closing its write side. Private attributes of
    twisted.internet.abstract.FileDescriptor (see the module doc); a
    missing one answers False."""
    try:
        return (
            not connection._writeDisconnecting
            and connection._tempDataLen == 0
            and connection.dataBuffer == b""
        )
    except AttributeError:
        return False


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quick_ack(transport: Any) -> None:
    """Acknowledge what transport's socket has received, now (Linux). A TLS
    wrapper (IMAPS) is looked through to the TCP connection under it."""
    if _QUICKACK is None:
        return
    for _ in range(3):
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            if handle.type == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    handle.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            return
        transport = getattr(transport, "transport", None)
        if transport is None:
            return
