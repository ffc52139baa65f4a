"""The per-folder UID index of a Maildir: ``pymta-uidlist``.

Plays the part of Dovecot's ``dovecot-uidlist`` plus the part of its index
that IMAP needs without opening messages: for every UID the message's file
name, size, CRLF size, internal date, flags, keywords and modseq (RFC 7162).

Format: a text file, one record per line, tab-separated, append-only::

    pymta-uidlist 1 <TAB> V<uidvalidity> <TAB> N<uidnext> <TAB> M<modseq> <TAB> E<floor>
    A <uid> <modseq> <sub/filename> <size> <rfc822 size> <internal date> <flags> <keywords>
    X <uid> <modseq>
    S <new/ mtime ns> <cur/ mtime ns>

``A`` adds or replaces a message's record, ``X`` expunges it (kept as a
tombstone for QRESYNC), ``S`` notes the directories' mtimes at a moment the
index was known to match them (after a complete scan, or after our own
changes on top of one): a process opening the folder skips its scan when
they still match; flags are the letters D F R S T, keywords separated
by spaces. Appending a message costs one short ``write``; when dead lines
outnumber live ones the file is compacted (written to a temporary name,
fsync'd, renamed), which readers in other processes notice by its inode.
The header's N and M keep UIDNEXT and HIGHESTMODSEQ across compactions, E
the modseq below which tombstones were dropped.

Every change is made under an exclusive ``flock`` of ``pymta-uidlist.lock``
and made durable (fsync) before its UIDs are handed out, so two processes
never give one UID to two messages. A torn last line (a crash in the middle
of a write) is cut off on the next load; any other damage raises
:class:`IndexCorrupt` and the folder is renumbered under a new UIDVALIDITY.

Untrusted input: the file itself (another process, a crash, a disk error).
Writes ``pymta-uidlist``, its ``.tmp`` and ``.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pymta.mailstore.interface import MessageInfo
from pymta.mailstore.names import FILENAME_PATTERN

INDEX_NAME = "pymta-uidlist"
LOCK_NAME = "pymta-uidlist.lock"
MAGIC = "pymta-uidlist 1"
MAX_TOMBSTONES = 20000

_FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
_LETTER_FLAGS = {v: k for k, v in _FLAG_LETTERS.items()}
_SYSTEM = frozenset(_FLAG_LETTERS)
_NO_KEYWORDS: frozenset[str] = frozenset()
_GOOD_FILENAME = re.compile(r"(?:new|cur)/" + FILENAME_PATTERN + r"\Z")


def message_info(
    uid: int,
    size: int,
    rfc822_size: int,
    internal_date: float,
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


class IndexCorrupt(Exception):
    """The index cannot be trusted; the folder must be renumbered."""


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
        self.records: dict[int, MessageInfo] = {}
        self.by_base: dict[str, int] = {}
        self.tombstones: list[tuple[int, int]] = []
        self.scan_stamp: tuple[int, int] | None = None
        self.loaded = False
        self._offset = 0
        self._ino = -1
        self._lines = 0
        self._flag_cache: dict[str, frozenset[str]] = {}
        self._kw_cache: dict[str, frozenset[str]] = {}

    # -- locking ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's index lock (blocks while another process holds it)."""
        fd = os.open(os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    # -- reading ---------------------------------------------------------

    def exists(self) -> bool:
        return os.path.exists(self.path)

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
        compaction); call with the lock held. Raises IndexCorrupt."""
        if self.loaded:
            # The common case: nobody else wrote since our last read or write.
            # One stat instead of open, fstat, read and close.
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                raise IndexCorrupt("index missing") from None
            if st.st_ino == self._ino and st.st_size == self._offset:
                return []
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise IndexCorrupt("index missing") from None
        before: dict[int, MessageInfo] | None = None
        with os.fdopen(fd, "rb+") as f:
            st = os.fstat(f.fileno())
            full = st.st_ino != self._ino or st.st_size < self._offset
            if full:
                if self.loaded:
                    before = self.records  # compacted by another process
                self._reset()
                f.seek(0)
            else:
                f.seek(self._offset)
            data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                # A torn last line: a writer died mid-write, before its UIDs
                # were handed out (they are handed out only after the fsync).
                f.truncate(self._offset + cut if not full else cut)
                data = data[:cut]
            start = 0 if not full else self._read_header(data)
            changes = self._apply(data, start, notify=not full)
            self._offset = (0 if full else self._offset) + len(data)
            self._ino = st.st_ino
        self.loaded = True
        if before is not None:
            changes = _diff(before, self.records)
        return changes

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
            if end < 0 or fields[0] != MAGIC:
                raise ValueError("bad magic")
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
                        float(f[6]),
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
    ) -> None:
        """Update the image with records this process has just appended: the
        same result as :meth:`_apply` of their lines, minus the parsing."""
        records = self.records
        by_base = self.by_base
        uidnext, highest = self.uidnext, self.highest_modseq
        for info in infos:
            filename = info.filename
            recent = filename[0] == "n"
            if info.recent != recent or not info.flags <= _SYSTEM:
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
                    recent,
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
        flags = "".join(sorted(_FLAG_LETTERS[f] for f in info.flags if f in _FLAG_LETTERS))
        return (
            f"A\t{info.uid}\t{info.modseq}\t{info.filename}\t{info.size}\t"
            f"{info.rfc822_size}\t{info.internal_date!r}\t{flags}\t"
            f"{' '.join(sorted(info.keywords))}\n"
        )

    def put(
        self,
        infos: list[MessageInfo],
        expunged: list[tuple[int, int]],
        scan_stamp: tuple[int, int] | None = None,
    ) -> None:
        """Append records (lock held), update the image, and compact when
        dead lines have piled up. ``scan_stamp`` records the directories'
        mtimes at which the index matches them, so that the next process to
        open the folder can skip its own scan when nothing changed.

        The write is fsync'd when it hands out new UIDs: those must never be
        given twice. Flag, location and expunge records are not: after a
        crash the file names on disk say the same and the next scan brings
        the index back in line (as Dovecot treats its index)."""
        new_uids = any(i.uid >= self.uidnext for i in infos)
        lines = [self.record_line(i) for i in infos]
        lines += [f"X\t{uid}\t{modseq}\n" for uid, modseq in expunged]
        if scan_stamp is not None and scan_stamp != self.scan_stamp:
            lines.append(f"S\t{scan_stamp[0]}\t{scan_stamp[1]}\n")
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync and new_uids:
                os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        # Apply our own records to the image as a reader of the lines would
        # (without parsing back what we just formatted).
        self._apply_own(infos, expunged, scan_stamp)
        self._lines += len(lines)
        self._offset = st.st_size
        self._ino = st.st_ino
        # Compact when dead lines reach half the live ones: loading stays
        # close to one line per message, and each line is rewritten O(1)
        # times on average.
        live = len(self.records) + len(self.tombstones)
        if self._lines > live + live // 2 + 1000:
            self.compact()

    def create(self, uidvalidity: int, uidnext: int = 1, modseq: int = 1) -> None:
        """Start an empty index (lock held)."""
        self._reset()
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highest_modseq = modseq
        self.floor = 0
        self.compact()
        self.loaded = True

    def compact(self) -> None:
        """Rewrite the file with only live records and recent tombstones
        (tmp + fsync + rename; lock held)."""
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


def base_of(filename: str) -> str:
    """The Maildir base name of ``sub/name:2,flags``."""
    name = filename.rsplit("/", 1)[-1]
    return name.partition(":")[0]


def _diff(before: dict[int, MessageInfo], after: dict[int, MessageInfo]) -> list[IndexChange]:
    """What changed between two images (after another process compacted
    the file, its records since our last read cannot be told apart)."""
    changes = [IndexChange(uid, old, None) for uid, old in before.items() if uid not in after]
    for uid, new in after.items():
        old = before.get(uid)
        if old != new:
            changes.append(IndexChange(uid, old, new))
    return changes
