"""The per-folder cache of parsed messages: ``pymta-cache``.

Plays the part of Dovecot's ``dovecot.index.cache``: each message's header
block and MIME structure, stored the first time someone asks for them, so
that IMAP header SEARCH and BODYSTRUCTURE on a large folder read one file
instead of every message. Messages never change once stored, so an entry
never goes stale; the file is tied to the folder's UIDVALIDITY and is
dropped when that changes.

Format: a header line ``pymta-cache 1 V<uidvalidity>``, then records
``<kind> <uid> <length>\\n<bytes>\\n`` where kind is ``H`` (header block) or
``M`` (MIME structure as JSON). Appends are single ``O_APPEND`` writes, so
several processes can fill it at once; a damaged file is simply discarded
(it holds nothing that cannot be recomputed). Entries of expunged messages
are dropped by :meth:`MessageCache.compact` when they outnumber the rest.

Reads come from a read-only ``mmap`` of the file, remapped when a scan finds
it grown: a hit costs no system call (a header SEARCH reads hundreds of
entries). The file is only ever appended to or replaced by rename, never
truncated in place, so every mapped record stays readable; a replaced file
keeps its old mapping until the next :meth:`MessageCache.get` miss,
:meth:`MessageCache.missing` or :meth:`MessageCache.put` notices the new inode.

On a store that cannot be written (read-only, full: the errnos of
:data:`~pymta.mailstore.interface.WRITE_ERRNOS`) the cache is read as it
is, or not at all when it cannot be opened, and nothing is stored: every
answer then comes from the message files. An append cut short by a full
file system removes the file (a torn record would misalign the rest).

Untrusted input: the file (crash, other processes). Writes ``pymta-cache``.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
from collections.abc import Collection, Iterable, Iterator, Mapping

from pymta.mailstore.interface import WRITE_ERRNOS

CACHE_NAME = "pymta-cache"
MAGIC = b"pymta-cache 1"
WRITE_CHUNK = 1 << 20
#: Bytes of the file lower-cased at a time by :meth:`MessageCache.containing`.
SCAN_CHUNK = 1 << 22


class MessageCache:
    """Cached header blocks and MIME structures of one folder, read lazily."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, CACHE_NAME)
        self._uidvalidity = 0
        self._entries: dict[tuple[bytes, int], tuple[int, int]] = {}
        self._end = 0
        self._fd = -1
        self._ino = -1
        # The file's first ``len(_map)`` bytes; every entry lies inside.
        self._map: mmap.mmap | None = None
        # False while the file could only be opened for reading (or not at
        # all: _fd -1): nothing is stored then.
        self._writable = True

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self, uidvalidity: int) -> bool:
        """Open (or make) the file for ``uidvalidity``; False when there is
        none to read (a store that cannot be written)."""
        if self._fd >= 0 and self._uidvalidity == uidvalidity:
            try:
                if os.stat(self.path).st_ino == self._ino:
                    return True
            except FileNotFoundError:
                pass
        self.close()
        self._entries = {}
        self._uidvalidity = uidvalidity
        header = MAGIC + b" V%d\n" % uidvalidity
        self._writable = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            fd = -1
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            self._writable = False
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                fd = -1
        if fd >= 0 and os.pread(fd, len(header), 0) != header:
            os.close(fd)
            fd = -1
        if fd < 0:
            if not self._writable:
                return False
            tmp = f"{self.path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(header)
                os.rename(tmp, self.path)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            except OSError as e:
                if e.errno not in WRITE_ERRNOS:
                    raise
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self._writable = False
                return False
        self._fd = fd
        self._ino = os.fstat(fd).st_ino
        self._end = len(header)
        return True

    def _write(self, data: bytes) -> bool:
        """Append records; False (and the file gone) when the store could
        not take them all."""
        if self._fd < 0 or not self._writable:
            return False
        try:
            os.write(self._fd, data)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            # Part of a record may be in the file: drop it all.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.close()
            self._uidvalidity = 0
            return False
        return True

    def _scan(self) -> None:
        """Index the records appended since the last scan."""
        size = os.fstat(self._fd).st_size
        if size <= self._end:
            return
        data = self._remap(size)
        pos = self._end
        while pos < size:
            nl = data.find(b"\n", pos, pos + 40)
            if nl < 0:
                break
            try:
                kind, uid_text, length_text = data[pos:nl].split(b" ")
                uid, length = int(uid_text), int(length_text)
            except ValueError:
                self._discard()
                return
            if nl + 1 + length + 1 > size:
                break  # being written by another process, or torn
            self._entries[(kind, uid)] = (nl + 1, length)
            pos = nl + 1 + length + 1
        self._end = pos

    def _remap(self, size: int) -> mmap.mmap:
        """Map the file's first ``size`` bytes (the old map, if any, goes:
        values already returned are copies, so nothing refers to it)."""
        if self._map is not None:
            if len(self._map) >= size:
                return self._map
            self._map.close()
        self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        return self._map

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # gone, or a read-only store
            os.unlink(self.path)
        uidvalidity = self._uidvalidity
        self.close()
        self._open(uidvalidity)

    def get(self, uidvalidity: int, kind: bytes, uid: int) -> bytes | None:
        """The cached bytes, or None."""
        if self._map is not None and self._uidvalidity == uidvalidity:
            # A hit needs no system call: entries never go stale, and if
            # another process replaced the file our mapping still holds the
            # old one.
            entry = self._entries.get((kind, uid))
            if entry is not None:
                return self._map[entry[0] : entry[0] + entry[1]]
        if not self._open(uidvalidity):
            return None
        entry = self._entries.get((kind, uid))
        if entry is None:
            self._scan()
            entry = self._entries.get((kind, uid))
            if entry is None:
                return None
        assert self._map is not None  # every entry comes from a scan of the map
        offset, length = entry
        return self._map[offset : offset + length]

    def put(self, uidvalidity: int, kind: bytes, uid: int, value: bytes) -> None:
        """Store bytes for a message (one append)."""
        if not self._open(uidvalidity) or not self._writable:
            return
        self._scan()
        if (kind, uid) in self._entries:
            return
        self._write(b"%s %d %d\n%s\n" % (kind, uid, len(value), value))

    def missing(self, uidvalidity: int, kind: bytes, uids: Iterable[int]) -> list[int]:
        """The UIDs among ``uids`` without an entry of ``kind``, in their
        order: one look at the file for the whole batch, not one per UID."""
        if not self._open(uidvalidity):
            return list(uids)
        self._scan()
        entries = self._entries
        return [uid for uid in uids if (kind, uid) not in entries]

    def containing(
        self, uidvalidity: int, kind: bytes, needles: Collection[bytes], uids: Iterable[int]
    ) -> set[int]:
        """Those of ``uids`` whose ``kind`` entry, lower-cased, holds one of
        ``needles`` (lower-case), or that have no entry: one pass over the
        file answers for a whole header SEARCH, where testing each message
        reads and lower-cases its entry. Read in chunks of
        :data:`SCAN_CHUNK`, so a huge folder costs no copy of the file."""
        if not self._open(uidvalidity):
            return set(uids)
        self._scan()
        entries = self._entries
        # Entries are in file order (each scan adds them at growing offsets).
        records = [
            (offset, offset + length, uid)
            for (k, uid), (offset, length) in entries.items()
            if k == kind
        ]
        starts = [start for start, _, _ in records]
        hits: set[int] = set()
        for position, needle in self._occurrences(needles):
            i = bisect.bisect_right(starts, position) - 1
            if i >= 0 and position + len(needle) <= records[i][1]:
                hits.add(records[i][2])
        hits.update(uid for uid in uids if (kind, uid) not in entries)
        return hits

    def _occurrences(self, needles: Collection[bytes]) -> Iterator[tuple[int, bytes]]:
        data, end = self._map, self._end
        if data is None or not needles:
            return
        overlap = max(len(n) for n in needles) - 1
        for start in range(0, end, SCAN_CHUNK):
            chunk = data[start : min(end, start + SCAN_CHUNK + overlap)].lower()
            for needle in needles:
                p = chunk.find(needle)
                while p >= 0:
                    yield start + p, needle
                    p = chunk.find(needle, p + 1)

    def put_many(self, uidvalidity: int, kind: bytes, values: Mapping[int, bytes]) -> int:
        """Store entries of several messages, in appends of about
        :data:`WRITE_CHUNK` bytes of whole records; returns how many were new."""
        if not self._open(uidvalidity) or not self._writable:
            return 0
        self._scan()
        parts: list[bytes] = []
        size = stored = 0
        for uid, value in values.items():
            if (kind, uid) in self._entries:
                continue
            record = b"%s %d %d\n%s\n" % (kind, uid, len(value), value)
            parts.append(record)
            size += len(record)
            stored += 1
            if size >= WRITE_CHUNK:
                if not self._write(b"".join(parts)):
                    return 0
                parts, size = [], 0
        if parts and not self._write(b"".join(parts)):
            return 0
        return stored

    def needs_compaction(self, live: int) -> bool:
        """Whether entries of expunged messages probably outnumber the rest
        (cheap: compares the entry count known so far)."""
        return self._fd >= 0 and len(self._entries) > 2 * live + 1000

    def compact(self, uidvalidity: int, keep: Collection[int]) -> None:
        """Rewrite the file with the entries of ``keep`` only (tmp + rename;
        the caller holds the folder's index lock). An entry another process
        appends to the old file meanwhile is lost, which costs a re-parse.
        Skipped on a store that cannot be written."""
        if not self._open(uidvalidity) or not self._writable:
            return
        self._scan()
        header = MAGIC + b" V%d\n" % uidvalidity
        parts = [header]
        for (kind, uid), (offset, length) in self._entries.items():
            if uid in keep and self._map is not None:
                value = self._map[offset : offset + length]
                parts.append(b"%s %d %d\n%s\n" % (kind, uid, len(value), value))
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(b"".join(parts))
            os.rename(tmp, self.path)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self.close()
        self._open(uidvalidity)
