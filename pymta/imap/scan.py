"""Message scans off the reactor: a body SEARCH reads its files in workers.

A SEARCH with BODY or TEXT reads every message of the folder (10,000 of 50 KB
is half a gigabyte). Done in the reactor thread, 20 such searches made a new
client's LOGIN wait 19 s and an SMTP EHLO 15 s (measured before this module). Here:

- :class:`ScanGate` bounds the scans of one user that run at once
  (:data:`SCANS_PER_USER`, per process, shared by every imapd listener): a
  further scan of that user waits for its turn, the user's session waiting
  as for any slow command; other users are not held up by it.
- :func:`scan_runner` is a pool of :data:`SCAN_PROCESSES` worker
  processes, started on first use or after the SELECT of a folder of
  :data:`PRESTART_MESSAGES` or more (:func:`prestart`),
  :data:`pymta.imap.scanworker.SCAN_NICE` steps nicer than the server and
  stopped with it. Processes, not threads: a thread testing
  message text holds the interpreter's lock (the GIL) nearly all the time,
  and every socket call of the reactor thread would then wait up to 5 ms
  to get it back (a new SMTP session makes a dozen). Without POSIX
  semaphores (no ``/dev/shm``) the pool falls back to threads, logged.
- the store reads the files and batches them (its ``scan``,
  :mod:`pymta.mailstore.filescan`: a snapshot of the index, batches to
  the workers one at a time, a renamed file looked up again); the
  session hands it a :class:`SearchMatch`, the criteria as the client
  sent them, which a worker parses again (a test function cannot be
  pickled). Flags and sizes are those of the snapshot, the state when
  the SEARCH began.

The reactor thread does per batch only the bookkeeping. Figures:
bench/attacks/search_stall.py.

Untrusted input: the messages (through the search test). Reads nothing
itself (the store reads the files); writes nothing; logs a warning when
worker processes cannot start (the session logs failures).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing import get_context
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.imap import scanworker
from pymta.imap.parser import Token
from pymta.imap.search import Candidate, Test, parse_search
from pymta.mailstore.interface import MailStoreError, MessageInfo
from pymta.mailstore.names import header_block
from pymta.mailstore.prefetch import ThreadRunner

_log = Logger(namespace="pymta.imap")

#: Scans of one user that run at once in one process; more wait their turn.
SCANS_PER_USER = 1

#: Worker processes of the scan pool (a scan is CPU and I/O; the machines
#: pymta runs on have a few cores, and the reactor needs one).
SCAN_PROCESSES = 2


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
                    initializer=scanworker.started,
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


#: A SELECT or EXAMINE of a folder of at least this many messages starts
#: the scan workers (:func:`prestart`): its first SORT, THREAD or body
#: SEARCH is one the workers help with, and then finds them there.
PRESTART_MESSAGES = 10_000


def prestart(workers: ThreadRunner | None, clock: IReactorTime) -> None:
    """Start the scan worker processes of ``workers`` (a
    :func:`scan_runner`; nothing when already started) in the reactor's
    next turn (a SELECT's answer is written by then), one trivial job per
    process, whose answer nobody waits for. A worker imports only what it
    needs to start (:mod:`pymta.imap.scanworker`): about 0.1 s of CPU and
    13 MB each, once per server process."""
    if workers is None:
        return

    def start() -> None:
        for _ in range(SCAN_PROCESSES):
            workers(os.getpid).addErrback(lambda _: None)  # a scan retries

    clock.callLater(0, start)


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


class SearchMatch:
    """SEARCH criteria as the store's ``scan`` takes them
    (:mod:`pymta.mailstore.filescan`): ``match(key, info, content)`` with
    ``key`` (sequence number, \\Recent). Picklable, for the worker
    processes: it carries the criteria as the client sent them and parses
    them again where it runs, once per unpickled copy (a test function
    cannot be pickled), with the same saved result ($) and IMAP4rev2
    rules."""

    def __init__(
        self,
        criteria: list[Token],
        saved: frozenset[int],
        rev2: bool,
        largest_msn: int,
        largest_uid: int,
    ) -> None:
        self.criteria = criteria
        self.saved = saved
        self.rev2 = rev2
        self.largest_msn = largest_msn
        self.largest_uid = largest_uid
        self._test: Test | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.criteria, self.saved, self.rev2, self.largest_msn, self.largest_uid)
        return (SearchMatch, args)

    def __call__(self, key: tuple[int, bool], info: MessageInfo, content: bytes) -> bool:
        test = self._test
        if test is None:
            test = self._test = parse_search(self.criteria, self.saved, self.rev2).test
        msn, recent = key
        loaded = _Read(content)
        cand = Candidate(
            msn, info, recent, self.largest_msn, self.largest_uid, loaded.header, loaded.whole
        )
        try:
            return test(cand)
        except MailStoreError:
            return False


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
