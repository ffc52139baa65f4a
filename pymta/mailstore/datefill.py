"""datefill: the INTERNALDATEs of a big folder read on both cores.

A folder's first scan reads no file's date (:mod:`pymta.mailstore.index`:
``-``); after the SELECT of a big folder imapd has the store read them
all at once (``IAsyncFolder.fill_dates`` with the session's scan
workers), since the first SORT (ARRIVAL), SORT (DATE) or THREAD after it
waits for them. One ``fstatat`` per file costs about 2.5 us of CPU in
Python, a quarter of a second for 100,000 files in one thread, where
Dovecot's C takes a fraction of it. Here (:func:`fill`), in the folder's
turn (the folder's other calls wait, as for the synchronous
``fill_dates``):

1. the folder says which files to read (:meth:`IDatedFiles.undated_files`,
   in the store's threads: those whose date is unknown, less those its
   date file holds, :mod:`pymta.mailstore.datefile`);
2. they are ``stat``'ed :data:`CHUNK` at a time by the scan worker
   processes and one of the store's threads together, each lane taking
   the next chunk when done (a worker lane starts once its process
   answers: one still starting after the SELECT holds nothing up);
   names go out, ``{uid: (name, mtime)}`` comes back
   (:func:`pymta.mailstore.digestwork.mtimes`, which imports no Twisted);
3. the folder takes them under its lock
   (:meth:`IDatedFiles.put_read_dates`, in the store's threads: a file
   renamed meanwhile is looked for again, the dates kept in the date
   file).

A worker that fails (its pool broken, the server stopping) fails the
fill; the next command that needs the dates reads them again.

Untrusted input: none here (file names come from the folder's index).
Writes nothing itself; logs nothing.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from pymta.mailstore.digestwork import mtimes

#: Files per chunk handed to a lane (100,000 files: 13 chunks).
CHUNK = 8192

#: Runs a function elsewhere (a thread, a worker process); its result
#: arrives in the reactor thread.
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


@dataclass
class DatePlan:
    """What a fill must read: the folder's UIDVALIDITY when it was planned,
    the dates its date file held (by UID), and the (uid, index name) of
    the files to ``stat``."""

    uidvalidity: int
    from_file: dict[int, float]
    files: list[tuple[int, str]]


class IDatedFiles(Interface):
    """Optional for a synchronous folder of the store (the Maildir
    folder's): its dates read as a plan, the files ``stat``'ed anywhere,
    and the results put back."""

    path = Attribute("The folder's directory (its files' names are relative to it).")

    def undated_files(uids: Collection[int]) -> DatePlan | None:
        """The plan of a fill of these messages' dates; None: nothing to
        read (thread-safe)."""

    def put_read_dates(plan: DatePlan, dates: dict[int, tuple[str, float]]) -> None:
        """The dates read for ``plan`` (``mtimes`` of its files) given to
        the records and kept (thread-safe; takes the folder's lock)."""


async def fill(
    folder: Any,
    uids: Collection[int],
    runner: Runner,
    workers: Runner,
) -> None:
    """Read the unknown dates of ``uids`` of ``folder`` (an
    :class:`IDatedFiles` with a ``path``) on the worker processes and
    ``runner``'s threads (see the module doc)."""
    plan: DatePlan | None = await runner(partial(folder.undated_files, list(uids)))
    if plan is None:
        return
    found: dict[int, tuple[str, float]] = {}
    if plan.files:
        path = folder.path
        chunks = deque(plan.files[i : i + CHUNK] for i in range(0, len(plan.files), CHUNK))
        await _lanes(chunks, path, found, runner, workers)
    await runner(partial(folder.put_read_dates, plan, found))


async def _lanes(
    chunks: deque[list[tuple[int, str]]],
    path: str,
    found: dict[int, tuple[str, float]],
    runner: Runner,
    workers: Runner,
) -> None:
    """``mtimes`` of every chunk into ``found``: a thread lane at once and
    a lane per worker process once it answers, each taking the next chunk
    when done; fires when every chunk taken is done."""
    done: Deferred[None] = Deferred()
    in_flight = 0

    def settle() -> None:
        if not chunks and in_flight == 0 and not done.called:
            done.callback(None)

    async def lane(run: Runner, worker: bool) -> None:
        nonlocal in_flight
        if worker:
            try:
                await run(os.getpid)
            except Exception:
                settle()
                return  # no worker process (a broken pool): the thread reads
        while chunks and not done.called:
            chunk = chunks.popleft()
            in_flight += 1
            try:
                try:
                    found.update(await run(partial(mtimes, path, chunk)))
                except Exception:
                    if not worker:
                        raise
                    # The worker failed: this chunk in the store's thread,
                    # and no more for this lane.
                    found.update(await runner(partial(mtimes, path, chunk)))
                    break
            finally:
                in_flight -= 1
        settle()

    def ended(result: object) -> None:
        if isinstance(result, Failure) and not done.called:
            done.errback(result)  # the store's thread failed: so does the fill

    for run, worker in [(runner, False)] + [(workers, True)] * WORKER_LANES:
        defer.ensureDeferred(lane(run, worker)).addBoth(ended)
    settle()
    await done


#: Chunks in flight in the worker processes at once (one per process).
WORKER_LANES = 2
