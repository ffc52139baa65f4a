"""The per-folder UID index of a Maildir: ``pymta-uidlist``.

Plays the part of Dovecot's ``dovecot-uidlist`` plus the part of its index
that IMAP needs without opening messages: for every UID the message's file
name, size, CRLF size, internal date, flags, keywords and modseq (RFC 7162).

Format: a text file, one record per line, tab-separated, append-only::

    pymta-uidlist 2 <TAB> V<uidvalidity> <TAB> N<uidnext> <TAB> M<modseq> <TAB> E<floor>
    A <uid> <modseq> <sub/filename> <size> <rfc822 size> <internal date> <flags> <keywords>
    X <uid> <modseq>
    S <new/ mtime ns> <cur/ mtime ns>

``A`` adds or replaces a message's record, ``X`` expunges it (kept as a
tombstone for QRESYNC); an internal date of ``-`` is not known yet (a
folder's scan does not ``stat`` the files it finds: the date is read
when a command first needs it and written as a new ``A`` line, see
:mod:`pymta.mailstore.folder_read`), ``S`` notes the directories' mtimes at a moment the
index was known to match them (after a complete scan, or after our own
changes on top of one): a process opening the folder skips its scan when
they still match; flags are the letters D F R S T, keywords separated
by spaces. Appending a message costs one short ``write``; when dead lines
outnumber live ones the file is compacted (written to a temporary name,
fsync'd, renamed), which readers in other processes notice by its inode.
The header's N and M keep UIDNEXT and HIGHESTMODSEQ across compactions, E
the modseq below which tombstones were dropped.

Version 1 (every date known) is read as it is and rewritten as version 2
(compacted) before the first line is added; a pymta that knows only
version 1 takes a version 2 file as damaged and numbers the folder
afresh, under a new UIDVALIDITY: rebuilt, never misread.

Every change is made under an exclusive ``flock`` of ``pymta-uidlist.lock``
and made durable (fsync) before its UIDs are handed out, so two processes
never give one UID to two messages. A torn last line (a crash in the middle
of a write) is cut off on the next load; any other damage raises
:class:`IndexCorrupt` and the folder is renumbered under a new UIDVALIDITY.

A store that cannot be written (read-only, full, over quota: the errnos of
:data:`~pymta.mailstore.interface.WRITE_ERRNOS`) is still read: the lock
file is opened read-only (or, missing, not taken: no one else can write
either), a torn last line is skipped instead of cut off, and records that
cannot be appended stay in memory (:attr:`UidIndex.pending`) and are
written under the lock of the next change that can write, UIDs included:
keeping a message unreadable would be worse than the one promise they
break (handed out before they are durable). If another process meanwhile
gave those UIDs to other messages, :class:`IndexConflict` says so and the
folder takes the file's numbering. A client's own write (``strict``, for
APPEND and COPY) never gets a memory-only UID: it fails with
:class:`~pymta.mailstore.interface.StoreNotWritable`.

Untrusted input: the file itself (another process, a crash, a disk error).
Writes ``pymta-uidlist``, its ``.tmp`` and ``.lock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, itemgetter

from pymta.mailstore.freshscan import Listing
from pymta.mailstore.gcpause import paused
from pymta.mailstore.interface import WRITE_ERRNOS, MessageInfo, StoreNotWritable
from pymta.mailstore.names import FILENAME_PATTERN

INDEX_NAME = "pymta-uidlist"
LOCK_NAME = "pymta-uidlist.lock"
MAGIC = "pymta-uidlist 2"
#: The versions this code reads (1: before dates could be unknown).
_READABLE = ("pymta-uidlist 1", MAGIC)
#: The internal-date field of a record whose date is not known yet.
UNKNOWN_DATE = "-"
MAX_TOMBSTONES = 20000

_FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
_LETTER_FLAGS = {v: k for k, v in _FLAG_LETTERS.items()}
#: The letters of a set of system flags, as record_line writes them.
_letters_of: dict[frozenset[str], str] = {}
_SYSTEM = frozenset(_FLAG_LETTERS)
_NO_KEYWORDS: frozenset[str] = frozenset()
_GOOD_FILENAME = re.compile(r"(?:new|cur)/" + FILENAME_PATTERN + r"\Z")


def message_info(
    uid: int,
    size: int,
    rfc822_size: int,
    internal_date: float | None,
    flags: frozenset[str],
    keywords: frozenset[str],
    modseq: int,
    filename: str,
    recent: bool = False,
) -> MessageInfo:
    """MessageInfo(...) without the frozen dataclass's __init__, which sets
    each field through object.__setattr__: the same object, built four
    times faster. For the loops that make one per message (loading an
    index, numbering new mail, flag changes of a whole session)."""
    info = _new(MessageInfo)
    info.__dict__.update(
        uid=uid,
        size=size,
        rfc822_size=rfc822_size,
        internal_date=internal_date,
        flags=flags,
        keywords=keywords,
        modseq=modseq,
        filename=filename,
        recent=recent,
    )
    return info


_new = object.__new__


@dataclass
class Numbered(Listing):
    """The files a folder's first scan numbered, before any
    :class:`MessageInfo` is made (:meth:`UidIndex.put_numbered`): the
    listing's columns (:class:`pymta.mailstore.freshscan.Listing`, sizes
    without leading zeros; arrival order is UID order), a file's UID
    ``first_uid + rank[i]``, its modseq ``first_modseq + rank[i]``, its
    date unknown. ``marks`` maps each distinct ``:2,`` letters to its
    flags and keywords. Strings in lists, no tuple per file: nothing the
    cyclic collector walks."""

    first_uid: int
    first_modseq: int
    marks: dict[str, tuple[frozenset[str], frozenset[str]]]

    @property
    def uids(self) -> range:
        return range(self.first_uid, self.first_uid + len(self.filenames))

    def recent(self) -> list[int]:
        """The UIDs of the files in new/, ascending."""
        return [self.first_uid + r for r in sorted(self.rank[: self.in_new])]

    def _unseen_letters(self) -> set[str]:
        return {m for m, (flags, _) in self.marks.items() if "\\Seen" not in flags}

    def first_unseen(self) -> int:
        """The place (from 1) in UID order of the first without \\Seen; 0: none."""
        unseen = self._unseen_letters()
        if not unseen:
            return 0
        return 1 + min(compress(self.rank, map(unseen.__contains__, self.letters)))

    def unseen(self) -> int:
        unseen = self._unseen_letters()
        return sum(map(unseen.__contains__, self.letters)) if unseen else 0

    def keywords(self) -> frozenset[str]:
        return frozenset().union(*(keywords for _, keywords in self.marks.values()))

    def size(self) -> int:
        """The sum of the CRLF sizes (STATUS SIZE)."""
        return sum(map(int, self.rfc822_sizes))

    def lines(self) -> str:
        """The files' ``A`` lines in UID order, as :meth:`UidIndex.record_line`
        writes their records (made in the listing's order, joined in UID
        order: each column read in the order it lies in memory)."""
        rank = self.rank
        fields = {m: record_fields(*marks) for m, marks in self.marks.items()}
        uids = map(add, rank, repeat(self.first_uid))
        modseqs = map(add, rank, repeat(self.first_modseq))
        if all(f == (m, "") for m, f in fields.items()):
            # The letters are the flags field, no keyword (the common case).
            made = list(
                map(
                    "A\t{}\t{}\t{}\t{}\t{}\t-\t{}\t\n".format,
                    uids,
                    modseqs,
                    self.filenames,
                    self.sizes,
                    self.rfc822_sizes,
                    self.letters,
                )
            )
        else:
            flags = {m: f[0] for m, f in fields.items()}
            keywords = {m: f[1] for m, f in fields.items()}
            made = list(
                map(
                    "A\t{}\t{}\t{}\t{}\t{}\t-\t{}\t{}\n".format,
                    uids,
                    modseqs,
                    self.filenames,
                    self.sizes,
                    self.rfc822_sizes,
                    map(flags.__getitem__, self.letters),
                    map(keywords.__getitem__, self.letters),
                )
            )
        return "".join(map(made.__getitem__, self.order))


#: "<name>" of "new/<name>" or "cur/<name>", and the first of a tuple.
_AFTER_SUB = itemgetter(slice(4, None))
_FIRST = itemgetter(0)


class IndexCorrupt(Exception):
    """The index cannot be trusted; the folder must be renumbered."""


class IndexConflict(IndexCorrupt):
    """UIDs this process gave only in memory (the file could not be written)
    were given to other messages by another process: the file's numbering
    stands, and this process's sessions must start over."""


#: Errnos that make a store read-only rather than full.
_READ_ONLY_ERRNOS = frozenset((errno.EROFS, errno.EACCES, errno.EPERM))


def _unwritable(e: OSError, path: str) -> StoreNotWritable:
    return StoreNotWritable(e.errno or errno.EIO, f"{path}: {e.strerror or e}")


@dataclass
class IndexChange:
    """A change read from the log: ``old`` is the record it replaced (None
    for a new UID); ``new`` None means expunged."""

    uid: int
    old: MessageInfo | None
    new: MessageInfo | None


class UidIndex:
    """The in-memory image of one folder's ``pymta-uidlist``, kept in step
    with the file by :meth:`sync` (reads only what other processes appended)."""

    def __init__(self, directory: str, fsync: bool = True) -> None:
        self.directory = directory
        self.path = os.path.join(directory, INDEX_NAME)
        self._fsync = fsync
        self.uidvalidity = 0
        self.uidnext = 1
        self.highest_modseq = 1
        self.floor = 0
        self._records: dict[int, MessageInfo] = {}
        self._by_base: dict[str, int] = {}
        #: A first scan's files, numbered and written, whose records are
        #: not made yet: made on first use of :attr:`records` or
        #: :attr:`by_base` (see :meth:`put_numbered`).
        self.numbered: Numbered | None = None
        self._making = threading.Lock()
        self.tombstones: list[tuple[int, int]] = []
        self.scan_stamp: tuple[int, int] | None = None
        self.loaded = False
        self._offset = 0
        self._ino = -1
        self._lines = 0
        #: The file's format is an older version: rewritten before appending.
        self._old_format = False
        self._flag_cache: dict[str, frozenset[str]] = {}
        self._kw_cache: dict[str, frozenset[str]] = {}
        #: The errno that made the store read-only (EROFS, EACCES, EPERM)
        #: at the last try to open it for writing; None while it is writable.
        self.read_only_errno: int | None = None
        #: Lines not yet written: the file could not take them.
        self.pending: list[str] = []
        #: UIDs handed out only in memory so far, with their base names.
        self.memory_uids: dict[int, str] = {}
        self._pending_records: list[MessageInfo] = []
        self._pending_expunged: list[tuple[int, int]] = []
        # The whole index is only in memory (create() could not write it).
        self._only_in_memory = False

    # -- the records -----------------------------------------------------

    @property
    def records(self) -> dict[int, MessageInfo]:
        """Every live message's record by UID, in UID order."""
        if self.numbered is not None:
            self.make_records()
        return self._records

    @records.setter
    def records(self, value: dict[int, MessageInfo]) -> None:
        self.numbered = None
        self._records = value

    @property
    def by_base(self) -> dict[str, int]:
        """The UID of each live message's base name (before ``:``)."""
        if self.numbered is not None:
            self.make_records()
        return self._by_base

    @by_base.setter
    def by_base(self, value: dict[str, int]) -> None:
        self.numbered = None
        self._by_base = value

    def message_count(self) -> int:
        """How many live messages (no record made for it)."""
        numbered = self.numbered
        return len(self._records) + (0 if numbered is None else len(numbered))

    def make_records(self) -> None:
        """The records of :attr:`numbered`, what a reader of their lines
        gets (100,000 in about 0.1 s: the first command that needs them
        pays it, in the store's threads for a SELECT's big folder)."""
        with self._making, paused():  # made once; 100,000 objects: pymta.mailstore.gcpause
            numbered = self.numbered
            if numbered is None:
                return
            infos = self._numbered_infos(numbered)
            self._records.update(zip(numbered.uids, infos, strict=True))
            # The base names (before ":"), in the listing's order.
            rests = map(_AFTER_SUB, numbered.filenames)
            bases = map(_FIRST, map(str.partition, rests, repeat(":")))
            uids = map(add, numbered.rank, repeat(numbered.first_uid))
            self._by_base.update(zip(bases, uids, strict=True))
            self.numbered = None

    def _numbered_infos(self, numbered: Numbered) -> list[MessageInfo]:
        """The records of ``numbered``, in UID order: what a reader of
        their lines gets. Made in the listing's order (each column read
        in the order it lies in memory: half the time of reading them in
        UID order), then put in UID order."""
        flags: dict[str, frozenset[str]] = {}
        keywords: dict[str, frozenset[str]] = {}
        for marks, (system, names) in numbered.marks.items():
            flag_field, keyword_field = record_fields(system, names)
            flags[marks] = self._flags(flag_field)
            keywords[marks] = self._keywords(keyword_field)
        rank, filenames = numbered.rank, numbered.filenames
        made = list(
            map(
                message_info,
                map(add, rank, repeat(numbered.first_uid)),
                map(int, numbered.sizes),
                map(int, numbered.rfc822_sizes),
                repeat(None),
                map(flags.__getitem__, numbered.letters),
                map(keywords.__getitem__, numbered.letters),
                map(add, rank, repeat(numbered.first_modseq)),
                filenames,
                map(str.startswith, filenames, repeat("n")),
            )
        )
        return list(map(made.__getitem__, numbered.order))

    # -- locking ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's index lock (blocks while another process holds it).

        On a store that cannot be written the lock file is opened read-only
        (flock needs no write access); if it is missing and cannot be made,
        no lock is taken: no other process can write the index either."""
        path = os.path.join(self.directory, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            self.read_only_errno = None
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            if e.errno in _READ_ONLY_ERRNOS:
                self.read_only_errno = e.errno
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                fd = -1
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # closing drops the flock

    # -- reading ---------------------------------------------------------

    def exists(self) -> bool:
        return self._only_in_memory or os.path.exists(self.path)

    def stamp(self) -> tuple[int, int]:
        """(inode, size) of the file, to tell cheaply whether it changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (-1, 0)
        return (st.st_ino, st.st_size)

    def is_current(self) -> bool:
        return self.stamp() == (self._ino, self._offset)

    def sync(self) -> list[IndexChange]:
        """Read what was appended since the last call (everything after a
        compaction), then write what only memory held, if the file takes
        it now; call with the lock held. Raises IndexCorrupt (IndexConflict
        when another process numbered differently what memory held)."""
        if self._only_in_memory:
            if os.path.exists(self.path):
                raise IndexConflict(f"{self.path}: made by another process meanwhile")
            self._flush_pending()
            return []
        if self.loaded:
            # The common case: nobody else wrote since our last read or write.
            # One stat instead of open, fstat, read and close.
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                raise IndexCorrupt("index missing") from None
            if st.st_ino == self._ino and st.st_size == self._offset:
                if self.pending:
                    self._flush_pending()
                return []
        writable = True
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise IndexCorrupt("index missing") from None
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            writable = False
            fd = os.open(self.path, os.O_RDONLY)
        before: dict[int, MessageInfo] | None = None
        with os.fdopen(fd, "rb+" if writable else "rb") as f:
            st = os.fstat(f.fileno())
            full = st.st_ino != self._ino or st.st_size < self._offset
            if full:
                if self.loaded:
                    before = dict(self.records)  # compacted by another process
                self._reset()
                f.seek(0)
            else:
                f.seek(self._offset)
            data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                # A torn last line: a writer died mid-write, before its UIDs
                # were handed out (they are handed out only after the fsync).
                # Cut off, or on a store that cannot be written, skipped.
                if writable:
                    f.truncate(self._offset + cut if not full else cut)
                data = data[:cut]
            start = 0 if not full else self._read_header(data)
            changes = self._apply(data, start, notify=not full)
            self._offset = (0 if full else self._offset) + len(data)
            self._ino = st.st_ino
        self.loaded = True
        if self.pending:
            self._merge_pending()
        if before is not None:
            changes = _diff(before, self.records)
        if self.pending:
            self._flush_pending()
        return changes

    def _merge_pending(self) -> None:
        """Another process wrote while records waited in memory: keep ours
        on top of its records, unless it numbered differently (IndexConflict)."""
        records, by_base = self.records, self.by_base
        for uid, base in self.memory_uids.items():
            theirs = records.get(uid)
            if theirs is not None and theirs.filename[4:].partition(":")[0] != base:
                raise IndexConflict(f"{self.path}: UID {uid} was given to another message")
            if by_base.get(base, uid) != uid:
                raise IndexConflict(f"{self.path}: {base} was given another UID")
        self._apply_own(self._pending_records, self._pending_expunged, None)

    def _drop_pending(self) -> None:
        self.pending = []
        self.memory_uids = {}
        self._pending_records = []
        self._pending_expunged = []

    def forget(self) -> None:
        """Drop the image and what only memory held (after IndexConflict):
        the next sync loads the file as it is."""
        self._drop_pending()
        self._only_in_memory = False
        self._reset()
        self.loaded = False
        self._ino = -1
        self._offset = 0

    def _flush_pending(self) -> StoreNotWritable | None:
        """Write what only memory holds (lock held); the error when the
        file still cannot take it."""
        try:
            if self._only_in_memory:
                self.compact()
            elif self.pending:
                self._append(self.pending, fsync=bool(self.memory_uids))
                self._drop_pending()
        except StoreNotWritable as e:
            return e
        return None

    def _reset(self) -> None:
        self.records = {}
        self.by_base = {}
        self.tombstones = []
        self.scan_stamp = None
        self._lines = 0

    def _read_header(self, data: bytes) -> int:
        end = data.find(b"\n")
        try:
            fields = data[:end].decode("ascii").split("\t")
            if end < 0 or fields[0] not in _READABLE:
                raise ValueError("bad magic")
            self._old_format = fields[0] != MAGIC
            values = {f[0]: int(f[1:]) for f in fields[1:]}
            self.uidvalidity = values["V"]
            self.uidnext = values["N"]
            self.highest_modseq = values["M"]
            self.floor = values.get("E", 0)
        except (ValueError, KeyError, UnicodeDecodeError, IndexError) as e:
            raise IndexCorrupt(f"{self.path}: bad header: {e}") from None
        if self.uidvalidity <= 0 or self.uidnext <= 0:
            raise IndexCorrupt(f"{self.path}: bad header values")
        return end + 1

    def _apply(self, data: bytes, start: int, notify: bool) -> list[IndexChange]:
        changes: list[IndexChange] = []
        records = self.records
        by_base = self.by_base
        flag_of = self._flags
        flag_cache = self._flag_cache
        keywords_of = self._keywords
        good_name = _GOOD_FILENAME.match
        make_info = message_info
        uidnext, highest = self.uidnext, self.highest_modseq
        try:
            text = data[start:].decode("utf-8")
        except UnicodeDecodeError:
            raise IndexCorrupt(f"{self.path}: not UTF-8") from None
        lines = text.split("\n")
        lines.pop()  # after the last newline: empty
        for line in lines:
            f = line.split("\t")
            try:
                kind = f[0]
                if kind == "S":
                    self.scan_stamp = (int(f[1]), int(f[2]))
                    continue
                uid = int(f[1])
                modseq = int(f[2])
                if kind == "A":
                    filename = f[3]
                    # The index is input too: a name must stay inside new/ or cur/.
                    if len(f) != 9 or not good_name(filename):
                        raise ValueError(f"bad record for UID {uid}")
                    base = filename[4:].partition(":")[0]
                    flags = flag_cache.get(f[7])
                    info = make_info(
                        uid,
                        int(f[4]),
                        int(f[5]),
                        None if f[6] == UNKNOWN_DATE else float(f[6]),
                        flag_of(f[7]) if flags is None else flags,
                        keywords_of(f[8]) if f[8] else _NO_KEYWORDS,
                        modseq,
                        filename,
                        filename[0] == "n",
                    )
                    old = records.get(uid)
                    if old is not None:
                        old_base = old.filename[4:].partition(":")[0]
                        if old_base != base and by_base.get(old_base) == uid:
                            del by_base[old_base]
                    records[uid] = info
                    by_base[base] = uid
                    if notify:
                        changes.append(IndexChange(uid, old, info))
                elif kind == "X":
                    old = records.pop(uid, None)
                    if old is not None:
                        by_base.pop(old.filename[4:].partition(":")[0], None)
                        self.tombstones.append((uid, modseq))
                        if notify:
                            changes.append(IndexChange(uid, old, None))
                else:
                    raise ValueError(f"unknown record {kind!r}")
            except (ValueError, IndexError, KeyError) as e:
                raise IndexCorrupt(f"{self.path}: {e}: {line[:80]!r}") from None
            if uid >= uidnext:
                uidnext = uid + 1
            if modseq > highest:
                highest = modseq
        self.uidnext, self.highest_modseq = uidnext, highest
        self._lines += len(lines)
        return changes

    def _apply_own(
        self,
        infos: list[MessageInfo],
        expunged: list[tuple[int, int]],
        scan_stamp: tuple[int, int] | None,
        as_read: bool = False,
    ) -> None:
        """Update the image with records this process has just appended: the
        same result as :meth:`_apply` of their lines, minus the parsing
        (``as_read``: the records are already what the parsing would give)."""
        records = self.records
        by_base = self.by_base
        uidnext, highest = self.uidnext, self.highest_modseq
        if as_read and infos and min(i.uid for i in infos) >= uidnext:
            # Only new UIDs (a scan's new files): nothing to replace, so
            # the dicts take them in bulk.
            uids = [i.uid for i in infos]
            records.update(zip(uids, infos, strict=True))
            bases = [i.filename[4:].partition(":")[0] for i in infos]
            by_base.update(zip(bases, uids, strict=True))
            uidnext = max(uidnext, max(uids) + 1)
            highest = max(highest, max(i.modseq for i in infos))
            infos = []
        for info in infos:
            filename = info.filename
            if not as_read and (info.recent != (filename[0] == "n") or not info.flags <= _SYSTEM):
                # What a reader of the line gets: only the flags that have
                # letters, and recent exactly while the file is in new/.
                flags = info.flags & _SYSTEM
                info = message_info(
                    info.uid,
                    info.size,
                    info.rfc822_size,
                    info.internal_date,
                    flags,
                    info.keywords,
                    info.modseq,
                    filename,
                    filename[0] == "n",
                )
            uid = info.uid
            base = filename[4:].partition(":")[0]
            old = records.get(uid)
            if old is not None:
                old_base = old.filename[4:].partition(":")[0]
                if old_base != base and by_base.get(old_base) == uid:
                    del by_base[old_base]
            records[uid] = info
            by_base[base] = uid
            if uid >= uidnext:
                uidnext = uid + 1
            if info.modseq > highest:
                highest = info.modseq
        for uid, modseq in expunged:
            old = records.pop(uid, None)
            if old is not None:
                by_base.pop(old.filename[4:].partition(":")[0], None)
                self.tombstones.append((uid, modseq))
            if uid >= uidnext:
                uidnext = uid + 1
            if modseq > highest:
                highest = modseq
        if scan_stamp is not None:
            self.scan_stamp = scan_stamp
        self.uidnext, self.highest_modseq = uidnext, highest

    def _flags(self, letters: str) -> frozenset[str]:
        cached = self._flag_cache.get(letters)
        if cached is None:
            cached = frozenset(_LETTER_FLAGS[c] for c in letters)
            self._flag_cache[letters] = cached
        return cached

    def _keywords(self, text: str) -> frozenset[str]:
        cached = self._kw_cache.get(text)
        if cached is None:
            cached = frozenset(text.split(" ")) if text else frozenset()
            if len(self._kw_cache) < 1000:
                self._kw_cache[text] = cached
        return cached

    # -- writing ---------------------------------------------------------

    @staticmethod
    def record_line(info: MessageInfo) -> str:
        flags, keywords = record_fields(info.flags, info.keywords)
        date = UNKNOWN_DATE if info.internal_date is None else repr(info.internal_date)
        return (
            f"A\t{info.uid}\t{info.modseq}\t{info.filename}\t{info.size}\t"
            f"{info.rfc822_size}\t{date}\t{flags}\t{keywords}\n"
        )

    def put(
        self,
        infos: list[MessageInfo],
        expunged: list[tuple[int, int]],
        scan_stamp: tuple[int, int] | None = None,
        strict: bool = False,
        lines: list[str] | None = None,
    ) -> None:
        """Append records (lock held), update the image, and compact when
        dead lines have piled up. ``scan_stamp`` records the directories'
        mtimes at which the index matches them, so that the next process to
        open the folder can skip its own scan when nothing changed.

        The write is fsync'd when it hands out new UIDs: those must never be
        given twice. Flag, location and expunge records are not: after a
        crash the file names on disk say the same and the next scan brings
        the index back in line (as Dovecot treats its index).

        When the file cannot be written (:data:`WRITE_ERRNOS`) the records
        are kept in memory and written by a later change (see the module
        docstring); with ``strict`` (a client's APPEND or COPY) nothing
        changes and StoreNotWritable is raised instead.

        ``lines``, when given, are the records' lines already formatted
        (:meth:`record_line` of each, in order), and the records exactly
        what a reader of those lines gets (recent while in new/, only
        system flags in ``flags``): a folder's scan formats them while it
        numbers its new files."""
        new = [i for i in infos if i.uid >= self.uidnext]
        as_read = lines is not None
        lines = [self.record_line(i) for i in infos] if lines is None else list(lines)
        lines += [f"X\t{uid}\t{modseq}\n" for uid, modseq in expunged]
        if scan_stamp is not None and scan_stamp != self.scan_stamp:
            lines.append(f"S\t{scan_stamp[0]}\t{scan_stamp[1]}\n")
        if not lines:
            return
        try:
            if self.pending or self._only_in_memory:
                error = self._flush_pending()
                if error is not None:
                    raise error
            if self._old_format:
                # Lines of this version may not follow an older header
                # (its readers would misread them): the file is rewritten
                # in this version first.
                self.compact()
            self._append(lines, fsync=bool(new))
        except StoreNotWritable:
            if strict:
                raise
            # Readable all the same: what the disk says is kept in memory
            # until the file takes it.
            self.pending.extend(lines)
            self.memory_uids.update((i.uid, i.filename[4:].partition(":")[0]) for i in new)
            self._pending_records.extend(infos)
            self._pending_expunged.extend(expunged)
            self._apply_own(infos, expunged, scan_stamp, as_read)
            return
        # Apply our own records to the image as a reader of the lines would
        # (without parsing back what we just formatted).
        self._apply_own(infos, expunged, scan_stamp, as_read)
        # Compact when dead lines reach half the live ones: loading stays
        # close to one line per message, and each line is rewritten O(1)
        # times on average.
        live = len(self.records) + len(self.tombstones)
        if self._lines > live + live // 2 + 1000:
            with contextlib.suppress(StoreNotWritable):
                self.compact()

    def put_numbered(self, numbered: Numbered, scan_stamp: tuple[int, int] | None) -> None:
        """Append the ``A`` lines of a first scan's files (as
        :meth:`record_line` would write their records, made by one join),
        fsync'd, under the lock, to an index that holds no message yet.
        Their records are made when first used (:attr:`records`), so a
        SELECT of a folder never seen makes none
        (:meth:`pymta.mailstore.maildir_folder.MaildirFolder.summary`).
        On an index that is not empty, or that memory holds lines of, or
        when the file cannot take them, the records are made at once and
        go the way :meth:`put` takes."""
        if not numbered.filenames:
            return
        lines = numbered.lines()
        if self.message_count() or self.pending or self._only_in_memory or self._old_format:
            self._put_made(numbered, lines, scan_stamp)
            return
        data = [lines]
        if scan_stamp is not None and scan_stamp != self.scan_stamp:
            data.append(f"S\t{scan_stamp[0]}\t{scan_stamp[1]}\n")
        try:
            self._append(data, fsync=True)
        except StoreNotWritable:
            self._put_made(numbered, lines, scan_stamp)
            return
        self._lines += len(numbered) - 1
        self.numbered = numbered
        last = len(numbered) - 1
        self.uidnext = max(self.uidnext, numbered.first_uid + last + 1)
        self.highest_modseq = max(self.highest_modseq, numbered.first_modseq + last)
        if scan_stamp is not None:
            self.scan_stamp = scan_stamp

    def _put_made(self, numbered: Numbered, lines: str, scan_stamp: tuple[int, int] | None) -> None:
        infos = self._numbered_infos(numbered)
        self.put(infos, [], scan_stamp, lines=lines.splitlines(keepends=True))

    def put_dates(self, dates: dict[int, float], write: bool = True) -> None:
        """Give records whose date was unknown their date (lock held;
        ``dates`` by UID, of records present, in the image, with the date
        unknown): nothing else of them changes, no modseq either (a date
        read late is not a change a client hears of). Written as their
        ``A`` lines again, or, when they are more than half the folder (a
        first SORT by arrival of a folder never dated), the file is
        rewritten at once instead of appending and compacting after. Kept
        in memory when the file cannot take them, or without ``write``
        (the caller keeps them elsewhere: :mod:`pymta.mailstore.datefile`;
        the next compaction writes them all the same)."""
        records = self.records
        dated: list[MessageInfo] = []
        for uid, date in dates.items():
            old = records[uid]
            info = message_info(
                uid,
                old.size,
                old.rfc822_size,
                date,
                old.flags,
                old.keywords,
                old.modseq,
                old.filename,
                old.recent,
            )
            records[uid] = info
            dated.append(info)
        if not dated or not write:
            return
        try:
            if self.pending or self._only_in_memory or self._old_format:
                self.put(dated, [], lines=[self.record_line(i) for i in dated])
            elif len(dated) > len(records) // 2:
                self.compact()
            else:
                self.put(dated, [], lines=[self.record_line(i) for i in dated])
        except StoreNotWritable:
            pass  # the dates stay in memory; read again by the next process

    def _append(self, lines: list[str], fsync: bool) -> None:
        """Append whole lines, or nothing: a write cut short (a full file
        system) is cut off again, under the lock nobody else appends."""
        data = "".join(lines).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise _unwritable(e, self.path) from e
            raise
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync and fsync:
                    os.fsync(fd)
            except OSError as e:
                if e.errno not in WRITE_ERRNOS:
                    raise
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise _unwritable(e, self.path) from e
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._lines += len(lines)
        self._offset = st.st_size
        self._ino = st.st_ino

    def create(self, uidvalidity: int, uidnext: int = 1, modseq: int = 1) -> None:
        """Start an empty index (lock held); only in memory when the file
        cannot be written (written by the first later change that can)."""
        self._reset()
        self._drop_pending()
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highest_modseq = modseq
        self.floor = 0
        try:
            self.compact()
        except StoreNotWritable:
            self._only_in_memory = True
            self._ino, self._offset = -1, 0
        self.loaded = True

    def compact(self) -> None:
        """Rewrite the file with only live records and recent tombstones
        (tmp + fsync + rename; lock held). StoreNotWritable, with the file
        as it was, when the store cannot be written."""
        if len(self.tombstones) > MAX_TOMBSTONES:
            dropped = self.tombstones[: len(self.tombstones) - MAX_TOMBSTONES]
            self.floor = max(self.floor, max(m for _, m in dropped))
            self.tombstones = self.tombstones[-MAX_TOMBSTONES:]
        header = (
            f"{MAGIC}\tV{self.uidvalidity}\tN{self.uidnext}\t"
            f"M{self.highest_modseq}\tE{self.floor}\n"
        )
        parts = [header]
        parts.extend(self.record_line(i) for i in self.records.values())
        parts.extend(f"X\t{uid}\t{modseq}\n" for uid, modseq in self.tombstones)
        if self.scan_stamp is not None:
            parts.append(f"S\t{self.scan_stamp[0]}\t{self.scan_stamp[1]}\n")
        data = "".join(parts).encode("utf-8")
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _unwritable(e, tmp) from e
        if self._fsync:
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        st = os.stat(self.path)
        self._offset = st.st_size
        self._ino = st.st_ino
        self._lines = len(self.records) + len(self.tombstones)
        self._old_format = False
        # Everything memory held is in the file now.
        self._drop_pending()
        self._only_in_memory = False


def record_fields(flags: frozenset[str], keywords: frozenset[str]) -> tuple[str, str]:
    """The flags and keywords fields of an ``A`` line: the letters of the
    system flags, the keywords separated by spaces (both sorted)."""
    letters = _letters_of.get(flags)
    if letters is None:
        letters = "".join(sorted(_FLAG_LETTERS[f] for f in flags if f in _FLAG_LETTERS))
        if len(_letters_of) < 64:  # 32 combinations of the five letters
            _letters_of[flags] = letters
    return letters, " ".join(sorted(keywords)) if keywords else ""


def _diff(before: dict[int, MessageInfo], after: dict[int, MessageInfo]) -> list[IndexChange]:
    """What changed between two images (after another process compacted
    the file, its records since our last read cannot be told apart)."""
    changes = [IndexChange(uid, old, None) for uid, old in before.items() if uid not in after]
    for uid, new in after.items():
        old = before.get(uid)
        if old != new:
            changes.append(IndexChange(uid, old, new))
    return changes
