"""postscreen's own small SMTP engine: talks to a client it will not pass, refuses its mail.

Mirrors Postfix's postscreen_smtpd.c for the ``enforce`` actions
(``postscreen_greet_action``, ``postscreen_dnsbl_action``,
``postscreen_denylist_action``): the client gets a normal greeting and
answers to EHLO, HELO, MAIL, RSET, NOOP and QUIT, but every RCPT is refused
with the reply of the test it failed (``550 5.7.1 Service unavailable;
client [203.0.113.5] blocked using zen.example``), and logged as Postfix's
postscreen logs it (``NOQUEUE: reject: RCPT from [addr]:port: 550 ...;
from=<s>, to=<r>, proto=ESMTP, helo=<h>``), so that the log shows who a
bot tried to reach. DATA gets ``554 5.5.1 Error: no valid recipients``;
other commands ``502 5.5.2``. The session ends after
``postscreen_command_count_limit`` commands, after
``postscreen_command_time_limit`` without a command, on an overlong line
(``line_length_limit``), or at QUIT; the client never reaches smtpd.
No STARTTLS or AUTH is offered (there is nothing to protect).

Everything read is untrusted network input (printed only escaped). Writes
nothing. Logs the refusals, the limits and ``DISCONNECT``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from pymta.maillog import maillog
from pymta.output import send
from pymta.smtpd.protocol import escape

if TYPE_CHECKING:
    from pymta.postscreen.parts import ScreeningParts

__all__ = ["RefusingEngine"]

SERVICE = "postscreen"

R_OK = b"250 2.0.0 Ok\r\n"
R_MAIL_OK = b"250 2.1.0 Ok\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_UNKNOWN = b"502 5.5.2 Error: command not recognized\r\n"
R_NEED_HELO = b"503 5.5.1 Error: send HELO/EHLO first\r\n"
R_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
R_NESTED = b"503 5.5.1 Error: nested MAIL command\r\n"
R_NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
R_NO_RCPT = b"554 5.5.1 Error: no valid recipients\r\n"
R_VRFY_DISABLED = b"502 5.5.1 VRFY command is disabled\r\n"


def _path(argument: str) -> str:
    """The address of ``FROM:<a@b> SIZE=1`` / ``TO:<x>`` (for the log only)."""
    _, _, rest = argument.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        end = rest.find(">")
        return rest[1:end] if end > 0 else rest[1:]
    return rest.split(" ", 1)[0]


class RefusingEngine(Protocol):
    """One client that failed a test with ``enforce``; see the module docstring."""

    def __init__(
        self,
        factory: ScreeningParts,
        client: str,
        reply: str,
        started: float,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.factory = factory
        self._on_close = on_close  # the connection no longer counts in postscreen
        self.client = client  # [address]:port, as postscreen logs it
        self.reply = reply  # the refusal, "550 5.7.1 ..." without CRLF
        self.started = started
        self._buf = b""
        self._helo = ""
        self._esmtp = False
        self._sender: str | None = None
        self._count = 0
        self._last = "CONNECT"
        self._timer: IDelayedCall | None = None
        self._closing = False

    def take_over(self, transport: Any, early: bytes) -> None:
        """Serve the client on postscreen's connection; ``early`` is what it
        sent before the greeting, read as its first commands."""
        transport.protocol = self
        self.makeConnection(transport)
        if early and not self._closing:
            self.dataReceived(early)

    def connectionMade(self) -> None:
        settings = self.factory.settings
        send(self.transport, settings.banner)
        self._timer = self.factory.clock.callLater(settings.command_time_limit, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        limit = self.factory.settings.line_length_limit
        while not self._closing:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > limit:
                    self._limit("COMMAND LENGTH LIMIT")
                return
            line, self._buf = self._buf[:end], self._buf[end + 1 :]
            if self._timer is not None and self._timer.active():
                self._timer.reset(self.factory.settings.command_time_limit)
            self._count += 1
            if self._count > self.factory.settings.command_count_limit:
                self._limit("COMMAND COUNT LIMIT")
                return
            self._command(line.rstrip(b"\r").decode("utf-8", "replace"))

    def _command(self, line: str) -> None:
        verb, _, argument = line.strip().partition(" ")
        verb = verb.upper()
        settings = self.factory.settings
        if verb in ("EHLO", "HELO"):
            self._helo = argument.strip()
            self._esmtp = verb == "EHLO"
            self._sender = None
            send(
                self.transport,
                self._ehlo() if self._esmtp else f"250 {settings.myhostname}\r\n".encode(),
            )
        elif verb == "MAIL":
            if settings.helo_required and not self._helo:
                send(self.transport, R_NEED_HELO)
            elif self._sender is not None:
                send(self.transport, R_NESTED)
            else:
                self._sender = _path(argument)
                send(self.transport, R_MAIL_OK)
        elif verb == "RCPT":
            if self._sender is None:
                send(self.transport, R_NEED_MAIL)
            else:
                self._refuse(_path(argument))
        elif verb == "DATA":
            send(self.transport, R_NEED_RCPT if self._sender is None else R_NO_RCPT)
        elif verb == "RSET":
            self._sender = None
            send(self.transport, R_OK)
        elif verb == "NOOP":
            send(self.transport, R_OK)
        elif verb == "VRFY":
            send(self.transport, R_VRFY_DISABLED if settings.disable_vrfy else self._reply())
        elif verb == "QUIT":
            self._last = "QUIT"
            self._close(R_BYE)
            return
        else:
            send(self.transport, R_UNKNOWN)
        self._last = verb if verb.isalpha() and len(verb) <= 10 else "UNKNOWN"

    def _ehlo(self) -> bytes:
        settings = self.factory.settings
        size = f"SIZE {settings.message_size_limit}" if settings.message_size_limit else "SIZE"
        lines = [settings.myhostname, "PIPELINING", size, "ENHANCEDSTATUSCODES", "8BITMIME"]
        text = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
        return text.encode()

    def _reply(self) -> bytes:
        return f"{self.reply}\r\n".encode()

    def _refuse(self, recipient: str) -> None:
        send(self.transport, self._reply())
        maillog(
            SERVICE,
            f"NOQUEUE: reject: RCPT from {self.client}: {self.reply}; "
            f"from=<{escape(self._sender_bytes())}>, to=<{escape(recipient.encode())}>, "
            f"proto={'ESMTP' if self._esmtp else 'SMTP'}, helo=<{escape(self._helo.encode())}>",
        )

    def _sender_bytes(self) -> bytes:
        return (self._sender or "").encode()

    def _limit(self, what: str) -> None:
        maillog(SERVICE, f"{what} from {self.client} after {self._last}")
        host = self.factory.settings.myhostname
        self._close(f"421 4.7.0 {host} Service unavailable - try again later\r\n".encode())

    def _timed_out(self) -> None:
        self._timer = None
        if self._closing:
            return
        maillog(SERVICE, f"COMMAND TIME LIMIT from {self.client} after {self._last}")
        host = self.factory.settings.myhostname
        self._close(f"421 4.4.2 {host} Error: timeout exceeded\r\n".encode())

    def _close(self, reply: bytes) -> None:
        self._closing = True
        send(self.transport, reply)
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._closing:
            elapsed = self.factory.clock.seconds() - self.started
            maillog(
                SERVICE,
                f"HANGUP after {elapsed:.2f} from {self.client} in tests after SMTP handshake",
            )
        maillog(SERVICE, f"DISCONNECT {self.client}")
        self._on_close()
