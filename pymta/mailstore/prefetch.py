"""prefetch: a folder's header cache filled in the store's threads.

What a server asks of many messages' headers at once (IMAP SEARCH, SORT,
THREAD) goes through the asynchronous API's ``prefetch_headers`` and
``headers`` (:mod:`pymta.mailstore.asyncstore`); for a folder with a
header cache (the Maildir store's, the private interface
:class:`~pymta.mailstore.interface.IHeaderCache`) they come here.

Why: a header SEARCH over a folder whose header cache is cold would read
every message file in the reactor thread (seconds on 100,000 messages,
every other session of the process stalled meanwhile: invariant 4 of
docs/architecture.md). :func:`fill` asks the folder which of the
messages' headers are not cached; if there are at least
:data:`PREFETCH_MIN`, the files are read in batches of :data:`BATCH` by
the store's thread runner (pure file reads into a local dict, no shared
state touched), and each batch is stored in the folder's cache back in
the reactor thread. Messages expunged or renamed meanwhile are skipped
here and read again by the caller if it still needs them. Fewer than
:data:`PREFETCH_MIN` are left to the folder's own reads (a thread hop
would cost more than the reads).

Untrusted input: none (UIDs of a session's view). Writes: the folder's
header cache, through the mail store. Logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from pymta.mailstore.interface import IHeaderCache

#: Runs a function in a worker thread; its result arrives in the reactor thread.
ThreadRunner = Callable[[Callable[[], Any]], "Deferred[Any]"]

#: Fewer uncached headers (or unindexed files) than this are read in the
#: reactor thread, as before.
PREFETCH_MIN = 64

#: Messages read per thread call (one reactor turn stores each batch).
BATCH = 4096


def reactor_thread_runner(reactor: Any) -> ThreadRunner | None:
    """A runner on the reactor's thread pool, or None for a reactor without
    threads (a ``task.Clock`` in tests: everything stays synchronous)."""
    if not hasattr(reactor, "getThreadPool") or not hasattr(reactor, "callFromThread"):
        return None

    def run(work: Callable[[], Any]) -> Deferred[Any]:
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    return run


def fill(
    cache: IHeaderCache, uids: Collection[int], run_in_thread: ThreadRunner | None
) -> Deferred[int] | None:
    """Fill the header cache of ``uids`` off the reactor thread. None when
    there is nothing worth doing (no runner, few uncached headers); else a
    Deferred firing with the number of headers stored, once all batches
    are in the cache."""
    if run_in_thread is None:
        return None
    wanted = cache.uncached_headers(uids)
    if len(wanted) < PREFETCH_MIN:
        return None
    return defer.ensureDeferred(_fill(cache, wanted, run_in_thread))


async def _fill(cache: Any, wanted: list[tuple[int, str]], run_in_thread: ThreadRunner) -> int:
    stored = 0
    for start in range(0, len(wanted), BATCH):
        batch = wanted[start : start + BATCH]
        blocks = await run_in_thread(partial(cache.read_headers, batch))
        stored += cache.cache_headers(blocks)
    return stored
