"""The ESMTP server protocol: one connection, RFC 5321 with pipelining.

Mirrors Postfix's smtpd.c: the command loop and the commands. Every reply
goes through pymta.smtpd.chat (Postfix's smtpd_chat.c: batching, error
counting, the tarpit, the hang-up after 421, the reject log lines), the
content through pymta.smtpd.datareader, and the session builds cleanup's
envelope (pymta.smtpd.session). Everything read here is untrusted network
input.

Input handling is done on raw bytes with ``bytes.find``: commands are split
at LF (a bare LF is a line end only as ``smtpd_forbid_bare_newline``
allows). Message content goes through pymta.smtpd.datareader (the only
end of data is CR LF . CR LF: no SMTP smuggling), which hands back pieces
in the internal form (LF line ends, dot-unstuffed); each piece is written
to cleanup's message writer as it arrives (pymta.cleanup.writer spools a
large message to disk), so a session holds no more than a few hundred KiB
of any message. When the writer has more waiting for the disk than it
should, the session stops reading its socket until the disk caught up.
message_size_limit is checked as the content arrives: past it the message
is dropped (and its spool deleted) and the rest is read and discarded
until the end of data, answered ``552 5.3.4``. A client that leaves in the
middle of DATA leaves nothing behind.

Replies always go out in command order (RFC 2920): while the answer to a
command is pending (cleanup's Deferred), no further input is parsed. The
replies to a batch of pipelined commands go out in one write. Every reply
carries an enhanced status code (RFC 2034), except the greeting and the
HELO/EHLO replies, which RFC 2034 leaves without one.

Limits (Postfix's parameters): line_length_limit, message_size_limit,
smtpd_recipient_limit, smtpd_timeout (on the injected clock),
smtpd_soft_error_limit + smtpd_error_sleep_time (tarpit),
smtpd_hard_error_limit (421), smtpd_junk_command_limit (see below),
smtpd_client_connection_count_limit (per client address, counted in the
anvil table, pymta.smtpd.anvil), smtpd_forbidden_commands (CONNECT, GET, POST and non-letter junk
end the session). ``smtpd_forbid_bare_newline = no`` is treated as
``normalize``: pymta never accepts LF.LF as the end of data.

Pipelining rules (RFC 2920 section 3.1, Postfix's smtpd_proto()): a client
that talks before the greeting (the socket already holds input when the
session starts; not on a TLS-wrapped port), or sends more input behind a
command that must end a command group, violates the protocol. Before EHLO
(or after HELO) every command must end its group, since PIPELINING was
never offered; after EHLO, HELO, EHLO, DATA, NOOP and VRFY must. The
first violation is logged as ``improper command pipelining after CMD from
CLIENT: INPUT`` (CMD is CONNECT before the greeting; INPUT the next 100
bytes, C-escaped); with smtpd_forbid_unauth_pipelining = yes (the
default) the client gets ``554 5.5.0 Error: SMTP protocol synchronization``
and the connection is closed before the command runs.

smtpd_junk_command_limit: HELO, EHLO, RSET, NOOP and VRFY (Postfix's
"limited" commands; pymta has no ETRN) count as junk; each junk command
past the limit counts as an error, so the session meets the soft error
limit's delays and then smtpd_hard_error_limit's ``421 4.7.0 ... too many
errors``. A message accepted with 250 forgives the errors and the junk
count, as in Postfix.

queue_minfree: MAIL FROM is answered 452 4.3.1 while the queue file system
is short of space, from the factory's cached reading
(:mod:`pymta.queue.space`). Content pipelined behind a refused DATA is
never run as commands.

Writes: the message to cleanup (which makes it durable before smtpd says
250). Logs, as Postfix's smtpd does: ``connect from``, ``QID: client=``,
``NOQUEUE: reject: RCPT from ...``, ``lost connection after``,
``timeout after``, ``disconnect from ... commands=N``.
"""

from __future__ import annotations

import fcntl
import re
import socket
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from pymta.address import AddressError, parse_esmtp_params, parse_path
from pymta.auth.credentials import PasswordCredentials
from pymta.auth.errors import AuthTemporaryError, TooManyLoginAttempts
from pymta.cleanup.interface import CleanupRejected, IMessageWriter
from pymta.maillog import maillog
from pymta.output import quick_ack, send
from pymta.smtpd.anvil import LIMITS
from pymta.smtpd.chat import Chat
from pymta.smtpd.datareader import DataReader
from pymta.smtpd.dsn import (
    DsnSyntaxError,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
)
from pymta.smtpd.milters import SmtpdMilters, then_milter
from pymta.smtpd.peername import PeerName
from pymta.smtpd.restrictions import Outcome, Reject
from pymta.smtpd.sasl import Challenge, Credentials, SaslExchange, SaslFailure, Step
from pymta.smtpd.session import Session
from pymta.smtpd.settings import SMTPServerSettings
from pymta.tls import describe
from pymta.tls_ccert import client_cert

__all__ = ["SMTPServerProtocol"]

_log = Logger()

_COMMAND = 0
_DATA = 1

# Reply constants (bytes, CRLF-terminated): one table shared by server and tests.
R_OK = b"250 2.0.0 Ok\r\n"
R_MAIL_OK = b"250 2.1.0 Ok\r\n"
R_RCPT_OK = b"250 2.1.5 Ok\r\n"
R_DATA_GO = b"354 End data with <CR><LF>.<CR><LF>\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_TLS_GO = b"220 2.0.0 Ready to start TLS\r\n"
R_UNKNOWN = b"502 5.5.2 Error: command not recognized\r\n"
R_TOO_LONG = b"500 5.5.2 Error: line too long\r\n"
R_EMPTY = b"500 5.5.2 Error: bad syntax\r\n"
R_BAD_UTF8 = b"500 5.5.2 Error: bad UTF-8 syntax\r\n"
R_BARE_LF = b"550 5.5.2 Error: bare <LF> received\r\n"
R_NESTED_MAIL = b"503 5.5.1 Error: nested MAIL command\r\n"
R_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
R_NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
R_NO_RCPT = b"554 5.5.1 Error: no valid recipients\r\n"
R_NEED_HELO = b"503 5.5.1 Error: send HELO/EHLO first\r\n"
R_NEED_TLS = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
R_TOO_MANY_RCPT = b"452 4.5.3 Error: too many recipients\r\n"
R_SIZE_DECLARED = b"552 5.3.4 Message size exceeds fixed limit\r\n"
R_TOO_BIG = b"552 5.3.4 Error: message file too big\r\n"
R_NEED_SMTPUTF8 = b"553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
R_VRFY_DISABLED = b"502 5.5.1 VRFY command is disabled\r\n"
R_NO_TLS = b"502 5.5.1 Error: command not implemented\r\n"
R_TLS_ACTIVE = b"554 5.5.1 Error: TLS already active\r\n"
R_SYNC = b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
R_QUEUE_ERROR = b"451 4.3.0 Error: queue file write error\r\n"
R_AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
R_AUTH_FAILED = b"535 5.7.8 Error: authentication failed: authentication failure\r\n"
R_AUTH_TEMPORARY = b"454 4.7.0 Temporary authentication failure\r\n"
R_AUTH_TOO_MANY = b"454 4.7.0 Too many authentication attempts from your address, try later\r\n"
R_AUTH_DISABLED = b"503 5.5.1 Error: authentication not enabled\r\n"
R_AUTH_TWICE = b"503 5.5.1 Error: already authenticated\r\n"
R_AUTH_IN_MAIL = b"503 5.5.1 Error: MAIL transaction in progress\r\n"
R_AUTH_NEED_EHLO = b"503 5.5.1 Error: send EHLO first\r\n"
R_AUTH_BAD_MECH = b"535 5.7.8 Error: authentication failed: Invalid authentication mechanism\r\n"
R_NO_SPACE = Reject(452, "4.3.1", "Insufficient system storage")
R_CHECK_ERROR = Reject(451, "4.3.0", "Error: internal error while checking the request")

# Command names in the order Postfix's disconnect line lists them.
_COUNTED = (
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data",
    "rset", "noop", "vrfy", "help", "quit", "unknown",
)  # fmt: skip
# Postfix's SMTPD_CMD_FLAG_LIMIT commands (smtpd_junk_command_limit).
_JUNK = frozenset(("helo", "ehlo", "rset", "noop", "vrfy"))
# Postfix's SMTPD_CMD_FLAG_LAST: RFC 2920 section 3.1's commands that may
# only end a pipelined group (QUIT ends the session anyway; Postfix adds HELO).
_LAST_IN_GROUP = frozenset(("helo", "ehlo", "data", "noop", "vrfy"))
# What a pipelining violation logs of the input that followed (Postfix: 100).
_PEEK = 100
#: What is left of smtpd_timeout when the idle timer fires and the client
#: sent something meanwhile, below which the session times out now.
_TIMER_SLACK = 0.001
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _syntax(text: str) -> bytes:
    return f"501 5.5.4 Syntax: {text}\r\n".encode()


_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 92: "\\\\"}


def escape(data: bytes) -> str:
    """Untrusted bytes as Postfix's escape() logs them: printable ASCII as is,
    backslash doubled, C escapes for control characters, octal for the rest."""
    out: list[str] = []
    for byte in data:
        text = _ESCAPES.get(byte)
        if text is None:
            text = chr(byte) if 32 <= byte < 127 else f"\\{byte:03o}"
        out.append(text)
    return "".join(out)


def pending_input(transport: Any) -> bytes:
    """Up to 100 bytes the client already sent on the socket, without
    consuming them (Postfix's peekfd() at the greeting); b"" if none or if
    the transport has no socket to peek at."""
    try:
        handle = transport.getHandle()
        # FIONREAD first: the usual answer is "nothing", and a peek at an
        # empty socket raises BlockingIOError, whose making and catching
        # cost more than the ioctl (one session start each).
        if isinstance(handle, socket.socket) and not _readable_bytes(handle.fileno()):
            return b""
        data: bytes = handle.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (AttributeError, OSError):
        return b""
    return data


_NOTHING = bytes(4)
_FIONREAD: int | None = getattr(termios, "FIONREAD", None)


def _readable_bytes(fd: int) -> int:
    """How many bytes the socket's receive queue holds (FIONREAD); 1 when
    the platform cannot tell, so that the caller peeks."""
    if _FIONREAD is None:
        return 1
    return int.from_bytes(fcntl.ioctl(fd, _FIONREAD, _NOTHING), sys.byteorder, signed=True)


@dataclass(frozen=True)
class _MailFrom:
    """A MAIL command that passed its syntax checks, waiting for the
    sender restrictions."""

    sender: str
    size: int
    body: str
    smtputf8: bool
    ret: str
    envid: str


class SMTPServerProtocol(Protocol):
    """One SMTP session; configuration and collaborators come from the factory."""

    def __init__(self, factory: SMTPServerSettings) -> None:
        self.factory = factory
        self.session: Session = Session("")
        # Every reply goes through the chat: error counting, the tarpit,
        # hang-up and the reject log lines (pymta.smtpd.chat).
        self._chat = Chat(factory, self.session)
        self._buf = b""
        self._pos = 0  # where unparsed input starts in _buf, inside _process_loop
        self._mode = _COMMAND
        self._paused = False
        self._in_process = False
        self._connected = False
        self._overlong = False
        self._producer_paused = False
        self._junk = 0
        self._ill_pipelining = False
        self._counts: dict[str, list[int]] = {}
        self._timer: IDelayedCall | None = None
        # When the client last sent something: the idle timer is moved on
        # when it fires, not at every read (a reset per read cost more).
        self._last_input = 0.0
        self._tls_active = False
        self._quit = False
        self._bare_lf_reject = False
        self._client_reject: Reject | None = None
        # DATA state: the content reader, and cleanup's writer (None once
        # the message is dropped for its size).
        self._reader: DataReader | None = None
        # The finished content's LF count (DataReader.lines), for cleanup.
        self._content_lines: int | None = None
        self._writer: IMessageWriter | None = None
        self._too_big = False
        # Reading paused because the writer has too much waiting for the disk.
        self._writer_paused = False
        self._counted_connection = ""
        # The AUTH exchange waiting for the client's next line, if any, and
        # the password check in progress (withdrawn if the client leaves).
        self._sasl: SaslExchange | None = None
        self._auth_check: Deferred[Any] | None = None
        # smtpd_milters of this session (pymta.smtpd.milters), None without.
        self._milters: SmtpdMilters | None = None

    @property
    def _last_command(self) -> str:
        return self._chat.last_command

    @_last_command.setter
    def _last_command(self, name: str) -> None:
        self._chat.last_command = name

    # -- connection -------------------------------------------------------------

    def take_over(self, transport: Any, early_input: bytes = b"") -> None:
        """Start this session on a connection another protocol accepted
        (pymta.postscreen hands a client on, as Postfix's postscreen passes
        the socket to smtpd). ``early_input`` is what the client sent before
        the greeting: smtpd's pre-greeting check sees it as Postfix's smtpd
        sees the bytes postscreen only peeked at."""
        self._buf = early_input
        transport.protocol = self
        self.makeConnection(transport)
        if self._buf and self._connected and not self._paused and not self._chat.closing:
            # Input that no dataReceived will bring again: answer it now.
            self._process()

    def connectionMade(self) -> None:
        f = self.factory
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        address = str(getattr(peer, "host", "unknown"))
        if address.startswith("::ffff:") and "." in address:
            address = address[7:]
        self.session = Session(
            client_address=address,
            client_port=int(getattr(peer, "port", 0) or 0),
        )
        self._chat.session = self.session
        self._chat.transport = self.transport
        self._connected = self._chat.connected = True
        # An implicit-TLS port (smtps, wrapper mode) is TLS from the start.
        self._tls_active = ISSLTransport.providedBy(self.transport)
        lookup = f.lookup_client(address)
        if lookup is None:
            self._start_session()
            return
        if isinstance(lookup, PeerName):
            self._named(lookup)
            self._start_session()
            return
        # smtpd_peername_lookup: the name is known before the banner (and
        # the "connect from" line), as in Postfix; input waits meanwhile.
        box: list[Any] = []
        lookup.addBoth(box.append)
        if box:
            self._named(box[0])
            self._start_session()
            return
        self._paused = True
        lookup.addCallback(lambda _: self._after_lookup(box[0]))

    def _after_lookup(self, peer: PeerName | Failure) -> None:
        if not self._connected:
            return
        self._paused = False
        self._named(peer)
        self._start_session()
        if self._connected and not self._paused and not self._chat.closing:
            self._resume()

    def _named(self, peer: PeerName | Failure) -> None:
        if isinstance(peer, Failure):
            _log.failure("smtpd: client name lookup failed", peer)
            return
        s = self.session
        s.client_name = peer.name
        s.client_name_status = peer.status
        s.reverse_client_name = peer.reverse_name
        s.reverse_client_name_status = peer.reverse_status

    def _start_session(self) -> None:
        f = self.factory
        address = self.session.client_address
        excluded = f.bare_newline_exclusions.contains(address)
        self._bare_lf_reject = f.bare_newline == "reject" and not excluded
        maillog(f.service_name, f"connect from {self.session.client}")
        if not self._tls_active and self._talked_first():
            return
        counts = f.rates.connections
        if counts is not None and not f.event_limit_exceptions.contains(address):
            count = counts.opened(address)
            self._counted_connection = address
            if count > f.connection_count_limit:
                # Postfix's anvil: one client may not take every session.
                maillog(
                    f.service_name,
                    f"Connection concurrency limit exceeded: {count} from "
                    f"{self.session.client} for service {f.master_service}",
                    LogLevel.warn,
                )
                self._chat.hangup(
                    f"421 4.7.0 {f.myhostname} Error: too many connections from "
                    f"{address}\r\n".encode()
                )
                return
        refusal = self._rate_exceeded("connect")
        if refusal:
            self._chat.hangup(refusal)
            return
        self._last_input = f.clock.seconds()
        self._timer = f.clock.callLater(f.timeout, self._timed_out)
        outcome = None
        if not f.restrictions.delay_reject and f.restrictions.client:
            # Postfix decides at connect and answers the next command.
            outcome = f.restrictions.check_client(self.session)
        if f.milters is not None:
            # A milter's refusal at connect refuses every later command, as
            # a client restriction's does.
            milters = self._milters = SmtpdMilters(
                f.milters, f.service_name, resolve=f.resolver.resolve
            )
            outcome = then_milter(outcome, lambda: milters.connect(self.session, self.transport))
        if outcome is not None:
            self._when_checked(outcome, self._client_checked)
            return
        send(self.transport, f.banner)

    def _client_checked(self, reject: Reject | None) -> None:
        self._client_reject = reject
        send(self.transport, self.factory.banner)

    def _when_checked(self, outcome: Outcome, proceed: Callable[[Reject | None], None]) -> None:
        """Go on with a restriction check's answer: at once, or, when the
        check had to ask DNS, once it answers, with input paused meanwhile
        (as for cleanup) so that replies keep the command order."""
        if outcome is None or isinstance(outcome, Reject):  # (Deferred's isinstance is slow)
            proceed(outcome)
            return
        box: list[Any] = []
        outcome.addBoth(box.append)
        if box:
            self._checked(box[0], proceed)
            return
        self._paused = True
        command = self._last_command.lower()

        def answered(_: object) -> None:
            if not self._connected:
                return
            self._paused = False
            self._chat.failed = False
            self._checked(box[0], proceed)
            count = self._counts.get(command)
            if self._chat.failed and count is not None and count[0] > 0:
                count[0] -= 1  # _command counted it good before the answer came
            if self._paused:
                return  # proceed started the next wait (cleanup)
            if self._chat.closing:
                self._chat.flush()
                return
            self._resume()

        outcome.addCallback(answered).addErrback(
            lambda failure: _log.failure("smtpd: after a restriction check", failure)
        )

    def _checked(
        self, result: Reject | Failure | None, proceed: Callable[[Reject | None], None]
    ) -> None:
        if isinstance(result, Failure):
            # A bug, not a DNS condition (those are answers): never a 5xx.
            _log.failure("smtpd: restriction check failed", result)
            result = R_CHECK_ERROR
        proceed(result)

    def _talked_first(self) -> bool:
        """Postfix's pre-greeting check: input before the banner is a
        protocol violation (never on a TLS-wrapped port, where the client
        speaks first). True when the session is being closed for it."""
        early = self._buf or pending_input(self.transport)
        if not early:
            return False
        return self._ill_pipelined("CONNECT", early)

    def _ill_pipelined(self, where: str, following: bytes) -> bool:
        """Log a pipelining violation (once per session, as Postfix flags it)
        and, with smtpd_forbid_unauth_pipelining, refuse it and close. True
        when the session is being closed."""
        self._ill_pipelining = True
        f = self.factory
        maillog(
            f.service_name,
            f"improper command pipelining after {where} from {self.session.client}: "
            f"{escape(following[:_PEEK])}",
        )
        if not f.forbid_unauth_pipelining:
            return False
        self._buf, self._pos = b"", 0
        self._chat.hangup(R_SYNC)
        return True

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._connected = self._chat.connected = False
        if self._auth_check is not None:
            # A login still waiting for its penalty is withdrawn (its turn
            # goes back to the client's other attempts).
            check, self._auth_check = self._auth_check, None
            check.cancel()
        if self._counted_connection:
            counts = self.factory.rates.connections
            if counts is not None:
                counts.closed(self._counted_connection)
            self._counted_connection = ""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._reader = None
        if self._writer is not None:
            # Mid-DATA: nothing of the message stays behind.
            writer, self._writer = self._writer, None
            writer.abort()
        if self._milters is not None:
            self._milters.quit()
        if not self._quit and not self._chat.closing:
            maillog(
                self.factory.service_name,
                f"lost connection after {self._last_command} from {self.session.client}",
            )
        maillog(self.factory.service_name, f"disconnect from {self.session.client}{self._stats()}")

    def _stats(self) -> str:
        parts: list[str] = []
        total_ok = total = 0
        counts = self._counts
        for name in _COUNTED:
            if name not in counts:  # (an operator, not a get() call per name)
                continue
            ok, n = counts[name]
            total_ok += ok
            total += n
            parts.append(f" {name}={ok}" if ok == n else f" {name}={ok}/{n}")
        ratio = f"{total_ok}" if total_ok == total else f"{total_ok}/{total}"
        parts.append(f" commands={ratio}")
        return "".join(parts)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._connected:
            return
        f = self.factory
        # smtpd_timeout counts from the client's last input: input since
        # the timer was set moves it on by what is left (less than a
        # millisecond left is over: never a timer that fires again at once).
        left = self._last_input + f.timeout - f.clock.seconds()
        if left > _TIMER_SLACK:
            self._timer = f.clock.callLater(left, self._timed_out)
            return
        if self._paused:
            # Waiting for cleanup is not client idleness.
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timed_out)
            return
        maillog(
            self.factory.service_name,
            f"timeout after {self._last_command} from {self.session.client}",
        )
        host = self.factory.myhostname
        self._chat.hangup(f"421 4.4.2 {host} Error: timeout exceeded\r\n".encode())

    # -- input --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._chat.closing:
            return
        if self._timer is not None:
            self._last_input = self.factory.clock.seconds()
        self._buf = self._buf + data if self._buf else data
        if self._paused:
            if len(self._buf) > 1 << 20 and not self._producer_paused:
                self._producer_paused = True
                self.transport.pauseProducing()  # type: ignore[union-attr]
            return
        self._process()

    def _process(self) -> None:
        self._in_process = True
        try:
            self._process_loop()
        finally:
            self._in_process = False
        if self._mode == _DATA and not self._chat.out and self._connected:
            # Content without its end yet, nothing to answer: acknowledge
            # now, or a client that writes the final "." on its own (swaks
            # with a large body) waits 40 ms for the delayed ACK (Nagle).
            quick_ack(self.transport)
        self._chat.flush()

    def _process_loop(self) -> None:
        buf = self._buf
        pos = 0
        limit = self.factory.line_length_limit
        while not self._paused and not self._chat.closing:
            if self._chat.tarpit_due:
                self._start_tarpit()
                break
            if self._mode == _DATA:
                if pos >= len(buf):
                    buf, pos = b"", 0
                    break
                rest = self._feed_data(buf[pos:] if pos else buf)
                buf, pos = (rest or b""), 0
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > limit:
                    # Never buffer an endless line: drop it, answer at its end.
                    self._overlong = True
                    buf, pos = b"", 0
                break
            line = buf[pos:nl]
            pos = nl + 1
            if self._overlong:
                self._overlong = False
                self._last_command = "UNKNOWN"
                self._chat.error(R_TOO_LONG)
                continue
            if line[-1:] == b"\r":
                line = line[:-1]
            elif self._bare_lf_reject:
                self._chat.error(R_BARE_LF)
                continue
            if len(line) > limit:
                self._chat.error(R_TOO_LONG)
                continue
            self._buf, self._pos = buf, pos
            if self._sasl is not None:
                self._sasl_line(line)
            else:
                self._command(line)
            # A handler may have replaced the buffer (STARTTLS discards it).
            buf, pos = self._buf, self._pos
        self._buf = buf[pos:] if pos else buf
        self._pos = 0

    def _start_tarpit(self) -> None:
        """Postfix's smtpd_error_sleep_time: past smtpd_soft_error_limit, wait
        before an error reply (and everything after it)."""
        self._chat.start_tarpit()
        self._paused = True
        self.factory.clock.callLater(self.factory.error_sleep_time, self._end_tarpit)

    def _end_tarpit(self) -> None:
        if self._chat.end_tarpit():
            self._resume()

    def _rate_exceeded(self, kind: str) -> bytes:
        """Count one client event for Postfix's anvil rate limits
        (pymta.smtpd.anvil): the reply and warning when it is one too many,
        else b""."""
        f = self.factory
        s = self.session
        count = f.rates.exceeded(kind, s.client_address)
        if not count:
            return b""
        limit = LIMITS[kind]
        maillog(
            f.service_name,
            f"{limit.log}: {count} from {s.client} for service {f.master_service}",
            LogLevel.warn,
        )
        return f"{limit.reply.format(host=f.myhostname, addr=s.client_address)}\r\n".encode()

    def _client_certificate_refused(self) -> bool:
        """After the handshake: note the client certificate (pymta.tls_ccert);
        under smtpd_tls_req_ccert end the session without a trusted one,
        with Postfix's reply and log line."""
        f = self.factory
        policy = f.tls.client_certs if f.tls is not None else None
        if policy is None:
            return False
        cert = client_cert(self.transport, policy.digest)
        self.session.ccert = cert
        if not policy.require or (cert is not None and cert.trusted):
            return False
        why = "Client certificate not trusted" if cert else "No client certificate presented"
        maillog(f.service_name, f"NOQUEUE: abort: TLS from {self.session.client}: {why}")
        self._chat.hangup(f"421 4.7.1 {f.myhostname} Error: {why}\r\n".encode())
        return True

    # -- commands ---------------------------------------------------------------------

    def _command(self, line: bytes) -> None:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            try:
                if not self.factory.smtputf8_enable:
                    raise UnicodeDecodeError("utf-8", line, 0, 1, "SMTPUTF8 is off")
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                self._last_command = "UNKNOWN"
                self._count("unknown", self._chat.error, R_BAD_UTF8)
                return
        if not text.strip():
            self._last_command = "UNKNOWN"
            self._count("unknown", self._chat.error, R_EMPTY)
            return
        verb, _, arg = text.partition(" ")
        name = verb.lower()
        handler = _HANDLERS.get(name)
        if handler is None and (name in self.factory.forbidden_commands or not text[:1].isalpha()):
            # Postfix's smtpd_forbidden_commands: an HTTP proxy or a TLS
            # hello on the plain port is not a mail client.
            shown = _CONTROL.sub("?", text)[:100]
            maillog(
                self.factory.service_name,
                f"non-SMTP command from {self.session.client}: {shown}",
                LogLevel.warn,
            )
            self._chat.hangup(b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n")
            return
        if self._tls_active and not self.session.tls:
            self.session.tls = describe(self.transport) or "TLS"
            if self._client_certificate_refused():
                return
        if handler is None:
            self._last_command = "UNKNOWN"
            self._count("unknown", self._chat.error, R_UNKNOWN)
            return
        chat = self._chat
        chat.last_command = verb.upper()  # (the _last_command property, without its call)
        chat.failed = False
        count = self._counts.get(name)
        if count is None:
            count = self._counts[name] = [0, 0]
        count[1] += 1
        if (
            not self._ill_pipelining
            and (not self.session.esmtp or name in _LAST_IN_GROUP)
            and len(self._buf) > self._pos
            and self._ill_pipelined(self._last_command, self._buf[self._pos : self._pos + _PEEK])
        ):
            return
        handler(self, arg.strip(" \t"))
        if not self._chat.failed and name != "auth":
            count[0] += 1
        if name in _JUNK and not self._chat.closing:
            # Postfix: "junk_cmds++ > limit", so the error count starts
            # growing with the second junk command past the limit.
            if self._junk > self.factory.junk_command_limit:
                self._chat.count_error()
            self._junk += 1

    def _count(self, name: str, action: Any, reply: bytes) -> None:
        count = self._counts.setdefault(name, [0, 0])
        count[1] += 1
        action(reply)

    def do_ehlo(self, arg: str) -> None:
        if not arg:
            self._chat.error(_syntax("EHLO hostname"))
            return
        self._greet(arg, esmtp=True)

    def do_helo(self, arg: str) -> None:
        if not arg:
            self._chat.error(_syntax("HELO hostname"))
            return
        self._greet(arg, esmtp=False)

    def _greet(self, name: str, esmtp: bool) -> None:
        s = self.session
        f = self.factory
        s.reset_transaction()
        # Like Postfix's printable(): the name goes into logs and Received.
        s.helo_name = _CONTROL.sub("?", name)
        s.esmtp = esmtp
        if self._client_reject is not None:
            self._chat.reject(self._client_reject, "CONNECT")
            return
        outcome = None
        if not f.restrictions.delay_reject and f.restrictions.helo:
            outcome = f.restrictions.check_helo(s)
        if self._milters is not None:
            milters = self._milters
            outcome = then_milter(outcome, lambda: milters.helo(s, self.transport))
        self._when_checked(outcome, self._helo_checked)

    def _helo_checked(self, reject: Reject | None) -> None:
        f = self.factory
        if reject is not None:
            self._chat.reject(reject, "HELO")
            return
        if not self.session.esmtp:
            self._chat.reply(f.helo_reply)
        else:
            starttls = f.tls is not None and not self._tls_active
            self._chat.reply(f.ehlo(starttls, self._auth_mechanisms()))

    def do_mail(self, arg: str) -> None:
        s = self.session
        f = self.factory
        if s.sender is not None:
            self._chat.error(R_NESTED_MAIL)
            return
        if f.helo_required and not s.helo_name:
            self._chat.error(R_NEED_HELO)
            return
        if f.tls is not None and f.tls.required and not self._tls_active:
            self._chat.error(R_NEED_TLS)
            return
        if arg[:5].upper() != "FROM:":
            self._chat.error(_syntax("MAIL FROM:<address>"))
            return
        try:
            sender, rest = parse_path(arg[5:], sender=True, strict=f.strict_envelopes)
            params = parse_esmtp_params(rest) if rest else {}
        except AddressError as e:
            self._chat.error(f"{e.reply()}\r\n".encode())
            return
        size = 0
        body = ""
        smtputf8 = False
        ret = envid = ""
        for key, value in params.items():
            if not s.esmtp:
                self._chat.error(f"555 5.5.4 Unsupported option: {key}\r\n".encode())
                return
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    self._chat.error(b"501 5.5.4 Bad message size syntax\r\n")
                    return
                size = int(value)
            elif key == "BODY":
                body = (value or "").upper()
                if body not in ("7BIT", "8BITMIME"):
                    self._chat.error(b"501 5.5.4 Unsupported BODY parameter value\r\n")
                    return
            elif key == "SMTPUTF8" and value is None and f.smtputf8_enable:
                smtputf8 = True
            elif key == "AUTH":
                # RFC 4954 section 5: without AUTH the parameter is ignored.
                continue
            elif key in ("RET", "ENVID") and f.dsn_enable:
                try:
                    if key == "RET":
                        ret = parse_ret(value)
                    else:
                        envid = parse_envid(value)
                except DsnSyntaxError as e:
                    self._chat.error(f"501 5.5.4 {e}\r\n".encode())
                    return
            else:
                self._chat.error(f"555 5.5.4 Unsupported option: {key}\r\n".encode())
                return
        if not smtputf8 and not sender.isascii():
            self._chat.error(R_NEED_SMTPUTF8)
            return
        refusal = self._rate_exceeded("mail")
        if refusal:
            self._chat.error(refusal)
            return
        if f.message_size_limit and size > f.message_size_limit:
            reject = Reject(552, "5.3.4", "Message size exceeds fixed limit")
            self._chat.reject(reject, "MAIL", sender=sender)
            return
        if self._client_reject is not None:
            self._chat.reject(self._client_reject, "MAIL", sender=sender)
            return
        accepted = _MailFrom(sender, size, body, smtputf8, ret, envid)
        outcome = None
        if not f.restrictions.delay_reject and f.restrictions.sender:
            outcome = f.restrictions.check_sender(s, sender)
        if self._milters is not None:
            milters = self._milters
            args = [k if v is None else f"{k}={v}" for k, v in params.items()]
            outcome = then_milter(outcome, lambda: milters.mail(s, sender, args))
        self._when_checked(outcome, lambda reject: self._mail_checked(reject, accepted))

    def _mail_checked(self, reject: Reject | None, mail: _MailFrom) -> None:
        f = self.factory
        s = self.session
        sender = mail.sender
        if reject is not None:
            self._chat.reject(reject, "MAIL", sender=sender)
            return
        shortage = f.queue_space_check(mail.size)
        if shortage is not None:
            # Refused before the client sends the message, not with a write
            # error after it sent it all (Postfix: 452 4.3.1 at MAIL FROM).
            self._chat.reject(R_NO_SPACE, "MAIL", sender=sender)
            maillog(f.service_name, shortage, LogLevel.warn)
            return
        s.sender = sender
        s.declared_size = mail.size
        s.body = mail.body
        s.smtputf8 = mail.smtputf8
        s.dsn_ret = mail.ret
        s.dsn_envid = mail.envid
        self._chat.reply(R_MAIL_OK)

    def do_rcpt(self, arg: str) -> None:
        s = self.session
        f = self.factory
        if s.sender is None:
            self._chat.error(R_NEED_MAIL)
            return
        if arg[:3].upper() != "TO:":
            self._chat.error(_syntax("RCPT TO:<address>"))
            return
        try:
            recipient, rest = parse_path(arg[3:], strict=f.strict_envelopes)
            params = parse_esmtp_params(rest) if rest else {}
        except AddressError as e:
            self._chat.error(f"{e.reply()}\r\n".encode())
            return
        notify: str | None = None
        orcpt: str | None = None
        for key, value in params.items():
            if key not in ("NOTIFY", "ORCPT") or not f.dsn_enable or not s.esmtp:
                self._chat.error(f"555 5.5.4 Unsupported option: {key}\r\n".encode())
                return
            try:
                if key == "NOTIFY":
                    notify = parse_notify(value)
                else:
                    orcpt = parse_orcpt(value)
            except DsnSyntaxError as e:
                self._chat.error(f"501 5.5.4 {e}\r\n".encode())
                return
        if not s.smtputf8 and not recipient.isascii():
            self._chat.error(R_NEED_SMTPUTF8)
            return
        if len(s.recipients) >= f.recipient_limit:
            self._chat.error(R_TOO_MANY_RCPT)
            return
        refusal = self._rate_exceeded("rcpt")
        if refusal:
            self._chat.error(refusal)
            return
        if self._client_reject is not None:
            self._chat.reject(self._client_reject, "RCPT", recipient)
            return
        outcome = f.restrictions.check_recipient(s, recipient)
        if self._milters is not None:
            milters = self._milters
            args = [k if v is None else f"{k}={v}" for k, v in params.items()]
            outcome = then_milter(outcome, lambda: milters.rcpt(recipient, args))
        self._when_checked(
            outcome, lambda reject: self._rcpt_checked(reject, recipient, notify, orcpt)
        )

    def _rcpt_checked(
        self, reject: Reject | None, recipient: str, notify: str | None, orcpt: str | None
    ) -> None:
        s = self.session
        if reject is not None:
            self._chat.reject(reject, "RCPT", recipient)
            return
        if s.sender is None:
            # The transaction ended while DNS answered (cannot happen with
            # input paused; kept as a guard for the recipient list).
            self._chat.error(R_NEED_MAIL)
            return
        s.recipients.append(recipient)
        s.dsn_recipients.append((notify, orcpt))
        self._chat.reply(R_RCPT_OK)

    def do_data(self, arg: str) -> None:
        s = self.session
        f = self.factory
        if arg:
            self._chat.error(_syntax("DATA"))
        elif s.sender is None:
            self._chat.error(R_NEED_RCPT)
        elif not s.recipients:
            self._chat.error(R_NO_RCPT)
        else:
            outcome = f.restrictions.check_data(s) if f.restrictions.data else None
            if self._milters is not None:
                outcome = then_milter(outcome, self._milters.data)
            self._when_checked(outcome, self._data_checked)

    def _data_checked(self, reject: Reject | None) -> None:
        if reject is None:
            self._chat.reply(R_DATA_GO)
            self._mode = _DATA
            self._reader = DataReader()
            milters = self._milters.chain if self._milters is not None else None
            self._writer = self.factory.cleanup.open_message(milters)
            self._too_big = False
            return
        self._chat.reject(reject, "DATA")

    def do_rset(self, arg: str) -> None:
        if arg:
            self._chat.error(_syntax("RSET"))
            return
        self.session.reset_transaction()
        self._chat.reply(R_OK)

    def do_noop(self, arg: str) -> None:
        self._chat.reply(R_OK)

    def do_quit(self, arg: str) -> None:
        self._quit = True
        self._chat.reply(R_BYE)
        self._chat.close()

    def do_vrfy(self, arg: str) -> None:
        f = self.factory
        if f.disable_vrfy:
            self._chat.error(R_VRFY_DISABLED)
            return
        if not arg:
            self._chat.error(_syntax("VRFY address"))
            return
        try:
            address, _ = parse_path(arg)
        except AddressError as e:
            self._chat.error(f"{e.reply()}\r\n".encode())
            return
        reject = f.restrictions.check_vrfy(self.session, address)
        if reject is not None:
            self._chat.reject(reject, "VRFY", address)
            return
        # Postfix cannot tell whether delivery will succeed: 252 (RFC 5321 3.5.3).
        self._chat.reply(f"252 2.0.0 {address}\r\n".encode())

    def do_help(self, arg: str) -> None:
        self._chat.reply(self.factory.help_reply)

    def do_starttls(self, arg: str) -> None:
        f = self.factory
        if f.tls is None:
            self._chat.error(R_NO_TLS)
            return
        if self._tls_active:
            self._chat.error(R_TLS_ACTIVE)
            return
        if arg:
            self._chat.error(_syntax("STARTTLS"))
            return
        refusal = self._rate_exceeded("newtls")
        if refusal:
            self._chat.error(refusal)
            return
        self._chat.reply(R_TLS_GO)
        self._chat.flush()
        if len(self._buf) > self._pos:
            # CVE-2011-0411: what came before the handshake is not to be trusted.
            maillog(
                f.service_name,
                f"improper command pipelining after STARTTLS from {self.session.client}: "
                f"{len(self._buf) - self._pos} bytes discarded",
            )
            self._buf, self._pos = b"", 0
        self.transport.startTLS(f.tls)  # type: ignore[union-attr]
        self._tls_active = True
        # RFC 3207 section 4.2: forget everything learned before TLS.
        self.session.forget_greeting()

    # -- AUTH (RFC 4954; the mechanisms live in pymta.smtpd.sasl) ---------------------

    def _auth_mechanisms(self) -> tuple[str, ...]:
        f = self.factory
        if not f.sasl.enabled or f.sasl_exceptions.contains(self.session.client_address):
            return ()
        return f.sasl.mechanisms(self._tls_active)

    def do_auth(self, arg: str) -> None:
        f = self.factory
        s = self.session
        if not f.sasl.enabled or f.sasl_exceptions.contains(s.client_address):
            self._chat.error(R_AUTH_DISABLED)
            return
        if not s.esmtp:
            self._chat.error(R_AUTH_NEED_EHLO)
            return
        if s.sasl_username:
            self._chat.error(R_AUTH_TWICE)
            return
        if s.sender is not None:
            self._chat.error(R_AUTH_IN_MAIL)
            return
        refusal = self._rate_exceeded("auth")
        if refusal:
            self._chat.error(refusal)
            return
        mechanisms = self._auth_mechanisms()
        if not mechanisms:
            # smtpd_tls_auth_only: no password crosses the wire in clear text.
            self._chat.error(R_NEED_TLS if not self._tls_active else R_AUTH_DISABLED)
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if not mechanism or " " in initial.strip():
            self._chat.error(_syntax("AUTH mechanism"))
            return
        if mechanism not in mechanisms:
            self._chat.error(R_AUTH_BAD_MECH)
            return
        exchange = SaslExchange()
        self._sasl_step(exchange, exchange.start(mechanism, initial.strip() or None))

    def _sasl_line(self, line: bytes) -> None:
        exchange = self._sasl
        self._sasl = None
        assert exchange is not None
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            text = "!"  # not base64: the exchange answers 501
        self._sasl_step(exchange, exchange.feed(text))

    def _sasl_step(self, exchange: SaslExchange, step: Step) -> None:
        if isinstance(step, SaslFailure):
            self._auth_failed(step.reply, exchange.mechanism, step.reply[4:].decode().strip())
            return
        if isinstance(step, Challenge):
            self._sasl = exchange
            self._chat.reply(f"334 {step.text}\r\n".encode())
        else:
            self._check_password(step)

    def _check_password(self, step: Credentials) -> None:
        """Ask the cred checker (off the reactor, with the shared failure
        penalties); later input waits, as for cleanup."""
        f = self.factory
        s = self.session
        assert f.checker is not None
        credentials = PasswordCredentials(
            step.username, step.password, s.client_address, "smtp", secured=self._tls_active
        )
        self._paused = True
        d = self._auth_check = maybeDeferred(f.checker.requestAvatarId, credentials)

        def succeeded(_avatar_id: object) -> None:
            # Counted good only now (_command leaves AUTH to the exchange).
            self._counts.setdefault("auth", [0, 0])[0] += 1
            s.sasl_username = step.username
            s.sasl_method = step.mechanism
            self._chat.reply(R_AUTH_OK)

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                return  # withdrawn: the client left while its penalty ran
            if failure.check(UnauthorizedLogin):
                self._auth_failed(R_AUTH_FAILED, step.mechanism, "authentication failure")
                return
            if failure.check(TooManyLoginAttempts):
                # pymta_auth_client_concurrency_limit: refused without a check.
                self._auth_failed(R_AUTH_TOO_MANY, step.mechanism, "too many login attempts")
                return
            if not failure.check(AuthTemporaryError):
                _log.failure("smtpd: unexpected error checking a password", failure)
            self._auth_failed(R_AUTH_TEMPORARY, step.mechanism, "temporary failure")

        def done(_: object) -> None:
            self._auth_check = None
            self._resume()

        d.addCallbacks(succeeded, failed)
        d.addBoth(done)

    def _auth_failed(self, reply: bytes, mechanism: str, why: str) -> None:
        """A failed AUTH: its reply, an error for the limits, and Postfix's
        warning line (which fail2ban and pflogsumm match)."""
        maillog(
            self.factory.service_name,
            f"{self.session.client}: SASL {mechanism} authentication failed: {why}",
            LogLevel.warn,
        )
        self._chat.error(reply)

    # -- DATA ------------------------------------------------------------------------

    def _store(self, piece: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        limit = self.factory.message_size_limit
        if limit and writer.size + len(piece) > limit:
            # Keep reading to the end of data, but keep nothing.
            self._too_big = True
            self._writer = None
            writer.abort()
            return
        wait = writer.write(piece)
        if wait is not None and not self._writer_paused:
            # The disk is behind: stop reading the socket until it caught up.
            self._writer_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
            wait.addCallback(self._writer_caught_up)

    def _writer_caught_up(self, _: object) -> None:
        self._writer_paused = False
        if self._connected and not self._producer_paused:
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _feed_data(self, data: bytes) -> bytes | None:
        """Consume content; returns what follows the end of data, or None."""
        reader = self._reader
        assert reader is not None
        pieces, done, rest = reader.feed(data)
        for piece in pieces:
            self._store(piece)
        if not done:
            return None
        self._mode = _COMMAND
        self._chat.last_command = "END-OF-MESSAGE"
        self._end_of_data()
        return rest

    def _drop_message(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.abort()

    def _end_of_data(self) -> None:
        f = self.factory
        s = self.session
        reader, self._reader = self._reader, None
        self._content_lines = reader.lines if reader is not None else None
        self._chat.failed = False
        count = self._counts.get("data")
        if self._too_big:
            self._chat.reject(Reject(552, "5.3.4", "Error: message file too big"), "END-OF-MESSAGE")
            self._data_failed(count)
            return
        if self._bare_lf_reject and reader is not None and reader.bare_lf:
            self._drop_message()
            self._chat.reject(Reject(550, "5.5.2", "Error: bare <LF> received"), "END-OF-MESSAGE")
            self._data_failed(count)
            return
        if f.restrictions.end_of_data:
            outcome = f.restrictions.check_end_of_data(s)
            self._when_checked(outcome, lambda reject: self._eod_checked(reject, count))
            return
        self._eod_checked(None, count)

    def _eod_checked(self, reject: Reject | None, count: list[int] | None) -> None:
        f = self.factory
        s = self.session
        writer, self._writer = self._writer, None
        if reject is not None or writer is None:
            if writer is not None:
                writer.abort()
            self._chat.reject(reject or R_CHECK_ERROR, "END-OF-MESSAGE")
            self._data_failed(count)
            return
        envelope = s.envelope(f.clock.seconds(), f.sasl.authenticated_header)
        s.reset_transaction()
        self._paused = True
        try:
            d: Deferred[str] = writer.finish(envelope, self._content_lines)
        except Exception:
            d = fail()
        d.addCallbacks(self._queued, self._not_queued)

    def _data_failed(self, count: list[int] | None) -> None:
        self.session.reset_transaction()
        if count is not None and count[0] > 0:
            count[0] -= 1

    def _queued(self, queue_id: str) -> None:
        # ``QID: client=`` is logged by cleanup, in Postfix's order.
        self._chat.reply(f"250 2.0.0 Ok: queued as {queue_id}\r\n".encode())
        # Postfix forgives earlier errors and junk once a message is received.
        self._chat.forgive()
        self._junk = 0
        self._resume()

    def _not_queued(self, failure: Failure) -> None:
        count = self._counts.get("data")
        if count is not None and count[0] > 0:
            count[0] -= 1
        if failure.check(CleanupRejected):
            e: CleanupRejected = failure.value  # type: ignore[assignment]
            self._chat.error(f"{e.code} {e.status} {e.text}\r\n".encode())
        else:
            _log.failure("cleanup failed", failure)
            maillog(
                self.factory.service_name,
                f"queue file write error from {self.session.client}: {failure.getErrorMessage()}",
                LogLevel.warn,
            )
            self._chat.error(R_QUEUE_ERROR)
        self._resume()

    def _resume(self) -> None:
        self._paused = False
        if not self._connected:
            self._chat.drop()
            return
        if self._producer_paused:
            self._producer_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        if not self._in_process:
            self._process()


_HANDLERS = {
    "ehlo": SMTPServerProtocol.do_ehlo,
    "helo": SMTPServerProtocol.do_helo,
    "mail": SMTPServerProtocol.do_mail,
    "rcpt": SMTPServerProtocol.do_rcpt,
    "data": SMTPServerProtocol.do_data,
    "rset": SMTPServerProtocol.do_rset,
    "noop": SMTPServerProtocol.do_noop,
    "quit": SMTPServerProtocol.do_quit,
    "vrfy": SMTPServerProtocol.do_vrfy,
    "help": SMTPServerProtocol.do_help,
    "starttls": SMTPServerProtocol.do_starttls,
    "auth": SMTPServerProtocol.do_auth,
}
