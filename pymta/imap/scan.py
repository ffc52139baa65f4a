"""Message scans off the reactor: a body SEARCH reads its files in workers.

A SEARCH with BODY or TEXT reads every message of the folder (10,000 of 50 KB
is half a gigabyte). Done in the reactor thread, 20 such searches made a new
client's LOGIN wait 19 s and an SMTP EHLO 15 s (measured before this module). Here:

- :class:`ScanGate` bounds the scans of one user that run at once
  (:data:`SCANS_PER_USER`, per process, shared by every imapd listener): a
  further scan of that user waits for its turn, the user's session waiting
  as for any slow command; other users are not held up by it.
- :func:`scan_runner` is a pool of :data:`SCAN_PROCESSES` worker
  processes, started on first use, :data:`SCAN_NICE` steps nicer than the
  server and stopped with it. Processes, not threads: a thread testing
  message text holds the interpreter's lock (the GIL) nearly all the time,
  and every socket call of the reactor thread would then wait up to 5 ms
  to get it back (a new SMTP session makes a dozen). Without POSIX
  semaphores (no ``/dev/shm``) the pool falls back to threads, logged.
- :func:`scan_search` takes a snapshot in the reactor thread (sequence
  number, the index's :class:`~pymta.mailstore.interface.MessageInfo`,
  \\Recent) and sends the workers a :class:`ScanJob`: the folder's
  :meth:`~pymta.mailstore.interface.IMessageFiles.message_reader` and the
  criteria as the client sent them, which a worker parses again (a test
  function cannot be pickled). Messages go in batches of at most
  :data:`BATCH_BYTES` (or :data:`BATCH_MESSAGES`), one batch in flight per
  scan. A worker reads each file and tests a candidate built from the file
  alone: nothing the reactor owns (index, caches, the session) is touched
  there. A file renamed meanwhile (flags changed) is looked up again in the
  index once, after the other batches; one gone for good is left out, as an
  expunged message is. Flags and sizes are those of the snapshot, the state
  when the SEARCH began.

The reactor thread does per batch only the bookkeeping. Figures:
bench/attacks/search_stall.py.

Untrusted input: the messages (through the search test). Reads message
files; writes nothing; logs a warning when worker processes cannot start
(the session logs failures).
"""

from __future__ import annotations

import ctypes
import os
import signal
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing import get_context
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.imap.parser import Token
from pymta.imap.search import Candidate, parse_search
from pymta.mailstore.interface import MailStoreError, MessageInfo, NoSuchMessage
from pymta.mailstore.names import header_block
from pymta.mailstore.prefetch import ThreadRunner

_log = Logger(namespace="pymta.imap")

#: Scans of one user that run at once in one process; more wait their turn.
SCANS_PER_USER = 1

#: Worker processes of the scan pool (a scan is CPU and I/O; the machines
#: pymta runs on have a few cores, and the reactor needs one).
SCAN_PROCESSES = 2

#: How much nicer (lower CPU priority) the scan workers are than the server.
SCAN_NICE = 10

_PR_SET_PDEATHSIG = 1

#: A batch ends after this many bytes of message files, or messages.
BATCH_BYTES = 4 << 20
BATCH_MESSAGES = 512

#: What the snapshot holds of a message: sequence number, index record, \\Recent.
Entry = tuple[int, MessageInfo, bool]

#: ``read(filename, size)`` from IMessageFiles.message_reader.
Reader = Callable[[str, int], "bytes | None"]


class ScanGate:
    """At most ``per_user`` scans of one user at once; the rest queue."""

    def __init__(self, per_user: int = SCANS_PER_USER) -> None:
        self.per_user = per_user
        self._gates: dict[str, DeferredSemaphore] = {}

    def run(self, user: str, scan: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """Run ``scan()`` when one of the user's slots is free; the slot is
        given back when its Deferred fires (either way)."""
        gate = self._gates.get(user)
        if gate is None:
            gate = self._gates[user] = DeferredSemaphore(self.per_user)

        def done(result: object) -> object:
            if gate.tokens == gate.limit and not gate.waiting:
                self._gates.pop(user, None)  # no scan of this user left
            return result

        return gate.run(scan).addBoth(done)

    def waiting(self, user: str) -> int:
        """Scans of the user waiting for a slot (for tests and metrics)."""
        gate = self._gates.get(user)
        return len(gate.waiting) if gate is not None else 0


def scan_runner(reactor: Any) -> ThreadRunner | None:
    """A runner on a pool of :data:`SCAN_PROCESSES` worker processes
    (started on first use, stopped when the reactor shuts down), so that a
    scan's CPU never holds this process's GIL; None for a reactor without
    threads (a ``task.Clock`` in tests). The work must be picklable (a
    partial of a module-level function over plain data)."""
    if not hasattr(reactor, "callFromThread") or not hasattr(reactor, "addSystemEventTrigger"):
        return None
    pools: list[Executor] = []

    def run(work: Callable[[], Any]) -> Deferred[Any]:
        if not pools:
            pool: Executor
            try:
                pool = ProcessPoolExecutor(
                    SCAN_PROCESSES,
                    mp_context=get_context("spawn"),
                    initializer=_background,
                    initargs=(os.getpid(),),
                )
            except (OSError, ImportError, NotImplementedError) as e:
                # No POSIX semaphores (a container without /dev/shm): threads,
                # which keep the reactor free of the files but share its GIL.
                _log.warn("imap: scan worker processes unavailable ({error}): threads", error=e)
                pool = ThreadPoolExecutor(SCAN_PROCESSES, thread_name_prefix="imap-scan")
            reactor.addSystemEventTrigger(
                "during", "shutdown", partial(pool.shutdown, wait=True, cancel_futures=True)
            )
            pools.append(pool)
        d: Deferred[Any] = Deferred()
        try:
            future = pools[0].submit(work)
        except BrokenProcessPool:
            pools.clear()  # a worker died (killed): the next scan starts a new pool
            return fail()

        def done(finished: Future[Any]) -> None:
            reactor.callFromThread(_settle, d, finished, pools)

        future.add_done_callback(done)
        return d

    return run


def _background(server_pid: int) -> None:
    """(Worker process, at its start) yield the CPU to the reactor processes
    (a scan is background work, a new session is not), and end with the
    server even when it is killed (Linux's PR_SET_PDEATHSIG): the worker
    itself holds its task queue open and would otherwise wait forever."""
    os.nice(SCAN_NICE)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a killed server leaves its idle workers behind
    if os.getppid() != server_pid:
        os._exit(0)  # the server died before the prctl took effect


def _settle(d: Deferred[Any], finished: Future[Any], pools: list[Executor]) -> None:
    """(Reactor thread) fire ``d`` with what the worker process returned."""
    error = finished.exception() if not finished.cancelled() else CancelledError()
    if error is None:
        d.callback(finished.result())
        return
    if isinstance(error, BrokenProcessPool):
        pools.clear()
    d.errback(Failure(error))


_shared: weakref.WeakKeyDictionary[Any, tuple[ThreadRunner | None, ScanGate]] = (
    weakref.WeakKeyDictionary()
)


def shared_scanning(reactor: Any) -> tuple[ThreadRunner | None, ScanGate]:
    """One scan pool and one gate per reactor (process), for every imapd
    listener: IMAP on 143 and IMAPS on 993 count a user's scans together."""
    shared = _shared.get(reactor)
    if shared is None:
        shared = _shared[reactor] = (scan_runner(reactor), ScanGate())
    return shared


@dataclass
class ScanResult:
    """What a scan matched: (sequence number, record) in sequence order."""

    matched: list[tuple[int, MessageInfo]] = field(default_factory=list)


def batches(entries: Sequence[Entry]) -> list[Sequence[Entry]]:
    """The snapshot cut into batches of about BATCH_BYTES / BATCH_MESSAGES."""
    out: list[Sequence[Entry]] = []
    start = 0
    size = 0
    for i, (_, info, _) in enumerate(entries):
        size += info.size
        if size >= BATCH_BYTES or i + 1 - start >= BATCH_MESSAGES:
            out.append(entries[start : i + 1])
            start, size = i + 1, 0
    if start < len(entries):
        out.append(entries[start:])
    return out


@dataclass(frozen=True)
class ScanJob:
    """What a worker needs to test messages, all picklable (the worker is
    another process): the folder's reader, and the criteria as the client
    sent them, parsed again there (a test function cannot be pickled)."""

    reader: Reader
    criteria: list[Token]
    saved: frozenset[int]
    rev2: bool
    largest_msn: int
    largest_uid: int


def match_batch(
    job: ScanJob, batch: Sequence[Entry]
) -> tuple[list[tuple[int, MessageInfo]], list[Entry]]:
    """(Worker) read and test each message of ``batch``: the matches, and the
    entries whose file could not be read."""
    test = parse_search(job.criteria, job.saved, job.rev2).test
    read = job.reader
    largest_msn, largest_uid = job.largest_msn, job.largest_uid
    matched: list[tuple[int, MessageInfo]] = []
    unread: list[Entry] = []
    for msn, info, recent in batch:
        content = read(info.filename, info.size)
        if content is None:
            unread.append((msn, info, recent))
            continue
        loaded = _Read(content)
        cand = Candidate(msn, info, recent, largest_msn, largest_uid, loaded.header, loaded.whole)
        try:
            found = test(cand)
        except MailStoreError:
            found = False
        if found:
            matched.append((msn, info))
    return matched, unread


class _Read:
    """A candidate's loaders over a message already read: its header block
    is cut from the file, as the store's header cache cuts it."""

    __slots__ = ("content",)

    def __init__(self, content: bytes) -> None:
        self.content = content

    def header(self) -> bytes:
        return header_block(self.content)

    def whole(self) -> bytes:
        return self.content


def scan_search(
    entries: Sequence[Entry],
    job: ScanJob,
    lookup: Callable[[int], MessageInfo],
    fresh_reader: Callable[[], Reader],
    run: ThreadRunner,
    stopped: Callable[[], bool],
) -> Deferred[ScanResult]:
    """Test ``entries`` in the workers (see the module docstring). ``lookup``
    gives a message's record as the index has it now (reactor thread),
    ``fresh_reader`` the folder's reader after that; ``stopped()`` tells
    that the session is gone (no more batches)."""
    return defer.ensureDeferred(_scan(entries, job, lookup, fresh_reader, run, stopped))


async def _scan(
    entries: Sequence[Entry],
    job: ScanJob,
    lookup: Callable[[int], MessageInfo],
    fresh_reader: Callable[[], Reader],
    run: ThreadRunner,
    stopped: Callable[[], bool],
) -> ScanResult:
    result = ScanResult()
    unread: list[Entry] = []
    for batch in batches(entries):
        if stopped():
            return result
        matched, missed = await run(partial(match_batch, job, batch))
        result.matched += matched
        unread += missed
    if unread and not stopped():
        # Renamed meanwhile (flags changed by another session or program):
        # look each up again, once; expunged ones drop out.
        again: list[Entry] = []
        for msn, info, recent in unread:
            try:
                again.append((msn, lookup(info.uid), recent))
            except (NoSuchMessage, MailStoreError):
                continue
        if again:
            retry = replace(job, reader=fresh_reader())
            matched, _ = await run(partial(match_batch, retry, again))
            result.matched += matched
            result.matched.sort(key=lambda pair: pair[0])
    return result
