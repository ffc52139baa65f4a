"""filescan: test every message of a folder where its file is read.

The mail store's side of a search that reads whole messages (IMAP SEARCH
BODY or TEXT, an updating search's re-test): the asynchronous API's
``scan`` (:mod:`pymta.mailstore.asyncstore`). The caller hands in a
*match*, a picklable function ``match(key, info, content) -> bool`` over
one message's index record and bytes, and where its CPU may go (a pool
of worker processes, ``workers``). The store owns the rest: which files,
read how, in which batches, and what to do with a file that moved.

For a folder of files (the Maildir store's, which provides this module's
:class:`IMessageFiles`, the store's own interface) and a worker pool,
:func:`scan_files` takes a snapshot of the index records (reactor
thread), and sends the workers batches of at most :data:`BATCH_BYTES`
(or :data:`BATCH_MESSAGES`), one batch in flight per scan: a worker reads
each file (:func:`match_files`) with the folder's picklable reader and
calls the match; nothing the reactor owns (index, caches, sessions) is
touched there. A file renamed meanwhile (flags changed) is looked up
again in the index once, after the other batches (a rescan first when
another program changed the folder); one gone for good is left out, as
an expunged message is. Records are those of the snapshot: the state
when the scan began. Without workers, or for a store without files,
:func:`scan_here` reads each message through the folder and matches it
in the store's own threads (at once for the memory store).

Untrusted input: the messages (the caller's match reads them). Reads
message files; writes nothing; logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import Interface

from pymta.mailstore.interface import IFolder, MailStoreError, MessageInfo

K = TypeVar("K")

#: A batch ends after this many bytes of message files, or messages.
BATCH_BYTES = 4 << 20
BATCH_MESSAGES = 512

#: ``match(key, info, content)``: whether one message matches (picklable
#: when it goes to worker processes).
Match = Callable[[Any, MessageInfo, bytes], bool]

#: Runs picklable work elsewhere (a worker process or thread); its result
#: arrives in the reactor thread.
Workers = Callable[[Callable[[], Any]], "Deferred[Any]"]

#: ``read(filename, size)``: a message file's bytes, or None when gone.
Reader = Callable[[str, int], "bytes | None"]

#: One message of a scan: its position in the caller's list, the caller's
#: key, and its index record.
_Entry = tuple[int, Any, MessageInfo]


class IMessageFiles(Interface):
    """Optional for a synchronous folder of the store: its stored messages
    can be read from a worker thread or process, so a scan of many message
    files (a body SEARCH) does not run in the reactor thread. The store's
    own (the asynchronous API's ``scan`` asks it), not the servers'."""

    def message_reader() -> Callable[[str, int], bytes | None]:
        """(Reactor thread) a function for a worker thread:
        ``read(filename, size)`` is the whole stored message whose
        :attr:`MessageInfo.filename` and :attr:`MessageInfo.size` the
        index gave, or None when it cannot be read (expunged or renamed
        meanwhile, not a regular file). It reads that file only, from the
        folder's place as it is now, and changes no shared state; it can
        be pickled, to read in a worker process."""


class _Folder(Protocol):
    """What scan_files needs of the asynchronous folder."""

    def messages(self) -> Deferred[list[MessageInfo]]: ...
    def changed_on_disk(self) -> Deferred[bool]: ...
    def refresh(self) -> Deferred[list[MessageInfo]]: ...


def batches(entries: Sequence[_Entry]) -> list[Sequence[_Entry]]:
    """The snapshot cut into batches of about BATCH_BYTES / BATCH_MESSAGES."""
    out: list[Sequence[_Entry]] = []
    start = 0
    size = 0
    for i, (_, _, info) in enumerate(entries):
        size += info.size
        if size >= BATCH_BYTES or i + 1 - start >= BATCH_MESSAGES:
            out.append(entries[start : i + 1])
            start, size = i + 1, 0
    if start < len(entries):
        out.append(entries[start:])
    return out


def match_files(
    reader: Reader, match: Match, batch: Sequence[_Entry]
) -> tuple[list[int], list[int]]:
    """(Worker) read and match each message of ``batch``: the positions of
    those that matched, and of those whose file could not be read."""
    matched: list[int] = []
    unread: list[int] = []
    for position, key, info in batch:
        content = reader(info.filename, info.size)
        if content is None:
            unread.append(position)
        elif match(key, info, content):
            matched.append(position)
    return matched, unread


def scan_here(
    folder: IFolder,
    items: Sequence[tuple[K, int]],
    match: Match,
    stopped: Callable[[], bool] | None = None,
) -> list[tuple[K, MessageInfo]]:
    """Match each message of ``items`` ((key, UID) pairs) read through the
    synchronous folder, in the calling thread; one gone is left out."""
    out: list[tuple[K, MessageInfo]] = []
    for n, (key, uid) in enumerate(items):
        if stopped is not None and n % BATCH_MESSAGES == 0 and stopped():
            break
        try:
            info = folder.get(uid)
            content = folder.read(uid)
        except MailStoreError:
            continue
        if match(key, info, content):
            out.append((key, info))
    return out


def scan_files(
    face: _Folder,
    files: IMessageFiles,
    items: Sequence[tuple[K, int]],
    match: Match,
    workers: Workers,
    stopped: Callable[[], bool] | None = None,
) -> Deferred[list[tuple[K, MessageInfo]]]:
    """Match ``items`` in ``workers`` (see the module doc): the matches,
    (key, record) in the order of ``items``. ``stopped()`` true: no more
    batches (the caller is gone; the answer is then partial)."""
    return defer.ensureDeferred(_scan(face, files, items, match, workers, stopped))


async def _scan(
    face: Any,
    files: IMessageFiles,
    items: Sequence[tuple[K, int]],
    match: Match,
    workers: Workers,
    stopped: Callable[[], bool] | None,
) -> list[tuple[K, MessageInfo]]:
    def gone() -> bool:
        return stopped is not None and stopped()

    records = {m.uid: m for m in await face.messages()}
    entries: list[_Entry] = []
    for position, (key, uid) in enumerate(items):
        info = records.get(uid)
        if info is not None:
            entries.append((position, key, info))
    del records
    matched: list[int] = []
    unread: list[int] = []
    reader = files.message_reader()
    for batch in batches(entries):
        if gone():
            break
        hits, missed = await workers(partial(match_files, reader, match, batch))
        matched += hits
        unread += missed
    by_position = {position: (key, info) for position, key, info in entries}
    if unread and not gone():
        # Renamed meanwhile (flags changed by another session or program):
        # look each up again, once; expunged ones drop out.
        if await face.changed_on_disk():
            await face.refresh()
        now = {m.uid: m for m in await face.messages()}
        again: list[_Entry] = []
        for position in unread:
            key, info = by_position[position]
            fresh = now.get(info.uid)
            if fresh is not None:
                by_position[position] = (key, fresh)
                again.append((position, key, fresh))
        if again:
            hits, _ = await workers(partial(match_files, files.message_reader(), match, again))
            matched += hits
    return [by_position[position] for position in sorted(matched)]
