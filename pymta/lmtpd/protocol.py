"""The LMTP server protocol: one connection, RFC 2033.

Mirrors Dovecot's lmtp(8) and Postfix's smtpd command loop: LHLO, MAIL,
RCPT, DATA, RSET, NOOP, VRFY (refused), QUIT. Everything read here is
untrusted network input.

LMTP is SMTP without a queue (RFC 2033 section 4.2): after the end of data
the server answers once per accepted recipient, in RCPT order, and each
answer is final: ``250`` only once the message is durable in that
recipient's mailbox (Maildir tmp, group-commit sync, rename: the virtual
agent's writer), ``4xx`` when it should be retried, ``5xx`` when it never
will be delivered. A recipient refused at RCPT gets no answer after DATA;
DATA without an accepted recipient is ``503`` (section 4.2).

Input handling: commands are lines ending in LF (CR LF expected), at most
``line_length_limit`` bytes; the content ends only at CR LF . CR LF (no
smuggling), is dot-unstuffed and stored with LF line ends, and may be at
most ``message_size_limit`` bytes (``552 5.3.4`` per recipient otherwise).
PIPELINING is implied (section 4.1): commands are read one at a time and
no further input is parsed while an answer is pending, so replies keep
command order. Limits: ``pymta_lmtpd_recipient_limit`` recipients per
message (``452 4.5.3``), ``pymta_lmtpd_timeout`` of silence ends the
session (``421 4.4.2``), 20 errors end it (``421 4.7.0``). A TCP client
outside ``pymta_lmtpd_networks`` is refused at connect (``554 5.7.1``):
LMTP needs no login, so it must be reachable only by the MTA in front.

Writes: through :class:`~pymta.delivery.final.FinalDelivery`. Logs, with
a transaction id in Postfix's queue-id form: ``connect from``, ``ID:
from=<...>, size=N, nrcpt=N``, one ``ID: to=<...>, relay=lmtpd, ...,
status=sent|deferred|bounced (reason)`` per recipient, ``disconnect from``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from pymta.address import AddressError, parse_esmtp_params, parse_path
from pymta.delivery.final import FinalDelivery, Mailbox, Outcome
from pymta.delivery.headers import delivered_to_loop, delivery_headers, header_block
from pymta.lmtpd.users import LookupFailed, RecipientDirectory
from pymta.maillog import maillog
from pymta.queue.reference import BytesContent


class LMTPSessionHost(TypingProtocol):
    """What a session uses of its factory (pymta.lmtpd.factory's
    LMTPServerFactory satisfies it; the factory module imports this one)."""

    users: RecipientDirectory
    delivery: FinalDelivery
    clock: IReactorTime
    service_name: str
    hostname: str
    mail_name: str
    timeout: float
    recipient_limit: int
    message_size_limit: int
    line_length_limit: int

    def client_allowed(self, ip: str) -> bool: ...

    def new_id(self) -> str: ...

    def check_recipient(self, mailbox: Mailbox) -> Deferred[tuple[int, str, str] | None] | None: ...


_log = Logger()

_EOD = b"\r\n.\r\n"
#: Errors (bad commands, refused recipients) before the session is ended,
#: as smtpd_hard_error_limit's default.
ERROR_LIMIT = 20

R_OK = b"250 2.0.0 OK\r\n"
R_MAIL_OK = b"250 2.1.0 OK\r\n"
R_RCPT_OK = b"250 2.1.5 OK\r\n"
R_DATA_GO = b"354 OK\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_UNKNOWN = b"500 5.5.2 Error: command not recognized\r\n"
R_NOT_LMTP = b"500 5.5.1 Error: this is LMTP, send LHLO\r\n"
R_TOO_LONG = b"500 5.5.2 Error: line too long\r\n"
R_NEED_LHLO = b"503 5.5.1 Error: send LHLO first\r\n"
R_NESTED_MAIL = b"503 5.5.1 Error: nested MAIL command\r\n"
R_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
R_NO_RCPT = b"503 5.5.1 Error: no valid recipients\r\n"
R_TOO_MANY_RCPT = b"452 4.5.3 Error: too many recipients\r\n"
R_SIZE_DECLARED = b"552 5.3.4 Message size exceeds fixed limit\r\n"
R_VRFY = b"252 2.0.0 Send some mail and see\r\n"
R_TIMEOUT = b"421 4.4.2 Error: timeout exceeded\r\n"
R_TOO_MANY_ERRORS = b"421 4.7.0 Error: too many errors\r\n"
R_REFUSED = b"554 5.7.1 Error: LMTP access denied\r\n"

_COMMAND = 0
_DATA = 1
_BUSY = 2
_CLOSED = 3


@dataclass
class _Recipient:
    address: str
    mailbox: Mailbox


def _reply(code: int, status: str, text: str) -> bytes:
    return f"{code} {status} {text}\r\n".encode("utf-8", "replace")


def to_internal(content: bytes) -> bytes:
    """Wire content (CR LF lines, without the final ``.`` line) to the
    stored form: dot-unstuffed (RFC 5321 section 4.5.2), LF line ends."""
    unstuffed = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]
    return unstuffed.replace(b"\r\n", b"\n")


class LMTPServerProtocol(Protocol):
    """One LMTP session."""

    def __init__(self, factory: LMTPSessionHost) -> None:
        self.factory = factory
        self._buffer = b""
        self._mode = _COMMAND
        self._lhlo: str | None = None
        self._sender: str | None = None
        self._recipients: list[_Recipient] = []
        self._body = bytearray()
        self._too_big = False
        self._errors = 0
        self._timer: IDelayedCall | None = None
        self._client = "unknown[unknown]"
        self._client_ip = ""
        self._skip_line = False

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = getattr(peer, "host", None)
        if host is None:  # a UNIX socket: reachable only as its mode allows
            self._client = "local"
        else:
            self._client_ip = str(host)
            self._client = f"unknown[{host}]"
        maillog(self.factory.service_name, f"connect from {self._client}")
        if host is not None and not self.factory.client_allowed(str(host)):
            maillog(
                self.factory.service_name,
                f"reject: connect from {self._client}: not in pymta_lmtpd_networks",
                LogLevel.warn,
            )
            self._send(R_REFUSED)
            self._close()
            return
        self._send(f"220 {self.factory.hostname} LMTP {self.factory.mail_name}\r\n".encode())
        self._touch()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._mode != _CLOSED:
            maillog(self.factory.service_name, f"disconnect from {self._client}")
        self._mode = _CLOSED
        self._body = bytearray()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _touch(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.factory.timeout)
        else:
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._mode == _BUSY:
            # Waiting for our own delivery, not for the client.
            self._touch()
            return
        maillog(self.factory.service_name, f"timeout after {self._client}")
        self._send(R_TIMEOUT)
        self._close()

    def _close(self) -> None:
        if self._mode == _CLOSED:
            return
        maillog(self.factory.service_name, f"disconnect from {self._client}")
        self._mode = _CLOSED
        self._body = bytearray()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def _error(self, reply: bytes) -> None:
        self._send(reply)
        self._errors += 1
        if self._errors >= ERROR_LIMIT:
            self._send(R_TOO_MANY_ERRORS)
            self._close()

    # -- input --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._mode == _CLOSED:
            return
        self._touch()
        if self._mode == _DATA:
            self._feed(data)
        else:
            self._buffer += data
        self._process()

    def _process(self) -> None:
        limit = self.factory.line_length_limit
        while self._mode == _COMMAND:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > limit:
                    # Discard up to the line's end; answer once, then.
                    self._buffer = b""
                    self._error(R_TOO_LONG)
                    self._skip_line = True
                return
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if self._skip_line:
                self._skip_line = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self._error(R_TOO_LONG)
                continue
            self._command(line)

    def _command(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"do_{verb.lower()}", None) if verb.isalpha() else None
        if verb in ("HELO", "EHLO"):
            self._error(R_NOT_LMTP)
        elif handler is None:
            self._error(R_UNKNOWN)
        else:
            handler(arg.strip())

    # -- commands -----------------------------------------------------------------

    def do_lhlo(self, arg: str) -> None:
        if not arg:
            self._error(b"501 5.5.4 Syntax: LHLO hostname\r\n")
            return
        # It goes into the Received: header: printable ASCII only, bounded.
        self._lhlo = "".join(c if "!" <= c <= "~" else "?" for c in arg)[:255]
        self._reset()
        lines = [self.factory.hostname, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"]
        if self.factory.message_size_limit:
            lines.append(f"SIZE {self.factory.message_size_limit}")
        lines.append("SMTPUTF8")
        out = [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]
        self._send(("\r\n".join(out) + "\r\n").encode())

    def do_mail(self, arg: str) -> None:
        if self._lhlo is None:
            self._error(R_NEED_LHLO)
            return
        if self._sender is not None:
            self._error(R_NESTED_MAIL)
            return
        if arg[:5].upper() != "FROM:":
            self._error(b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
            return
        try:
            sender, rest = parse_path(arg[5:], sender=True)
            params = parse_esmtp_params(rest)
        except AddressError as e:
            self._error((e.reply() + "\r\n").encode())
            return
        size = params.get("SIZE")
        limit = self.factory.message_size_limit
        if size is not None and size.isdigit() and limit and int(size) > limit:
            self._error(R_SIZE_DECLARED)
            return
        self._sender = sender
        self._send(R_MAIL_OK)

    def do_rcpt(self, arg: str) -> None:
        if self._sender is None:
            self._error(R_NEED_MAIL)
            return
        if arg[:3].upper() != "TO:":
            self._error(b"501 5.5.4 Syntax: RCPT TO:<address>\r\n")
            return
        try:
            address, _rest = parse_path(arg[3:])
        except AddressError as e:
            self._error((e.reply() + "\r\n").encode())
            return
        if len(self._recipients) >= self.factory.recipient_limit:
            self._send(R_TOO_MANY_RCPT)
            return
        try:
            mailbox = self.factory.users(address)
        except LookupFailed as e:
            maillog(
                self.factory.service_name,
                f"warning: {self._client}: user lookup of {address} failed: {e}",
                LogLevel.warn,
            )
            self._send(_reply(451, "4.3.0", f"<{address}> Temporary user lookup failure"))
            return
        if mailbox is None:
            maillog(
                self.factory.service_name,
                f"NOQUEUE: reject: RCPT from {self._client}: 550 5.1.1 <{address}>: "
                f"User doesn't exist; from=<{self._sender}> to=<{address}>",
            )
            self._error(_reply(550, "5.1.1", f"<{address}> User doesn't exist: {address}"))
            return
        check = self.factory.check_recipient(mailbox)
        if check is None:
            self._recipients.append(_Recipient(address, mailbox))
            self._send(R_RCPT_OK)
            return
        # The quota is counted off the reactor: read nothing more meanwhile.
        self._mode = _BUSY

        def checked(refusal: tuple[int, str, str] | None) -> None:
            if self._mode == _CLOSED:
                return
            if refusal is None:
                self._recipients.append(_Recipient(address, mailbox))
                self._send(R_RCPT_OK)
            else:
                code, status, text = refusal
                maillog(
                    self.factory.service_name,
                    f"NOQUEUE: reject: RCPT from {self._client}: {code} {status} <{address}>: "
                    f"{text}; from=<{self._sender}> to=<{address}>",
                )
                self._send(_reply(code, status, f"<{address}> {text}"))
            self._resume()

        def failed(failure: Failure) -> None:
            _log.failure("lmtpd quota check failed", failure)
            if self._mode != _CLOSED:
                self._send(_reply(451, "4.3.0", f"<{address}> Temporary quota lookup failure"))
                self._resume()

        check.addCallbacks(checked, failed)

    def do_data(self, arg: str) -> None:
        if self._sender is None:
            self._error(R_NEED_MAIL)
            return
        if not self._recipients:
            self._error(R_NO_RCPT)
            return
        self._send(R_DATA_GO)
        self._mode = _DATA
        # The content starts with a line: "\r\n" lets the end-of-data search
        # find a ".\r\n" that comes first (an empty message).
        self._body = bytearray(b"\r\n")
        self._too_big = False
        data, self._buffer = self._buffer, b""
        if data:
            self._feed(data)

    def do_rset(self, arg: str) -> None:
        self._reset()
        self._send(R_OK)

    def do_noop(self, arg: str) -> None:
        self._send(R_OK)

    def do_vrfy(self, arg: str) -> None:
        self._send(R_VRFY)

    def do_quit(self, arg: str) -> None:
        self._send(R_BYE)
        self._close()

    def _reset(self) -> None:
        self._sender = None
        self._recipients = []

    # -- DATA ---------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        body = self._body
        start = max(0, len(body) - 4)
        body += data
        end = body.find(_EOD, start)
        if end < 0:
            limit = self.factory.message_size_limit
            # Count in the stored form (LF ends) only roughly: CR LF pairs
            # make the wire up to twice as long, so compare generously and
            # check exactly at the end.
            if limit and len(body) > 2 * limit + 4:
                self._too_big = True
                del body[:-4]
            return
        content = bytes(body[2 : end + 2])
        self._buffer = bytes(body[end + 5 :])
        self._body = bytearray()
        self._mode = _BUSY
        self._end_of_data(content)

    def _end_of_data(self, wire: bytes) -> None:
        f = self.factory
        content = b"" if self._too_big else to_internal(wire)
        limit = f.message_size_limit
        recipients, sender = self._recipients, self._sender or ""
        self._reset()
        if self._too_big or (limit and len(content) > limit):
            for rcpt in recipients:
                self._send(_reply(552, "5.3.4", f"<{rcpt.address}> Message size exceeds limit"))
            self._resume()
            return
        txid = f.new_id()
        started = time.monotonic()
        maillog(f.service_name, f"{txid}: client={self._client}")
        maillog(
            f.service_name, f"{txid}: from=<{sender}>, size={len(content)}, nrcpt={len(recipients)}"
        )
        header = header_block(content)
        message = BytesContent(content)
        results: list[Deferred[Outcome]] = []
        for rcpt in recipients:
            if delivered_to_loop(header, rcpt.address):
                loop = Outcome("5.4.6", f"mail forwarding loop for {rcpt.address}")
                results.append(succeed(loop))
                continue
            prefix = delivery_headers(sender, rcpt.address.lower()) + self._received(
                txid, rcpt.address
            )
            results.append(
                f.delivery.deliver(
                    rcpt.mailbox, prefix, message, sender=sender, recipient=rcpt.address
                )
            )

        def answer(outcomes: list[Outcome]) -> None:
            delay = time.monotonic() - started
            for rcpt, outcome in zip(recipients, outcomes, strict=True):
                self._log_outcome(txid, rcpt, outcome, delay)
                code = _code_for(outcome.status)
                if self._mode != _CLOSED:
                    self._send(_reply(code, outcome.status, f"<{rcpt.address}> {outcome.reason}"))
            self._resume()

        def crashed(failure: Failure) -> None:
            _log.failure("lmtpd delivery failed", failure)
            for rcpt in recipients:
                if self._mode != _CLOSED:
                    self._send(_reply(451, "4.3.0", f"<{rcpt.address}> Internal error"))
            self._resume()

        gatherResults(results, consumeErrors=True).addCallbacks(answer, crashed)

    def _received(self, txid: str, recipient: str) -> bytes:
        f = self.factory
        client = (
            f"{self._lhlo} ([{self._client_ip}])" if self._client_ip else f"{self._lhlo} (local)"
        )
        date = formatdate(f.clock.seconds(), localtime=True)
        return (
            f"Received: from {client}\n\tby {f.hostname} with LMTP id {txid}\n"
            f"\tfor <{recipient}>; {date}\n"
        ).encode("utf-8", "surrogateescape")

    def _log_outcome(self, txid: str, rcpt: _Recipient, outcome: Outcome, delay: float) -> None:
        status = {"2": "sent", "4": "deferred"}.get(outcome.status[:1], "bounced")
        maillog(
            self.factory.service_name,
            f"{txid}: to=<{rcpt.address}>, relay={self.factory.service_name}, "
            f"delay={delay:.2g}, dsn={outcome.status}, status={status} ({outcome.reason})",
        )

    def _resume(self) -> None:
        if self._mode == _CLOSED:
            return
        self._mode = _COMMAND
        if self._buffer:
            self._process()


def _code_for(status: str) -> int:
    """The reply code that fits an enhanced status (RFC 3463 classes; a
    full mailbox is 452/552 as RFC 5321 section 4.2.2 has it)."""
    if status.startswith("2"):
        return 250
    if status[2:] in (".2.2", ".3.4"):
        return 452 if status.startswith("4") else 552
    return 451 if status.startswith("4") else 550


__all__ = ["LMTPServerProtocol", "to_internal"]
