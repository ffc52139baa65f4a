"""One session's view of its selected mailbox: sequence numbers and updates.

RFC 3501 sections 2.3.1.2 and 7.4.1, RFC 7162 section 3.2.10 (VANISHED).
Each session keeps its own message-sequence-number map (an ``array`` of
UIDs, 4 bytes a message) on top of the shared folder. Changes made by other
sessions, by deliveries and by this session are heard through the folder's
listeners and kept as three small sets (appended, expunged, flag-changed
UIDs) until the session may tell the client:

- :meth:`SelectedView.updates` with ``allow_expunge`` (after NOOP, IDLE,
  CHECK, EXPUNGE, UID commands...) sends ``EXPUNGE`` (or ``VANISHED`` with
  QRESYNC), ``EXISTS``/``RECENT`` and ``FETCH (FLAGS ..)``;
- without it (during FETCH, STORE, SEARCH with sequence numbers) expunged
  messages keep their numbers, so numbers never shift under the client.

Flag changes this session reports itself (STORE) are muted while it makes
them. Untrusted input: none (sequence sets come parsed). Writes: only
``claim_recent`` (Maildir new/ to cur/) for read-write sessions; a
read-only (EXAMINE) session reports \\Recent without claiming it. Logs
nothing.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable

from pymta.imap.sequence import SequenceSet, format_set
from pymta.imap.wire import flag_list
from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.interface import (
    FolderChange,
    FolderStatus,
    IFolder,
    MailStoreError,
    MessageInfo,
)

#: The system flags a client may store (RFC 3501 2.3.2; \\Recent is the server's).
PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class InvalidSet(Exception):
    """A message number beyond the mailbox (BAD Invalid messageset)."""


class SelectedView:
    """The selected mailbox as one session sees it."""

    def __init__(self, folder: IFolder, readonly: bool, store: IAsyncFolder) -> None:
        self.folder = folder
        #: The same folder through the store's asynchronous API (FETCH's
        #: message reads and \\Seen).
        self.store = store
        self.readonly = readonly
        self.uids = array("I")
        self.recent: set[int] = set()
        # Keywords the client has been told of in FLAGS: one it has not seen
        # comes with a new FLAGS and PERMANENTFLAGS first (RFC 3501 7.2.6).
        self.keywords: set[str] = set()
        self.uidvalidity = 0
        #: The folder's HIGHESTMODSEQ as this session knows it: from the
        #: status at SELECT, raised by every change heard since (RFC 7162
        #: CONDSTORE's first HIGHESTMODSEQ code needs no store call).
        self.highest_modseq = 0
        self.invalidated = False
        self.wake: Callable[[], None] | None = None
        # IMAP4rev2 (RFC 9051) has no \Recent flag and no RECENT response.
        self.show_recent = True
        self._appended: set[int] = set()
        self._expunged: set[int] = set()
        self._flagged: set[int] = set()
        self._muted: set[int] | None = None

    # life ----------------------------------------------------------------

    async def open_async(self) -> tuple[list[MessageInfo], FolderStatus]:
        """Load the folder through the store's asynchronous API (the rescan
        of a folder changed on disk and the claim of many \\Recent in the
        store's threads), claiming \\Recent when read-write, and start
        listening: every message, and the folder's status. Changes heard while it waits
        are kept: those the messages read already hold are dropped by
        :meth:`updates` (appends up to the last UID, expunges of UIDs not
        in the view)."""
        store = self.store
        self.folder.add_listener(self._on_change)
        if await store.changed_on_disk():
            await store.refresh()  # what it tells the listeners comes first
        self._appended.clear()
        self._expunged.clear()
        messages = await store.messages()
        recent = [m.uid for m in messages if m.recent]
        if not self.readonly and recent:
            # The UIDs named: a few (the mail since the last SELECT) are
            # claimed at once, a rename each, without a thread hop.
            self.recent = set(await store.claim_recent(recent))
        elif self.readonly:
            # EXAMINE shows what is \Recent but must not take it away from
            # the next read-write session (RFC 3501 6.3.2; Dovecot alike).
            self.recent = set(recent)
        status = await store.status()
        self.uids = array("I", (m.uid for m in messages))
        self.uidvalidity = status.uidvalidity
        self.highest_modseq = max(self.highest_modseq, status.highest_modseq)
        # Flag changes before now: the client asks for the flags it shows.
        self._flagged.clear()
        return messages, status

    def close(self) -> None:
        self.folder.remove_listener(self._on_change)
        self.wake = None

    def _on_change(self, change: FolderChange) -> None:
        if change.modseq > self.highest_modseq:
            self.highest_modseq = change.modseq
        if change.kind == "append":
            self._appended.update(change.uids)
        elif change.kind == "expunge":
            self._expunged.update(change.uids)
            self._appended.difference_update(change.uids)
            self._flagged.difference_update(change.uids)
        elif change.kind == "flags":
            if self._muted is not None:
                self._flagged.update(u for u in change.uids if u not in self._muted)
            else:
                self._flagged.update(change.uids)
        elif change.kind == "uidvalidity":
            self.invalidated = True
        if self.wake is not None and self.has_updates():
            self.wake()

    def mute(self, uids: Iterable[int] | None) -> None:
        """While set, flag changes of these UIDs are not reported (the session
        reports them itself); None ends muting."""
        self._muted = set(uids) if uids is not None else None

    def has_updates(self) -> bool:
        return bool(self._appended or self._expunged or self._flagged or self.invalidated)

    def pending(self) -> tuple[bool, bool, bool]:
        """Whether new, expunged and flag-changed messages wait to be told
        (NOTIFY pushes only the kinds the client asked for)."""
        return bool(self._appended), bool(self._expunged), bool(self._flagged)

    # numbers ---------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def resolve(self, seqset: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """(msn, uid) pairs of a set, ascending; InvalidSet for a message
        number beyond the mailbox (UIDs that do not exist are skipped)."""
        out: list[tuple[int, int]] = []
        uids = self.uids
        if by_uid:
            largest = uids[-1] if uids else 0
            for lo, hi in seqset.ranges(largest):
                start = bisect_left(uids, lo)
                end = bisect_right(uids, hi)
                out.extend((i + 1, uids[i]) for i in range(start, end))
            return out
        count = len(uids)
        if count == 0 and seqset.uses_star:
            return []
        for lo, hi in seqset.ranges(count):
            if hi > count:
                raise InvalidSet
            out.extend((i, uids[i - 1]) for i in range(lo, hi + 1))
        return out

    def _claim(self, new: list[int]) -> None:
        """Report as \\Recent the new messages no other session has claimed."""
        try:
            if not any(self.folder.get(u).recent for u in new):
                return
            fresh = set(new)
            self.recent.update(u for u in self.folder.claim_recent() if u in fresh)
        except MailStoreError:
            pass

    def _keywords_of(self, uids: list[int]) -> set[str]:
        found: set[str] = set()
        get = self.folder.get
        for uid in uids:
            try:
                found.update(get(uid).keywords)
            except MailStoreError:
                pass
        return found

    def _peek(self, new: list[int]) -> None:
        """A read-only session reports new messages still \\Recent as such,
        without claiming them."""
        for uid in new:
            try:
                if self.folder.get(uid).recent:
                    self.recent.add(uid)
            except MailStoreError:
                pass

    def flags_lines(self) -> list[bytes]:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS ...]`` for the keywords known."""
        flags = list(PERMANENT_FLAGS) + sorted(self.keywords)
        permanent = [] if self.readonly else [*flags, "\\*"]
        text = b"Read-only mailbox." if self.readonly else b"Flags permitted."
        return [
            b"* FLAGS " + flag_list(flags) + b"\r\n",
            b"* OK [PERMANENTFLAGS " + flag_list(permanent) + b"] " + text + b"\r\n",
        ]

    def new_keywords(self, keywords: Iterable[str]) -> list[bytes]:
        """The FLAGS update to send before a FETCH that shows ``keywords``
        (empty when the client knows them all), as Dovecot does when a STORE
        or another session makes a keyword."""
        fresh = [k for k in keywords if k not in self.keywords]
        if not fresh:
            return []
        self.keywords.update(fresh)
        return self.flags_lines()

    def is_expunged(self, uid: int) -> bool:
        return uid in self._expunged

    def has_expunged(self) -> bool:
        """Whether messages of the view were expunged and not reported yet
        (else no :meth:`is_expunged` test need be made)."""
        return bool(self._expunged)

    def flags_of(self, info: MessageInfo) -> frozenset[str]:
        flags = info.all_flags
        if self.show_recent and info.uid in self.recent:
            return flags | {"\\Recent"}
        return flags

    # updates ---------------------------------------------------------------

    def updates(self, allow_expunge: bool, vanished: bool, modseq: bool) -> list[bytes]:
        """The untagged responses that bring the client up to date."""
        out: list[bytes] = []
        if allow_expunge and self._expunged:
            gone = sorted(self._expunged)
            self._expunged.clear()
            present = [u for u in gone if self.msn(u) is not None]
            if present:
                if vanished:
                    out.append(b"* VANISHED " + format_set(present).encode() + b"\r\n")
                else:
                    # Highest first: each number is right without adjusting.
                    for uid in reversed(present):
                        out.append(b"* %d EXPUNGE\r\n" % (bisect_left(self.uids, uid) + 1))
                drop = set(present)
                self.uids = array("I", (u for u in self.uids if u not in drop))
                self.recent.difference_update(drop)
        if self._appended:
            last = self.uids[-1] if self.uids else 0
            new = sorted(u for u in self._appended if u > last)
            self._appended.clear()
            if new:
                self.uids.extend(new)
                out.extend(self.new_keywords(self._keywords_of(new)))
                if not self.readonly:
                    self._claim(new)
                else:
                    self._peek(new)
                out.append(b"* %d EXISTS\r\n" % len(self.uids))
                if self.show_recent:
                    out.append(b"* %d RECENT\r\n" % len(self.recent))
        if self._flagged:
            changed = sorted(self._flagged)
            self._flagged.clear()
            out.extend(self.new_keywords(self._keywords_of(changed)))
            for uid in changed:
                n = self.msn(uid)
                if n is None or uid in self._expunged:
                    continue
                try:
                    info = self.folder.get(uid)
                except MailStoreError:
                    continue
                line = b"* %d FETCH (UID %d FLAGS %s" % (n, uid, flag_list(self.flags_of(info)))
                if modseq:
                    line += b" MODSEQ (%d)" % info.modseq
                out.append(line + b")\r\n")
        return out
