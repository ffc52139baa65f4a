"""session: what an IMAP command handler may use of its session.

The command modules (mailbox_commands, message_commands, append, metadata,
quota_commands, sort, thread) take the session as an :class:`IMAPSession`,
not as the protocol class: :class:`pymta.imap.protocol.IMAPServer`
satisfies it, and the command modules never import protocol.py, which
imports them (its command table). A handler answers with ``ok``/``no``/
``bad`` or ``send`` and ``stream``, finishes work done off the reactor
thread with ``later``, and reads or changes the session's state below;
everything else of the protocol (the reader, timers, TLS, login) is its
own. A test (tests/test_import_cycles.py) keeps the modules free of cycles.

Untrusted input: none here (a typing contract). Writes: nothing. Logs:
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pymta.imap.log import Counters
from pymta.imap.quota import IMAPQuota
from pymta.imap.scan import ScanGate
from pymta.imap.settings import IMAPSettings
from pymta.imap.view import SelectedView
from pymta.mailstore.asyncstore import IAsyncUserMailbox
from pymta.mailstore.interface import IUserMailbox
from pymta.mailstore.prefetch import ThreadRunner
from pymta.stream import Pieces


class IMAPSession(Protocol):
    """One IMAP session as its command handlers see it (see module doc)."""

    settings: IMAPSettings
    clock: IReactorTime
    log: Logger
    counters: Counters
    #: The logged-in user ("" before login) and their mailbox.
    user: str
    mailbox: IUserMailbox | None
    #: The same mailbox through the store's asynchronous API.
    folders: IAsyncUserMailbox | None
    #: The selected mailbox, or None.
    view: SelectedView | None
    #: Enabled extensions (RFC 7162 CONDSTORE/QRESYNC, RFC 9051 IMAP4rev2).
    condstore: bool
    qresync: bool
    rev2: bool
    #: RFC 5182 SEARCHRES: the UIDs of the last SEARCH RETURN (SAVE) ("$").
    saved: list[int]
    #: QUOTA (RFC 9208): the factory's IMAPQuota, or None (not offered).
    quota: IMAPQuota | None
    #: File reads and whole-file scans off the reactor thread (None: inline).
    run_in_thread: ThreadRunner | None
    scan_in_thread: ThreadRunner | None
    scan_gate: ScanGate
    #: RFC 5267 updating searches of the selected mailbox
    #: (imap/context.py's SearchContexts), RFC 5465 NOTIFY's notifier of
    #: this session and the factory's hub (imap/notify.py's Notifier and
    #: NotifyHub), each None when unused. Typed Any: those modules take the
    #: session as an IMAPSession, and naming their classes here would make
    #: the import cycle this module exists to avoid.
    contexts: Any
    notifier: Any
    notify_hub: Any

    @property
    def lost(self) -> bool:
        """The connection is gone (work finishing late must not act for it)."""

    @property
    def utf8_names(self) -> bool:
        """Mailbox names are UTF-8 on the wire, else modified UTF-7."""

    def send(self, data: bytes) -> None:
        """Queue bytes of an untagged answer."""

    def stream(self, pieces: Pieces) -> None:
        """Answer with what pieces yields, as fast as the client reads it."""

    def ok(self, tag: bytes, text: bytes, *, expunge: bool = True) -> None:
        """The tagged OK (after the selected mailbox's updates)."""

    def no(self, tag: bytes, text: bytes, *, expunge: bool = True) -> None:
        """The tagged NO."""

    def bad(self, tag: bytes, text: bytes) -> None:
        """The tagged BAD (counts against the session's error limit)."""

    def store_refused(
        self, tag: bytes, error: BaseException | None, *, expunge: bool = True
    ) -> bool:
        """Answer NO [OVERQUOTA]/[NOPERM] for a write the store cannot take
        now; False (nothing sent) for any other error."""

    def later(
        self,
        d: Deferred[Any],
        then: Callable[[], Deferred[None] | None],
        tag: bytes,
        name: str,
    ) -> None:
        """Finish a command when ``d`` fires; later commands wait meanwhile."""

    def context_wake(self) -> None:
        """An updating search heard of a change: push it when the client
        is idling or asked for the selected mailbox's events."""

    def notify_wake(self) -> None:
        """Something NOTIFY covers changed: tell the client now if no
        command is being answered."""

    def start_notify(self, notifier: Any) -> None:
        """NOTIFY SET: the session's events now go through ``notifier``."""

    def stop_notify(self) -> None:
        """NOTIFY NONE (or a new SET): stop the current notifier."""

    def select(self, view: SelectedView) -> None:
        """Make view the selected mailbox (closing the one before)."""

    def unselect(self) -> None:
        """Close the selected mailbox, if any."""
