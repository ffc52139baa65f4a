"""The intake log: an accepted message made durable without a journal commit.

A write-ahead log for acceptance (issue 17's one-connection cell). A
new queue file and its directory entry cost a journal commit of the
queue's file system when fsynced (650-730 us on a journaled ext4);
overwriting bytes of a file that is already allocated, written and
durable and ``fdatasync``-ing it changes no metadata the file system
must commit (170-180 us there). So the queue keeps one such file, the
intake log (``pymta-intake`` in the queue directory, made once at its
full size by writing zeros and syncing it and its directory), and a
message is durable once a copy of its queue file is durable there:

- **Commit** (on the queue barrier's thread, :mod:`pymta.sync`): the
  queue file is written and ready-marked in incoming/ as without the log
  (:mod:`pymta.queue.store`), but not synced; its record (queue id,
  target queue, the file's exact bytes) is appended to the log, one
  ``pwrite`` for the batch's records and one ``fdatasync``, and only then
  are the clients told 250. A record bigger than a sixteenth of the log
  (or than the space left) is not written: that message takes the sync
  of its file as without the log.
- **Checkpoint**: once the log is half full, once its oldest record is
  ``pymta_queue_intake_checkpoint_time`` old (1 s), and at a clean stop,
  one ``syncfs`` of the queue's file system makes every queue file written
  since the last checkpoint durable wherever it is now (moved to active/
  or deferred/, removed), then the header's next generation is written
  and fdatasynced: every record is free and appends start again at the
  beginning. One second bounds what a power loss can repeat (below) and
  costs at most one syncfs a second (under 1 % of the barrier's time at
  one connection); half the log bounds how often it runs under load.
- **Retirement**: a process killed with kill -9 keeps its page cache, so
  a queue file the queue manager removed after its delivery is gone
  while its record is still live, and a replay would deliver it again on
  every kill. Before that unlink, a small "retired" record is written
  (no sync of its own: a later commit's fdatasync or the checkpoint takes
  it along). Space for it is reserved with the message's record.
- **Replay** (:func:`recover`, at start, before the queue manager's first
  scan): for each live record not retired, a whole queue file of that id
  in any queue directory (ready, valid by :mod:`pymta.queue.record`), or
  any file of it in corrupt/, is left alone, as it may carry later
  changes (done recipients, a deferral); a missing or torn one is
  written again from the record into its target queue, ready. Then one
  syncfs and a new generation.

After a power loss (not kill -9) the retirements and removals since the
last checkpoint may be lost too, so a message delivered in the second
before may be delivered again: a duplicate, never a loss, as Postfix
allows.

Layout: two header slots (bytes 0 and 512) carry a magic, the
generation and a CRC-32; generation g is written to slot g % 2, so a
header torn while written leaves the other, and the valid one with the
higher generation counts. Records follow from byte 4096, contiguous:
magic, kind (message or retired), generation, payload length, CRC-32 of
all of them and the payload. A scan stops at the first record whose
magic, generation or checksum does not match: the end of what was
written in this generation (older generations' records stay behind it),
or a torn record, never acknowledged.

One log per queue, written by one process: with ``pymta_processes``
other than 1 the queue's reactor processes share the queue directory and
the log is off (the configuration says so).

Trusts: nothing read back (records are checked by their CRC, queue ids by
check_queue_id, replayed files by pymta.queue.record). Writes: the log
file and, at replay, queue files. Logs: each replayed file (notice).
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.logger import LogLevel

from pymta.fdio import fsync_dir, write_all
from pymta.maillog import maillog
from pymta.queue import record
from pymta.queue.interface import QUEUE_NAMES, QueueFileError
from pymta.queue.qid import is_queue_id

#: The log's name in the queue directory.
LOG_NAME = "pymta-intake"
#: Header slots: generation g lives in slot g % 2.
SLOT_SIZE = 512
DATA_START = 4096
HEADER_MAGIC = b"PYMTAIL1"
_HEADER = struct.Struct("<8sQI")  # magic, generation, crc of the first two
RECORD_MAGIC = b"PYIR"
_RECORD_HEAD = struct.Struct("<4scQI")  # magic, kind, generation, length
_RECORD = struct.Struct("<4scQII")  # ... and the crc of the head and the payload
KIND_MESSAGE = b"M"
KIND_RETIRED = b"R"
#: The largest record the log takes, as a fraction of its size.
RECORD_FRACTION = 16
#: Queues a record may name as its target (enqueue writes to these).
TARGETS = ("incoming", "hold")
_CHUNK = 1 << 20
#: The smallest log (pymta_queue_intake_log_size): 64 KiB of records.
MINIMUM_SIZE = DATA_START + 64 * 1024
#: The space a retired record takes (queue ids are at most this long).
_QID_MAX = 32
RETIRED_SIZE = _RECORD.size + _QID_MAX


@dataclass
class LoggedMessage:
    """A live message record found by a scan."""

    queue_id: str
    target: str
    data: bytes


def _encode(kind: bytes, generation: int, payload: bytes) -> bytes:
    head = _RECORD_HEAD.pack(RECORD_MAGIC, kind, generation, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def encode_message(generation: int, queue_id: str, target: str, data: Sequence[bytes]) -> bytes:
    """One message record: its queue id, target queue and queue file bytes."""
    payload = b"".join((f"{queue_id} {target}\n".encode("ascii"), *data))
    return _encode(KIND_MESSAGE, generation, payload)


def encode_retired(generation: int, queue_id: str) -> bytes:
    """The record saying queue_id's file was removed (see module doc)."""
    return _encode(KIND_RETIRED, generation, queue_id.encode("ascii"))


def encode_header(generation: int) -> bytes:
    head = HEADER_MAGIC + struct.pack("<Q", generation)
    return head + struct.pack("<I", zlib.crc32(head))


def read_generation(fd: int) -> int | None:
    """The generation of the valid header slot with the highest one, or
    None when neither slot is valid (a log of zeros, never started)."""
    best: int | None = None
    for slot in (0, 1):
        raw = os.pread(fd, _HEADER.size, slot * SLOT_SIZE)
        if len(raw) < _HEADER.size:
            continue
        magic, generation, crc = _HEADER.unpack(raw)
        if magic != HEADER_MAGIC or crc != zlib.crc32(raw[:16]):
            continue
        if generation % 2 == slot and (best is None or generation > best):
            best = generation
    return best


def scan(data: bytes, generation: int) -> tuple[list[LoggedMessage], set[str], int]:
    """The records of ``generation`` in ``data`` (the log from DATA_START):
    (live messages in log order, retired queue ids, bytes of valid
    records). Stops at the first record that does not match."""
    messages: list[LoggedMessage] = []
    retired: set[str] = set()
    offset = 0
    while offset + _RECORD.size <= len(data):
        magic, kind, record_generation, length, crc = _RECORD.unpack_from(data, offset)
        end = offset + _RECORD.size + length
        if magic != RECORD_MAGIC or record_generation != generation or end > len(data):
            break
        payload = data[offset + _RECORD.size : end]
        if zlib.crc32(payload, zlib.crc32(data[offset : offset + _RECORD_HEAD.size])) != crc:
            break
        if kind == KIND_MESSAGE:
            first, newline, rest = payload.partition(b"\n")
            queue_id, _, target = first.decode("ascii", "replace").partition(" ")
            if not newline or not is_queue_id(queue_id) or target not in TARGETS:
                break
            messages.append(LoggedMessage(queue_id, target, rest))
        elif kind == KIND_RETIRED:
            queue_id = payload.decode("ascii", "replace")
            if not is_queue_id(queue_id):
                break
            retired.add(queue_id)
        else:
            break
        offset = end
    return messages, retired, offset


def _write_zeros(fd: int, size: int) -> None:
    zeros = bytes(_CHUNK)
    offset = 0
    while offset < size:
        offset += os.pwrite(fd, zeros[: min(_CHUNK, size - offset)], offset)


class IntakeLog:
    """The intake log of one queue directory (see the module doc).

    :meth:`open` reads what an earlier run left (``found``, ``retired``);
    :meth:`start` begins a new generation (after :func:`recover`). Then
    :meth:`add`, :meth:`commit`, :meth:`retire` and :meth:`checkpoint` run
    on the queue barrier's thread only, one at a time; :meth:`fits` on the
    reactor. ``make_durable`` makes every queue file written so far
    durable (a syncfs of the queue's file system); ``now`` is the clock of
    the checkpoint's age (monotonic seconds)."""

    def __init__(
        self,
        path: str,
        size: int,
        make_durable: Callable[[], None],
        checkpoint_time: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < MINIMUM_SIZE:
            raise ValueError(f"intake log size {size}: at least {MINIMUM_SIZE} bytes")
        self.path = path
        self.size = size
        self.checkpoint_time = checkpoint_time
        #: Makes every queue file written so far durable (the checkpoint's sync).
        self.make_durable = make_durable
        self._now = now
        self._fd = -1
        self.generation = 0
        self.found: list[LoggedMessage] = []
        self.retired: set[str] = set()
        self._offset = DATA_START
        self._staged: list[bytes] = []
        self._staged_bytes = 0
        #: Queue ids with a record in this generation, not yet retired.
        self._live: set[str] = set()
        self._oldest: float | None = None
        #: How many checkpoints ran, and the seconds of the last ones.
        self.checkpoints = 0
        self.checkpoint_seconds: list[float] = []

    # start ------------------------------------------------------------------

    def open(self) -> None:
        """Open the log, reading an earlier run's records; none yet made."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return
        self._fd = fd
        generation = read_generation(fd)
        if generation is None:
            return
        self.generation = generation
        length = os.fstat(fd).st_size - DATA_START
        data = os.pread(fd, max(length, 0), DATA_START)
        self.found, self.retired, _ = scan(data, generation)

    def start(self) -> None:
        """Begin the next generation: the records read by open() are free
        (call after recover). A log of another size, or none, is made anew:
        zeros written and synced, so that appends never allocate."""
        generation = self.generation + 1
        if self._fd < 0 or os.fstat(self._fd).st_size != self.size:
            self._create(generation)
        else:
            self._write_header(generation)
        self.generation = generation
        self.found, self.retired = [], set()
        self._offset = DATA_START
        self._live.clear()
        self._oldest = None

    def _create(self, generation: int) -> None:
        temporary = self.path + ".new"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_zeros(fd, self.size)
            os.pwrite(fd, encode_header(generation), (generation % 2) * SLOT_SIZE)
            os.fsync(fd)
            os.rename(temporary, self.path)
            fsync_dir(os.path.dirname(self.path))
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd

    def _write_header(self, generation: int) -> None:
        os.pwrite(self._fd, encode_header(generation), (generation % 2) * SLOT_SIZE)
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # the barrier's thread ---------------------------------------------------

    def fits(self, size: int) -> bool:
        """Whether a queue file of ``size`` bytes may go to the log at all."""
        return size + 128 <= self.size // RECORD_FRACTION

    def _room(self) -> int:
        # Each live record keeps room for its retirement.
        reserved = (len(self._live) + len(self._staged)) * RETIRED_SIZE
        return self.size - self._offset - self._staged_bytes - reserved

    def add(self, queue_id: str, target: str, data: Sequence[bytes]) -> bool:
        """Stage the record of a queue file just written; False when it
        does not fit (its file must be synced instead)."""
        if self._fd < 0 or target not in TARGETS:
            return False
        entry = encode_message(self.generation, queue_id, target, data)
        if len(entry) + RETIRED_SIZE > self._room():
            return False
        self._staged.append(entry)
        self._staged_bytes += len(entry)
        self._live.add(queue_id)
        return True

    def commit(self) -> None:
        """Make the staged records durable: one pwrite, one fdatasync."""
        if not self._staged:
            return
        data = b"".join(self._staged) if len(self._staged) > 1 else self._staged[0]
        self._staged, self._staged_bytes = [], 0
        written = os.pwrite(self._fd, data, self._offset)
        if written != len(data):
            raise OSError(f"intake log: short write ({written} of {len(data)} bytes)")
        os.fdatasync(self._fd)
        self._offset += written
        if self._oldest is None:
            self._oldest = self._now()

    def discard(self) -> None:
        """Forget staged records (their commit failed)."""
        self._staged, self._staged_bytes = [], 0

    def retire(self, queue_id: str) -> None:
        """Say that queue_id's file is being removed, when its record is
        live (not synced: see the module doc)."""
        if queue_id not in self._live:
            return
        self._live.discard(queue_id)
        entry = encode_retired(self.generation, queue_id)
        os.pwrite(self._fd, entry, self._offset)
        self._offset += len(entry)

    def checkpoint_due(self) -> bool:
        if self._oldest is None:
            return False
        return (
            self._offset - DATA_START >= (self.size - DATA_START) // 2
            or self._now() - self._oldest >= self.checkpoint_time
        )

    @property
    def has_records(self) -> bool:
        return self._oldest is not None

    def checkpoint(self) -> bool:
        """Make every queue file durable, then free the records; False when
        there was nothing to free, or the sync failed (logged: the records
        stay live, and the next checkpoint tries again)."""
        if self._oldest is None and self._offset == DATA_START:
            return False
        began = time.monotonic()
        try:
            self.make_durable()
            self._write_header(self.generation + 1)
        except OSError as e:
            maillog("postsuper", f"warning: intake log checkpoint failed: {e}", LogLevel.warn)
            return False
        self.generation += 1
        self._offset = DATA_START
        self._live.clear()
        self._oldest = None
        self.checkpoints += 1
        if len(self.checkpoint_seconds) >= 1000:
            del self.checkpoint_seconds[:500]
        self.checkpoint_seconds.append(time.monotonic() - began)
        return True


def _whole(path: str) -> bool | None:
    """Whether path is a ready, valid queue file; None when it is missing."""
    from pymta.queue.store import is_ready

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if not is_ready(os.fstat(fd).st_mode):
            return False
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        record.decode(data)
        return True
    except QueueFileError:
        return False
    finally:
        os.close(fd)


def recover(log: IntakeLog, queue_directory: str) -> list[tuple[str, str]]:
    """Replay an opened log into the queue (see the module doc), make the
    result durable and start the log's next generation; returns the
    (queue id, queue) of every file written again."""
    from pymta.queue.store import READY_MODE, WRITING_MODE

    written: list[tuple[str, str]] = []
    for message in log.found:
        if message.queue_id in log.retired:
            continue
        paths = [
            os.path.join(queue_directory, queue, message.queue_id)
            for queue in QUEUE_NAMES
            if queue != "corrupt"
        ]
        states = [_whole(path) for path in paths]
        # One the queue manager quarantined was read by it, so was there
        # whole or not before this replay: it stays where the admin looks.
        quarantined = os.path.exists(os.path.join(queue_directory, "corrupt", message.queue_id))
        if any(states) or quarantined:
            continue  # whole where it is: it may carry later changes
        for path, state in zip(paths, states, strict=True):
            if state is False:
                os.unlink(path)  # torn: never read yet (replay precedes qmgr)
        target = os.path.join(queue_directory, message.target, message.queue_id)
        temporary = os.path.join(queue_directory, "incoming", message.queue_id)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, WRITING_MODE)
        try:
            write_all(fd, message.data)
            os.fchmod(fd, READY_MODE)
        finally:
            os.close(fd)
        if temporary != target:
            os.rename(temporary, target)
        written.append((message.queue_id, message.target))
        maillog(
            "postsuper", f"{message.queue_id}: recovered from the intake log into {message.target}"
        )
    if log.found:
        # Files left whole by a kill -9 are in the page cache, maybe not on
        # the disk: durable before their records are freed.
        log.make_durable()
    log.start()
    return written
