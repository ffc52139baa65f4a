"""The IMAP server protocol: connection, states, login, dispatch (RFC 3501).

A state machine over a transport in the states of RFC 3501 section 3: not
authenticated (CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, AUTHENTICATE PLAIN
with RFC 4959 SASL-IR, LOGIN), authenticated (mailbox commands of
:mod:`pymta.imap.mailbox_commands`, ENABLE, NAMESPACE, IDLE) and selected
(message commands of :mod:`pymta.imap.message_commands`).
``ENABLE IMAP4rev2`` (RFC 9051) switches a session to UTF-8 mailbox
names, drops ``\\Recent`` and ``RECENT``, and makes SEARCH answer with
``ESEARCH``; both revisions get ESEARCH (RFC 4731), SEARCHRES (RFC 5182),
BINARY (RFC 3516), STATUS=SIZE (RFC 8438) and LIST-STATUS (RFC 5819).
Commands are read by :class:`pymta.imap.parser.CommandReader` and
answered in order, pipelined or not; while a login is checked later
commands wait.
Responses of one batch of input are written with one write, straight to
the socket when nothing is buffered (:func:`pymta.output.send`). A FETCH
that reads messages is answered through :meth:`IMAPServer.stream`, one
message at a time as the client reads (pymta.stream). LOGOUT and every
BYE close the connection through pymta.hangup (over TLS too).

Untrusted input: every byte from the client. Limits: line length, literal
size (refused before reading, RFC 7889 ``[TOOBIG]``), whole command size,
nesting; ``imapd_hard_error_limit`` BAD responses end the session with
``* BYE``; an idle client is disconnected after ``imapd_login_timeout``
before login and ``imapd_timeout`` after (IDLE keeps a session alive).
After STARTTLS anything the client sent in the same packet is discarded
(CVE-2011-0411). LOGIN and AUTHENTICATE are refused (LOGINDISABLED)
without TLS except from loopback and ``imapd_plaintext_auth_networks``.

Blocking: SELECT/EXAMINE, NOOP/IDLE's rescan, FETCH, STORE, EXPUNGE,
CLOSE, CHECK, COPY, MOVE, APPEND and the folder commands (LIST, LSUB,
STATUS, CREATE, DELETE, RENAME, SUBSCRIBE) reach the mail store through its
asynchronous API (pymta.mailstore.asyncstore), which runs them where the
store decides (the Maildir store: scans, writes and their fsyncs, folder
changes, expunges, copies and flag changes of many messages in its
threads, one folder's calls in order; its listeners are told in the
reactor thread). The login's password check runs in the checker's
threads. SEARCH and the updating searches (CONTEXT=SEARCH) go through
it too (:mod:`pymta.imap.matching`): a cold header cache is read in the
store's threads, whole messages in its scan (the scan workers); so do
NOTIFY, CATENATE's URLs, METADATA's mailbox look-up and the untagged
updates after each command (read first, :meth:`SelectedView.prepare`; a
tagged response waits for what the store answers later, the updates
before it). SORT and THREAD still call the synchronous store for some
reads (of the index and the header cache, in the reactor thread).
Several reactor processes (``pymta_processes``) are the way past one core.

Authentication is a twisted.cred Portal asked for
:class:`~pymta.auth.interface.IMailAccount`. Writes: only through the mail
store. Logs: Dovecot-style login and logout lines (pymta.imap.log);
unexpected errors with their traceback, answered ``NO [SERVERBUG]``.
"""

from __future__ import annotations

import base64
import binascii
import errno
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import interfaces
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.auth.credentials import PasswordCredentials
from pymta.auth.errors import AuthTemporaryError, MailboxUnavailable, TooManyLoginAttempts
from pymta.auth.interface import IMailAccount
from pymta.hangup import hang_up
from pymta.imap import append, context, metadata, notify, sort, thread
from pymta.imap import log as imaplog
from pymta.imap import mailbox_commands as mc
from pymta.imap import message_commands as msg
from pymta.imap import quota_commands as qc
from pymta.imap.compress import Compression, CompressionError
from pymta.imap.parser import (
    Atom,
    Command,
    CommandReader,
    Continue,
    ParseError,
    Refused,
    Token,
    tag_of,
    tokenize,
)
from pymta.imap.scan import ScanGate
from pymta.imap.settings import IMAPSettings
from pymta.imap.stored import when_stored
from pymta.imap.view import SelectedView
from pymta.mailstore.asyncstore import IAsyncUserMailbox
from pymta.mailstore.interface import IUserMailbox, not_writable
from pymta.mailstore.prefetch import ThreadRunner
from pymta.netmatch import is_loopback
from pymta.output import quick_ack
from pymta.output import send as send_now
from pymta.preauth import PreauthConnections
from pymta.stream import Pieces, Streamer, StreamingSession
from pymta.userip import UserIPLimit

NOT_AUTHENTICATED = "not authenticated"
AUTHENTICATED = "authenticated"
SELECTED = "selected"
LOGOUT = "logout"

ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
NOAUTH = frozenset({NOT_AUTHENTICATED})
AUTH = frozenset({AUTHENTICATED, SELECTED})
SEL = frozenset({SELECTED})

BASE_CAPABILITIES = (
    "IMAP4rev1",
    "IMAP4rev2",
    "SASL-IR",
    "LITERAL+",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "LIST-EXTENDED",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "SEARCHRES",
    "BINARY",
    "STATUS=SIZE",
    "LIST-STATUS",
    "UTF8=ACCEPT",
    # pymta.imap.sort, pymta.imap.thread, pymta.imap.results
    "SORT",
    "SORT=DISPLAY",
    "ESORT",
    "PARTIAL",
    # pymta.imap.context, pymta.imap.notify
    "CONTEXT=SEARCH",
    "CONTEXT=SORT",
    "NOTIFY",
    "THREAD=REFERENCES",
    "THREAD=ORDEREDSUBJECT",
    # pymta.imap.append
    "MULTIAPPEND",
    "CATENATE",
    # pymta.imap.objectid, pymta.imap.preview
    "OBJECTID",
    "PREVIEW",
    # pymta.imap.metadata
    "METADATA",
)

#: Commands that take a UID prefix.
UID_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"})

#: Unprocessed input kept while the client does not read our responses.
INPUT_BACKLOG = 256 * 1024

#: Literal limit before login (Dovecot's imap-login is as strict).
PREAUTH_LIMIT = 8192

#: Line limit before login: room for an ID command at RFC 2971's maxima
#: (30 fields of 30 octets, values of 1024; about 31.8 KB), which Dovecot's
#: imap-login accepts, and no more.
PREAUTH_LINE_LIMIT = 34 * 1024

Handler = Callable[["IMAPServer", bytes, list[Token], bool], None]


class IMAPServer(StreamingSession, Protocol):
    """One IMAP session. Built by IMAPServerFactory; collaborators injected."""

    def __init__(
        self,
        settings: IMAPSettings,
        portal: Portal,
        clock: IReactorTime,
        *,
        tls: Any = None,
        trusted: Callable[[str], bool] = lambda ip: False,
        random_bytes: Callable[[int], bytes],
        pid: int = 0,
        logger: Logger | None = None,
        run_in_thread: ThreadRunner | None = None,
        scan_in_thread: ThreadRunner | None = None,
        scan_gate: ScanGate | None = None,
        preauth: PreauthConnections | None = None,
    ) -> None:
        self.settings = settings
        # Connections not logged in yet per client (imapd_max_login_ip_connections).
        self.preauth = preauth
        self._preauth_counted = False
        #: Set by the factory: imapd_max_userip_connections, or None.
        self.userip: UserIPLimit | None = None
        self._userip_key = ""
        self._refused = False
        # Runs the session's own work off the reactor thread (quota sums,
        # SORT's keys); None keeps it in the calling thread.
        self.run_in_thread = run_in_thread
        # Where the store's scans of whole messages test them (body SEARCH,
        # pymta.imap.scan: worker processes), at most a few per user at once
        # (shared by sessions).
        self.scan_in_thread = scan_in_thread
        self.scan_gate = scan_gate if scan_gate is not None else ScanGate()
        self.portal = portal
        self.clock = clock
        self.tls = tls
        self._trusted = trusted
        self._random = random_bytes
        self.pid = pid
        self.log = logger if logger is not None else imaplog.log

        #: QUOTA (RFC 9208): the factory's IMAPQuota, or None (not offered).
        self.quota: Any = None
        self.state = NOT_AUTHENTICATED
        self.user = ""
        self.method = ""
        self.mailbox: IUserMailbox | None = None
        #: The same folders through the store's asynchronous API (FETCH).
        self.folders: IAsyncUserMailbox | None = None
        self.view: SelectedView | None = None
        self.tls_active = False
        self.condstore = False
        self.qresync = False
        # ENABLE IMAP4rev2 (RFC 9051): UTF-8 mailbox names, no \Recent,
        # SEARCH answered with ESEARCH.
        self.rev2 = False
        # ENABLE UTF8=ACCEPT (RFC 6855): UTF-8 mailbox names only.
        self.utf8 = False
        # RFC 5182 SEARCHRES: the UIDs the last SEARCH RETURN (SAVE) found ("$").
        self.saved: list[int] = []
        # RFC 5267 CONTEXT=SEARCH: the updating searches of the selected mailbox.
        self.contexts: context.SearchContexts | None = None
        # Output after a tagged response held while updating searches are
        # tested off the reactor (see tagged()).
        self._held: list[bytes] | None = None
        # RFC 5465 NOTIFY: what the client asked for, and the factory's hub
        # through which sessions of one user hear of mailbox list changes.
        self.notifier: notify.Notifier | None = None
        self.notify_hub: notify.NotifyHub | None = None
        self._list_command = False
        self.auth_attempts = 0
        self.bad_commands = 0
        self.counters = imaplog.Counters()
        self.info = imaplog.SessionInfo("", "", pid, "")
        # Before login a client needs literals for a user name and password
        # only: an anonymous client cannot make the server buffer megabytes.
        self.reader = CommandReader(
            min(settings.line_length_limit, PREAUTH_LINE_LIMIT),
            min(settings.max_literal_size, PREAUTH_LIMIT),
            min(settings.command_limit, PREAUTH_LINE_LIMIT + 4 * PREAUTH_LIMIT),
        )

        self._out: list[bytes] = []
        # COMPRESS=DEFLATE (RFC 4978), once the client asked for it.
        self.compression: Compression | None = None
        self._line_handler: Callable[[bytes], None] | None = None
        self._busy = False
        self._paused = False
        self._reading_paused = False
        self._processing = False
        self._closing = False
        self._lost = False
        self._idle_tag: bytes | None = None
        self._timer: IDelayedCall | None = None
        self._hangup_timer: IDelayedCall | None = None
        self._streamer: Streamer | None = None  # a long answer being written
        self._streamer_starting = False
        self._logout: Callable[[], None] | None = None
        self._login_d: Deferred[Any] | None = None
        self._connected_at = 0.0
        self._end_reason = "Connection closed"
        self._login_error = "auth failed"

    # connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = self.transport.getHost()  # type: ignore[union-attr]
        session = base64.b64encode(self._random(9)).decode("ascii")
        self.tls_active = interfaces.ISSLTransport.providedBy(self.transport)
        self.info = imaplog.SessionInfo(
            getattr(peer, "host", "") or "",
            getattr(host, "host", "") or "",
            self.pid,
            session,
            self.tls_active,
        )
        self._connected_at = self.clock.seconds()
        # Registered first: every way out, the refusal too, hangs up through
        # pymta.hangup, which unregisters it.
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if self.preauth is not None:
            if not self.preauth.admit(self.info.rip):
                # A client holding many connections before login (slowloris):
                # this one gets BYE instead of the greeting (RFC 3501 7.1.5).
                self._refused = True
                self.send(b"* BYE Too many connections from your address, try later.\r\n")
                self.close()
                return
            self._preauth_counted = True
        self._timer = self.clock.callLater(self.settings.login_timeout, self._timed_out)
        caps = " ".join(self.capabilities()).encode("ascii")
        self.send(b"* OK [CAPABILITY " + caps + b"] pymta ready.\r\n")
        self.flush()

    def _leave_preauth(self) -> None:
        if self._preauth_counted and self.preauth is not None:
            self._preauth_counted = False
            self.preauth.release(self.info.rip)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._leave_preauth()
        if self._userip_key and self.userip is not None:
            self.userip.release(self._userip_key)
            self._userip_key = ""
        for timer in (self._timer, self._hangup_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._hangup_timer = None
        self._stop_stream()
        if self.state == NOT_AUTHENTICATED:
            secs = int(self.clock.seconds() - self._connected_at)
            if self._refused:
                why = "too many connections from this address"
            elif self.auth_attempts:
                why = f"{self._login_error}, {self.auth_attempts} attempts in {secs} secs"
            else:
                why = f"no auth attempts in {secs} secs"
            imaplog.login_disconnected(self.log, self.info, why, self.user, self.method)
        elif self.mailbox is not None:
            imaplog.logout(self.log, self.info, self.user, self._end_reason, self.counters)
        self.stop_notify()
        self.unselect()
        self.state = LOGOUT
        if self._login_d is not None:
            # A login still waiting for its penalty is withdrawn.
            login_d, self._login_d = self._login_d, None
            login_d.cancel()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()

    def _timed_out(self) -> None:
        self._timer = None
        if self._idle_tag is not None:
            # RFC 2177: the client restarts IDLE within 29 minutes; keep it.
            self.send(b"* OK Still here\r\n")
            self.flush()
            self._timer = self.clock.callLater(self.settings.timeout, self._timed_out)
            return
        self._end_reason = "Disconnected for inactivity"
        self.send(b"* BYE Disconnected for inactivity.\r\n")
        self.close()

    def close(self) -> None:
        self._closing = True
        if self._held is not None:
            held, self._held = self._held, None
            self._out.extend(held)
        self.reader.clear()
        self.flush()
        if self.transport is not None and not self._lost and self._hangup_timer is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            # The producer goes first, or a TLS layer never closes (pymta.hangup).
            self._hangup_timer = hang_up(
                self.transport, self.clock, reading_paused=self._reading_paused
            )
            self._reading_paused = False

    # IPushProducer: stop reading while the client does not read ------------

    # Reading from the socket is paused only once enough unprocessed input has
    # piled up: a TLS layer pauses its producer during the handshake, which
    # must still read from the socket to finish.

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
            backlog = self.reader.pending()
            if self.compression is not None:
                backlog += self.compression.pending()
            if backlog > INPUT_BACKLOG:
                self._reading_paused = True
                self.transport.pauseProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self._closing = True

    # output ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; flush() writes them in one call."""
        if self._held is not None:
            self._held.append(data)  # after a tagged response not sent yet
            return
        self._out.append(data)

    def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out = []
        if not self._lost and self.transport is not None:
            self.counters.bytes_out += len(data)
            if self.compression is not None:
                data = self.compression.compress(data)
            # Straight to the socket when nothing is buffered (pop3d's output
            # path): Twisted's write would cost an epoll_ctl pair and one more
            # reactor round per response, while the client waits for it.
            send_now(self.transport, data)

    def stream(self, pieces: Pieces) -> None:
        """Answer with what pieces yields, as fast as the client reads it
        (pymta.stream); later commands wait until it ends."""
        self._start_stream(pieces, self.send)

    def _stream_flush(self) -> None:
        # Output the client takes is activity: a long FETCH to a slow
        # reader is not idle (Dovecot counts output too).
        if self._timer is not None and self._timer.active() and self._out:
            self._timer.reset(self.settings.timeout)
        self.flush()

    def _stream_failed(self, error: BaseException) -> None:
        # The answer stopped in the middle (a literal's length already
        # sent): the client cannot be answered coherently any more.
        self.log.failure(
            "imap({user}): unexpected error while answering",
            Failure(error),
            user=self.user,
        )
        self._end_reason = "Internal error"
        self._out = []
        self.close()

    def tagged(self, tag: bytes, status: bytes, text: bytes, *, expunge: bool = True) -> None:
        """Updates of the selected mailbox, then the tagged response. When
        updating searches (RFC 5267) must test changed messages off the
        reactor first, the tagged response, and whatever is sent after it,
        wait for that; so do later commands."""
        line = tag + b" " + status + b" " + text + b"\r\n"
        if self._list_command:
            # CREATE, DELETE, RENAME, (UN)SUBSCRIBE: NOTIFY sessions of the
            # user compare their snapshots (this one too).
            self._list_command = False
            if self.notify_hub is not None:
                self.notify_hub.poke(self.user)
        if self._held is None and self._updates_need_preparing():
            self._held = [line]
            self._prepare_updates().addCallback(lambda _: self._release(expunge))
            return
        self.send_updates(expunge)
        self.send(line)

    def _updates_need_preparing(self) -> bool:
        """The selected mailbox's updates wait for the store's answers (the
        view's records of new and changed messages, when the store does not
        answer at once: asking starts the reads), updating searches must
        test changed messages off the reactor, or NOTIFY waits for the
        store's answers (a list comparison, STATUS), before the updates can
        go out."""
        view, contexts, notifier = self.view, self.contexts, self.notifier
        return (
            (view is not None and view.has_updates() and view.prepare() is not None)
            or (contexts is not None and contexts.needs_preparing())
            or (notifier is not None and notifier.needs_preparing())
        )

    def _prepare_updates(self) -> Deferred[None]:
        """Fires when what :meth:`_updates_need_preparing` waits for is done."""
        waits: list[Deferred[Any]] = []
        if self.view is not None:
            reading = self.view.prepare()
            if reading is not None:
                waits.append(reading)
        if self.contexts is not None and self.contexts.needs_preparing():
            waits.append(self.contexts.prepare())
        if self.notifier is not None and self.notifier.needs_preparing():
            waits.append(self.notifier.prepare())
        done: Deferred[None] = Deferred()
        DeferredList(waits, consumeErrors=True).addBoth(lambda _: done.callback(None))
        return done

    def _release(self, expunge: bool) -> None:
        held, self._held = self._held, None
        if self._lost or held is None:
            return
        self.send_updates(expunge)
        self._out.extend(held)
        self.flush()
        if self.contexts is not None and self.contexts.has_news():
            # Changes heard while the response was held: pushed now if the
            # client asked for pushes (NOTIFY), else with the next command.
            self.context_wake()
        self._process()

    def ok(self, tag: bytes, text: bytes, *, expunge: bool = True) -> None:
        self.tagged(tag, b"OK", text, expunge=expunge)

    def no(self, tag: bytes, text: bytes, *, expunge: bool = True) -> None:
        self.tagged(tag, b"NO", text, expunge=expunge)

    def bad(self, tag: bytes, text: bytes) -> None:
        self.bad_commands += 1
        if self.bad_commands >= self.settings.hard_error_limit:
            self._end_reason = "Too many invalid IMAP commands"
            self.send(b"* BYE Too many invalid IMAP commands.\r\n")
            self.close()
            return
        self.send(tag + b" BAD " + text + b"\r\n")

    def send_updates(self, expunge: bool) -> None:
        if self.notifier is not None and self.notifier.has_pending():
            self._out.extend(self.notifier.take())
        view = self.view
        if view is None:
            return
        if view.invalidated:
            self._end_reason = "Mailbox UIDVALIDITY changed"
            self.send(b"* BYE [UIDVALIDITY] Mailbox was renumbered; reconnect.\r\n")
            self.close()
            return
        contexts = self.contexts
        if contexts is not None:
            # RFC 5267 4.4.1: REMOVEFROM numbered before the EXPUNGEs, ADDTO
            # after the EXISTS that announces the message.
            self._out.extend(contexts.before_expunges(expunge))
        if view.has_updates():
            # What the store answers at once is reported now; what it
            # answers later goes with the next command, or is pushed (IDLE,
            # NOTIFY) through the view's wake.
            view.prepare()
            last = view.uids[-1] if view.uids else 0
            self._out.extend(view.updates(expunge, self.qresync, self.condstore))
            if self.notifier is not None and view.uids and view.uids[-1] > last:
                # NOTIFY MessageNew with FETCH attributes (RFC 5465 5.2).
                new = list(view.uids[bisect_right(view.uids, last) :])
                self._out.extend(self.notifier.new_message_fetches(new))
        if contexts is not None:
            self._out.extend(contexts.after_updates())

    # input -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.counters.bytes_in += len(data)
        if self._timer is not None and self._timer.active():
            timeout = (
                self.settings.login_timeout
                if self.state == NOT_AUTHENTICATED
                else self.settings.timeout
            )
            self._timer.reset(timeout)
        if self.compression is not None:
            self.compression.received(data)
        else:
            self.reader.feed(data)
        sent = self.counters.bytes_out
        self._process()
        if self.counters.bytes_out == sent and self.reader.in_command() and not self._lost:
            # Nothing to say yet and the command is not complete (an
            # APPEND literal whose CRLF is still in the client's Nagle
            # buffer): acknowledge now, not 40 ms later.
            quick_ack(self.transport)
        self._throttle()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not (
                self._busy or self._paused or self._closing or self._lost or self._held is not None
            ):
                if self._line_handler is not None:
                    line = self.reader.read_line()
                    if line is None:
                        if self._inflate():
                            continue
                        break
                    handler, self._line_handler = self._line_handler, None
                    handler(line)
                    continue
                event = self.reader.next()
                if event is None:
                    if self._inflate():
                        continue
                    break
                if isinstance(event, Continue):
                    self.send(b"+ OK\r\n")
                elif isinstance(event, Refused):
                    self.bad_commands += 1
                    self.send(event.response)
                    if event.fatal or self.bad_commands >= self.settings.hard_error_limit:
                        self._end_reason = "Too many invalid IMAP commands"
                        self.close()
                elif isinstance(event, Command):
                    self._command(event.data)
        finally:
            self._processing = False
            self.flush()

    def start_compression(self) -> None:
        """COMPRESS=DEFLATE from now on, both ways (pymta.imap.compress);
        what the client sent after the COMPRESS command is compressed."""
        self.compression = Compression()
        self.compression.received(self.reader.take_buffered())

    def _inflate(self) -> bool:
        """Give the reader more of the client's compressed input, as much as
        fits one command (a small deflate bomb cannot fill memory); False
        when there is nothing to give. Invalid data ends the session."""
        if self.compression is None or not self.compression.has_pending():
            return False
        room = self.reader.command_limit + self.reader.line_limit - self.reader.pending()
        try:
            data = self.compression.inflate(room)
        except CompressionError as e:
            self.log.info(
                "imap({user}): invalid compressed input: {error}", user=self.user, error=e
            )
            self._end_reason = "Invalid compressed data"
            self.send(b"* BYE Invalid compressed data.\r\n")
            self.close()
            return False
        if not data:
            return False
        self.reader.feed(data)
        return True

    def _command(self, data: bytes) -> None:
        tag = tag_of(data)
        if tag == b"*":
            self.bad(b"*", b"Error in IMAP command received by server.")
            return
        try:
            tokens = tokenize(data[len(tag) :])
        except ParseError as e:
            self.bad(tag, f"Error in IMAP command: {e}".encode())
            return
        if not tokens or not isinstance(tokens[0], Atom):
            self.bad(tag, b"Error in IMAP command: missing command name.")
            return
        name = tokens[0].upper()
        args = tokens[1:]
        uid = False
        if name == "UID":
            if not args or not isinstance(args[0], Atom):
                self.bad(tag, b"Error in IMAP command UID: missing command.")
                return
            name = args[0].upper()
            args = args[1:]
            uid = True
            if name not in UID_COMMANDS:
                self.bad(tag, b"Error in IMAP command UID: unknown UID command.")
                return
        entry = COMMANDS.get(name)
        if entry is None:
            self.bad(tag, b"Error in IMAP command received by server.")
            return
        states, handler = entry
        self._list_command = name in notify.LIST_COMMANDS
        if self.state not in states:
            if self.state == NOT_AUTHENTICATED:
                self.bad(tag, b"Error in IMAP command: Not authenticated.")
            elif name in ("LOGIN", "AUTHENTICATE", "STARTTLS"):
                self.bad(tag, b"Error in IMAP command: Already authenticated.")
            else:
                self.bad(tag, b"Error in IMAP command: No mailbox selected.")
            return
        try:
            handler(self, tag, args, uid)
        except ParseError as e:
            self.bad(tag, f"Error in IMAP command {name}: {e}".encode())
        except mc.NameRefused as e:
            self.no(tag, str(e).encode())
        except Exception as e:
            if self.store_refused(tag, e):
                return
            self.log.failure(
                "imap({user}): unexpected error in {command}", user=self.user, command=name
            )
            self.no(
                tag,
                b"[SERVERBUG] Internal error occurred. Refer to server log for more information.",
            )

    def store_refused(
        self, tag: bytes, error: BaseException | None, *, expunge: bool = True
    ) -> bool:
        """Answer a write the mail store cannot take now with the code that
        says why (RFC 5530, as Dovecot answers): ``[OVERQUOTA]`` for a full
        file system or quota, ``[NOPERM]`` for a read-only one. False (and
        nothing sent) for any other error: a real fault."""
        refused = not_writable(error)
        if refused is None:
            return False
        self.log.warn("imap({user}): {error}", user=self.user, error=refused)
        if refused.errno == errno.EDQUOT:
            text = b"[OVERQUOTA] Quota exceeded (mailbox for user is full)"
        elif refused.full:
            text = b"[OVERQUOTA] Not enough disk space"
        elif refused.errno == errno.EROFS:
            text = b"[NOPERM] Mail store is read-only"
        else:
            text = b"[NOPERM] Permission denied"
        self.no(tag, text, expunge=expunge)
        return True

    @property
    def lost(self) -> bool:
        """The connection is gone (work finishing late must not act for it)."""
        return self._lost

    def later(
        self,
        d: Deferred[Any],
        then: Callable[[], Deferred[None] | None],
        tag: bytes,
        name: str,
    ) -> None:
        """Finish a command when ``d`` fires (work done off the reactor
        thread): later commands wait meanwhile, as during a login. ``then``
        runs even if ``d`` failed (the work was only preparation); its own
        unexpected errors are answered ``NO [SERVERBUG]``. When ``then``
        returns a Deferred (a command that goes on over several reactor
        turns), later commands wait for that too."""
        self._busy = True

        def prepared(result: object) -> Deferred[None] | None:
            if isinstance(result, Failure):
                self.log.failure(
                    "imap({user}): preparing {command} failed", result, user=self.user, command=name
                )
            if self._lost:
                return None
            try:
                return then()
            except Exception as e:
                if self.store_refused(tag, e):
                    return None
                self.log.failure(
                    "imap({user}): unexpected error in {command}", user=self.user, command=name
                )
                self.no(
                    tag,
                    b"[SERVERBUG] Internal error occurred. "
                    b"Refer to server log for more information.",
                )
                return None

        d.addBoth(prepared)
        d.addBoth(self._login_done)

    # capabilities ----------------------------------------------------------

    @property
    def utf8_names(self) -> bool:
        """Mailbox names are UTF-8 on the wire (IMAP4rev2 or UTF8=ACCEPT
        enabled), else modified UTF-7."""
        return self.rev2 or self.utf8

    def secure(self) -> bool:
        return self.tls_active or is_loopback(self.info.rip) or self._trusted(self.info.rip)

    def login_refusal(self) -> bytes | None:
        if self.settings.tls_required and not self.tls_active:
            return b"[PRIVACYREQUIRED] TLS is required before login."
        if not self.secure():
            return (
                b"[PRIVACYREQUIRED] Plaintext authentication disallowed on "
                b"non-secure (SSL/TLS) connections."
            )
        return None

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        # RFC 7889: the largest message APPEND takes (the literal limit).
        caps.append(f"APPENDLIMIT={self.settings.max_literal_size}")
        if self.state != NOT_AUTHENTICATED and self.compression is None:
            caps.append("COMPRESS=DEFLATE")
        if self.quota is not None:
            caps.extend(qc.CAPABILITIES)
        if self.state == NOT_AUTHENTICATED:
            if self.tls is not None and not self.tls_active:
                caps.append("STARTTLS")
            if self.login_refusal() is None:
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        return caps

    # the selected mailbox --------------------------------------------------

    def select(self, view: SelectedView) -> None:
        self.unselect()
        self.saved = []  # RFC 5182 2.1: SELECT and EXAMINE empty "$"
        self.view = view
        self.state = SELECTED
        view.wake = self._resting_wake()

    def unselect(self) -> None:
        if self.contexts is not None:
            self.contexts.close()  # RFC 5267 4.4: updates end with the selection
            self.contexts = None
        view, self.view = self.view, None
        if view is not None:
            view.close()  # stops its watch of the folder
        if self.state == SELECTED:
            self.state = AUTHENTICATED

    # IDLE (RFC 2177) -------------------------------------------------------

    def start_idle(self, tag: bytes) -> None:
        self._idle_tag = tag
        self.send_updates(True)
        self.send(b"+ idling\r\n")
        if self.view is not None:
            self.view.wake = self._idle_wake
        self._line_handler = self._idle_line
        if self.contexts is not None and self.contexts.has_news():
            self._idle_wake()  # updating searches still testing changes off the reactor

    def _idle_wake(self) -> None:
        if self._idle_tag is None or self._lost:
            return
        self._push(True)

    def _push(self, expunge: bool) -> None:
        """Send the selected mailbox's updates (and NOTIFY's) unsolicited."""
        if self._updates_need_preparing():
            # Updating searches test the changes off the reactor first, and
            # NOTIFY's lines wait for the store.
            self._prepare_updates().addCallback(lambda _: self._push_again(expunge))
            return
        self.send_updates(expunge)
        self.flush()

    def _push_again(self, expunge: bool) -> None:
        if self._idle_tag is not None:
            self._idle_wake()
        else:
            self.notify_wake()

    # NOTIFY (RFC 5465) -----------------------------------------------------

    def context_wake(self) -> None:
        """An updating search heard of a change (after the view did): push
        its ADDTO / REMOVEFROM too when the client is idling or asked for
        the selected mailbox's events."""
        if self._idle_tag is not None:
            self._idle_wake()
        elif self.notifier is not None and self.notifier.spec.selected:
            self.notify_wake()

    def _resting_wake(self) -> Callable[[], None] | None:
        """The view's wake outside IDLE: NOTIFY's push when the client asked
        for events of the selected mailbox."""
        if self.notifier is not None and self.notifier.spec.selected:
            return self.notify_wake
        return None

    def start_notify(self, notifier: notify.Notifier) -> None:
        self.notifier = notifier
        if self.view is not None and self._idle_tag is None:
            self.view.wake = self._resting_wake()

    def stop_notify(self) -> None:
        notifier, self.notifier = self.notifier, None
        if notifier is not None:
            notifier.stop()
        if self.view is not None and self._idle_tag is None:
            self.view.wake = None

    def _between_commands(self) -> bool:
        """No command is being answered: unsolicited responses may go out."""
        if self._idle_tag is not None:
            return True
        # A command partly received counts as in progress: an EXPUNGE now
        # would renumber messages the client may already have named in it.
        return not (
            self._processing
            or self._busy
            or self._paused
            or self._held is not None
            or self._streamer is not None
            or self._line_handler is not None
            or self._closing
            or self._lost
            or self.state == NOT_AUTHENTICATED
            or self.reader.in_command()
        )

    def notify_wake(self) -> None:
        """Something NOTIFY covers changed: tell the client now if no command
        is being answered (else the command's tagged response carries it)."""
        if self._lost or not self._between_commands():
            return
        if self._idle_tag is not None:
            self._idle_wake()
            return
        notifier = self.notifier
        if notifier is None:
            return
        spec = notifier.spec
        if not spec.selected and not notifier.has_pending():
            return
        view = self.view
        if view is not None and not view.invalidated and not notifier.has_pending():
            # Only the kinds of change the client asked for are pushed; the
            # rest waits for its next command, as without NOTIFY.
            appended, expunged, flagged = view.pending()
            if not (
                appended
                or (expunged and not spec.delayed)
                or (flagged and "FlagChange" in spec.selected)
                or (self.contexts is not None and self.contexts.has_news())
            ):
                return
        # selected-delayed: expunges wait for a command that may report them.
        self._push(not spec.delayed)

    def _idle_line(self, line: bytes) -> None:
        tag, self._idle_tag = self._idle_tag or b"*", None
        if self.view is not None:
            self.view.wake = self._resting_wake()
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.settings.timeout)
        if line.strip().upper() != b"DONE":
            self.bad(tag, b"Expected DONE.")
            return
        self.ok(tag, b"Idle completed.")

    # login -----------------------------------------------------------------

    def start_sasl(self, continuation: Callable[[bytes], None]) -> None:
        self.send(b"+ \r\n")
        self._line_handler = continuation

    def login(self, tag: bytes, user: str, password: str, method: str) -> None:
        self.auth_attempts += 1
        self.user = user
        self.method = method
        self._busy = True
        creds = PasswordCredentials(user, password, self.info.rip, "imap")
        d = self.portal.login(creds, None, IMailAccount)
        self._login_d = d
        d.addCallbacks(self._logged_in, self._login_failed, callbackArgs=(tag,), errbackArgs=(tag,))
        d.addErrback(self._login_unexpected, tag)
        d.addBoth(self._login_done)

    def _logged_in(self, result: tuple[Any, Any, Callable[[], None]], tag: bytes) -> None:
        self._login_d = None  # authenticated: nothing left to withdraw
        _, account, logout = result
        if self._lost:
            logout()
            return
        if self.userip is not None:
            # imapd_max_userip_connections (pymta.userip, Dovecot's limit).
            self._userip_key = self.userip.admit(account.user, self.info.rip)
            if not self._userip_key:
                logout()
                self._login_error = "user+IP connection limit"
                self.no(tag, b"[UNAVAILABLE] " + self.userip.refusal)
                return
        self._logout = logout
        self.user = account.user
        self.mailbox = account.mailbox
        self.folders = account.folders
        self.state = AUTHENTICATED
        self._leave_preauth()
        self.reader.line_limit = self.settings.line_length_limit
        self.reader.literal_limit = self.settings.max_literal_size
        self.reader.command_limit = self.settings.command_limit
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.settings.timeout)
        imaplog.login(self.log, self.info, self.user, self.method)
        caps = " ".join(self.capabilities()).encode("ascii")
        self.ok(tag, b"[CAPABILITY " + caps + b"] Logged in")

    def _login_failed(self, failure: Failure, tag: bytes) -> None:
        if self._lost:
            return
        self._login_error = "auth failed"
        if failure.check(UnauthorizedLogin):
            self.no(tag, b"[AUTHENTICATIONFAILED] Authentication failed.")
        elif failure.check(TooManyLoginAttempts):
            self._login_error = "too many login attempts"
            self.no(tag, b"[UNAVAILABLE] Too many login attempts from your address, try later.")
        elif failure.check(AuthTemporaryError):
            self.log.error("imap-login: passdb: {error}", error=failure.value)
            self.no(tag, b"[UNAVAILABLE] Temporary authentication failure.")
        elif failure.check(MailboxUnavailable):
            self.log.error("imap-login: {error}", error=failure.value)
            self.no(tag, b"[UNAVAILABLE] Mailbox unavailable.")
        else:
            failure.raiseException()
            return
        if self.auth_attempts >= self.settings.auth_attempt_limit:
            self.send(b"* BYE Too many failed logins.\r\n")
            self.close()

    def _login_unexpected(self, failure: Failure, tag: bytes) -> None:
        self.log.failure("imap: unexpected error during login", failure)
        if not self._lost:
            self.no(tag, b"[SERVERBUG] Internal error occurred.")

    def _login_done(self, _: object) -> None:
        self._login_d = None
        if self._streamer is not None:
            # The command went on as a streamed answer (a FETCH whose reads
            # waited for the store): later commands, and the untagged
            # updates they bring, wait for its end (_stream_done), never
            # in the middle of it (RFC 3501 7.4.1: no EXPUNGE during FETCH).
            return
        self._busy = False
        if not self._lost:
            self.flush()
            self._process()


# commands of any state and before login ------------------------------------


def _astring(token: Token) -> bytes:
    if isinstance(token, list):
        raise ParseError("Expected a string.")
    return token if isinstance(token, bytes) else token.encode("utf-8")


def _capability(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    s.send(b"* CAPABILITY " + " ".join(s.capabilities()).encode("ascii") + b"\r\n")
    s.ok(tag, b"Capability completed.")


def _noop(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    when_stored(s, tag, "NOOP", _refreshed(s), lambda _: s.ok(tag, b"NOOP completed."))


def _refreshed(s: IMAPServer) -> Deferred[Any]:
    """The selected folder rescanned if it changed on disk (mail delivered
    or moved by another program): the scan runs in the store's threads, its
    changes reach the view through the folder's listeners first."""
    if s.view is None:
        return succeed(None)
    store = s.view.store

    def refresh(changed: bool) -> Deferred[Any] | None:
        return store.refresh() if changed else None

    return store.changed_on_disk().addCallback(refresh)


def _logout(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    s._end_reason = "Logged out"
    s.send(b"* BYE Logging out\r\n")
    s.send(tag + b" OK Logout completed.\r\n")
    s.close()


def _id(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    s.send(b'* ID ("name" "pymta")\r\n')
    s.ok(tag, b"ID completed.")


def _starttls(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    if s.tls is None or s.tls_active:
        s.bad(tag, b"TLS is not available." if s.tls is None else b"TLS is already active.")
        return
    s.send(tag + b" OK Begin TLS negotiation now.\r\n")
    # CVE-2011-0411: what came after STARTTLS in clear text is not a command.
    s.reader.clear()
    s.flush()
    s.transport.startTLS(s.tls)  # type: ignore[union-attr]
    s.tls_active = True
    s.info.tls = True


def _login(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 2:
        raise ParseError("LOGIN takes a user name and a password.")
    refusal = s.login_refusal()
    if refusal is not None:
        s.no(tag, refusal)
        return
    try:
        user = _astring(args[0]).decode("utf-8")
        password = _astring(args[1]).decode("utf-8")
    except UnicodeDecodeError:
        s.no(tag, b"[AUTHENTICATIONFAILED] Authentication failed.")
        return
    s.login(tag, user, password, "PLAIN")


def _authenticate(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    if not args or not isinstance(args[0], Atom) or len(args) > 2:
        raise ParseError("AUTHENTICATE takes a mechanism and an optional response.")
    if args[0].upper() != "PLAIN":
        s.no(tag, b"Unsupported authentication mechanism.")
        return
    refusal = s.login_refusal()
    if refusal is not None:
        s.no(tag, refusal)
        return
    if len(args) == 2:
        initial = _astring(args[1])
        _auth_plain(s, tag, b"" if initial == b"=" else initial)
        return
    s.start_sasl(lambda line: _auth_plain(s, tag, line.strip(), continued=True))


def _auth_plain(s: IMAPServer, tag: bytes, encoded: bytes, continued: bool = False) -> None:
    if continued and encoded == b"*":
        s.bad(tag, b"Authentication aborted by client.")
        return
    try:
        decoded = base64.b64decode(encoded, validate=True)
        authzid, authcid, password = (p.decode("utf-8") for p in decoded.split(b"\0"))
    except (binascii.Error, ValueError):
        s.bad(tag, b"Invalid base64 data in continued response.")
        return
    if not authcid:
        s.no(tag, b"[AUTHENTICATIONFAILED] Authentication failed.")
        return
    if authzid and authzid.lower() != authcid.lower():
        password = "\0" + password  # no proxy authorisation: fail like a bad password
    s.login(tag, authcid, password, "PLAIN")


def _enable(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    if not args:
        raise ParseError("ENABLE needs capability names.")
    enabled: list[str] = []
    for token in args:
        if not isinstance(token, Atom):
            raise ParseError("ENABLE takes atoms.")
        name = token.upper()
        if name == "IMAP4REV2" and not s.rev2:
            s.rev2 = True
            if s.view is not None:
                s.view.show_recent = False
            enabled.append("IMAP4rev2")
        elif name == "UTF8=ACCEPT" and not s.utf8:
            s.utf8 = True
            enabled.append(name)
        elif name == "CONDSTORE" and not s.condstore:
            s.condstore = True
            enabled.append(name)
        elif name == "QRESYNC" and not s.qresync:
            s.qresync = True
            if not s.condstore:
                s.condstore = True
            enabled.append(name)
    s.send(b"* ENABLED" + b"".join(b" " + e.encode() for e in enabled) + b"\r\n")
    s.ok(tag, b"Enabled.")


def _compress(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 1 or not isinstance(args[0], Atom):
        raise ParseError("COMPRESS takes a mechanism.")
    if s.compression is not None:
        s.no(tag, b"[COMPRESSIONACTIVE] Compression is already active.")
        return
    if args[0].upper() != "DEFLATE":
        s.no(tag, b"Unknown compression mechanism.")
        return
    # RFC 4978 3: the OK is the last uncompressed response.
    s.send(tag + b" OK DEFLATE active.\r\n")
    s.flush()
    s.start_compression()


def _namespace(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    s.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    s.ok(tag, b"Namespace completed.")


def _idle(s: IMAPServer, tag: bytes, args: list[Token], uid: bool) -> None:
    when_stored(s, tag, "IDLE", _refreshed(s), lambda _: s.start_idle(tag))


COMMANDS: dict[str, tuple[frozenset[str], Handler]] = {
    "CAPABILITY": (ANY, _capability),
    "NOOP": (ANY, _noop),
    "LOGOUT": (ANY, _logout),
    "ID": (ANY, _id),
    "STARTTLS": (NOAUTH, _starttls),
    "LOGIN": (NOAUTH, _login),
    "AUTHENTICATE": (NOAUTH, _authenticate),
    "ENABLE": (AUTH, _enable),
    "NAMESPACE": (AUTH, _namespace),
    "COMPRESS": (AUTH, _compress),
    "GETMETADATA": (AUTH, metadata.getmetadata),
    "SETMETADATA": (AUTH, metadata.setmetadata),
    "IDLE": (AUTH, _idle),
    "NOTIFY": (AUTH, notify.notify),
    "SELECT": (AUTH, mc.select),
    "EXAMINE": (AUTH, mc.examine),
    "CREATE": (AUTH, mc.create),
    "DELETE": (AUTH, mc.delete),
    "RENAME": (AUTH, mc.rename),
    "SUBSCRIBE": (AUTH, mc.subscribe),
    "UNSUBSCRIBE": (AUTH, mc.unsubscribe),
    "LIST": (AUTH, mc.list_),
    "LSUB": (AUTH, mc.lsub),
    "STATUS": (AUTH, mc.status),
    "APPEND": (AUTH, append.append),
    "GETQUOTA": (AUTH, qc.getquota),
    "GETQUOTAROOT": (AUTH, qc.getquotaroot),
    "SETQUOTA": (AUTH, qc.setquota),
    "CHECK": (SEL, msg.check),
    "CLOSE": (SEL, msg.close),
    "UNSELECT": (SEL, msg.unselect),
    "EXPUNGE": (SEL, msg.expunge),
    "SEARCH": (SEL, msg.search),
    "CANCELUPDATE": (SEL, context.cancel_update),
    "SORT": (SEL, sort.sort),
    "THREAD": (SEL, thread.thread),
    "FETCH": (SEL, msg.fetch),
    "STORE": (SEL, msg.store),
    "COPY": (SEL, msg.copy),
    "MOVE": (SEL, msg.move),
}
