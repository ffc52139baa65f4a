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
   ``[uid, value]`` items, tuples written as lists) are read in the store's threads the first
   time a folder is asked, and again when asked for values it holds (the
   caller dropped what it was given) (:func:`load`); a file of
   another UIDVALIDITY, too big, or one that does not parse is started
   afresh, a torn last line (a crash while appending) is skipped, and a
   file holding twice as many messages as the folder is written again;
2. messages whose header is not in the folder's header cache are read
   from their files by the caller's ``workers`` (worker processes) and
   by the store's threads, in batches of :data:`BATCH`, each lane taking
   the next batch when done (the worker processes run nicer and may get
   little CPU on a busy machine): names and dates go out; values come
   back packed by :mod:`marshal`, with their line of the kept file
   encoded there; one ``os.read`` of :data:`FIRST_READ` bytes per file,
   more only when the header is longer (:class:`HeaderReader`); nothing
   the reactor owns is touched there;
3. the rest (cached headers; without workers, every one, after the
   header cache is filled in the store's threads) are digested in the
   store's threads, :data:`BATCH` at a time, from the header cache;
4. new values are appended to the file in the store's threads (one write
   per batch; nobody waits for it).

A message gone meanwhile (expunged, or its file renamed by a flag change
while a worker read it: then it is digested again from the folder) is left
out of the answer only when it is gone for good. Without threads (a
``task.Clock`` in tests) and for the memory store, everything runs at once.

Untrusted input: the messages (the caller's digest reads them) and the
kept file (its owner may write anything: ``digest.decode`` checks every
item, a bad file is not used). Writes the kept file (owned like its
directory when run as root). Logs nothing.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock, succeed
from zope.interface import Interface

from pymta.mailstore.files import MESSAGE_OPEN_FLAGS
from pymta.mailstore.interface import IFolder, MailStoreError, known_date
from pymta.mailstore.names import header_block

#: Messages per batch sent to a worker or run in a thread (a worker that
#: gets little CPU holds up the answer by one batch at most).
BATCH = 1024

#: Fewer messages than this to digest are digested at once, in the caller's
#: thread (a thread hop or a worker batch would cost more).
AT_ONCE = 64

#: The first read of a message file: most headers fit (one system call).
FIRST_READ = 8192

#: A bigger kept file is not read (made again instead).
MAX_FILE = 512 << 20

#: Runs a function elsewhere (a thread, a worker process); its result
#: arrives in the reactor thread.
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


class HeaderDigest(Protocol):
    """What the caller computes from each header, and how it is kept."""

    #: The kept file's name in the folder's directory ("" keeps nothing).
    name: str
    #: The kept file's first line starts with it (format and version).
    magic: bytes

    def __call__(self, header: bytes, internal_date: float) -> Any:
        """The value of one message (pure: runs in a worker process; of
        built-in types only, tuples, strings, numbers, None, as
        :mod:`marshal` packs them)."""

    def decode(self, item: Any) -> tuple[int, Any] | None:
        """(uid, value) of one JSON item read back; None if it is not one."""


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


@dataclass(frozen=True)
class HeaderReader:
    """Reads the header block of a folder's message files by index name, in
    any thread or process (it holds only the folder's path: picklable)."""

    path: str

    def __call__(self, filename: str, dir_fd: int | None = None) -> bytes | None:
        """The header block of ``filename`` (relative to ``dir_fd``, the
        folder's directory opened, when given), or None when it cannot be
        read. One ``os.read`` for most: a file shorter than
        :data:`FIRST_READ`, or whose blank line is in its first
        :data:`FIRST_READ` bytes, needs no more. An empty read is taken
        only from a regular file (a FIFO, opened O_NONBLOCK, reads empty
        or fails at once), and a longer header is read on only from one
        (an endless device would never end)."""
        try:
            if dir_fd is None:
                fd = os.open(f"{self.path}/{filename}", MESSAGE_OPEN_FLAGS)
            else:
                fd = os.open(filename, MESSAGE_OPEN_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            data = os.read(fd, FIRST_READ)
            if not data and not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a FIFO, not an empty message
            if len(data) == FIRST_READ and b"\n\n" not in data and b"\r\n\r\n" not in data:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                # A long header: read on to its blank line (or the end).
                while chunk := os.read(fd, 65536):
                    seen = len(data) - 3
                    data += chunk
                    if data.find(b"\n\n", seen) >= 0 or data.find(b"\r\n\r\n", seen) >= 0:
                        break
            return header_block(data)
        except OSError:
            return None
        finally:
            os.close(fd)


def digest_files(
    reader: HeaderReader,
    digest: HeaderDigest,
    batch: Sequence[tuple[int, str, float]],
) -> tuple[list[tuple[int, Any]], bytes]:
    """(Thread) the values of (uid, filename, INTERNALDATE) of ``batch``
    read from their files (one whose file could not be read is left out),
    and their line of the kept file."""
    values: list[tuple[int, Any]] = []
    try:
        # The folder's directory opened once: each file is then looked up
        # in it alone, not along the whole path.
        directory = os.open(reader.path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return values, b""  # the folder is gone (renamed, deleted)
    try:
        for uid, filename, date in batch:
            header = reader(filename, directory)
            if header is not None:
                values.append((uid, digest(header, date)))
    finally:
        os.close(directory)
    return values, (_line(digest, values) if digest.name and values else b"")


def digest_files_packed(
    reader: HeaderReader,
    digest: HeaderDigest,
    batch: Sequence[tuple[int, str, float]],
) -> tuple[bytes, bytes]:
    """(Worker process) :func:`digest_files` with the values packed by
    :mod:`marshal` (a tenth of pickle's time for tuples of strings and
    numbers; the line of the kept file is encoded here, not in the
    server). Unpack with :func:`unpacked`."""
    values, line = digest_files(reader, digest, batch)
    return marshal.dumps(values), line


def unpacked(result: tuple[bytes, bytes]) -> tuple[list[tuple[int, Any]], bytes]:
    """The values and line of :func:`digest_files_packed`'s result (made by
    this program's own worker, never read from a file)."""
    return marshal.loads(result[0]), result[1]


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

    def off(work: Callable[[], Any]) -> Deferred[Any]:
        if runner is None:
            try:
                return succeed(work())
            except BaseException:
                return defer.fail()
        return runner(work)

    out: dict[int, Any] = {}
    wanted = list(uids)
    # (The folder's index may be read: in the store's threads.)
    kept_where = await off(files.kept_file) if digest.name else None
    held = kept_uids.get(digest.name)
    if kept_where is not None and (held is None or not held.isdisjoint(wanted)):
        directory, uidvalidity = kept_where
        kept = await off(partial(load, directory, uidvalidity, digest, files.live_uids))
        held = kept_uids[digest.name] = set(kept)
        for uid in wanted:
            value = kept.get(uid)
            if value is not None:
                out[uid] = value
        del kept
        wanted = [u for u in wanted if u not in out]

    saves = DeferredLock()

    def keep(values: list[tuple[int, Any]], line: bytes | None = None) -> None:
        out.update(values)
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

        async def lane(run: Runner, packed: bool) -> None:
            while batches and not stopped():
                if packed:
                    work = partial(digest_files_packed, reader, digest, batches.popleft())
                    keep(*unpacked(await run(work)))
                else:
                    keep(*await run(partial(digest_files, reader, digest, batches.popleft())))

        # One batch in flight per worker process, and one in the store's
        # threads, each taking the next when done (the worker processes run
        # nicer and may get little CPU on a busy machine).
        lanes = [lane(workers, True) for _ in range(WORKER_LANES)]
        if runner is not None and THREAD_LANE:
            lanes.append(lane(runner, False))
        await defer.gatherResults([defer.ensureDeferred(c) for c in lanes], consumeErrors=True)
        # Files not read (renamed meanwhile) are read through the folder.
        wanted = [u for u in wanted if u not in out]
    elif len(wanted) >= AT_ONCE:
        await fill_cache(wanted)
    for start in range(0, len(wanted), BATCH):
        if stopped():
            break
        work = partial(digest_here, folder, digest, wanted[start : start + BATCH])
        keep(work() if len(wanted) < AT_ONCE else await off(work))
    return out


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


def _line(digest: HeaderDigest, records: Iterable[tuple[int, Any]]) -> bytes:
    """One line of the kept file: the (uid, value) pairs as JSON lists,
    as they are (no Python-level conversion: a third of the time)."""
    batch = records if isinstance(records, list) else list(records)
    return json.dumps(batch, separators=(",", ":")).encode("ascii") + b"\n"


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
            os.write(fd, line or _line(digest, records))
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
            f.write(_first_line(digest, uidvalidity) + _line(digest, records))
        os.rename(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
