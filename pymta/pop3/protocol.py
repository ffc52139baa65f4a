"""The POP3 server protocol: RFC 1939, RFC 2449, RFC 5034, RFC 2595.

A state machine over a transport, in the states of RFC 1939: AUTHORIZATION
(CAPA, USER/PASS, APOP, AUTH PLAIN, STLS, QUIT), TRANSACTION (STAT, LIST,
RETR, TOP, DELE, RSET, NOOP, UIDL, CAPA, QUIT) and UPDATE (after a clean
QUIT only: expunge what DELE marked). Replies carry RFC 2449 / RFC 3206
response codes: ``[AUTH]``, ``[IN-USE]``, ``[SYS/TEMP]``, ``[SYS/PERM]``.

Untrusted input: every byte from the client. Lines longer than
``pop3d_line_length_limit`` are refused (and skipped to their end); too many
bad commands end the session; an idle client is disconnected after
``pop3d_timeout``; after STLS, anything the client sent after the command
in the same packet is discarded before the TLS handshake (the STARTTLS
command injection of CVE-2011-0411). USER/PASS and AUTH PLAIN are refused
on a clear-text connection except from loopback and
``pop3d_plaintext_auth_networks``; with ``pop3d_tls_security_level =
encrypt`` no login is accepted before TLS.

Authentication is a twisted.cred Portal asked for
:class:`~pymta.auth.interface.IMailAccount`; the INBOX is locked for the
session (a second session gets ``[IN-USE]``) and its message list is fixed
at login. Commands are answered in order even when pipelined (RFC 2449
PIPELINING): while a login is being checked, later lines wait. Replies are
flow-controlled: while the transport's buffer is full, commands wait, and
reading stops once ``INPUT_BACKLOG`` bytes of them have piled up. RETR and
TOP of a message of ``STREAM_MIN`` bytes or more send it from its file in
pieces as the client reads them (pymta.stream).

The mail store is reached through its asynchronous API
(:mod:`pymta.mailstore.asyncstore`): the login opens, locks and numbers
INBOX, RETR and TOP read a message, QUIT's UPDATE state expunges and
flags, each a Deferred; the store decides where the work runs (the
Maildir store in its threads, the memory store at once). While a store
call is under way later commands wait, so pipelined RETRs read one
message at a time, and none while the transport's buffer is full (the
session is its push producer). QUIT, and the ``-ERR``
that ends a session, close the connection through pymta.hangup (over TLS
too).

Writes: nothing but the folder: at a clean QUIT, expunge, \\Seen for the
messages sent whole and the move of the shown ones out of ``new/`` (all
batched: one index write each); after a dropped connection, that move only.
``pop3d_no_flag_updates = yes`` leaves out the \\Seen flags and the move.
Logs: Dovecot-style login and logout lines (pymta.pop3.log); unexpected
errors with their traceback, answered ``-ERR [SYS/TEMP]``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

from twisted.cred.credentials import IUsernameHashedPassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, interfaces
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.auth.credentials import APOPCredentials, PasswordCredentials
from pymta.auth.errors import AuthTemporaryError, MailboxUnavailable, TooManyLoginAttempts
from pymta.auth.interface import IMailAccount
from pymta.hangup import hang_up
from pymta.mailstore.asyncstore import IAsyncFolder, IAsyncUserMailbox
from pymta.mailstore.interface import (
    IFolderLock,
    MailStoreError,
    MessageInfo,
    not_writable,
)
from pymta.netmatch import is_loopback
from pymta.output import send
from pymta.pop3 import log as pop3log
from pymta.pop3.maildrop import BadMessageNumber, Maildrop
from pymta.pop3.settings import POP3Settings
from pymta.pop3.wire import STREAM_MIN, TERMINATOR, to_wire, top, wire_pieces
from pymta.preauth import PreauthConnections
from pymta.stream import Streamer, StreamingSession
from pymta.userip import UserIPLimit

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

# Replies, in Dovecot's words where Dovecot has one (clients and people know them).
AUTH_FAILED = "-ERR [AUTH] Authentication failed."
PLAINTEXT_DISALLOWED = (
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)
TLS_REQUIRED = "-ERR [AUTH] TLS is required before login."
TEMP_FAILURE = "-ERR [SYS/TEMP] Temporary authentication failure."
TOO_MANY_CONNECTIONS = "-ERR [SYS/TEMP] Too many connections from your address, try later."
TOO_MANY_ATTEMPTS = "-ERR [SYS/TEMP] Too many login attempts from your address, try later."
INTERNAL_ERROR = (
    "-ERR [SYS/TEMP] Internal error occurred. Refer to server log for more information."
)
IN_USE = "-ERR [IN-USE] Mailbox is locked by another POP3 session."

#: Unprocessed input kept while the client does not read the replies.
INPUT_BACKLOG = 64 * 1024

_TRANSACTION_ONLY = {"STAT", "LIST", "RETR", "TOP", "DELE", "RSET", "NOOP", "UIDL"}
_AUTHORIZATION_ONLY = {"USER", "PASS", "APOP", "AUTH", "STLS"}


T = TypeVar("T")


@implementer(IPushProducer)
class POP3Server(StreamingSession, Protocol):
    """One POP3 session. Built by POP3ServerFactory; all collaborators are injected."""

    def __init__(
        self,
        settings: POP3Settings,
        portal: Portal,
        clock: IReactorTime,
        *,
        tls: Any = None,
        trusted: Callable[[str], bool] = lambda ip: False,
        random_bytes: Callable[[int], bytes],
        pid: int = 0,
        logger: Logger | None = None,
        preauth: PreauthConnections | None = None,
    ) -> None:
        self.settings = settings
        # Connections not logged in yet per client (pop3d_max_login_ip_connections).
        self.preauth = preauth
        self._preauth_counted = False
        #: Set by the factory: pop3d_max_userip_connections, or None.
        self.userip: UserIPLimit | None = None
        self._userip_key = ""
        self._refused = False
        self.portal = portal
        self.clock = clock
        self.tls = tls
        self._trusted = trusted
        self._random = random_bytes
        self.pid = pid
        self.log = logger if logger is not None else pop3log.log

        self.state = AUTHORIZATION
        self.user = ""  # from USER, or the authenticated user
        self.method = ""
        self.maildrop: Maildrop | None = None
        self.apop_timestamp: bytes | None = None
        self.tls_active = False
        self.auth_attempts = 0
        self.bad_commands = 0

        self._buffer = b""
        self._skipping = False  # inside an overlong line, until its LF
        self._busy = False  # a login is being checked: later lines wait
        self._paused = False  # the transport's write buffer is full
        self._processing = False
        self._closing = False
        self._lost = False
        self._sasl: Callable[[str], None] | None = None
        self._timer: IDelayedCall | None = None
        self._hangup_timer: IDelayedCall | None = None
        self._streamer: Streamer | None = None  # RETR/TOP of a large message
        self._stream_pending: list[bytes] = []
        self._streamer_starting = False
        self._reading_paused = False  # the transport's reading, see pauseProducing
        self._lock: IFolderLock | None = None
        self._committing = False  # the UPDATE state is at work on the folder
        self._logout: Callable[[], None] | None = None
        self._login_d: Deferred[Any] | None = None
        self._connected_at = 0.0
        self._end_reason = "Connection closed"
        self._login_error = "auth failed"  # what the last login attempt ran into
        self.info = pop3log.SessionInfo("", "", pid, "")

    # connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = self.transport.getHost()  # type: ignore[union-attr]
        rip = getattr(peer, "host", "") or ""
        lip = getattr(host, "host", "") or ""
        session = base64.b64encode(self._random(9)).decode("ascii")
        self.tls_active = interfaces.ISSLTransport.providedBy(self.transport)
        self.info = pop3log.SessionInfo(rip, lip, self.pid, session, self.tls_active)
        self._connected_at = self.clock.seconds()
        # Registered first: every way out, the refusal too, hangs up through
        # pymta.hangup, which unregisters it.
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if self.preauth is not None:
            if not self.preauth.admit(rip):
                # A client holding many connections before login (slowloris).
                self._refused = True
                self._reply(TOO_MANY_CONNECTIONS)
                self._close()
                return
            self._preauth_counted = True
        self._timer = self.clock.callLater(self.settings.timeout, self._idle)
        greeting = "+OK pymta ready."
        if self._apop_offered():
            stamp = f"<{self.pid}.{self._random(8).hex()}.{int(self._connected_at)}@"
            stamp += f"{self.settings.hostname}>"
            self.apop_timestamp = stamp.encode("ascii")
            greeting += " " + stamp
        self._reply(greeting)

    def _leave_preauth(self) -> None:
        if self._preauth_counted and self.preauth is not None:
            self._preauth_counted = False
            self.preauth.release(self.info.rip)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._leave_preauth()
        for timer in (self._timer, self._hangup_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._hangup_timer = None
        self._stop_stream()
        if self.state == AUTHORIZATION:
            self._log_login_disconnect()
        else:
            self._log_logout()
        if self._login_d is not None:
            # A login still waiting for its penalty is withdrawn.
            login_d, self._login_d = self._login_d, None
            login_d.cancel()
        self._release()

    def _release(self) -> None:
        if self._committing:
            return  # the UPDATE state still works on the folder: _commit_done releases
        lock, self._lock = self._lock, None
        if lock is not None:
            drop = self.maildrop
            if self.state == TRANSACTION and drop is not None and self.settings.claim_recent:
                # A dropped session still claims what it showed (no commit),
                # holding the lock until that is done.
                drop.claim().addBoth(lambda _: lock.release())
            else:
                lock.release()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()
        if self._userip_key and self.userip is not None:
            self.userip.release(self._userip_key)
            self._userip_key = ""

    def _idle(self) -> None:
        self._timer = None
        self._end_reason = "Disconnected for inactivity"
        self._reply("-ERR Disconnected for inactivity.")
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._buffer = b""
        if self.transport is not None and not self._lost and self._hangup_timer is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            # The producer goes first, or a TLS layer never closes (pymta.hangup).
            self._hangup_timer = hang_up(
                self.transport, self.clock, reading_paused=self._reading_paused
            )
            self._reading_paused = False

    # IPushProducer: stop reading commands while replies cannot be written -----

    # Commands wait while the client does not read the replies; reading from
    # the socket stops only once INPUT_BACKLOG bytes of them have piled up. A
    # TLS layer pauses its producer while its handshake is under way
    # (POP3S: the greeting waits for it), and that handshake must still be
    # read from the socket.

    def pauseProducing(self) -> None:
        self._paused = True
        self._throttle()

    def resumeProducing(self) -> None:
        self._paused = False
        if not self._lost:
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resumeProducing()  # type: ignore[union-attr]
            if self._streamer is not None:
                self._streamer.resume()
            self._process()

    def _throttle(self) -> None:
        if self._paused and not self._reading_paused and not self._lost:
            if len(self._buffer) > INPUT_BACKLOG:
                self._reading_paused = True
                self.transport.pauseProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self._closing = True

    # input -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.settings.timeout)
        self._buffer += data
        self._process()
        self._throttle()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not (self._busy or self._paused or self._closing or self._lost):
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > self.settings.line_length_limit:
                        self._buffer = b""
                        if not self._skipping:
                            self._skipping = True
                            self._bad("-ERR Line too long.")
                    return
                line = self._buffer[:end]
                self._buffer = self._buffer[end + 1 :]
                if self._skipping:
                    self._skipping = False
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.settings.line_length_limit:
                    self._bad("-ERR Line too long.")
                    continue
                self._line(line)
        finally:
            self._processing = False

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        if self._sasl is not None:
            continuation, self._sasl = self._sasl, None
            continuation(text)
            return
        command, _, arg = text.partition(" ")
        command = command.upper()
        handler_name = f"do_{command}" if command.isalpha() else ""
        handler: Callable[[str], None] | None = (
            getattr(self, handler_name, None) if handler_name else None
        )
        if handler is None:
            self._bad("-ERR Unknown command.")
            return
        if self.state == AUTHORIZATION and command in _TRANSACTION_ONLY:
            self._bad("-ERR Unknown command.")
            return
        if self.state == TRANSACTION and command in _AUTHORIZATION_ONLY:
            self._bad("-ERR Unknown command.")
            return
        try:
            handler(arg)
        except Exception:
            self.log.failure("pop3: unexpected error in {command}", command=command)
            self._reply(INTERNAL_ERROR)

    # output ----------------------------------------------------------------

    def _reply(self, line: str) -> None:
        if not self._lost and self.transport is not None:
            send(self.transport, line.encode("utf-8") + b"\r\n")

    def _multi(self, first: str, lines: list[str]) -> None:
        body = "".join(f"{line}\r\n" for line in lines)
        self._reply(f"{first}\r\n{body}.")

    def _bad(self, reply: str) -> None:
        self.bad_commands += 1
        if self.bad_commands >= self.settings.hard_error_limit:
            self._end_reason = "Too many bad commands"
            self._reply("-ERR Too many bad commands.")
            self._close()
            return
        self._reply(reply)

    # capabilities ----------------------------------------------------------

    def _secure(self) -> bool:
        return self.tls_active or is_loopback(self.info.rip) or self._trusted(self.info.rip)

    def _login_refusal(self, plaintext: bool) -> str | None:
        """Why a login may not be tried now, or None."""
        if self.settings.tls_required and not self.tls_active:
            return TLS_REQUIRED
        if plaintext and not self._secure():
            return PLAINTEXT_DISALLOWED
        return None

    def _apop_offered(self) -> bool:
        if not self.settings.enable_apop:
            return False
        return IUsernameHashedPassword in self.portal.listCredentialsInterfaces()

    def _stls_offered(self) -> bool:
        return self.tls is not None and not self.tls_active and self.state == AUTHORIZATION

    def capabilities(self) -> list[str]:
        """RFC 2449 CAPA lines for this session's state."""
        caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        if self.state == AUTHORIZATION:
            if self._login_refusal(plaintext=True) is None:
                caps += ["USER", "SASL PLAIN"]
            if self._stls_offered():
                caps.append("STLS")
        caps.append("IMPLEMENTATION pymta")
        return caps

    def do_CAPA(self, arg: str) -> None:
        self._multi("+OK Capability list follows", self.capabilities())

    # AUTHORIZATION -----------------------------------------------------------

    def do_QUIT(self, arg: str) -> None:
        self._end_reason = "Logged out"
        drop = self.maildrop
        if self.state != TRANSACTION or drop is None:
            self._reply("+OK Logging out.")
            self._close()
            return
        # The UPDATE state, through the store's asynchronous API: the
        # session lock is held until the expunge and flag changes are done,
        # and +OK says they are.
        self.state = UPDATE
        self._busy = True
        self._committing = True
        d = drop.commit(self.settings.mark_seen, self.settings.claim_recent)
        d.addCallbacks(self._committed, self._commit_failed)

    def _committed(self, removed: list[int]) -> None:
        self._commit_done()
        # Unlock before the client hears +OK: a client that reconnects at once
        # (maybe to another pymta process) must not find the mailbox [IN-USE].
        self._release()
        self._reply("+OK Logging out, messages deleted." if removed else "+OK Logging out.")
        self._close()

    def _commit_failed(self, failure: Failure) -> None:
        self._commit_done()
        self._release()
        if failure.check(MailStoreError):
            self.log.error(
                "pop3({user}): expunge failed: {error}", user=self.user, error=failure.value
            )
            refused = not_writable(failure.value)
            if refused is not None and not refused.full:
                # RFC 3206: a condition that may clear, not a fault.
                self._reply("-ERR [SYS/TEMP] Mail store is read-only: messages were not deleted.")
            else:
                self._reply("-ERR [SYS/TEMP] Some deleted messages were not removed.")
        else:
            self.log.failure("pop3: unexpected error in QUIT", failure)
            self._reply(INTERNAL_ERROR)
        self._close()

    def _commit_done(self) -> None:
        self._committing = False
        if self._lost:
            self._release()  # connectionLost left it to us

    def do_STLS(self, arg: str) -> None:
        if self.tls is None:
            self._bad("-ERR Unknown command.")
            return
        if self.tls_active:
            self._bad("-ERR TLS is already active.")
            return
        self._reply("+OK Begin TLS negotiation now.")
        # RFC 2595 / CVE-2011-0411: what came after STLS in clear text must
        # not be read as if it came over TLS.
        self._buffer = b""
        self.user = ""
        self.transport.startTLS(self.tls)  # type: ignore[union-attr]
        self.tls_active = True
        self.info.tls = True

    def do_USER(self, arg: str) -> None:
        refusal = self._login_refusal(plaintext=True)
        if refusal is not None:
            self._bad(refusal)
            return
        if not arg.strip():
            self._bad("-ERR No username given.")
            return
        self.user = arg.strip()
        self._reply("+OK")

    def do_PASS(self, arg: str) -> None:
        refusal = self._login_refusal(plaintext=True)
        if refusal is not None:
            self._bad(refusal)
            return
        if not self.user:
            self._bad("-ERR No username given.")
            return
        user, self.user = self.user, ""
        # RFC 1939: the password is the rest of the line, spaces included.
        self._login(PasswordCredentials(user, arg, self.info.rip, "pop3"), user, "PLAIN")

    def do_APOP(self, arg: str) -> None:
        if self.apop_timestamp is None:
            self._bad("-ERR Unknown command.")
            return
        refusal = self._login_refusal(plaintext=False)
        if refusal is not None:
            self._bad(refusal)
            return
        user, _, digest = arg.strip().rpartition(" ")
        if not user or len(digest) != 32:
            self._bad("-ERR Invalid APOP parameters.")
            return
        creds = APOPCredentials(user, self.apop_timestamp, digest, self.info.rip, "pop3")
        self._login(creds, user, "APOP")

    def do_AUTH(self, arg: str) -> None:
        mechanism, _, initial = arg.strip().partition(" ")
        if not mechanism:
            # RFC 1734's AUTH without argument lists the mechanisms.
            allowed = self._login_refusal(plaintext=True) is None
            self._multi("+OK", ["PLAIN"] if allowed else [])
            return
        if mechanism.upper() != "PLAIN":
            self._bad("-ERR Unsupported authentication mechanism.")
            return
        refusal = self._login_refusal(plaintext=True)
        if refusal is not None:
            self._bad(refusal)
            return
        if initial:
            # RFC 5034 section 4: "=" is an empty initial response.
            self._auth_plain("" if initial.strip() == "=" else initial.strip())
            return
        self._sasl = self._auth_plain_continue
        self._reply("+ ")

    def _auth_plain_continue(self, response: str) -> None:
        if response.strip() == "*":
            self._reply("-ERR Authentication aborted by client.")
            return
        self._auth_plain(response.strip())

    def _auth_plain(self, encoded: str) -> None:
        try:
            decoded = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            self._bad("-ERR Invalid base64 data in continued response.")
            return
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            self._bad("-ERR [AUTH] Invalid AUTH PLAIN response.")
            return
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            self._bad("-ERR [AUTH] Invalid AUTH PLAIN response.")
            return
        if not authcid:
            self._bad("-ERR [AUTH] Invalid AUTH PLAIN response.")
            return
        creds = PasswordCredentials(authcid, password, self.info.rip, "pop3")
        if authzid and authzid.lower() != authcid.lower():
            # No proxy authorisation: fail like a bad password (same delay).
            creds = PasswordCredentials(authcid, "\0" + password, self.info.rip, "pop3")
        self._login(creds, authcid, "PLAIN")

    # login -----------------------------------------------------------------

    def _login(self, credentials: Any, user: str, method: str) -> None:
        self.auth_attempts += 1
        self.user = user
        self.method = method
        self._busy = True
        d = self.portal.login(credentials, None, IMailAccount)
        self._login_d = d
        d.addCallbacks(self._logged_in, self._login_failed)
        d.addErrback(self._unexpected)
        d.addBoth(self._login_done)

    def _logged_in(self, result: tuple[Any, Any, Callable[[], None]]) -> Deferred[None] | None:
        self._login_d = None  # authenticated: nothing left to withdraw
        _, account, logout = result
        if self._lost:
            logout()
            return None
        if self.userip is not None:
            # pop3d_max_userip_connections (pymta.userip, Dovecot's limit).
            self._userip_key = self.userip.admit(account.user, self.info.rip)
            if not self._userip_key:
                logout()
                self._login_error = "user+IP connection limit"
                self._reply("-ERR [SYS/TEMP] " + self.userip.refusal.decode("ascii"))
                return None
        self._logout = logout
        self.user = account.user
        opening = defer.ensureDeferred(self._open_inbox(account.folders))
        return opening.addCallbacks(self._loaded, self._load_failed)

    async def _open_inbox(
        self, folders: IAsyncUserMailbox
    ) -> tuple[IAsyncFolder, list[MessageInfo], int] | None:
        """Open and lock INBOX and number its new mail (the store reads
        every new file and may fsync its index: its threads); None when
        another session holds it."""
        inbox = await folders.folder("INBOX")
        lock = await inbox.lock()
        if lock is None:
            return None
        if self._lost:
            lock.release()
            return None
        self._lock = lock
        await inbox.refresh()
        messages = await inbox.messages()
        status = await inbox.status()
        return inbox, messages, status.uidvalidity

    def _load_failed(self, failure: Failure) -> None:
        failure.trap(MailStoreError)
        self._release()
        if self._lost:
            return
        self.log.error(
            "pop3({user}): cannot open INBOX: {error}", user=self.user, error=failure.value
        )
        self._reply("-ERR [SYS/TEMP] Couldn't open INBOX.")

    def _loaded(self, opened: tuple[IAsyncFolder, list[MessageInfo], int] | None) -> None:
        if self._lost:
            self._release()
            return
        if opened is None:
            self._release()
            self._login_error = "mailbox in use"
            self._reply(IN_USE)
            return
        inbox, messages, uidvalidity = opened
        self.maildrop = Maildrop(inbox, messages, uidvalidity)
        self.state = TRANSACTION
        self._leave_preauth()
        pop3log.login(self.log, self.info, self.user, self.method)
        self._reply("+OK Logged in.")

    def _login_failed(self, failure: Failure) -> None:
        if self._lost:
            return
        self._login_error = "auth failed"
        if failure.check(UnauthorizedLogin):
            self._reply(AUTH_FAILED)
        elif failure.check(TooManyLoginAttempts):
            self._login_error = "too many login attempts"
            self._reply(TOO_MANY_ATTEMPTS)
        elif failure.check(AuthTemporaryError):
            self.log.error("pop3-login: passdb: {error}", error=failure.value)
            self._reply(TEMP_FAILURE)
        elif failure.check(MailboxUnavailable):
            unavailable = failure.value
            permanent = isinstance(unavailable, MailboxUnavailable) and unavailable.permanent
            self.log.error("pop3-login: {error}", error=failure.value)
            code = "SYS/PERM" if permanent else "SYS/TEMP"
            self._reply(f"-ERR [{code}] Mailbox unavailable.")
        else:
            failure.raiseException()
            return
        if self.auth_attempts >= self.settings.auth_attempt_limit:
            self._close()

    def _unexpected(self, failure: Failure) -> None:
        self.log.failure("pop3: unexpected error during login", failure)
        self._release()
        if not self._lost:
            self._reply(INTERNAL_ERROR)

    def _login_done(self, _: object) -> None:
        self._busy = False
        self._login_d = None
        if not self._lost:
            self._process()

    def _log_login_disconnect(self) -> None:
        secs = int(self.clock.seconds() - self._connected_at)
        if self._refused:
            reason = "too many connections from this address"
        elif self.auth_attempts:
            reason = f"{self._login_error}, {self.auth_attempts} attempts in {secs} secs"
        else:
            reason = f"no auth attempts in {secs} secs"
        pop3log.login_disconnected(self.log, self.info, reason, self.user, self.method)

    def _log_logout(self) -> None:
        drop = self.maildrop
        if drop is None:
            return
        c = drop.counters
        counters = (
            f"top={c.top_count}/{c.top_bytes}, retr={c.retr_count}/{c.retr_bytes}, "
            f"del={drop.deleted_count if self.state == UPDATE else 0}/{drop.initial_count}, "
            f"size={drop.initial_size}"
        )
        pop3log.logout(self.log, self.info, self.user, self._end_reason, counters)

    # TRANSACTION -------------------------------------------------------------

    def _number(self, arg: str) -> int | None:
        assert self.maildrop is not None
        try:
            return self.maildrop.parse_number(arg.strip())
        except BadMessageNumber as e:
            self._reply(f"-ERR {e}")
            return None

    def do_NOOP(self, arg: str) -> None:
        self._reply("+OK")

    def do_STAT(self, arg: str) -> None:
        assert self.maildrop is not None
        count, size = self.maildrop.stat()
        self._reply(f"+OK {count} {size}")

    def do_LIST(self, arg: str) -> None:
        drop = self.maildrop
        assert drop is not None
        if arg.strip():
            n = self._number(arg)
            if n is not None:
                self._reply(f"+OK {n} {drop.info(n).rfc822_size}")
            return
        count, size = drop.stat()
        lines = [f"{n} {m.rfc822_size}" for n, m in drop.live()]
        self._multi(f"+OK {count} messages ({size} octets)", lines)

    def do_UIDL(self, arg: str) -> None:
        drop = self.maildrop
        assert drop is not None
        if arg.strip():
            n = self._number(arg)
            if n is not None:
                self._reply(f"+OK {n} {drop.uidl(n)}")
            return
        self._multi("+OK", [f"{n} {drop.uidl(n)}" for n, _ in drop.live()])

    def do_DELE(self, arg: str) -> None:
        drop = self.maildrop
        assert drop is not None
        n = self._number(arg)
        if n is not None:
            drop.delete(n)
            self._reply("+OK Marked to be deleted.")

    def do_RSET(self, arg: str) -> None:
        assert self.maildrop is not None
        self.maildrop.reset()
        self._reply("+OK")

    def _send_file(self, n: int, lines: int | None) -> None:
        """RETR (lines None) or TOP of a large message, from its file in
        pieces as the client reads them (pymta.stream)."""
        drop = self.maildrop
        assert drop is not None

        def opened(file: BinaryIO) -> None:
            if lines is not None:
                first = b"+OK\r\n"
            else:
                first = b"+OK %d octets\r\n" % drop.info(n).rfc822_size
            self._stream_pending = []
            self._start_stream(
                self._file_pieces(file, n, first, lines), self._stream_pending.append
            )

        self._store_call(drop.open(n), opened, n)

    def _store_call(self, d: Deferred[T], then: Callable[[T], None], n: int) -> None:
        """Answer a command when its store call ``d`` fires: later commands
        wait meanwhile (one message read at a time). A store error is the
        ``-ERR`` of a message that is no longer there."""
        self._busy = True
        waiting = False

        def arrived(value: T) -> None:
            self._busy = False
            if not self._lost:
                then(value)

        def failed(failure: Failure) -> None:
            self._busy = False
            if self._lost:
                return
            if failure.check(MailStoreError):
                self.log.warn(
                    "pop3({user}): message {n}: {error}", user=self.user, n=n, error=failure.value
                )
                self._reply(f"-ERR [SYS/TEMP] Message {n} is no longer available.")
                return
            self.log.failure("pop3({user}): unexpected error", failure, user=self.user)
            self._reply(INTERNAL_ERROR)

        def go_on(_: object) -> None:
            # Answered later than the command (the store's thread): the
            # command loop stopped at this command and must look again.
            if waiting and not self._busy and not self._lost:
                if self._processing:
                    self.clock.callLater(0, self._process)
                else:
                    self._process()

        d.addCallbacks(arrived, failed).addErrback(failed).addBoth(go_on)
        waiting = True

    def _file_pieces(
        self, file: BinaryIO, n: int, first: bytes, lines: int | None
    ) -> Iterator[bytes]:
        drop = self.maildrop
        assert drop is not None
        sent = 0
        yield first
        try:
            for piece in wire_pieces(file.read, lines):
                sent += len(piece)
                yield piece
        finally:
            file.close()
        yield TERMINATOR
        if lines is None:
            drop.counters.retr_count += 1
            drop.counters.retr_bytes += sent
            drop.mark_retrieved(n)
        else:
            drop.counters.top_count += 1
            drop.counters.top_bytes += sent

    def _stream_flush(self) -> None:
        data = b"".join(self._stream_pending)
        self._stream_pending.clear()
        if data and not self._lost and self.transport is not None:
            # Output the client takes is activity, not idleness.
            if self._timer is not None and self._timer.active():
                self._timer.reset(self.settings.timeout)
            send(self.transport, data)

    def _stream_failed(self, error: BaseException) -> None:
        # Cut off in the middle of a multi-line answer: nothing more the
        # client could read coherently, so the session ends.
        self.log.failure(
            "pop3({user}): error while sending a message", Failure(error), user=self.user
        )
        self._end_reason = "Internal error"
        self._close()

    def do_RETR(self, arg: str) -> None:
        drop = self.maildrop
        assert drop is not None
        n = self._number(arg)
        if n is None:
            return
        if drop.info(n).size >= STREAM_MIN:
            self._send_file(n, None)
            return

        def send_message(content: bytes) -> None:
            body = to_wire(content)
            size = drop.info(n).rfc822_size
            send(self.transport, b"".join((b"+OK %d octets\r\n" % size, body, TERMINATOR)))
            drop.counters.retr_count += 1
            drop.counters.retr_bytes += len(body)
            drop.mark_retrieved(n)

        self._store_call(drop.read(n), send_message, n)

    def do_TOP(self, arg: str) -> None:
        drop = self.maildrop
        assert drop is not None
        number, _, lines = arg.strip().partition(" ")
        lines = lines.strip()
        if not number or not lines.isdigit():
            self._bad("-ERR Invalid arguments: TOP msg lines.")
            return
        n = self._number(number)
        if n is None:
            return
        if drop.info(n).size >= STREAM_MIN:
            self._send_file(n, int(lines[:12]))
            return
        count = int(lines[:12])

        def send_top(content: bytes) -> None:
            body = to_wire(top(content, count))
            send(self.transport, b"".join((b"+OK\r\n", body, TERMINATOR)))
            drop.counters.top_count += 1
            drop.counters.top_bytes += len(body)

        self._store_call(drop.read(n), send_top, n)
