"""Group commit: many writes made durable by one sync.

Shared by the queue (queue files: :mod:`pymta.queue.store`) and delivery
(mailboxes: :mod:`pymta.mailstore.deliver`, :mod:`pymta.delivery.mbox`),
each with a barrier of its own on its own file system.

pymta's answer to "250 only after fsync" at high rates (invariants
1 and 4 of docs/architecture.md). Writers create and rename their files without syncing, then call
``sync()``; one worker performs a single ``syncfs(2)`` of the queue file
system (or, with ``pymta_sync_method = fsync``, one fsync per file written
and per directory touched) and fires every waiter's Deferred at once.

Writers may also hand their file-system work itself to the barrier with
``run(work, durable=...)``: the work runs on the barrier's thread, in call
order, as part of the next batch, before that batch's sync. Creating,
renaming and unlinking files cost hundreds of microseconds each on a busy
journal; done here they never block the reactor, and one thread hop serves
a whole batch.

Rule: a write made before ``sync()`` was called is covered only by a sync
that *started* after the call. Callers that arrive while a sync runs wait
for the next one, which starts as soon as the running one ends; so at most
one sync runs at a time and each serves everyone who came during the last.

The sync runs in a thread of the barrier's own (:class:`WorkerThread`,
not the reactor's pool: one hand-off each way per batch), never on the
reactor thread. A failed sync errbacks every waiter of that batch with
the OSError (the message is then not acknowledged: smtpd answers 451); in
fsync mode, work that failed (its file removed) is not fsynced and fails
alone.

A batch that carries a single write (one client at a time) fsyncs that
write's file and directory instead of the syncfs: on a journaled ext4 both
cost one journal commit, but syncfs also writes back everything else dirty
on the file system (the Maildir file a delivery just wrote), so the one
write's commit waited longer. ``bench/smtp_phases.py`` on a journaled ext4
(a loop device), quiet machine: the queue's sync 858 us with syncfs
against 624 us with fsync, the client's commit 1,221 against 826 us;
``bench/smtp_bench.py --sizes 1024 --connections 1,20``: one connection
472 -> 624 msg/s (Postfix 593-600), 20 connections unchanged (1,611 and
1,631; its batches carry several files). Two or more writes keep the one
syncfs: fsync per file at 20 connections fell to 862 msg/s from 1,523.

A syncfs is two journal commits on ext4 (sync_filesystem asks the file
system to commit before it waits for the write-back, then again after),
where one fsync, or fsyncs of several files whose write-back was
completed first (fsync_paths), is one: counted on a journaled ext4 loop
device of its own with ``bench/smtp_phases.py`` (its per-message journal
commits), one connection at a time costs 1.41-1.50 commits a message,
the queue file's one plus the mailbox barrier's syncfs every 3-4
deliveries; without deliveries (``defer_transports = virtual``) 1.00.

Why syncfs by default, by figures (``bench/sync_methods.py`` runs the
variants interleaved under the same load; ``bench/smtp_phases.py`` and
the metrics' ``pymta_sync_seconds`` split a batch into wait, work and
sync). On the development machine (ext4 without a journal, shared by
other programs), 1 KiB, one pymta process, medians of two interleaved
rounds: syncfs 382 msg/s at one connection and 846 at 20; per-file fsync
in a variant tried for this (each file and directory fsynced on a thread
of its own, the next batch's work not waiting for them; not kept) 283 and
370, at 1.97 ms of CPU per message at 20 connections against 1.26. A directory's fsync
holds the directory's lock while it writes (``__generic_file_fsync``), so
the next queue file's creation in the same ``incoming/`` waits for it
(1,024 us per create against 56 with fsyncs one after another), and
fsyncs of one file each write what syncfs writes once. One syncfs costs
about 470 us there, one fsync of a new file and its directory 350; the
price of syncfs is that it also writes other programs' dirty data on the
same file system (its p90 rose to 1.4 ms while other programs wrote).
The O_DSYNC/O_DIRECT options do not fit: the ready mark is a mode change
after the write (O_DSYNC covers data, not the mode), and O_DIRECT needs
aligned buffers and still a sync for the new directory entry.

What waits, measured (bench/smtp_phases.py's pymta group-commit lines,
trace of every batch): at one connection a queue batch is one file (hand-
off ~130 us, work ~120 us, syncfs ~420 us: most of the commit phase). At
20 connections the queue's batches carried 4-13 files and its thread was
never idle: on that file system creating a file costs 0.1-1 ms of kernel
CPU, because ext4 without a journal skips every inode freed in the last 30
seconds and looks at each in turn (``find_inode_bit``/``recently_deleted``
in ``perf``: half of all samples during a run after other programs had
removed many files), so batch work, not syncs, bounded the rate; on a
journaled ext4 (a loop device) the same work took ~0.4 ms per batch and
the syncfs ~7 ms. The mailbox barrier's batches were capped by the queue
manager's concurrency (20 deliveries) and each waited the whole
``pymta_mailbox_sync_delay``; its wait now ends once as much work waits as
the last batch carried (see SyncBarrier).

The queue's barrier may carry an intake log (``intake``,
:mod:`pymta.queue.intake`): durable work run with a ``journal`` callable
stages a copy of what it wrote in the log; the batch then makes the log
durable (one pwrite, one fdatasync: no journal commit) instead of syncing
those files, and syncs as above only the work the log did not take. When
the log's checkpoint is due, it runs at the end of a batch, after the
batch's waiters were told, and an idle log gets a batch of its own once
its oldest record is ``checkpoint_time`` old.

Recovery is unchanged by all of this: a caller is told only after a
sync that started once its work was done (the order of work, sync,
``after`` and the callback within a batch is as it was), and what is not
durable is not acknowledged; so the kill -9 tests' rule holds (a 250 or a
removed queue file only for what a sync covered), and a crash at any
point leaves what pymta.queue.record and remove_stale_temporaries
already handle.

Trusts: the paths handed to it (the queue store and the mail store make them). Writes:
nothing. Logs: nothing (callers log the outcome).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from pymta.fdio import fsync_dir

SYNC_METHODS = ("syncfs", "fsync")
#: The most (phase, seconds) a barrier keeps for the metrics to take.
TIMINGS_KEPT = 30000


def _timings() -> collections.deque[tuple[str, float]]:
    return collections.deque(maxlen=TIMINGS_KEPT)


class ISyncBarrier(Interface):
    """Group commit: many writes made durable by one sync."""

    syncs = Attribute("How many syncs ran so far (the metrics count them).")
    batch_sizes = Attribute(
        "A collections.Counter: {callers made durable by one sync: how many such syncs}."
    )
    timings = Attribute(
        "A collections.deque of (phase, seconds) of each durable batch, appended as"
        " batches run and taken by the metrics: 'wait' (from the oldest durable"
        " waiter's call until its batch began on the thread: the running batch,"
        " the delay, the thread hand-off), 'work' (the batch's file work), 'sync'."
    )

    def sync(files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        """Fires once every write made before this call is on stable storage
        (file data and directory entries). Runs off the reactor thread;
        concurrent callers share one sync.

        ``files`` and ``dirs`` name what the caller wrote: a barrier that
        syncs the whole file system (syncfs) ignores them, one that fsyncs
        file by file (``pymta_sync_method = fsync``) syncs exactly those."""

    def run(
        work: Callable[[], Any],
        durable: bool = True,
        files: Sequence[str] = (),
        dirs: Sequence[str] = (),
        after: Callable[[], None] | None = None,
        soon: bool = False,
        journal: Callable[[], bool] | None = None,
    ) -> Deferred[Any]:
        """Run work (a callable doing file-system changes) off the reactor
        thread, in call order, and fire with its result — when durable,
        after a sync that started once work was done, and after ``after``
        (a callable) ran once that sync succeeded. Work that is not durable
        may wait a little for company, unless ``soon`` (someone waits for
        it). ``journal`` (durable work, a barrier with an intake log)
        runs once work succeeded and stages a record that makes it durable
        in the log instead of its files' sync; False when it did not."""


def barrier_run(
    barrier: ISyncBarrier,
    work: Callable[[], None],
    files: Sequence[str] = (),
    dirs: Sequence[str] = (),
    durable: bool = True,
    after: Callable[[], None] | None = None,
) -> Deferred[None]:
    """Do ``work`` (file-system changes), made durable when ``durable``,
    then ``after`` (durable work only: what publishes it, once synced), on
    the barrier's own thread, in call order (the reactor never waits on the
    disk): :meth:`ISyncBarrier.run` with the caller's lists as tuples."""
    return cast(
        "Deferred[None]",
        barrier.run(work, durable=durable, files=tuple(files), dirs=tuple(dirs), after=after),
    )


class IntakeJournal(Protocol):
    """What a barrier asks of an intake log (:mod:`pymta.queue.intake`);
    every method but ``has_records`` runs on the barrier's thread."""

    checkpoint_time: float

    @property
    def has_records(self) -> bool:
        """Whether records wait for a checkpoint."""

    def commit(self) -> None:
        """Make the staged records durable."""

    def discard(self) -> None:
        """Forget the staged records (their commit failed)."""

    def checkpoint_due(self) -> bool: ...

    def checkpoint(self) -> bool:
        """Free the records (their files made durable); False when there
        was nothing to do or it failed (logged)."""


def _staged(journal: Callable[[], bool]) -> bool:
    try:
        return journal()
    except Exception:
        return False  # synced as without a log


def _nothing() -> None:
    return None


RunInThread = Callable[[Callable[[], None]], "Deferred[None]"]
T = TypeVar("T")


@implementer(ISyncBarrier)
class ImmediateSyncBarrier:
    """Fires at once on the calling thread (tests; tmpfs; a process that
    writes one message and has nothing to batch). Without ``fsync`` it
    syncs nothing; with it, each durable step fsyncs its files and
    directories before firing (the local delivery child's Sieve writes).
    Counts calls (each durable call is a sync of one caller)."""

    def __init__(self, fsync: bool = False) -> None:
        self.calls = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.timings = _timings()  # nothing waits, nothing is timed
        self._fsync = fsync

    @property
    def syncs(self) -> int:
        return self.calls

    def sync(self, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        self.calls += 1
        self.batch_sizes[1] += 1
        if self._fsync:
            try:
                fsync_paths(files, dirs)
            except OSError:
                return fail(Failure())
        return succeed(None)

    def run(
        self,
        work: Callable[[], T],
        durable: bool = True,
        files: Sequence[str] = (),
        dirs: Sequence[str] = (),
        after: Callable[[], None] | None = None,
        soon: bool = False,
        journal: Callable[[], bool] | None = None,
    ) -> Deferred[T]:
        """Run work (then after) at once on the calling thread (no log:
        ``journal`` is not called)."""
        if durable:
            self.calls += 1
            self.batch_sizes[1] += 1
        try:
            result = work()
            if durable:
                if self._fsync:
                    fsync_paths(files, dirs)
                if after is not None:
                    after()
            return succeed(result)
        except Exception:
            return fail(Failure())


@functools.cache
def _load_syncfs() -> Callable[[int], int] | None:
    # Cached: find_library runs ldconfig in a subprocess, far too slow per sync.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    result: Callable[[int], int] = func
    return result


def syncfs_directory(directory: str) -> None:
    """syncfs(2) the file system holding directory; OSError on failure."""
    func = _load_syncfs()
    if func is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if func(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs {directory}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@functools.cache
def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    result: Callable[[int, int, int, int], int] = func
    return result


#: sync_file_range(2)'s flags: SYNC_FILE_RANGE_WRITE (start writing back,
#: do not wait), and with SYNC_FILE_RANGE_WAIT_BEFORE and _WAIT_AFTER (write
#: what is left and wait until all of it reached the device).
_START_WRITEBACK = 2
_WAIT_WRITEBACK = 7


def fsync_paths(files: Sequence[str], dirs: Sequence[str]) -> None:
    """fsync each file, then each directory (their new entries).

    With several files, the write-back of all of them is started, then
    waited for, before the first fsync (sync_file_range(2), a hint: where
    it is missing the fsyncs do it): ext4 converts a new file's blocks
    from unwritten to written in the running transaction once its
    write-back completed, so a file still in flight when the first fsync
    commits the journal would need a commit of its own at its fsync. Done
    this way, the first fsync commits the journal for all of them and the
    others find theirs committed (a device flush each): on a journaled
    ext4 loop device, two new 1 KiB files in two directories took 574 us
    against 790 fsynced one after the other (one file alone: 486)."""
    fds: list[int] = []
    try:
        for path in files:
            fds.append(os.open(path, os.O_RDONLY))
        start = _load_sync_file_range() if len(fds) > 1 else None
        if start is not None:
            for fd in fds:
                start(fd, 0, 0, _START_WRITEBACK)
            for fd in fds:
                start(fd, 0, 0, _WAIT_WRITEBACK)
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)
    for path in dirs:
        fsync_dir(path)


class WorkerThread:
    """One dedicated thread that runs a barrier's batches (one at a time).

    Lighter than the reactor's thread pool on this hot path (no context
    copying, one queue): a batch costs one handoff each way. The thread
    starts on first use and ends when the reactor shuts down, after the
    batch in hand.
    """

    def __init__(self, reactor: Any, name: str = "sync") -> None:
        self._reactor = reactor
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[], None], Deferred[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
            self._reactor.addSystemEventTrigger("after", "shutdown", self._stop)
        self._queue.put((work, d))
        return d

    def _stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(30)

    def _loop(self) -> None:
        call_from_thread = self._reactor.callFromThread
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, d = item
            try:
                work()
            except BaseException:
                call_from_thread(d.errback, Failure())
            else:
                call_from_thread(d.callback, None)


class _Waiter:
    __slots__ = (
        "after",
        "deferred",
        "dirs",
        "durable",
        "files",
        "fired",
        "journal",
        "result",
        "since",
        "soon",
        "work",
    )

    def __init__(
        self,
        files: Sequence[str],
        dirs: Sequence[str],
        work: Callable[[], Any] | None = None,
        durable: bool = True,
        after: Callable[[], None] | None = None,
        soon: bool = False,
        journal: Callable[[], bool] | None = None,
    ) -> None:
        self.deferred: Deferred[Any] = Deferred()
        self.journal = journal
        self.soon = soon
        self.files = files
        self.dirs = dirs
        self.work = work
        self.durable = durable
        self.after = after
        self.fired = False
        self.result: Any = None
        self.since = time.monotonic()


@implementer(ISyncBarrier)
class SyncBarrier:
    """Group commit over ``directory``'s file system.

    ``method`` is ``syncfs`` (one syncfs per batch; file lists ignored) or
    ``fsync`` (every file and directory named by the batch's callers,
    directories de-duplicated). ``reactor`` supplies the thread pool.
    Tests inject ``run_in_thread`` (how a batch's work is run: returns a
    Deferred), ``sync_function`` (what a batch does, given the batch's
    files and directories) and ``clock`` (the timers of the delays below;
    the reactor's when the barrier runs its own thread).

    ``durable_delay``: durable work that finds the barrier idle waits this
    long for company before its batch starts. The queue's barrier has none
    (a client waits for its 250); the mailbox barrier's
    (``pymta_mailbox_sync_delay``) lets deliveries share a sync at low load,
    when each would otherwise pay a journal commit of its own. The wait
    ends early once as much durable work is pending as the last batch
    carried (two or more): under load, the queue manager starts its next
    deliveries (at most its concurrency limit) as the last batch's fire,
    and waiting further would only idle them (with a 10 ms delay and 20
    deliveries at a time, a batch waited the whole delay every time).
    """

    def __init__(
        self,
        directory: str,
        method: str = "syncfs",
        reactor: Any = None,
        *,
        run_in_thread: RunInThread | None = None,
        sync_function: Callable[[Sequence[str], Sequence[str]], None] | None = None,
        single_function: Callable[[Sequence[str], Sequence[str]], None] | None = None,
        clock: Any = None,
        durable_delay: float = 0.0,
        intake: IntakeJournal | None = None,
    ) -> None:
        if method not in SYNC_METHODS:
            raise ValueError(f"unknown sync method {method!r}: expected syncfs or fsync")
        self.directory = directory
        self.method = method
        if sync_function is None:
            if method == "syncfs":
                sync_function = self._syncfs
                # A batch of one write fsyncs it (see _start); tests that
                # inject sync_function inject this too, or get syncfs alone.
                single_function = single_function or fsync_paths
            else:
                sync_function = fsync_paths
        self._sync_function = sync_function
        self._single_function = single_function if method == "syncfs" else None
        if run_in_thread is None:
            if reactor is None:
                from twisted.internet import reactor as default_reactor

                reactor = default_reactor
            run_in_thread = WorkerThread(reactor, name=f"sync {directory}")
            # Work that needs no sync (moves, marks, unlinks) waits up to
            # LAZY_DELAY for the next durable batch to ride along with, so
            # it costs no thread round trip of its own; pending work is
            # drained before the reactor shuts down.
            clock = reactor
            reactor.addSystemEventTrigger("before", "shutdown", self.drain)

        self._run_in_thread = run_in_thread
        self._clock = clock
        self._durable_delay = durable_delay if clock is not None else 0.0
        self._lazy: Any = None
        self._checkpoint_call: Any = None
        #: The queue's intake log (pymta.queue.intake), when it has one.
        self.intake: IntakeJournal | None = intake
        self._drained: list[Deferred[None]] = []
        self._pending: list[_Waiter] = []
        #: Durable waiters in _pending, and in the last batch started.
        self._pending_durable = 0
        self._last_durable = 0
        self._devices: dict[str, int] = {}
        self._running = False
        self.syncs = 0
        #: {durable pieces of work in one sync: how many syncs had that many},
        #: the batch sizes of group commit (pymta.metrics samples them).
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        #: (phase, seconds) of durable batches (ISyncBarrier.timings).
        self.timings = _timings()

    #: How long work that needs no sync may wait for a durable batch.
    LAZY_DELAY = 0.005

    def drain(self) -> Deferred[None]:
        """Fires once every pending piece of work has run."""
        if self._checkpoint_call is not None:
            self._checkpoint_call.cancel()
            self._checkpoint_call = None
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        if not self._running and not self._pending:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        if not self._running:
            self._start()
        return d

    def _kick(self) -> None:
        self._lazy = None
        if not self._running and self._pending:
            self._start()

    def _syncfs(self, files: Sequence[str], dirs: Sequence[str]) -> None:
        """One syncfs per file system the batch wrote to (usually one):
        mailboxes or alias /file targets may live on another than the queue."""
        synced: set[int] = set()
        for directory in (*dirs, self.directory):
            device = self._devices.get(directory)
            if device is None:
                try:
                    device = os.stat(directory).st_dev
                except FileNotFoundError:
                    continue  # removed since; its writes failed or need no sync
                if len(self._devices) > 10000:
                    self._devices.clear()
                self._devices[directory] = device
            if device not in synced:
                synced.add(device)
                syncfs_directory(directory)

    def sync(self, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        waiter = _Waiter(files, dirs)
        self._pending.append(waiter)
        self._pending_durable += 1
        if not self._running:
            self._start_durable()
        return waiter.deferred

    def _start_durable(self) -> None:
        """Start a batch for durable work now, or after ``durable_delay``
        when the barrier was idle: a barrier whose waiters can wait (mailbox
        deliveries) then gathers several into one sync even at low load.
        Now also when as much durable work waits as the last batch held."""
        if not self._durable_delay or (
            self._last_durable >= 2 and self._pending_durable >= self._last_durable
        ):
            self._start()
        elif self._lazy is None:
            self._lazy = self._clock.callLater(self._durable_delay, self._kick)

    def run(
        self,
        work: Callable[[], T],
        durable: bool = True,
        files: Sequence[str] = (),
        dirs: Sequence[str] = (),
        after: Callable[[], None] | None = None,
        soon: bool = False,
        journal: Callable[[], bool] | None = None,
    ) -> Deferred[T]:
        """Run work on the barrier's thread, in call order, in the next batch.

        The Deferred fires with work's result (or its exception) — when
        ``durable``, only after a sync that started after work finished.
        ``after`` (durable work only) runs once that sync succeeded, before
        the Deferred fires: the step that publishes what was made durable,
        as a Maildir delivery's rename from tmp/ into new/ (maildir(5)), in
        the same batch instead of a batch of its own. ``soon`` (work that
        needs no sync but that a caller waits for, as the queue manager
        waits for a move into active/) starts the next batch at once
        instead of waiting for company.
        """
        waiter = _Waiter(files, dirs, work, durable, after, soon, journal)
        self._pending.append(waiter)
        if durable:
            self._pending_durable += 1
        if self._running:
            return waiter.deferred
        if durable:
            self._start_durable()
        elif soon:
            self._start()
        elif self._clock is None:
            self._start()
        elif self._lazy is None:
            self._lazy = self._clock.callLater(self.LAZY_DELAY, self._kick)
        return waiter.deferred

    def _start(self) -> None:
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        batch, self._pending = self._pending, []
        self._last_durable, self._pending_durable = self._pending_durable, 0
        self._running = True
        durable = any(waiter.durable for waiter in batch)
        sync_function = self._sync_function
        single_function = self._single_function
        fsync = self.method == "fsync"
        # Durable work and its sync come first, and their waiters are told at
        # once; the batch's other work (unlinks, moves, marks of earlier
        # messages) runs after, off the path of a client waiting for a 250.
        # Reordering is safe: no durable work depends on a later-called
        # non-durable one, and each kind keeps its own call order.
        first = [waiter for waiter in batch if waiter.durable]
        later = [waiter for waiter in batch if not waiter.durable]
        call_from_thread = getattr(self._clock, "callFromThread", None)

        def run(waiters: list[_Waiter]) -> None:
            for waiter in waiters:
                if waiter.work is not None:
                    try:
                        waiter.result = waiter.work()
                    except Exception:
                        waiter.result = Failure()

        def publish(waiters: list[_Waiter]) -> None:
            for waiter in waiters:
                if waiter.after is not None and not isinstance(waiter.result, Failure):
                    try:
                        waiter.after()
                    except Exception:
                        waiter.result = Failure()

        timings = self.timings
        intake = self.intake

        def work() -> None:
            began = time.monotonic()
            run(first)
            due = False
            if durable:
                # What the batch's successful work wrote: work that failed
                # (a full disk, a quota) removed its file and fails alone,
                # instead of failing the whole batch's fsync.
                files: list[str] = []
                dirs: list[str] = []
                seen: set[str] = set()
                written = [waiter for waiter in first if not isinstance(waiter.result, Failure)]
                # Work whose record the intake log took is durable once the
                # log is (pymta.queue.intake): its files need no sync here.
                logged = 0
                if intake is not None:
                    unlogged = []
                    for waiter in written:
                        if waiter.journal is not None and _staged(waiter.journal):
                            logged += 1
                        else:
                            unlogged.append(waiter)
                    written = unlogged
                batch_sync, per_file = sync_function, fsync
                if single_function is not None and len(written) == 1 and written[0].files:
                    # One write alone (one client at a time): an fsync of
                    # its file and directory commits the journal once for
                    # it, where syncfs also writes back everything else
                    # dirty on the file system (a delivery's Maildir file).
                    batch_sync, per_file = single_function, True
                for waiter in written:
                    if per_file:
                        files.extend(waiter.files)
                    for path in waiter.dirs:
                        if path not in seen:
                            seen.add(path)
                            dirs.append(path)
                self.syncs += 1
                self.batch_sizes[len(first)] += 1
                worked = time.monotonic()
                timings.append(("wait", began - min(waiter.since for waiter in first)))
                timings.append(("work", worked - began))
                try:
                    if logged:
                        assert intake is not None
                        try:
                            intake.commit()
                        except BaseException:
                            intake.discard()
                            raise
                    if written or not logged:
                        batch_sync(files, dirs)
                    timings.append(("sync", time.monotonic() - worked))
                except Exception:
                    if call_from_thread is None or not later:
                        raise
                    call_from_thread(self._fire, first, Failure())
                else:
                    publish(first)
                    due = intake is not None and intake.checkpoint_due()
                    # Told before the batch's other work and the checkpoint.
                    if call_from_thread is not None and (later or due):
                        call_from_thread(self._fire, first, None)
            elif intake is not None:
                due = intake.checkpoint_due()
            run(later)
            if due:
                assert intake is not None
                began = time.monotonic()
                if intake.checkpoint():
                    timings.append(("checkpoint", time.monotonic() - began))

        try:
            d = self._run_in_thread(work)
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addBoth(self._finished, batch)

    def checkpoint(self) -> Deferred[None]:
        """Fires once the intake log's records are free (a clean stop):
        after every pending piece of work, in a batch of its own."""
        if self.intake is None:
            return succeed(None)
        return self.run(self.intake.checkpoint, durable=False, soon=True).addCallback(
            lambda _: None
        )

    def _tick(self) -> None:
        """The checkpoint of an idle log, whose records got old (a batch
        checks whether one is due after its own work)."""
        self._checkpoint_call = None
        self.run(_nothing, durable=False, soon=True)

    def _fire(self, waiters: list[_Waiter], sync_failure: Failure | None) -> None:
        """Tell durable waiters early, before the batch's other work is done."""
        for waiter in waiters:
            waiter.fired = True
            if sync_failure is not None:
                waiter.deferred.errback(sync_failure)
            elif isinstance(waiter.result, Failure):
                waiter.deferred.errback(waiter.result)
            else:
                waiter.deferred.callback(waiter.result)

    def _finished(self, result: object, batch: list[_Waiter]) -> None:
        self._running = False
        intake = self.intake
        if (
            intake is not None
            and self._clock is not None
            and self._checkpoint_call is None
            and not self._drained
            and intake.has_records
        ):
            self._checkpoint_call = self._clock.callLater(intake.checkpoint_time, self._tick)
        # Start the next batch before firing: a waiter's callback that calls
        # sync() again must queue behind a sync that starts after it. Work
        # that needs no sync waits for company (see run), unless draining.
        if self._pending and (
            self._drained
            or self._clock is None
            or any(waiter.durable or waiter.soon for waiter in self._pending)
        ):
            self._start()
        elif self._pending and self._lazy is None:
            self._lazy = self._clock.callLater(self.LAZY_DELAY, self._kick)
        elif not self._pending and self._drained:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
        for waiter in batch:
            if waiter.fired:
                continue
            if isinstance(result, Failure) and waiter.durable:
                waiter.deferred.errback(result)
            elif isinstance(waiter.result, Failure):
                waiter.deferred.errback(waiter.result)
            else:
                waiter.deferred.callback(waiter.result)
