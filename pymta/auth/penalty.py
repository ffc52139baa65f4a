"""The login penalty table: failures and reservations per client and per user.

pymta-only storage behind :mod:`pymta.auth.throttle`, the part Dovecot's
anvil plays for its auth penalty. One :class:`PenaltyRecord` per key (a
client network such as ``ip:192.0.2.7/32``, or ``user:alice@example.org``):
recent failures, when the last one happened, the earliest time the next
check may start, and how many login attempts are in progress.

Two implementations of :class:`IPenaltyTable`:

- :class:`MemoryPenaltyTable`: a dict, for one process and for tests.
- :class:`FilePenaltyTable`: a fixed-size hash table in a small file
  (``$data_directory/auth_penalty``, 8,192 slots of 48 bytes), mapped into
  memory and guarded by an ``fcntl`` lock on the file. With
  ``pymta_processes`` above 1 every reactor process maps the same file, so
  a client that spreads its guesses over connections served by different
  processes still meets one penalty (DESIGN.md invariant 8).

Why a shared file and not messages through the master: the processes
already share only the disk; a mapped file needs no extra service, no
protocol, no reconnection when a worker restarts, and a lookup costs a few
microseconds in the calling thread with no round trip (an anvil-like
server in the master would add a socket, a protocol and a failure mode to
every login). The lock is held only while a record is read and written
(no I/O wait: the pages live in the page cache and are never synced),
and ``fcntl`` locks are dropped by the kernel when a process dies, so a
crash cannot wedge the others. Records are keyed by a 16-byte BLAKE2b
digest of the key (no user name or address is written in clear); when a
key's slot and its 7 neighbours are all taken, the least recently used
of them is overwritten: a flood of addresses can make the table forget,
never grow. The file survives restarts, and so do the penalties.

:class:`SharedPenaltyTable` is what the service uses: it opens the file
at the first login, not when the service is built, so that the file is
made by the unprivileged user every reactor process runs as (a root
master builds its parts before it drops privileges), and it falls back to
a table in memory, with a warning, when the file cannot be opened.

Untrusted input: the keys (from the network); they are only hashed here.
May write: the table file. Logs: a warning when the file cannot be opened.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import Interface, implementer

_log = Logger(namespace="pymta.auth")

#: Keys the in-memory table keeps before it drops the least recently used.
MAX_ENTRIES = 100_000


@dataclass
class PenaltyRecord:
    """What the table knows about one key (all times in clock seconds)."""

    failures: int = 0
    last_failure: float = 0.0
    # The next check of this key may not start before this time.
    next_slot: float = 0.0
    # Login attempts in progress (waiting or being checked); counted only
    # until busy_until, so a process that died cannot hold them forever.
    in_progress: int = 0
    busy_until: float = 0.0

    def last_used(self) -> float:
        return max(self.last_failure, self.next_slot, self.busy_until)

    def empty(self) -> bool:
        return self.failures == 0 and self.in_progress == 0


class IPenaltyTable(Interface):
    """Penalty records by key; read and written only inside ``locked()``."""

    def locked() -> AbstractContextManager[None]:
        """A context manager: no other process or caller changes records meanwhile."""

    def get(key: str) -> PenaltyRecord:
        """The record of key (a fresh empty one when it has none)."""

    def put(key: str, record: PenaltyRecord) -> None:
        """Store key's record (an empty record may free its slot)."""


@implementer(IPenaltyTable)
class MemoryPenaltyTable:
    """Records in a dict of this process, bounded to ``max_entries``."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._records: dict[str, PenaltyRecord] = {}
        self._max = max_entries

    def locked(self) -> AbstractContextManager[None]:
        return nullcontext()  # one reactor thread: nothing runs in between

    def get(self, key: str) -> PenaltyRecord:
        record = self._records.get(key)
        if record is None:
            return PenaltyRecord()
        return PenaltyRecord(**vars(record))

    def put(self, key: str, record: PenaltyRecord) -> None:
        self._records.pop(key, None)
        if record.empty():
            return
        while len(self._records) >= self._max:
            # dicts keep insertion order and put() re-inserts: the first is
            # the least recently written.
            del self._records[next(iter(self._records))]
        self._records[key] = PenaltyRecord(**vars(record))

    def __len__(self) -> int:
        return len(self._records)


_MAGIC = b"pymtapn1"
_SLOT = struct.Struct("<16sIIddd")  # digest, failures, in_progress, last, next, busy
_HEADER = 64
_PROBES = 8


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest()


@implementer(IPenaltyTable)
class FilePenaltyTable:
    """Records in a mapped file shared by every process that opens it."""

    def __init__(self, path: str, slots: int = 8192) -> None:
        self.path = path
        size = _HEADER + slots * _SLOT.size
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                st = os.fstat(fd)
                if st.st_size != size or os.pread(fd, len(_MAGIC), 0) != _MAGIC:
                    # New, or made with another size: start afresh (only
                    # penalties are lost, never mail).
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, size)
                    os.pwrite(fd, _MAGIC, 0)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._slots = slots
        self._depth = 0

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1

    def locked(self) -> AbstractContextManager[None]:
        return self._locked()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Re-entrant within this process; fcntl locks exclude other processes.
        if self._depth == 0:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _offsets(self, digest: bytes) -> Iterator[int]:
        first = int.from_bytes(digest[:8], "little") % self._slots
        for i in range(_PROBES):
            yield _HEADER + ((first + i) % self._slots) * _SLOT.size

    def _read(self, offset: int) -> tuple[bytes, PenaltyRecord]:
        digest, failures, in_progress, last, nxt, busy = _SLOT.unpack_from(self._map, offset)
        return digest, PenaltyRecord(failures, last, nxt, in_progress, busy)

    def get(self, key: str) -> PenaltyRecord:
        digest = _digest(key)
        for offset in self._offsets(digest):
            found, record = self._read(offset)
            if found == digest:
                return record
        return PenaltyRecord()

    def put(self, key: str, record: PenaltyRecord) -> None:
        digest = _digest(key)
        target = -1
        oldest = -1
        oldest_used = float("inf")
        for offset in self._offsets(digest):
            found, existing = self._read(offset)
            if found == digest:
                target = offset
                break
            if found == bytes(16) or existing.empty():
                if target < 0:
                    target = offset
            elif existing.last_used() < oldest_used:
                oldest, oldest_used = offset, existing.last_used()
        if target < 0:
            target = oldest
        if record.empty():
            # Free the slot only if it was this key's.
            if self._read(target)[0] == digest:
                _SLOT.pack_into(self._map, target, bytes(16), 0, 0, 0.0, 0.0, 0.0)
            return
        _SLOT.pack_into(
            self._map,
            target,
            digest,
            min(record.failures, 0xFFFFFFFF),
            min(max(record.in_progress, 0), 0xFFFFFFFF),
            record.last_failure,
            record.next_slot,
            record.busy_until,
        )


@implementer(IPenaltyTable)
class SharedPenaltyTable:
    """The file table at ``path``, opened on first use; memory if it cannot be."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._table: IPenaltyTable | None = None

    def _open(self) -> IPenaltyTable:
        if self._table is None:
            try:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                self._table = FilePenaltyTable(self.path)
            except OSError as e:
                _log.warn(
                    "cannot open the login penalty table {path}: {error}; "
                    "penalties are not shared with other processes",
                    path=self.path,
                    error=e.strerror or str(e),
                )
                self._table = MemoryPenaltyTable()
        return self._table

    @property
    def shared(self) -> bool:
        """True once the file is open (False before first use, or in memory)."""
        return isinstance(self._table, FilePenaltyTable)

    def locked(self) -> AbstractContextManager[None]:
        return self._open().locked()

    def get(self, key: str) -> PenaltyRecord:
        return self._open().get(key)

    def put(self, key: str, record: PenaltyRecord) -> None:
        self._open().put(key, record)
