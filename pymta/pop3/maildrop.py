"""One POP3 session's view of a mailbox: the maildrop of RFC 1939.

The message list is fixed when the session enters the TRANSACTION state
(messages that arrive later are not shown, RFC 1939 section 8); numbers
count from 1 in UID order. DELE only marks; RSET unmarks; :meth:`commit`
(the UPDATE state after a clean QUIT) expunges the marked messages from the
folder. A dropped connection never commits.

UIDL values are the store's UID and the folder's UIDVALIDITY as Dovecot's
default ``pop3_uidl_format = %08Xu%08Xv`` prints them, so they are stable
across sessions and restarts, and the same as Dovecot's for the same
Maildir index.

Untrusted input: message numbers from the client (validated here).
Reads and writes messages through the mail store's asynchronous API
(:class:`~pymta.mailstore.asyncstore.IAsyncFolder`): every call that
touches the store returns a Deferred, and the store decides where it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.interface import FlagMode, MailStoreError, MessageInfo


class BadMessageNumber(Exception):
    """A message number that is not valid in this session (text is the -ERR reply)."""


@dataclass
class SessionCounters:
    """What the logout log line reports (Dovecot's top=, retr=, del=, size=)."""

    top_count: int = 0
    top_bytes: int = 0
    retr_count: int = 0
    retr_bytes: int = 0


class Maildrop:
    """The numbered message list of one session, with deletion marks."""

    def __init__(self, folder: IAsyncFolder, messages: list[MessageInfo], uidvalidity: int) -> None:
        self.folder = folder
        self._messages = list(messages)
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()
        self.uidvalidity = uidvalidity
        self.counters = SessionCounters()
        self.initial_count = len(self._messages)
        self.initial_size = sum(m.rfc822_size for m in self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def parse_number(self, arg: str) -> int:
        """A message number from the client; BadMessageNumber if invalid or deleted."""
        if not arg.isdigit() or len(arg) > 10:
            shown = "".join(c if c.isprintable() else "?" for c in arg[:20])
            raise BadMessageNumber(f"Invalid message number: {shown}")
        n = int(arg)
        if n < 1 or n > len(self._messages):
            raise BadMessageNumber(f"There's no message {n}.")
        if n in self._deleted:
            raise BadMessageNumber("Message is deleted.")
        return n

    def info(self, n: int) -> MessageInfo:
        return self._messages[n - 1]

    def live(self) -> list[tuple[int, MessageInfo]]:
        """(number, info) of every message not marked deleted."""
        return [(n, m) for n, m in enumerate(self._messages, 1) if n not in self._deleted]

    def stat(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted (RFC 1939 STAT)."""
        live = self.live()
        return len(live), sum(m.rfc822_size for _, m in live)

    def uidl(self, n: int) -> str:
        return f"{self._messages[n - 1].uid:08X}{self.uidvalidity:08X}"

    def read(self, n: int) -> Deferred[bytes]:
        """The stored message (LF line ends)."""
        return self.folder.read(self._messages[n - 1].uid)

    def open(self, n: int) -> Deferred[BinaryIO]:
        """The stored message as a file (caller closes); MailStoreError."""
        return self.folder.open(self._messages[n - 1].uid)

    def mark_retrieved(self, n: int) -> None:
        """n was sent whole (RETR): it becomes \\Seen on a clean QUIT, as in Dovecot."""
        self._retrieved.add(n)

    def delete(self, n: int) -> None:
        self._deleted.add(n)

    def reset(self) -> None:
        self._deleted.clear()

    @property
    def deleted_count(self) -> int:
        return len(self._deleted)

    @property
    def deleted_size(self) -> int:
        return sum(self._messages[n - 1].rfc822_size for n in self._deleted)

    def commit(self, mark_seen: bool = True, claim: bool = True) -> Deferred[list[int]]:
        """The UPDATE state: expunge the marked messages, flag retrieved ones
        \\Seen, and (with ``claim``) move the rest of those shown out of
        ``new/`` (:meth:`claim`), one store call after the other.

        Fires with the UIDs removed. MailStoreError when the expunge failed
        (nothing more is done then); a message that vanished meanwhile is no
        error.
        """
        removed: Deferred[list[int]] = succeed([])
        if self._deleted:
            uids = sorted(self._messages[n - 1].uid for n in self._deleted)
            removed = self.folder.expunge(uids)

        def after_expunge(gone: list[int]) -> Deferred[list[int]]:
            d: Deferred[Any] = succeed(None)
            unseen = [
                info.uid
                for n in self._retrieved - self._deleted
                if "\\Seen" not in (info := self._messages[n - 1]).flags
            ]
            if mark_seen and unseen:
                # One store change for all (one lock, one index write), as
                # Dovecot commits a POP3 session's flag updates. A message
                # still in new/ moves to cur/ with its S in one rename.
                d = self.folder.set_flags_many(unseen, ["\\Seen"], FlagMode.ADD)
                d.addErrback(_ignore_store_error)
            if claim:
                d.addCallback(lambda _: self.claim(skip_deleted=True))
            return d.addCallback(lambda _: gone)

        return removed.addCallback(after_expunge)

    def claim(self, skip_deleted: bool = False) -> Deferred[None]:
        """Move the messages this session showed out of ``new/`` (IMAP's
        \\Recent ends), as Dovecot's POP3 does. Done once, when the session
        ends (QUIT or a dropped connection), not at login: a message that is
        retrieved, or deleted, then needs one rename (or unlink) instead of two.
        Store errors are ignored (the messages merely stay in ``new/``)."""
        uids = [
            m.uid
            for n, m in enumerate(self._messages, 1)
            if m.recent and not (skip_deleted and n in self._deleted)
        ]
        if not uids:
            return succeed(None)
        d = self.folder.claim_recent(uids)
        return d.addCallbacks(lambda _: None, _ignore_store_error)


def _ignore_store_error(failure: Failure) -> None:
    failure.trap(MailStoreError)
