"""digests: a value computed from each message's header, where the store likes.

What a server computes from the header of every message of a folder (IMAP
SORT and THREAD: a message's sort keys, :mod:`pymta.imap.sortcache`) goes
through the asynchronous API's ``header_digests``
(:mod:`pymta.mailstore.asyncstore`). The caller hands in a
:class:`HeaderDigest`: a picklable function of one header block and the
message's INTERNALDATE, and how its values are written to and read back
from a file (so that a restarted server does not read the messages again,
as Dovecot keeps its sort data in its index files). The store owns the
rest, as Dovecot's Maildir code does: which files, read how, where the CPU
goes, and where the values are kept.

For a folder of files (the Maildir store's, which provides the store's own
:class:`IHeaderDigests`) :func:`digests` does, off the reactor thread:

1. the values kept in the folder's directory (file ``digest.name``; a line
   ``<digest.magic> V<uidvalidity>``, then lines each a JSON list of
   ``[uid, value]`` items, tuples written as lists) are read in the
   store's threads the first time a folder is asked, and again when asked for values it holds (the
   caller dropped what it was given) (:func:`load`); a file of
   another UIDVALIDITY, too big, or one that does not parse is started
   afresh, a torn last line (a crash while appending) is skipped, and a
   file holding twice as many messages as the folder is written again;
2. messages whose header is not in the folder's header cache are read
   from their files by the caller's ``workers`` (worker processes) and
   by the store's threads, in batches of :data:`BATCH`, each lane taking
   the next batch when done (the worker processes run nicer and may get
   little CPU on a busy machine; a worker lane takes its first batch only
   once a worker process answers, and the answer waits only for the
   batches taken, so a worker still starting holds up nothing while the
   thread works): names and dates go out; values and the header blocks
   read come back packed by :mod:`marshal`, with their line of the kept
   file encoded there; one ``os.read`` of :data:`FIRST_READ` bytes per
   file, more only when the header is longer (:class:`HeaderReader`);
   nothing the reactor owns is touched there; the blocks go to the
   folder's header cache (``cache_headers``, in the store's threads), so
   the next digest of the same messages (another SORT criterion, THREAD)
   reads no file;
3. the rest (cached headers; without workers, every one, after the
   header cache is filled in the store's threads) are digested in the
   store's threads, :data:`BATCH` at a time, from the header cache;
4. new values are appended to the file in the store's threads (one write
   per batch, after the header blocks before it are cached; nobody waits
   for either).

:func:`kept_values` gives only what the kept file holds (the asynchronous
API's ``kept_digests``), for a caller that computes something cheaper
for the rest.

A message gone meanwhile (expunged, or its file renamed by a flag change
while a worker read it: then it is digested again from the folder) is left
out of the answer only when it is gone for good. Without threads (a
``task.Clock`` in tests) and for the memory store, everything runs at once.

Untrusted input: the messages (the caller's digest reads them) and the
kept file (its owner may write anything: ``digest.decode`` checks every
item, a bad file is not used). Writes the kept file (owned like its
directory when run as root) and, through the folder, its header cache.
Logs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.python.failure import Failure
from zope.interface import Interface

from pymta.mailstore.digestwork import (
    FIRST_READ,
    HeaderDigest,
    HeaderReader,
    digest_files,
    digest_files_packed,
    kept_line,
    unpacked,
)
from pymta.mailstore.interface import IFolder, MailStoreError, known_date

__all__ = ["FIRST_READ", "HeaderDigest", "HeaderReader", "IHeaderDigests", "digests", "load"]

#: Messages per batch sent to a worker or run in a thread (a worker that
#: gets little CPU holds up the answer by one batch at most).
BATCH = 1024

#: Fewer messages than this to digest are digested at once, in the caller's
#: thread (a thread hop or a worker batch would cost more).
AT_ONCE = 64

#: A bigger kept file is not read (made again instead).
MAX_FILE = 512 << 20

#: Runs a function elsewhere (a thread, a worker process); its result
#: arrives in the reactor thread.
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


class IHeaderDigests(Interface):
    """Optional for a synchronous folder of the store: its messages'
    headers can be read from a worker process and values kept beside it.
    The store's own (the asynchronous API's ``header_digests`` asks it),
    not the servers'."""

    def header_reader() -> HeaderReader:
        """A picklable reader of the folder's message files' header blocks
        by the names the index gives (None when gone)."""

    def uncached_files(uids: Collection[int]) -> list[tuple[int, str, float]]:
        """(uid, filename, INTERNALDATE) of those of ``uids`` still there
        whose header block is not cached (thread-safe)."""

    def kept_file() -> tuple[str, int]:
        """(the folder's directory, its UIDVALIDITY) for the kept values."""

    def live_uids() -> set[int]:
        """The UIDs of the folder's messages now (thread-safe)."""

    def cache_headers(blocks: dict[tuple[int, str], bytes]) -> int:
        """Keep the header blocks read by (uid, filename) in the folder's
        header cache; how many were new (thread-safe)."""


def digest_here(
    folder: IFolder, digest: HeaderDigest, uids: Iterable[int]
) -> list[tuple[int, Any]]:
    """The values of ``uids`` read through the synchronous folder (its
    header cache) in the calling thread; one gone is left out."""
    out: list[tuple[int, Any]] = []
    for uid in uids:
        try:
            date = known_date(folder.get(uid))
            header = folder.header_bytes(uid)
        except MailStoreError:
            continue
        out.append((uid, digest(header, date)))
    return out


def elsewhere(runner: Runner | None) -> Runner:
    """``runner``, or (None: no threads, a ``task.Clock`` in tests) a
    runner that runs the work at once."""
    if runner is not None:
        return runner

    def at_once(work: Callable[[], Any]) -> Deferred[Any]:
        try:
            return succeed(work())
        except BaseException:
            return defer.fail()

    return at_once


async def kept_values(
    files: IHeaderDigests,
    uids: Collection[int],
    digest: HeaderDigest,
    off: Runner,
    kept_uids: dict[str, set[int]],
) -> dict[int, Any]:
    """The values of those of ``uids`` that the folder's kept file holds
    (none computed). The file is read (in ``off``, the store's threads)
    only when this process does not know which UIDs it holds yet, or it
    holds some of ``uids`` (the caller dropped what it was given); after
    that ``kept_uids[digest.name]`` says which."""
    out: dict[int, Any] = {}
    if not digest.name:
        return out
    held = kept_uids.get(digest.name)
    if held is not None and held.isdisjoint(uids):
        return out
    # (The folder's index may be read: in the store's threads.)
    directory, uidvalidity = await off(files.kept_file)
    kept = await off(partial(load, directory, uidvalidity, digest, files.live_uids))
    kept_uids[digest.name] = set(kept)
    for uid in uids:
        value = kept.get(uid)
        if value is not None:
            out[uid] = value
    return out


async def digests(
    folder: IFolder,
    files: IHeaderDigests,
    uids: Collection[int],
    digest: HeaderDigest,
    runner: Runner | None,
    workers: Runner | None,
    stopped: Callable[[], bool],
    kept_uids: dict[str, set[int]],
    fill_cache: Callable[[list[int]], Deferred[int]],
) -> dict[int, Any]:
    """The values of ``uids`` for a folder of files (see the module doc).
    ``kept_uids``: by digest name, the UIDs the kept file holds as far as
    this process knows (the file is read when there is none yet, or when
    it holds some of ``uids``: the caller dropped what it was given).
    ``fill_cache``: the store's header prefetch, used without workers."""

    off = elsewhere(runner)
    wanted = list(uids)
    out = await kept_values(files, wanted, digest, off, kept_uids)
    kept_where = await off(files.kept_file) if digest.name else None
    held = kept_uids.get(digest.name)
    if out:
        wanted = [u for u in wanted if u not in out]

    saves = DeferredLock()

    def keep(
        values: list[tuple[int, Any]],
        line: bytes | None = None,
        blocks: list[tuple[int, str, bytes]] | None = None,
    ) -> None:
        out.update(values)
        if blocks:
            # The header blocks read go to the folder's header cache, so
            # that a digest asked next (another SORT criterion, THREAD)
            # reads no file: in a thread, after the saves before it.
            cached = {(uid, filename): block for uid, filename, block in blocks}
            caching = saves.run(off, partial(files.cache_headers, cached))
            caching.addErrback(lambda _: None)  # the cache only saves work
        if kept_where is not None and values:
            if held is not None:
                held.update(u for u, _ in values)
            # Kept on disk for the next process, in a thread, one write
            # after the other (a file made afresh is not made twice);
            # nobody waits for it.
            saving = saves.run(
                off, partial(save, kept_where[0], kept_where[1], digest, values, line)
            )
            saving.addErrback(lambda _: None)  # the file only saves work

    if workers is not None and len(wanted) >= AT_ONCE and not stopped():
        jobs = await off(partial(files.uncached_files, wanted))
        reader = files.header_reader()
        batches = deque(jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH))

        if batches:
            await _lanes(batches, reader, digest, keep, runner, workers, stopped)
        # Files not read (renamed meanwhile) are read through the folder.
        wanted = [u for u in wanted if u not in out]
    elif len(wanted) >= AT_ONCE:
        await fill_cache(wanted)
    if wanted:
        # A digest falls back on the INTERNALDATE (SORT DATE, THREAD), and
        # a first scan reads no date: those not read yet are read first,
        # in the store's threads (cached header blocks never went through
        # uncached_files, which does the same).
        await off(partial(folder.fill_dates, wanted))
    for start in range(0, len(wanted), BATCH):
        if stopped():
            break
        work = partial(digest_here, folder, digest, wanted[start : start + BATCH])
        keep(work() if len(wanted) < AT_ONCE else await off(work))
    return out


async def _lanes(
    batches: deque[Sequence[tuple[int, str, float]]],
    reader: HeaderReader,
    digest: HeaderDigest,
    keep: Callable[..., None],
    runner: Runner | None,
    workers: Runner,
    stopped: Callable[[], bool],
) -> None:
    """Digest ``batches`` in the worker processes and the store's threads,
    one batch in flight per lane, each lane taking the next when done (the
    worker processes run nicer and may get little CPU on a busy machine).
    With a thread lane, a worker lane takes its first batch only once its
    worker answers (one just started would hold the answer up while the
    thread does the work); the answer waits only for the batches taken,
    not for a worker still starting."""
    done: Deferred[None] = Deferred()
    in_flight = 0

    def settle() -> None:
        if (not batches or stopped()) and in_flight == 0 and not done.called:
            done.callback(None)

    async def lane(run: Runner, packed: bool, ping: bool) -> None:
        nonlocal in_flight
        if ping:
            await run(os.getpid)
        while batches and not stopped() and not done.called:
            batch = batches.popleft()
            in_flight += 1
            try:
                if packed:
                    keep(*unpacked(await run(partial(digest_files_packed, reader, digest, batch))))
                else:
                    keep(*await run(partial(digest_files, reader, digest, batch)))
            finally:
                in_flight -= 1
        settle()

    def ended(result: object) -> None:
        if isinstance(result, Failure) and not done.called:
            done.errback(result)  # a failed batch fails the whole call

    threaded = runner is not None and THREAD_LANE
    lanes = [(workers, True, threaded) for _ in range(WORKER_LANES)]
    if runner is not None and threaded:
        lanes.append((runner, False, False))
    for run, packed, ping in lanes:
        defer.ensureDeferred(lane(run, packed, ping)).addBoth(ended)
    settle()
    await done


#: Worker batches in flight at once (one per scan worker process).
WORKER_LANES = 2
#: Whether the store's threads take batches too.
THREAD_LANE = True


def _first_line(digest: HeaderDigest, uidvalidity: int) -> bytes:
    return digest.magic + b" V%d\n" % uidvalidity


def load(
    directory: str, uidvalidity: int, digest: HeaderDigest, live: Callable[[], set[int]]
) -> dict[int, Any]:
    """The values kept in ``directory`` for this UIDVALIDITY, of messages
    still in the folder (blocking). Nothing when there is no file, or it
    is of another UIDVALIDITY, too big or damaged (a damaged one is
    removed, so the next save starts it afresh)."""
    path = os.path.join(directory, digest.name)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE:
                return {}
            if f.readline() != _first_line(digest, uidvalidity):
                return {}
            data = f.read()
    except OSError:
        return {}
    kept = _parse(data, digest)
    if kept is None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return {}
    total = len(kept)
    present = live()
    kept = {u: v for u, v in kept.items() if u in present}
    if total > 2 * len(kept) + 1000:
        with contextlib.suppress(OSError):
            _write_anew(directory, uidvalidity, digest, kept.items())
    return kept


def _parse(data: bytes, digest: HeaderDigest) -> dict[int, Any] | None:
    """The values of the lines after the first; None if one is damaged
    (but for a torn last line)."""
    kept: dict[int, Any] = {}
    lines = data.split(b"\n")
    decode = digest.decode
    for n, line in enumerate(lines):
        try:
            batch = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                break  # a torn or empty last line
            return None
        if not isinstance(batch, list):
            return None
        for item in batch:
            record = decode(item)
            if record is None:
                return None
            kept[record[0]] = record[1]
    return kept


def save(
    directory: str,
    uidvalidity: int,
    digest: HeaderDigest,
    records: list[tuple[int, Any]],
    line: bytes | None = None,
) -> None:
    """Append ``records`` (``line``: already encoded) to ``directory``'s
    kept file (blocking; one write): started afresh when missing or of
    another UIDVALIDITY. Errors are ignored (the file only saves work)."""
    if not records:
        return
    path = os.path.join(directory, digest.name)
    with contextlib.suppress(OSError):
        try:
            with open(path, "rb") as f:
                current = f.readline() == _first_line(digest, uidvalidity)
        except FileNotFoundError:
            current = False
        if not current:
            _write_anew(directory, uidvalidity, digest, records)
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line or kept_line(digest, records))
        finally:
            os.close(fd)


def _write_anew(
    directory: str, uidvalidity: int, digest: HeaderDigest, records: Iterable[tuple[int, Any]]
) -> None:
    """The file with only ``records`` (a temporary file renamed over it;
    its name unique per process and thread, as two threads may write)."""
    path = os.path.join(directory, digest.name)
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.geteuid() == 0:
                owner = os.stat(directory)
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            f.write(_first_line(digest, uidvalidity) + kept_line(digest, records))
        os.rename(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
