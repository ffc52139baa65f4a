"""The queue on disk: Postfix's queue directories and queue files.

Mirrors Postfix's queue layout (incoming, active, deferred, hold, corrupt,
and defer/ for the per-message defer logs, which also remember that a
delay warning was sent) and cleanup's commit rule. As Postfix's cleanup
does, a queue file is written whole under its final name in incoming/
with mode 0600, and marked complete in place by the owner's execute bit
(``fchmod`` to 0700, Postfix's MAIL_QUEUE_STAT_READY): one inode change
instead of a rename. Only then is it made durable through the sync
barrier (group commit); enqueue fires with the id after the sync, so a
client is told 250 only for a durable message, and a durable file is a
ready one. With the queue's intake log (:mod:`pymta.queue.intake`), the
sync is of the file's copy in the log, and :meth:`FileQueueStore.remove`
retires that copy before its unlink; a message spooled during DATA, or
too big for the log, is synced itself. One open, one writev, one fchmod and one close per message;
the content is written as the caller's bytes object. A file for hold/
is written the same way and then renamed there. The file carries the
content's line count (pymta.queue.record's ``content_lines``) from the
caller (cleanup has it from the DATA reader) or, for content given as
bytes without it, counted here once (up to COUNT_LIMIT bytes); delivery
agents then copy the content without reading it
(pymta.queue.reference.copy_content).

Readers of incoming/ (:meth:`FileQueueStore.list`, so the queue manager,
the recovery of a dead process's mail, mailq) skip files that are not
ready: they are being written, or a crash interrupted their writer, and
were never acknowledged. :meth:`FileQueueStore.remove_stale_temporaries`
(the queue manager's start, before any process writes) removes those
that do not hold a whole queue file; one that does (written by an earlier
pymta, which renamed finished files and did not mark them) is marked
ready and delivered: when unsure, deliver twice rather than lose.

With ``claim_new`` (several reactor processes share the queue:
:class:`pymta.master.claims.QueueClaims`) the writer takes the exclusive
lock that says which process owns the message on the file it just wrote,
before the ready mark, and hands over the open descriptor: no other
process can take a ready file that its writer still owns, and the
owner's queue manager finds the message claimed without opening it again.

Marking a recipient done is one byte written in place (os.pwrite) at an
offset remembered from enqueue or read. Like Postfix, that write is not
synced: after a crash a recipient may be delivered twice, never lost. The
next attempt time of a message is its file's mtime, as in Postfix (note
that mark_done touches the mtime: set the next attempt after marking).

Untrusted: queue files (validated by pymta.queue.record; a bad one raises
QueueFileError and ``quarantine`` moves it to corrupt/, never deletes it).
Queue ids become paths only after check_queue_id. Writes: the queue
directory. Logs: quarantined files (warning), not-ready files found
whole at start (notice).
"""

from __future__ import annotations

import builtins
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.maillog import maillog
from pymta.queue import record
from pymta.queue.interface import QUEUE_NAMES, IQueueStore, ISpool, QueueFileError
from pymta.queue.model import Envelope
from pymta.queue.qid import QueueIdAllocator, check_queue_id, is_queue_id
from pymta.queue.reference import (
    HEADER_CACHE_SIZE,
    IMessageContent,
    QueueFileContent,
    known_header,
)
from pymta.queue.spool import SUFFIX, FileSpool, SpooledContent, copy_spool
from pymta.sync import ISyncBarrier

DEFER_DIR = "defer"
# Offsets of recently written or read files; bounded so that a process that
# only enqueues (an smtpd-only process) does not grow without end.
_OFFSET_CACHE_LIMIT = 20000
# Header sections of files written or read and not yet referenced in active/
# (at most HEADER_CACHE_SIZE bytes each): a message normally goes from
# enqueue to qmgr's reference within milliseconds, so a small bound suffices;
# one that fell out is read from its file by the delivery agent.
_HEADER_CACHE_LIMIT = 1000
# Queue ids written here that have no defer log (remove then skips its
# unlink); one that fell out only costs that unlink.
_FRESH_LIMIT = 20000

#: Content given as bytes without its line count is counted here up to this
#: size (a pass in C on the reactor: about 0.35 ms per MiB); a larger one's
#: file carries no count, and its delivery counts on the sync thread.
COUNT_LIMIT = 256 * 1024

#: The mode of a queue file being written, and of a complete one: the
#: owner's execute bit marks a file ready, as Postfix's cleanup marks it
#: (MAIL_QUEUE_STAT_READY).
WRITING_MODE = 0o600
READY_MODE = 0o700

#: ``claim_new(queue_id, fd)``: take ownership of a new incoming/ file
#: (QueueClaims.adopt), given its open descriptor; False when it cannot.
ClaimNew = Callable[[str, int], bool]


class QueueIntake(Protocol):
    """What the store asks of the intake log (pymta.queue.intake.IntakeLog)."""

    def fits(self, size: int) -> bool:
        """Whether a queue file of size bytes may go to the log at all."""

    def add(self, queue_id: str, target: str, data: Sequence[bytes]) -> bool:
        """Stage a written file's record (the barrier's thread)."""

    def retire(self, queue_id: str) -> None:
        """Say that queue_id's file is being removed (the barrier's thread)."""


def is_ready(mode: int) -> bool:
    """Whether a queue file's st_mode says its writer finished it."""
    return bool(mode & stat.S_IXUSR)


def ready_queue_files(directory: str) -> Iterator[str]:
    """The queue ids in ``directory`` (incoming/) whose files are marked
    ready: one stat each, as Postfix's qmgr checks the mode of what it
    finds in incoming/ (see the module doc)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if not is_queue_id(entry.name):
                continue
            try:
                if is_ready(entry.stat(follow_symlinks=False).st_mode):
                    yield entry.name
            except FileNotFoundError:
                continue  # moved to active/ meanwhile


def _write_all(fd: int, buffers: Sequence[bytes]) -> None:
    total = sum(len(b) for b in buffers)
    written = os.writev(fd, buffers)
    if written == total:
        return
    # A short write (rare: signals, huge files): finish from where it stopped.
    data = b"".join(buffers)[written:]
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@implementer(IQueueStore)
class FileQueueStore:
    """Queue files under ``queue_directory``; creates the directories.

    ``sync`` is the group-commit barrier (SyncBarrier in production,
    ImmediateSyncBarrier in tests); ``clock`` (IReactorTime) gives queue ids
    and the arrival time of envelopes that carry none.
    """

    def __init__(
        self,
        queue_directory: str,
        sync: ISyncBarrier,
        clock: IReactorTime | None = None,
        pid: int | None = None,
        intake: QueueIntake | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self._clock: IReactorTime = clock
        self.directory = os.path.abspath(queue_directory)
        self._sync = sync
        #: The intake log that makes new files durable (pymta.queue.intake);
        #: its barrier is ``sync``.
        self.intake = intake
        self._ids = QueueIdAllocator(self._clock.seconds, pid)
        # queue id -> (recipient flag offsets, content offset, content size,
        # content line count or None)
        self._layouts: dict[str, tuple[list[int], int, int, int | None]] = {}
        # queue id -> header section, handed to the next reference() (see
        # pymta.queue.reference.known_header)
        self._headers: dict[str, bytes] = {}
        # queue ids enqueued here without a defer log (an ordered set)
        self._fresh: dict[str, None] = {}
        #: Set when several processes share the queue (see module doc).
        self.claim_new: ClaimNew | None = None
        #: Called with a queue id whose claim_new took a file that then
        #: did not become durable (QueueClaims.release).
        self.unclaim: Callable[[str], None] | None = None
        for name in (*QUEUE_NAMES, DEFER_DIR):
            os.makedirs(os.path.join(self.directory, name), mode=0o700, exist_ok=True)
        # queue (or defer/) -> its directory with a trailing separator: a
        # checked queue id is hex digits, so a path is one concatenation
        # (several per message, where os.path.join cost a dozen calls).
        self._dirs = {
            name: os.path.join(self.directory, name, "") for name in (*QUEUE_NAMES, DEFER_DIR)
        }

    # paths ------------------------------------------------------------------

    def path(self, queue_id: str, queue: str) -> str:
        """The file of queue_id in queue (a programming error if either is bad)."""
        check_queue_id(queue_id)
        if queue not in QUEUE_NAMES:
            raise ValueError(f"unknown queue {queue!r}")
        return self._dirs[queue] + queue_id

    def _defer_path(self, queue_id: str) -> str:
        return self._dirs[DEFER_DIR] + check_queue_id(queue_id)

    def _remember(
        self, queue_id: str, flags: list[int], offset: int, size: int, lines: int | None
    ) -> None:
        # May run on a worker thread (read_envelope): single dict operations
        # only. The oldest entry goes first, so that a file just written is
        # still known when the queue manager asks for its reference.
        layouts = self._layouts
        while len(layouts) >= _OFFSET_CACHE_LIMIT:
            try:
                del layouts[next(iter(layouts))]
            except (KeyError, StopIteration, RuntimeError):
                break
        layouts[queue_id] = (flags, offset, size, lines)

    def _remember_header(self, queue_id: str, header: bytes | None) -> None:
        # As _remember: may run on a worker thread, single dict operations.
        headers = self._headers
        if header is None:
            headers.pop(queue_id, None)
            return
        while len(headers) >= _HEADER_CACHE_LIMIT:
            try:
                del headers[next(iter(headers))]
            except (KeyError, StopIteration, RuntimeError):
                break
        headers[queue_id] = header

    def _remember_fresh(self, queue_id: str) -> None:
        fresh = self._fresh
        while len(fresh) >= _FRESH_LIMIT:
            try:
                del fresh[next(iter(fresh))]
            except (KeyError, StopIteration, RuntimeError):
                break
        fresh[queue_id] = None

    # IQueueStore -----------------------------------------------------------

    def new_queue_id(self) -> str:
        return self._ids()

    def open_spool(self, queue_id: str) -> ISpool:
        path = self._dirs["incoming"] + check_queue_id(queue_id) + SUFFIX
        return FileSpool(path, queue_id, self._sync)

    def enqueue(
        self,
        envelope: Envelope,
        content: bytes | SpooledContent,
        queue_id: str | None = None,
        queue: str = "incoming",
        lines: int | None = None,
    ) -> Deferred[str]:
        qid = check_queue_id(queue_id) if queue_id is not None else self._ids()
        if not envelope.arrival_time:
            envelope.arrival_time = self._clock.seconds()
        # The file is written in incoming/ under its final name, not ready
        # (remove_stale_temporaries looks there); a file for another queue
        # (hold/) is renamed there once ready.
        written = self._dirs["incoming"] + qid
        final = self.path(qid, queue)
        target = os.path.dirname(final)
        spool_path: str | None = None
        if isinstance(content, SpooledContent):
            size = content.size
            spool = content.spool
            spool_path = spool.path if isinstance(spool, FileSpool) else None
            if spool_path is None:
                return fail(TypeError(f"{qid}: a spool of another store"))
            try:
                header, flags = record.encode_header(envelope, size, lines)
            except ValueError as e:
                spool.discard()
                return fail(e)
            buffers = [header, content.head]
            start = content.head
        else:
            size = len(content)
            if lines is None and size <= COUNT_LIMIT:
                lines = content.count(b"\n")
            try:
                buffers, flags = record.encode(envelope, content, lines)
            except ValueError as e:
                return fail(e)
            start = content[: HEADER_CACHE_SIZE + 2]
        claim_new = self.claim_new if queue == "incoming" else None
        claimed: list[bool] = []

        def write() -> None:
            created = False
            try:
                # O_EXCL: a queue id is never reused, and never overwritten.
                fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL, WRITING_MODE)
                created = True
                try:
                    _write_all(fd, buffers)
                    if spool_path is not None:
                        # The rest of the content, copied in the kernel, then
                        # the end marker (pymta.queue.spool).
                        copied = copy_spool(spool_path, fd)
                        if copied != size - len(buffers[1]):
                            raise OSError(errno.EIO, f"spool has {copied} bytes", spool_path)
                        _write_all(fd, [record.END])
                    if claim_new is not None and claim_new(qid, fd):
                        # Claimed before it is ready: no other process can
                        # take it between the mark and its owner's qmgr.
                        claimed.append(True)
                    # Postfix's ready mark, in place of a rename from a
                    # temporary name: the same sync makes both durable.
                    os.fchmod(fd, READY_MODE)
                finally:
                    if not claimed:
                        os.close(fd)
                if written != final:
                    os.rename(written, final)
            except OSError:
                # A full disk is an operating condition: the caller defers (451).
                # A claimed descriptor stays open until not_durable (on the
                # reactor) releases the claim.
                if created:
                    try:
                        os.unlink(written)
                    except OSError:
                        pass
                raise
            finally:
                if spool_path is not None:
                    try:
                        os.unlink(spool_path)
                    except OSError:
                        pass

        self._remember(qid, flags, len(buffers[0]), size, lines)
        self._remember_header(qid, known_header(start, size))
        self._remember_fresh(qid)
        # The write itself runs on the barrier's thread, in the same batch as
        # the sync that makes it durable: the reactor never waits on the disk.
        # With the intake log, a copy of the file in the log makes it durable
        # (its own sync waits for the log's next checkpoint); a spooled
        # (large) message, or one too big for the log, is synced.
        intake = self.intake
        if intake is not None and spool_path is None and intake.fits(len(buffers[0]) + size):
            whole = buffers

            def journal() -> bool:
                return intake.add(qid, queue, whole)

            d = self._sync.run(write, durable=True, files=[final], dirs=[target], journal=journal)
        else:
            d = self._sync.run(write, durable=True, files=[final], dirs=[target])

        def not_durable(failure: Failure) -> Failure:
            # Not acknowledged (451): give the file up to whoever recovers
            # the queue, as a file this process never claimed.
            if claimed and self.unclaim is not None:
                self.unclaim(qid)
            return failure

        return d.addCallbacks(lambda _: qid, not_durable)

    def read(self, queue_id: str, queue: str) -> tuple[Envelope, bytes]:
        path = self.path(queue_id, queue)
        with open(path, "rb") as f:
            data = f.read()
        try:
            envelope, content, flags = record.decode(data)
        except QueueFileError as e:
            raise QueueFileError(f"{queue}/{queue_id}: {e}") from None
        start = len(data) - len(content) - len(record.END)
        self._remember(queue_id, flags, start, len(content), None)
        return envelope, content

    def read_envelope(self, queue_id: str, queue: str) -> tuple[Envelope, IMessageContent]:
        path = self.path(queue_id, queue)
        fd = os.open(path, os.O_RDONLY)
        try:
            envelope, flags, offset, size, lines = record.decode_envelope(fd)
            # On the caller's worker thread, one more read of the file just
            # opened: the delivery agent then reads nothing on the reactor.
            start = os.pread(fd, min(size, HEADER_CACHE_SIZE + 2), offset)
        except QueueFileError as e:
            raise QueueFileError(f"{queue}/{queue_id}: {e}") from None
        finally:
            os.close(fd)
        self._remember(queue_id, flags, offset, size, lines)
        header = known_header(start, size)
        self._remember_header(queue_id, header)
        content = QueueFileContent(path, queue, queue_id, offset, size, flags, header, lines)
        return envelope, content

    def reference(self, queue_id: str, queue: str) -> IMessageContent:
        path = self.path(queue_id, queue)
        flags, offset, size, lines = self._layouts[queue_id]
        header = self._headers.pop(queue_id, None)
        return QueueFileContent(path, queue, queue_id, offset, size, flags, header, lines)

    def _background(
        self, queue_id: str, what: str, work: Callable[[], None], soon: bool = False
    ) -> Deferred[bool]:
        """Run a file-system change on the barrier's thread, in call order
        (IQueueStore's rule for changes); fires True once done, False when
        it failed (logged).

        These changes need no sync of their own (Postfix does not sync them
        either): losing one in a crash means a message is delivered again or
        retried sooner, never lost.
        """

        def failed(failure: Failure) -> bool:
            maillog(
                "qmgr",
                f"{queue_id}: cannot {what} queue file: {failure.getErrorMessage()}",
                LogLevel.warn,
            )
            return False

        d = self._sync.run(work, durable=False, soon=soon)
        return d.addCallbacks(lambda _: True, failed)

    def move(self, queue_id: str, source: str, target: str) -> Deferred[bool]:
        source_path = self.path(queue_id, source)
        target_path = self.path(queue_id, target)
        if target != "active":
            # Its later life (a retry from deferred/, postsuper) may write
            # a defer log: remove() unlinks it then.
            self._fresh.pop(queue_id, None)
        # The queue manager waits for a move into active/ before it hands the
        # file to a delivery agent: that one goes with the next batch at once.
        return self._background(
            queue_id,
            f"move {source} to {target}",
            lambda: os.rename(source_path, target_path),
            soon=target == "active",
        )

    def mark_done(self, queue_id: str, queue: str, index: int) -> Deferred[bool]:
        path = self.path(queue_id, queue)
        layout = self._layouts.get(queue_id)
        if layout is None:
            self.read_envelope(queue_id, queue)
            layout = self._layouts[queue_id]
        flags = layout[0]
        if not 0 <= index < len(flags):
            raise IndexError(f"{queue_id}: no recipient {index}")
        offset = flags[index]

        def mark() -> None:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, record.DONE, offset)
            finally:
                os.close(fd)

        return self._background(queue_id, "mark a recipient done in", mark)

    def set_next_attempt(self, queue_id: str, when: float) -> Deferred[bool]:
        def touch() -> None:
            # Looked up when it runs: after any move queued before it.
            queue = self.find(queue_id)
            if queue is None:
                raise FileNotFoundError(errno.ENOENT, "no such queue file", queue_id)
            os.utime(self.path(queue_id, queue), (when, when))

        return self._background(queue_id, "set the next attempt time of", touch)

    def next_attempt(self, queue_id: str) -> float:
        queue = self.find(queue_id)
        if queue is None:
            raise KeyError(queue_id)
        return os.stat(self.path(queue_id, queue)).st_mtime

    def record_defer(self, queue_id: str, index: int, status: str, reason: str) -> Deferred[bool]:
        line = f"{index}\t{status}\t{reason}".replace("\n", " ").replace("\r", " ")
        data = (line + "\n").encode("utf-8", "surrogateescape")
        path = self._defer_path(queue_id)
        self._fresh.pop(queue_id, None)

        def append() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        return self._background(queue_id, "record a deferral reason of", append)

    def defer_reasons(self, queue_id: str) -> dict[int, tuple[str, str]]:
        try:
            with open(self._defer_path(queue_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        reasons: dict[int, tuple[str, str]] = {}
        for raw in data.decode("utf-8", "surrogateescape").split("\n"):
            index, _, rest = raw.partition("\t")
            status, sep, reason = rest.partition("\t")
            if sep and index.isdigit():
                reasons[int(index)] = (status, reason)
        return reasons

    def record_delay_warning(self, queue_id: str, when: float) -> Deferred[bool]:
        # A "W" line in the defer log: defer_reasons skips it (not an index),
        # and it goes when the message does. Not synced, like the defer log:
        # a crash may at worst repeat the warning.
        data = f"W\t{when!r}\n".encode()
        path = self._defer_path(queue_id)
        self._fresh.pop(queue_id, None)

        def append() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        return self._background(queue_id, "record the delay warning of", append)

    def delay_warning_sent(self, queue_id: str) -> bool:
        try:
            with open(self._defer_path(queue_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return False
        return data.startswith(b"W\t") or b"\nW\t" in data

    def remove(self, queue_id: str, queue: str) -> Deferred[bool]:
        path = self.path(queue_id, queue)
        defer_path = self._defer_path(queue_id)
        self._layouts.pop(queue_id, None)
        self._headers.pop(queue_id, None)
        # A message this process wrote and never deferred has no defer log:
        # no failing unlink for it (one per delivered message otherwise).
        has_log = queue_id not in self._fresh
        self._fresh.pop(queue_id, None)

        intake = self.intake

        def unlink() -> None:
            if intake is not None:
                # Its record must not bring it back (pymta.queue.intake).
                intake.retire(queue_id)
            os.unlink(path)
            if has_log:
                try:
                    os.unlink(defer_path)
                except FileNotFoundError:
                    pass

        return self._background(queue_id, "remove", unlink)

    def quarantine(self, queue_id: str, queue: str, reason: str) -> Deferred[bool]:
        moved = self.move(queue_id, queue, "corrupt")
        self._layouts.pop(queue_id, None)
        self._headers.pop(queue_id, None)
        maillog(
            "qmgr",
            f"{queue_id}: corrupt queue file {queue}/{queue_id} moved to corrupt: {reason}",
            LogLevel.warn,
        )
        return moved

    def list(self, queue: str) -> builtins.list[str]:
        if queue not in QUEUE_NAMES:
            raise ValueError(f"unknown queue {queue!r}")
        directory = os.path.join(self.directory, queue)
        if queue != "incoming":
            return sorted(name for name in os.listdir(directory) if is_queue_id(name))
        return sorted(ready_queue_files(directory))

    def find(self, queue_id: str) -> str | None:
        for queue in QUEUE_NAMES:
            if os.path.exists(self.path(queue_id, queue)):
                return queue
        return None

    def remove_stale_temporaries(self, older_than: float) -> builtins.list[str]:
        """Delete what unfinished writes left in incoming/, last modified
        before ``older_than``: queue files that are not ready and do not
        hold a whole queue file (a writer died, or its ready mark did not
        reach the disk: never acknowledged), ``*.tmp`` files (the temporary
        names of earlier pymta versions) and ``*.spool`` files (content of
        a message whose DATA never ended); returns their names.

        A file that is not ready but whole (an earlier pymta's finished
        file, which it renamed and did not mark) is marked ready instead:
        it may have been acknowledged. Processes sharing the queue may be
        writing younger ones right now."""
        incoming = os.path.join(self.directory, "incoming")
        removed = []
        for name in os.listdir(incoming):
            stem, dot, ext = name.partition(".")
            if not is_queue_id(stem) or (dot and ext not in ("tmp", SUFFIX[1:])):
                continue
            path = os.path.join(incoming, name)
            try:
                info = os.stat(path)
                if info.st_mtime >= older_than or (not dot and is_ready(info.st_mode)):
                    continue
                if not dot and self._mark_if_whole(path):
                    maillog("qmgr", f"{name}: whole queue file without its ready mark: marked")
                    continue
                os.unlink(path)
                removed.append(name)
            except FileNotFoundError:
                continue
        return removed

    @staticmethod
    def _mark_if_whole(path: str) -> bool:
        """Mark ready a not-ready file that validates as a whole queue file."""
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                record.decode_envelope(fd)
            except QueueFileError:
                return False
            os.fchmod(fd, READY_MODE)
            return True
        finally:
            os.close(fd)
