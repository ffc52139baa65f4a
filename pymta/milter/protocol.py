"""protocol: one connection to one milter, one command at a time.

Mirrors the transport half of Postfix's milter8.c: a command goes out, and
the milter's replies come back until a final one (SMFIR_CONTINUE, ACCEPT,
REJECT, ...). SMFIR_PROGRESS restarts the time limit; modification replies
(add header, replace body, ...) are collected and returned with the final
reply, and allowed only where the caller says so (end of message).

Every wait has a time limit on the injected clock; when it passes, or the
milter closes the connection, or it sends anything the protocol does not
allow, the pending Deferred fails with :class:`MilterError` and the
connection is closed: a milter that is slow or speaks garbage never hangs
the SMTP session. Untrusted input: everything the milter sends. Writes:
to the milter's socket. Logs nothing (the session does).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from pymta.milter import wire


class MilterError(Exception):
    """The milter failed: down, too slow, or off the protocol."""


class MilterProtocol(Protocol):
    """A milter connection; :meth:`request` sends a command and awaits its answer."""

    def __init__(self, clock: IReactorTime, edit_limit: int = 64 * 1024 * 1024) -> None:
        self._clock = clock
        #: the most bytes of edits (a replaced body, headers) one answer may
        #: carry: a milter must not make the message grow without bound.
        self._edit_limit = edit_limit
        self._edit_bytes = 0
        self._reader = wire.PacketReader()
        self._pending: Deferred[list[wire.Reply]] | None = None
        self._expect_optneg = False
        self._modifications_ok = False
        self._collected: list[wire.Reply] = []
        self._timer: IDelayedCall | None = None
        self._timeout = 0.0
        self._optneg: Deferred[wire.Negotiated] | None = None
        self.connected_ok = False
        self._lost = False

    # -- connection -----------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_ok = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        self._fail("milter closed the connection")

    def close(self) -> None:
        """Drop the connection (after a failure or at the end of the session)."""
        self._cancel_timer()
        if self.transport is not None and not self._lost:
            self.transport.loseConnection()

    @property
    def usable(self) -> bool:
        return self.connected_ok and not self._lost

    # -- sending --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write packets that get no reply (macros, skipped answers, abort, quit)."""
        if self.usable and self.transport is not None:
            self.transport.write(data)

    def negotiate(self, data: bytes, timeout: float) -> Deferred[wire.Negotiated]:
        """Send SMFIC_OPTNEG; fires with the milter's answer."""
        d: Deferred[wire.Negotiated] = Deferred()
        if not self.usable:
            d.errback(MilterError("not connected"))
            return d
        self._optneg = d
        self._expect_optneg = True
        self._start_timer(timeout)
        self.send(data)
        return d

    def request(
        self, data: bytes, timeout: float, *, modifications_ok: bool = False
    ) -> Deferred[list[wire.Reply]]:
        """Send packets whose last command expects an answer; fires with
        the modifications received (if allowed) followed by the final reply."""
        d: Deferred[list[wire.Reply]] = Deferred()
        if not self.usable:
            d.errback(MilterError("not connected"))
            return d
        if self._pending is not None or self._optneg is not None:
            d.errback(MilterError("command sent while another one waits"))
            return d
        self._pending = d
        self._modifications_ok = modifications_ok
        self._collected = []
        self._edit_bytes = 0
        self._start_timer(timeout)
        self.send(data)
        return d

    # -- receiving ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
            for command, payload in packets:
                self._packet(command, payload)
        except wire.MilterProtocolError as e:
            self._fail(f"protocol error: {e}")
            self.close()

    def _packet(self, command: bytes, payload: bytes) -> None:
        if self._optneg is not None:
            if command != wire.SMFIC_OPTNEG:
                raise wire.MilterProtocolError(f"expected SMFIC_OPTNEG, got {command!r}")
            negotiated = wire.decode_optneg(payload)
            d, self._optneg = self._optneg, None
            self._cancel_timer()
            d.callback(negotiated)
            return
        if self._pending is None:
            raise wire.MilterProtocolError(f"unexpected reply {command!r}")
        reply = wire.decode_reply(command, payload)
        if reply.code == wire.SMFIR_PROGRESS:
            # The milter is alive but busy (a virus scan): restart the clock.
            self._start_timer(self._timeout)
            return
        if reply.code in wire.MODIFICATIONS:
            if not self._modifications_ok:
                raise wire.MilterProtocolError(f"modification {command!r} outside end of message")
            self._edit_bytes += len(payload)
            if self._edit_bytes > self._edit_limit:
                raise wire.MilterProtocolError(f"edits larger than {self._edit_limit} bytes")
            self._collected.append(reply)
            return
        pending, self._pending = self._pending, None
        self._cancel_timer()
        pending.callback([*self._collected, reply])
        self._collected = []

    # -- time limits and failure ---------------------------------------------

    def _start_timer(self, timeout: float) -> None:
        self._cancel_timer()
        self._timeout = timeout
        self._timer = self._clock.callLater(timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._fail("timeout")
        self.close()

    def _fail(self, why: str) -> None:
        self._cancel_timer()
        pending, self._pending = self._pending, None
        optneg, self._optneg = self._optneg, None
        if pending is not None:
            pending.errback(MilterError(why))
        if optneg is not None:
            optneg.errback(MilterError(why))
