"""Message scans off the reactor: a body SEARCH reads its files in workers.

A SEARCH with BODY or TEXT reads every message of the folder (10,000 of 50 KB
is half a gigabyte). Done in the reactor thread, 20 such searches made a new
client's LOGIN wait 19 s and an SMTP EHLO 15 s (issue 11). Here:

- :class:`ScanGate` bounds the scans of one user that run at once
  (:data:`SCANS_PER_USER`, per process): a further scan of that user waits
  for its turn, the user's session waiting as for any slow command; other
  users are not held up by it.
- :func:`scan_thread_runner` is a small pool of its own
  (:data:`SCAN_THREADS` threads), so scans never queue ahead of the work
  of the reactor's pool (password hashing, header prefetch).
- :func:`scan_search` takes a snapshot in the reactor thread (sequence
  number, the index's :class:`~pymta.mailstore.interface.MessageInfo`,
  \\Recent, and the folder's
  :meth:`~pymta.mailstore.interface.IMessageFiles.message_reader`), then
  hands the messages to the pool in batches of at most :data:`BATCH_BYTES`
  (or :data:`BATCH_MESSAGES`), one batch in flight per scan. A worker reads
  each file and runs the search test on a candidate built from the file
  alone: nothing the reactor owns (index, caches, the session) is touched
  there. A file renamed meanwhile (flags changed) is looked up again in the
  index once, after the other batches; one gone for good is left out, as an
  expunged message is. Flags and sizes are those of the snapshot, the state
  when the SEARCH began.

The reactor thread does per batch only the bookkeeping: a 10,000-message
scan costs it a few milliseconds in all. Python runs one thread at a time
(the GIL), so CPU in the workers still slows the reactor down a little; the
figure is in bench/attacks/search_stall.py.

Untrusted input: the messages (through the search test). Reads message
files; writes nothing; logs nothing (the session logs failures).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore

from pymta.imap.prefetch import ThreadRunner
from pymta.imap.search import Candidate, Test
from pymta.mailstore.interface import MailStoreError, MessageInfo, NoSuchMessage
from pymta.mailstore.names import header_block

#: Scans of one user that run at once in one process; more wait their turn.
SCANS_PER_USER = 1

#: Threads of the scan pool (the machine's cores are few; a scan is I/O and
#: CPU under the GIL, more threads would only contend).
SCAN_THREADS = 2

#: The GIL switch interval once scans run (Python's default: 5 ms).
SWITCH_INTERVAL = 0.001

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


def scan_thread_runner(reactor: Any) -> ThreadRunner | None:
    """A runner on a pool of :data:`SCAN_THREADS` threads of its own, started
    on first use and stopped when the reactor shuts down; None for a
    reactor without threads (a ``task.Clock`` in tests)."""
    if not hasattr(reactor, "callFromThread") or not hasattr(reactor, "addSystemEventTrigger"):
        return None
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    pool: list[ThreadPool] = []

    def run(work: Callable[[], Any]) -> Deferred[Any]:
        if not pool:
            # A thread that wants the GIL waits up to the switch interval
            # (5 ms) for the one holding it: each of the reactor's returns
            # from a socket call would, while a scan runs.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            started = ThreadPool(0, SCAN_THREADS, name="imap-scan")
            started.start()
            reactor.addSystemEventTrigger("during", "shutdown", started.stop)
            pool.append(started)
        return deferToThreadPool(reactor, pool[0], work)

    return run


_shared: weakref.WeakKeyDictionary[Any, tuple[ThreadRunner | None, ScanGate]] = (
    weakref.WeakKeyDictionary()
)


def shared_scanning(reactor: Any) -> tuple[ThreadRunner | None, ScanGate]:
    """One scan pool and one gate per reactor (process), for every imapd
    listener: IMAP on 143 and IMAPS on 993 count a user's scans together."""
    shared = _shared.get(reactor)
    if shared is None:
        shared = _shared[reactor] = (scan_thread_runner(reactor), ScanGate())
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


def match_batch(
    read: Reader,
    batch: Sequence[Entry],
    test: Test,
    largest_msn: int,
    largest_uid: int,
) -> tuple[list[tuple[int, MessageInfo]], list[Entry]]:
    """(Worker thread) read and test each message of ``batch``: the matches,
    and the entries whose file could not be read."""
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
    largest_msn: int,
    largest_uid: int,
    test: Test,
    reader: Reader,
    lookup: Callable[[int], MessageInfo],
    fresh_reader: Callable[[], Reader],
    run_in_thread: ThreadRunner,
    stopped: Callable[[], bool],
) -> Deferred[ScanResult]:
    """Test ``entries`` in the workers (see the module docstring). ``lookup``
    gives a message's record as the index has it now (reactor thread),
    ``fresh_reader`` the folder's reader after that; ``stopped()`` tells
    that the session is gone (no more batches)."""
    return defer.ensureDeferred(
        _scan(
            entries,
            largest_msn,
            largest_uid,
            test,
            reader,
            lookup,
            fresh_reader,
            run_in_thread,
            stopped,
        )
    )


async def _scan(
    entries: Sequence[Entry],
    largest_msn: int,
    largest_uid: int,
    test: Test,
    reader: Reader,
    lookup: Callable[[int], MessageInfo],
    fresh_reader: Callable[[], Reader],
    run_in_thread: ThreadRunner,
    stopped: Callable[[], bool],
) -> ScanResult:
    result = ScanResult()
    unread: list[Entry] = []
    for batch in batches(entries):
        if stopped():
            return result
        matched, missed = await run_in_thread(
            partial(match_batch, reader, batch, test, largest_msn, largest_uid)
        )
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
            reader = fresh_reader()
            matched, _ = await run_in_thread(
                partial(match_batch, reader, again, test, largest_msn, largest_uid)
            )
            result.matched += matched
            result.matched.sort(key=lambda pair: pair[0])
    return result
