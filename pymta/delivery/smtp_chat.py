"""smtp_chat: the SMTP client's wire — commands out, replies in, stage timeouts.

Mirrors Postfix's smtp_chat.c. :class:`SMTPChat` is a thin Twisted
protocol: :meth:`send` writes commands, :meth:`expect` returns a Deferred
for the next reply, armed with the time limit of its stage (Postfix's
``smtp_*_timeout``) on the injected clock. Several replies can be awaited
at once (PIPELINING); they arrive in order. A timeout, a lost connection
or a malformed reply fails every waiter with :class:`SessionError`
(``conversation with X timed out while ...``, ``lost connection with X
while ...``), the texts Postfix logs; the caller turns that into
per-recipient values. A message body is written through a pull producer
(:meth:`SMTPChat.send_message`), one block read from the queue file and
converted to wire form per call, only as fast as the transport drains: a
large message never sits in memory whole, and ``smtp_data_xfer_timeout``
limits each stalled write, not the whole transfer.

Untrusted input: every reply line (length-limited, parsed by
:class:`~pymta.delivery.smtp_reply.ReplyParser`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IReactorTime
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.delivery.smtp_content import WireEncoder, to_wire
from pymta.delivery.smtp_reply import Reply, ReplyParser
from pymta.queue.reference import BLOCK_SIZE, IMessageContent, read_all

CHUNK = 65536


class SessionError(Exception):
    """A session-level failure: ``dsn`` and Postfix's text; ``next_host`` when
    another MX may do better (connection trouble, greeting, HELO)."""

    def __init__(self, dsn: str, reason: str, diagnostic: str = "", next_host: bool = True) -> None:
        super().__init__(reason)
        self.dsn = dsn
        self.reason = reason
        self.diagnostic = diagnostic
        self.next_host = next_host


class SMTPChat(LineOnlyReceiver):
    """One client connection (see module doc)."""

    delimiter = b"\r\n"
    MAX_LENGTH = 8192

    def __init__(self, clock: IReactorTime, relay: str = "") -> None:
        self.clock = clock
        self.relay = relay
        self._parser = ReplyParser()
        self._replies: deque[Reply] = deque()
        self._waiters: deque[tuple[Deferred[Reply], str, IDelayedCall]] = deque()
        self._error: SessionError | None = None
        self.connected = False
        self.tls_pending = False  # STARTTLS sent, handshake not yet proven
        self.on_lost: Callable[[], None] | None = None
        self.stage = "receiving the initial server greeting"
        self.peer_name = ""  # the name in the peer's EHLO/HELO reply

    # twisted protocol --------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True

    def lineReceived(self, line: bytes) -> None:
        try:
            reply = self._parser.feed(line)
        except ValueError as e:
            self._fail(SessionError("4.4.2", f"host {self.relay} said: {e}"))
            self.abort()
            return
        if reply is None:
            return
        self.tls_pending = False
        if self._waiters:
            d, _stage, timer = self._waiters.popleft()
            if timer.active():
                timer.cancel()
            d.callback(reply)
        else:
            self._replies.append(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._fail(SessionError("4.4.2", f"host {self.relay} sent a reply line that is too long"))
        self.abort()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        if self.tls_pending:
            self._fail(
                SessionError(
                    "4.7.5",
                    f"Cannot start TLS: handshake failure with {self.relay}: "
                    f"{handshake_failure(reason)}",
                )
            )
        else:
            self._fail(
                SessionError("4.4.2", f"lost connection with {self.relay} while {self.stage}")
            )
        if self.on_lost is not None:
            self.on_lost()

    # the chat ----------------------------------------------------------------

    def send(self, *commands: str) -> None:
        """Write commands (each gets CRLF); nothing happens on a dead connection."""
        if self.connected and self.transport is not None:
            self.transport.write("".join(c + "\r\n" for c in commands).encode("utf-8"))

    def expect(self, stage: str, timeout: float) -> Deferred[Reply]:
        """The next reply, or SessionError when ``timeout`` passes first."""
        self.stage = stage
        if self._replies:
            d: Deferred[Reply] = Deferred()
            d.callback(self._replies.popleft())
            return d
        d = Deferred()
        if self._error is not None:
            d.errback(self._error)
            return d
        timer = self.clock.callLater(timeout, self._timed_out, stage)
        self._waiters.append((d, stage, timer))
        return d

    def send_data(self, data: bytes, stage: str, timeout: float) -> Deferred[None]:
        """Write message data; fires when it is all handed to the transport."""
        self.stage = stage
        done: Deferred[None] = Deferred()
        if self._error is not None:
            done.errback(self._error)
            return done
        if len(data) <= CHUNK or self.transport is None:
            if self.transport is not None:
                self.transport.write(data)
            done.callback(None)
            return done
        chunks = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
        _Sender(self, chunks, timeout, done).start()
        return done

    def send_message(self, content: IMessageContent, stage: str, timeout: float) -> Deferred[None]:
        """Write a queued message in wire form (CRLF, dot-stuffed, final
        ``.`` line), read block by block as the transport asks for more;
        fires when it is all handed to the transport."""
        self.stage = stage
        done: Deferred[None] = Deferred()
        if self._error is not None:
            done.errback(self._error)
            return done
        if self.transport is None:
            done.callback(None)
            return done
        if content.size <= CHUNK // 2:
            # A small message in one write, as send_data does.
            self.transport.write(to_wire(read_all(content)))
            done.callback(None)
            return done
        _Sender(self, _wire_blocks(content), timeout, done).start()
        return done

    def abort(self) -> None:
        if self.transport is not None:
            abort = getattr(self.transport, "abortConnection", None)
            (abort or self.transport.loseConnection)()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    # failures ----------------------------------------------------------------

    def _timed_out(self, stage: str) -> None:
        self._fail(SessionError("4.4.2", f"conversation with {self.relay} timed out while {stage}"))
        self.abort()

    def fail_now(self, error: SessionError) -> None:
        self._fail(error)
        self.abort()

    def _fail(self, error: SessionError) -> None:
        if self._error is None:
            self._error = error
        waiters, self._waiters = self._waiters, deque()
        for d, _stage, timer in waiters:
            if timer.active():
                timer.cancel()
            d.errback(self._error)

    @property
    def failed(self) -> bool:
        return self._error is not None


def _wire_blocks(content: IMessageContent) -> Generator[bytes, None, None]:
    """The message in wire form, one queue-file block at a time. Each read
    is one pread of at most BLOCK_SIZE bytes of a file the kernel just
    wrote (Twisted's FileSender reads files in the reactor the same way)."""
    encoder = WireEncoder()
    reader = content.open()
    try:
        while True:
            block = reader.read(BLOCK_SIZE)
            if not block:
                break
            wire = encoder.feed(block)
            if wire:
                yield wire
    finally:
        reader.close()
    yield encoder.end()


@implementer(IPullProducer)
class _Sender:
    """Writes a message's chunks as the transport drains; each chunk
    re-arms smtp_data_xfer_timeout."""

    def __init__(
        self,
        chat: SMTPChat,
        chunks: Generator[bytes, None, None],
        timeout: float,
        done: Deferred[None],
    ) -> None:
        self.chat = chat
        self.chunks = chunks
        self.ahead: bytes | None = None
        self.timeout = timeout
        self.done = done
        self.timer: IDelayedCall | None = None

    def start(self) -> None:
        transport: Any = self.chat.transport
        transport.registerProducer(self, False)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.chat.clock.callLater(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._finish()
        self.chat._timed_out("sending message body")
        if not self.done.called:
            self.done.errback(
                SessionError(
                    "4.4.2",
                    f"conversation with {self.chat.relay} timed out while sending message body",
                )
            )

    def resumeProducing(self) -> None:
        if self.chat.failed:
            self._finish()
            if not self.done.called:
                assert self.chat._error is not None
                self.done.errback(self.chat._error)
            return
        try:
            chunk = self.ahead if self.ahead is not None else next(self.chunks, None)
            # Read one ahead: the last chunk also ends the transfer.
            self.ahead = next(self.chunks, None) if chunk is not None else None
        except OSError as e:
            # The queue file cannot be read: stop the session (the peer must
            # not take a partial message) and defer.
            self._finish()
            self.chat.fail_now(SessionError("4.3.0", f"cannot read queue file: {e}"))
            if not self.done.called:
                self.done.errback(self.chat._error or e)
            return
        if chunk is None:
            self._finish()
            if not self.done.called:
                self.done.callback(None)
            return
        transport: Any = self.chat.transport
        transport.write(bytes(chunk))
        if self.ahead is None:
            self._finish()
            if not self.done.called:
                self.done.callback(None)
            return
        self._arm()

    def stopProducing(self) -> None:
        self._finish()
        if not self.done.called:
            self.done.errback(
                SessionError(
                    "4.4.2", f"lost connection with {self.chat.relay} while sending message body"
                )
            )

    def _finish(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.chunks.close()  # closes the queue file _wire_blocks reads
        transport: Any = self.chat.transport
        if transport is not None and getattr(transport, "producer", None) is self:
            transport.unregisterProducer()


def handshake_failure(reason: Failure | None) -> str:
    """Why a STARTTLS handshake ended, as Postfix words it: a chain the
    trust anchors do not accept is "Server certificate not verified"
    (not OpenSSL's error stack or service_identity's repr); anything else
    is the error's own message."""
    if reason is None:
        return "connection lost"
    text = reason.getErrorMessage()
    if "certificate verify failed" in text or "VerificationError" in text:
        return "Server certificate not verified"
    return text
