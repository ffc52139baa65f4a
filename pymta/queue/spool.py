"""The content spool: a large message is written to disk as it arrives.

Mirrors what Postfix's cleanup does with a message's content: it writes
the queue file as the client sends it, so that a message never sits in
memory whole. pymta's queue file starts with the envelope records, which
are final only at the end of DATA (cleanup rewrites the recipients, and
prepends Received), so the content after its first bytes goes to a spool
file, ``incoming/QID.spool``, and enqueue builds the queue file from the
records, the (rewritten) first bytes and the spool, copied inside the
kernel (copy_file_range), then renames and syncs it as for any message;
the spool is deleted in the same step. Nothing is acknowledged before
that sync, as before.

Writes run on the sync barrier's thread, in call order, in blocks of
BLOCK bytes (never on the reactor thread). When more than HIGH_WATER bytes
wait for the disk, ``write`` hands back a Deferred that fires once they are
down to LOW_WATER, so a fast client cannot fill memory faster than the disk
takes it (smtpd stops reading its socket meanwhile).

A spool left by a crash is removed with the half-written queue files
(``remove_stale_temporaries``); a refused message or a client that leaves
during DATA deletes its spool (``discard``). Untrusted: nothing (the bytes
are content). Writes: ``incoming/QID.spool``. Logs nothing: the caller
reports a write error as a queue file write error.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.fdio import write_all
from pymta.queue.interface import ISpool
from pymta.queue.interface import SpooledContent as SpooledContent  # enqueue's argument
from pymta.sync import ISyncBarrier

#: Bytes gathered before one write to the spool file.
BLOCK = 256 * 1024
#: Unwritten bytes above which ``write`` asks its caller to wait...
HIGH_WATER = 1024 * 1024
#: ...until they are down to this.
LOW_WATER = 256 * 1024
#: The name of a spool file: ``QID`` + SUFFIX, in incoming/.
SUFFIX = ".spool"


@implementer(ISpool)
class FileSpool:
    """A spool file, written through ``barrier`` (ISyncBarrier.run, not durable)."""

    def __init__(self, path: str, queue_id: str, barrier: ISyncBarrier) -> None:
        self.path = path
        self.queue_id = queue_id
        self.size = 0
        self._barrier = barrier
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._in_flight = 0
        self._waiters: list[Deferred[None]] = []
        self._failure: Failure | None = None
        self._fd: int | None = None  # used on the barrier's thread only
        self._discarded = False

    def write(self, data: bytes) -> Deferred[None] | None:
        if self._discarded:
            raise RuntimeError(f"{self.queue_id}: spool written after discard")
        self.size += len(data)
        if self._failure is not None:
            return None  # close() reports it; the rest of the message is read and dropped
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= BLOCK:
            self._dispatch()
        if self._in_flight > HIGH_WATER:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            return waiter
        return None

    def _dispatch(self) -> None:
        if not self._buffer:
            return
        block = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer = []
        self._buffered = 0
        self._in_flight += len(block)

        def done(_: object) -> None:
            self._in_flight -= len(block)
            if self._in_flight <= LOW_WATER:
                self._wake()

        def failed(failure: Failure) -> None:
            self._in_flight -= len(block)
            if self._failure is None:
                self._failure = failure
            self._wake()

        d = self._barrier.run(lambda: self._append(block), durable=False, soon=True)
        d.addCallbacks(done, failed)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _append(self, block: bytes) -> None:
        # On the barrier's thread.
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        write_all(self._fd, block)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def close(self) -> Deferred[None]:
        self._dispatch()

        def close() -> None:
            if self._fd is None and not self._discarded:
                # Everything fit in the first bytes: an empty spool file.
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            self._close_fd()

        d = self._barrier.run(close, durable=False, soon=True)

        def closed(_: object) -> Deferred[None]:
            if self._failure is not None:
                return fail(self._failure)
            return succeed(None)

        return d.addCallback(closed)

    def read(self) -> Deferred[bytes]:
        def read() -> bytes:
            with open(self.path, "rb") as f:
                return f.read()

        return self._barrier.run(read, durable=False, soon=True)

    def discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True
        self._buffer = []
        self._buffered = 0
        self._wake()

        def unlink() -> None:
            self._close_fd()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

        self._barrier.run(unlink, durable=False).addErrback(lambda _: None)


def copy_spool(source_path: str, target_fd: int) -> int:
    """Append the spool file's bytes to target_fd (in the kernel when it
    can: copy_file_range, else in 1 MiB reads and writes); the byte count.
    Blocking: called from enqueue's work on the barrier's thread."""
    copied = 0
    with open(source_path, "rb", buffering=0) as source:
        fd = source.fileno()
        try:
            while True:
                n = os.copy_file_range(fd, target_fd, 1 << 30)
                if n == 0:
                    return copied
                copied += n
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        while True:
            block = source.read(1 << 20)
            if not block:
                return copied
            write_all(target_fd, block)
            copied += len(block)


@implementer(ISpool)
class MemorySpool:
    """A spool in memory (MemoryQueueStore): the same contract, no disk."""

    def __init__(self, queue_id: str) -> None:
        self.queue_id = queue_id
        self.size = 0
        self.parts: list[bytes] = []
        self.discarded = False

    def write(self, data: bytes) -> Deferred[None] | None:
        if self.discarded:
            raise RuntimeError(f"{self.queue_id}: spool written after discard")
        self.size += len(data)
        self.parts.append(data)
        return None

    def close(self) -> Deferred[None]:
        return succeed(None)

    def read(self) -> Deferred[bytes]:
        return succeed(b"".join(self.parts))

    def discard(self) -> None:
        self.discarded = True
        self.parts = []
