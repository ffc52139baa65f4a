"""One session's view of its selected mailbox: sequence numbers and updates.

RFC 3501 sections 2.3.1.2 and 7.4.1, RFC 7162 section 3.2.10 (VANISHED).
Each session keeps its own message-sequence-number map (an ``array`` of
UIDs, 4 bytes a message) on top of the shared folder. Changes made by other
sessions, by deliveries, by other processes and by this session are heard
through the store's ``watch()`` of the folder (its listeners, and the
store's inotify watchers for what other processes write) and kept as
three small sets (appended, expunged, flag-changed UIDs) until the session may tell the client:

- :meth:`SelectedView.updates` with ``allow_expunge`` (after NOOP, IDLE,
  CHECK, EXPUNGE, UID commands...) sends ``EXPUNGE`` (or ``VANISHED`` with
  QRESYNC), ``EXISTS``/``RECENT`` and ``FETCH (FLAGS ..)``;
- without it (during FETCH, STORE, SEARCH with sequence numbers) expunged
  messages keep their numbers, so numbers never shift under the client.

What those responses need from the store (the records of new and
flag-changed messages, the claim of \\Recent) is read through the store's
asynchronous API first: :meth:`SelectedView.prepare` (a Maildir read when
nothing of the folder waits answers at once; else the session holds its
tagged response until the store has answered, so the untagged responses
still come before it). :meth:`SelectedView.updates` then reports what was
read, and leaves a change heard since for the next time.

Flag changes this session reports itself (STORE) are muted while it makes
them. Untrusted input: none (sequence sets come parsed). Writes: only
``claim_recent`` of the new messages' UIDs (Maildir new/ to cur/) for
read-write sessions, so \\Recent goes to one session only; a read-only
(EXAMINE) session reports \\Recent without claiming it. Logs nothing.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred

from pymta.imap.sequence import SequenceSet, format_set
from pymta.imap.wire import flag_list
from pymta.mailstore.asyncstore import IAsyncFolder, after_firing
from pymta.mailstore.interface import (
    FolderChange,
    FolderSummary,
    MessageInfo,
)

#: The system flags a client may store (RFC 3501 2.3.2; \\Recent is the server's).
PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class InvalidSet(Exception):
    """A message number beyond the mailbox (BAD Invalid messageset)."""


class SelectedView:
    """The selected mailbox as one session sees it."""

    def __init__(self, readonly: bool, store: IAsyncFolder) -> None:
        #: The folder through the store's asynchronous API: every read and
        #: change, and the watch for changes (other sessions, deliveries,
        #: other processes: the store's inotify watchers).
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
        # What prepare() read for updates(): the record of each new or
        # flag-changed UID (None: gone meanwhile), and the new UIDs this
        # session claimed as \Recent.
        self._loaded: dict[int, MessageInfo | None] = {}
        self._claimed: set[int] = set()
        self._preparing: Deferred[None] | None = None
        # UIDs whose flags changed while a read of them was under way: what
        # it brings back may predate the change, so it is read again.
        self._stale: set[int] = set()
        self._unwatch: Callable[[], None] | None = None
        # While open_async reads the folder, appends and expunges heard are
        # in what it reads (a first scan's 100,000 appends: not kept).
        self._opening = False

    # life ----------------------------------------------------------------

    async def open_async(self) -> FolderSummary:
        """Load the folder through the store's asynchronous API (the rescan
        of a folder changed on disk and the claim of many \\Recent in the
        store's threads), claiming \\Recent when read-write, and start
        listening: the folder's summary (its UIDs, first unseen, keywords
        and status: no record per message, :class:`FolderSummary`).
        Changes heard while it waits are kept: those the summary already
        holds are dropped by :meth:`updates` (appends up to the last UID,
        expunges of UIDs not in the view)."""
        store = self.store
        # Watching first: a change another process makes while the folder
        # is read is heard (and dropped by updates() if the read has it).
        self._opening = True
        self._unwatch = store.watch(self._on_change)
        try:
            if await store.changed_on_disk():
                await store.rescan()  # what it tells the listeners comes first
        finally:
            self._opening = False
        self._appended.clear()
        self._expunged.clear()
        summary = await store.summary()
        recent = summary.recent
        if not self.readonly and recent:
            # The UIDs named: a few (the mail since the last SELECT) are
            # claimed at once, a rename each, without a thread hop.
            self.recent = set(await store.claim_recent(recent))
        elif self.readonly:
            # EXAMINE shows what is \Recent but must not take it away from
            # the next read-write session (RFC 3501 6.3.2; Dovecot alike).
            self.recent = set(recent)
        self.uids = array("I", summary.uids)
        self.uidvalidity = summary.uidvalidity
        self.highest_modseq = max(self.highest_modseq, summary.highest_modseq)
        self.keywords = set(summary.keywords)
        # Flag changes before now: the client asks for the flags it shows.
        self._flagged.clear()
        return summary

    def close(self) -> None:
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        self.wake = None

    def _on_change(self, change: FolderChange) -> None:
        if change.modseq > self.highest_modseq:
            self.highest_modseq = change.modseq
        if self._opening and change.kind in ("append", "expunge"):
            return  # in what open_async reads next
        if change.kind == "append":
            self._appended.update(change.uids)
        elif change.kind == "expunge":
            self._expunged.update(change.uids)
            self._appended.difference_update(change.uids)
            self._flagged.difference_update(change.uids)
        elif change.kind == "flags":
            muted = self._muted
            self._flagged.update(u for u in change.uids if muted is None or u not in muted)
            # A record read before this change (this session's own STORE
            # too) is read again before it is told: an older MODSEQ must
            # never follow the newer one the STORE answered with.
            for uid in change.uids:
                self._loaded.pop(uid, None)
            if self._preparing is not None:
                self._stale.update(change.uids)
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

    # reading what the updates need -------------------------------------------

    def _unread(self) -> list[int]:
        """New and flag-changed UIDs whose records prepare() has not read."""
        loaded = self._loaded
        last = self.uids[-1] if self.uids else 0
        new = [u for u in self._appended if u > last and u not in loaded]
        return new + [u for u in self._flagged if u not in loaded or u in self._stale]

    def prepare(self) -> Deferred[None] | None:
        """Read through the store's asynchronous API what :meth:`updates`
        needs: the records of new and flag-changed messages, and (read-write)
        the claim of the new ones still \\Recent. None when it is all read
        (at once, as a Maildir read when nothing of the folder waits); else
        a Deferred that fires, never failing, once it is (one read at a
        time: a later call waits for it). When it was not at once, the
        session's wake (IDLE, NOTIFY) is called then."""
        if self._preparing is not None:
            return after_firing(self._preparing)
        wanted = self._unread()
        if not wanted:
            return None
        reading = self._read(wanted)
        if reading.called:
            return None
        self._preparing = reading

        def done(_: object) -> None:
            self._preparing = None
            if self.wake is not None and self.has_updates():
                self.wake()

        reading.addBoth(done)
        return after_firing(reading)

    def _read(self, wanted: list[int]) -> Deferred[None]:
        self._stale.difference_update(wanted)
        last = self.uids[-1] if self.uids else 0

        def loaded(records: dict[int, MessageInfo]) -> Deferred[None] | None:
            stale, appended, flagged = self._stale, self._appended, self._flagged
            for uid in wanted:
                # Not kept: one whose flags changed meanwhile (read again),
                # or one expunged meanwhile (nothing to tell).
                if uid not in stale and (uid in appended or uid in flagged):
                    self._loaded[uid] = records.get(uid)
            recent = [u for u in wanted if u > last and u in records and records[u].recent]
            if self.readonly or not recent:
                return None
            # RFC 3501 2.3.2: \Recent for one session only; the store's
            # claim by UID tells which of them this session took.
            return self.store.claim_recent(recent).addCallback(self._claimed.update)

        d: Deferred[None] = self.store.get_many(wanted).addCallback(loaded)
        # A store error leaves the UIDs unread: tried again next time.
        return d.addErrback(lambda _: None)

    def _keywords_of(self, uids: list[int]) -> set[str]:
        found: set[str] = set()
        for uid in uids:
            info = self._loaded.get(uid)
            if info is not None:
                found.update(info.keywords)
        return found

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
        """The untagged responses that bring the client up to date, with what
        :meth:`prepare` read (a change not read yet waits for the next time)."""
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
        loaded = self._loaded
        if self._appended:
            last = self.uids[-1] if self.uids else 0
            new: list[int] = []
            for uid in sorted(u for u in self._appended if u > last):
                if uid not in loaded:
                    break  # numbers are given in UID order: the rest wait
                new.append(uid)
            # Appends heard while SELECT read the folder are in it already.
            self._appended = {u for u in self._appended if u > last}
            if new:
                self._appended.difference_update(new)
                self.uids.extend(new)
                out.extend(self.new_keywords(self._keywords_of(new)))
                if not self.readonly:
                    self.recent.update(u for u in new if u in self._claimed)
                else:
                    # Reported without being claimed (see open_async).
                    self.recent.update(u for u in new if (i := loaded.get(u)) and i.recent)
                self._claimed.difference_update(new)
                out.append(b"* %d EXISTS\r\n" % len(self.uids))
                if self.show_recent:
                    out.append(b"* %d RECENT\r\n" % len(self.recent))
                for uid in new:
                    if uid not in self._flagged:
                        del loaded[uid]
        if self._flagged:
            stale = self._stale
            changed = sorted(u for u in self._flagged if u in loaded and u not in stale)
            self._flagged.difference_update(changed)
            out.extend(self.new_keywords(self._keywords_of(changed)))
            for uid in changed:
                info = loaded.pop(uid)
                n = self.msn(uid)
                if n is None or uid in self._expunged or info is None:
                    continue
                line = b"* %d FETCH (UID %d FLAGS %s" % (n, uid, flag_list(self.flags_of(info)))
                if modseq:
                    line += b" MODSEQ (%d)" % info.modseq
                out.append(line + b")\r\n")
        return out
