"""asyncstore: the mail store's asynchronous API - every call that may touch
the disk returns a Deferred.

Why: a server on one reactor thread must never wait on the disk (invariant
4 of docs/architecture.md), and a store kept elsewhere (a database) cannot
answer at once at all. :class:`IAsyncMailStore`, :class:`IAsyncUserMailbox`
and :class:`IAsyncFolder` are :class:`~pymta.mailstore.interface.IMailStore`,
``IUserMailbox`` and ``IFolder`` with Deferred results; values, errors
(``NoSuchFolder``, ``StoreNotWritable``...) and meanings are the same
(errors arrive as errbacks).

Each store says how its calls run, and owns that: ``store.asynchronous()``
gives the asynchronous face of a store.

- :class:`pymta.mailstore.maildir.MaildirStore` runs every call that may
  wait on the disk in the reactor's thread pool (its own runner; a reactor
  without threads, a ``task.Clock`` in tests, runs them at once): scans
  (``refresh``), writes and their fsyncs, locks, folder changes. A read
  of what one message or the index holds (``read``, ``open``,
  ``header_bytes``, ``mime_structure``, ``get``, ``messages``,
  ``status``, ``expunged_since``, ``changed_on_disk``; a user's
  ``folder``) is answered at once
  when nothing of that folder is waiting: it is one file read at most
  (from the page cache, as Dovecot reads it in its process), and a thread
  hop per message would cost more than the read (POP3 RETR, IMAP FETCH).
  So is a flag change of at most :data:`LIGHT_MAX` messages (``set_flags``,
  ``set_flags_many``, ``claim_recent`` of given UIDs): a rename per
  message and an index append that is not synced (the index syncs only
  when it hands out new UIDs), so FETCH's \\Seen and a small STORE
  need no thread hop.
  What a command asks of many messages at once runs in the store's
  threads too: ``prefetch_headers`` and ``headers`` read uncached header
  blocks there (:mod:`pymta.mailstore.prefetch`), ``scan`` reads whole
  messages in the caller's worker processes or the store's threads
  (:mod:`pymta.mailstore.filescan`), ``header_digests`` reads uncached
  headers in the caller's worker processes and keeps what they gave in
  a file (:mod:`pymta.mailstore.digests`; ``kept_digests`` gives only what
  that file holds); ``headers_may_contain`` asks
  the header cache.
  Calls on one folder (and on one user's folder list) run one after
  another in the order they were made, so a session's STORE then FETCH
  see each other; calls on different folders run side by side. A read
  that must wait for earlier calls runs in its turn on the reactor
  thread (the reactor's next turn), not in a thread of its own. The
  folder's own locks keep other threads and processes out (see
  :mod:`pymta.mailstore.folder_base`); listeners hear of changes in the
  reactor thread, as before.
  ``watch()`` also watches for other processes' changes: a folder's
  (``new/``, ``cur/``, its index) with the store's shared inotify
  watchers (:mod:`pymta.mailstore.watchers`), which rescan it in the
  store's threads (at once a folder known to be small,
  :data:`LIGHT_RESCAN`); a user's mailbox root for the folder list, the
  subscriptions and the METADATA file. The user's METADATA entries
  (``metadata``, ``set_metadata``) are read and written in the store's
  threads (:mod:`pymta.mailstore.metadata`).
- :class:`pymta.mailstore.memory.MemoryStore` answers at once
  (``succeed()``/``fail()``); every change goes through its objects, so
  ``watch()`` is its listeners alone.

The contract tests run both stores through this API only
(``tests/test_mailstore_contract.py``, ``tests/test_mailstore_async.py``).
The servers use it: POP3 for everything, IMAP for SELECT/EXAMINE,
NOOP/IDLE's rescan, FETCH, STORE, EXPUNGE,
CLOSE, CHECK, COPY, MOVE, APPEND (``append``, MULTIAPPEND's
``append_many``), CATENATE's URLs, METADATA's mailbox look-up, the
untagged updates after each command (``get_many`` and ``claim_recent``
by UID), SEARCH, SORT, THREAD and CONTEXT=SORT, CONDSTORE/QRESYNC,
NOTIFY and the folder commands (LIST, LSUB, STATUS, CREATE, DELETE,
RENAME, SUBSCRIBE, UNSUBSCRIBE), the selected view, IDLE and NOTIFY's
watching (``watch``), and METADATA's entries.

Untrusted input: as the synchronous store. Writes: through it. Logs
nothing.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Attribute, Interface, implementer

from pymta.mailstore import datefill, digests, filescan, gcpause, prefetch
from pymta.mailstore.interface import (
    FlagMode,
    FolderChange,
    FolderInfo,
    FolderStatus,
    FolderSummary,
    IFolder,
    IFolderLock,
    IHeaderCache,
    IMailStore,
    IStagedAppend,
    ISummarized,
    IUserMailbox,
    MailStoreError,
    MessageInfo,
    MimePart,
    Staged,
)

if TYPE_CHECKING:
    from pymta.mailstore.watchers import WatcherPool

T = TypeVar("T")

#: Stops a watch (``watch()``'s answer); calling it again does nothing.
Cancel = Callable[[], None]

#: Flag changes of at most this many messages run at once (see the module
#: doc); more (POP3's QUIT after a big download, STORE 1:*) in a thread.
LIGHT_MAX = 16

#: The store's watchers rescan a folder known to hold at most this many
#: messages at once, on the reactor, when nothing of it waits (a listing
#: of a few hundred names costs less than the thread hop; and a scan in a
#: thread, its every system call waiting for the GIL while the reactor
#: wakes the sessions of the folders rescanned before, made the last of
#: 400 IDLE sessions over 20 folders wait twice as long); bigger folders,
#: or folders whose size this face has not seen, in the store's threads.
LIGHT_RESCAN = 1000

#: A fill_dates of at least this many messages given worker processes
#: reads the dates there too (:mod:`pymta.mailstore.datefill`).
DATES_ON_WORKERS = 4096

#: One message of an append_many: its bytes, flags and internal date.
Appended = tuple[bytes, Collection[str], "float | None"]

#: Runs a function off the reactor thread; its result arrives in the
#: reactor thread. None: run it at once, in the caller's thread.
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


class IAsyncFolder(Interface):
    """:class:`~pymta.mailstore.interface.IFolder` with Deferred results."""

    name = Attribute("The folder's name, as IFolder.name (no disk access).")
    writable = Attribute(
        "IFolder.writable: whether the store can be written, as it last found out (no disk access)."
    )

    def refresh() -> Deferred[list[MessageInfo]]:
        """IFolder.refresh."""

    def rescan() -> Deferred[None]:
        """IFolder.rescan."""

    def changed_on_disk() -> Deferred[bool]:
        """IFolder.changed_on_disk."""

    def messages() -> Deferred[list[MessageInfo]]:
        """IFolder.messages."""

    def get(uid: int) -> Deferred[MessageInfo]:
        """IFolder.get."""

    def get_many(uids: Collection[int]) -> Deferred[dict[int, MessageInfo]]:
        """The index records of those of ``uids`` still in the folder, by
        UID (one call for a FETCH's or a COPY's messages; a UID that is
        gone is left out, never an error)."""

    def get_dated(uids: Collection[int]) -> Deferred[dict[int, MessageInfo]]:
        """:meth:`get_many` with every internal date known: those a scan
        left unknown are read first (IFolder.fill_dates), in the store's
        threads; at once when none is missing. For the commands that show
        or compare dates (FETCH INTERNALDATE, SEARCH by date, SORT,
        THREAD)."""

    def fill_dates(uids: Collection[int], workers: Runner | None = None) -> Deferred[None]:
        """IFolder.fill_dates, in the store's threads: the dates of these
        messages read now, ahead of the command that will show or compare
        them (imapd asks it after the SELECT of a big folder). With
        ``workers`` (a pool of worker processes) and many messages, a
        store of files reads them there and in its threads together
        (:mod:`pymta.mailstore.datefill`)."""

    def status() -> Deferred[FolderStatus]:
        """IFolder.status: also how to learn UIDVALIDITY, UIDNEXT and
        HIGHESTMODSEQ (the synchronous attributes may read the index)."""

    def summary() -> Deferred[FolderSummary]:
        """What SELECT announces (:class:`FolderSummary`): from the index
        without a record per message where the folder can
        (:class:`ISummarized`), else from its records and status."""

    def read(uid: int) -> Deferred[bytes]:
        """IFolder.read."""

    def open(uid: int) -> Deferred[BinaryIO]:
        """IFolder.open: the message as a binary file to read in pieces
        (the caller closes it; a store without files may hand a spooled
        copy)."""

    def header_bytes(uid: int) -> Deferred[bytes]:
        """IFolder.header_bytes."""

    def mime_structure(uid: int) -> Deferred[MimePart]:
        """IFolder.mime_structure."""

    def prefetch_headers(uids: Collection[int]) -> Deferred[int]:
        """Make the header blocks of these messages cheap to read before a
        command asks for many of them (SEARCH, SORT, THREAD): a store that
        caches them (Maildir) reads those not cached in its threads, when
        there are enough to be worth a thread; fires with how many it
        read (0: nothing to do; the memory store: always 0)."""

    def headers(uids: Collection[int]) -> Deferred[dict[int, bytes]]:
        """The header blocks of these messages (as IFolder.header_bytes),
        by UID: many uncached ones are read in the store's threads first
        (:meth:`prefetch_headers`). A message gone meanwhile, or whose
        file cannot be read, is left out."""

    def headers_may_contain(
        needles: Collection[bytes], uids: Collection[int]
    ) -> Deferred[Collection[int] | None]:
        """Those of ``uids`` whose header block, lower-cased, may hold one
        of ``needles`` (lower-case bytes): every message that holds one
        is in it (one whose header is not cached too), so a header SEARCH
        need test no other. None when the store cannot tell cheaply
        (every message may)."""

    def header_digests(
        uids: Collection[int],
        digest: digests.HeaderDigest,
        workers: Runner | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> Deferred[dict[int, Any]]:
        """``digest(header block, INTERNALDATE)`` of each of these messages,
        by UID (SORT and THREAD: the keys they compare); one gone is left
        out. The store computes them where it likes
        (:mod:`pymta.mailstore.digests`): the Maildir store keeps the
        values in a file (``digest.name``) for the next time, reads
        uncached headers in ``workers`` (a pool of worker processes; then
        ``digest`` must be picklable) and digests cached ones in its
        threads; the memory store at once. ``stopped()`` true: stop early
        (the caller is gone; the answer is then partial)."""

    def kept_digests(
        uids: Collection[int], digest: digests.HeaderDigest
    ) -> Deferred[dict[int, Any]]:
        """The values of ``digest`` the store keeps for those of these
        messages it has them for (the Maildir store: its file
        ``digest.name``, read in its threads), none computed: a caller
        that computes something cheaper for the rest (SORT's asked key
        first). Nothing for the memory store."""

    def scan(
        items: Sequence[tuple[Any, int]],
        match: Callable[[Any, MessageInfo, bytes], bool],
        workers: Runner | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> Deferred[list[tuple[Any, MessageInfo]]]:
        """Those of ``items`` ((key, UID) pairs) whose whole message
        ``match(key, info, content)`` accepts, as (key, record) in the
        order of ``items``; messages gone are left out. The store reads the
        messages where it likes (:mod:`pymta.mailstore.filescan`): the
        Maildir store in ``workers`` (a pool of worker processes; then
        ``match`` must be picklable) or else in its threads, the memory
        store at once. ``stopped()`` true: stop early (the caller is
        gone; the answer is then partial)."""

    def set_flags(
        uid: int, flags: Collection[str], mode: FlagMode, unchanged_since: int | None = None
    ) -> Deferred[MessageInfo | None]:
        """IFolder.set_flags."""

    def set_flags_many(
        uids: Collection[int], flags: Collection[str], mode: FlagMode
    ) -> Deferred[list[MessageInfo]]:
        """IFolder.set_flags_many."""

    def append(
        content: bytes, flags: Collection[str] = (), internal_date: float | None = None
    ) -> Deferred[int]:
        """IFolder.append."""

    def append_many(contents: Sequence[Appended]) -> Deferred[list[int]]:
        """Store every message of ``contents`` or none (RFC 3502
        MULTIAPPEND): their UIDs, in order. A store that can write a
        message before numbering it (:class:`IStagedAppend`) writes and
        syncs them all first, so a failed write (a full disk) leaves
        nothing behind; a numbering that fails half-way expunges what it
        numbered, and the error arrives as the errback."""

    def expunge(uids: Collection[int] | None = None) -> Deferred[list[int]]:
        """IFolder.expunge."""

    def expunged_since(modseq: int) -> Deferred[list[int]]:
        """IFolder.expunged_since."""

    def copy(uids: Collection[int], target: IAsyncFolder) -> Deferred[list[tuple[int, int]]]:
        """IFolder.copy, to another folder of the same store."""

    def move(uids: Collection[int], target: IAsyncFolder) -> Deferred[list[tuple[int, int]]]:
        """IFolder.move, to another folder of the same store."""

    def claim_recent(uids: Collection[int] | None = None) -> Deferred[list[int]]:
        """IFolder.claim_recent."""

    def lock() -> Deferred[IFolderLock | None]:
        """IFolder.lock."""

    def add_listener(callback: Callable[[FolderChange], None]) -> None:
        """IFolder.add_listener (no disk access: synchronous)."""

    def remove_listener(callback: Callable[[FolderChange], None]) -> None:
        """IFolder.remove_listener."""

    def watch(listener: Callable[[FolderChange], None]) -> Cancel:
        """Tell ``listener`` (in the reactor thread) of every change of this
        folder, as add_listener does, and also of changes other processes
        make on disk (deliveries, another server): the store watches the
        folder for them (Maildir: inotify, shared by every watch of the
        folder, and a rescan in the store's threads; the memory store:
        nothing more to watch) until the returned cancel is called. No
        disk access in the caller's thread."""


class IAsyncUserMailbox(Interface):
    """:class:`~pymta.mailstore.interface.IUserMailbox` with Deferred results."""

    user = Attribute("The user's name (as authenticated).")
    separator = Attribute("The hierarchy separator in folder names: ``/``.")

    def list_folders() -> Deferred[list[FolderInfo]]:
        """IUserMailbox.list_folders."""

    def folder(name: str) -> Deferred[IAsyncFolder]:
        """IUserMailbox.folder; the same object for every caller."""

    def create_folder(name: str, special_use: str | None = None) -> Deferred[IAsyncFolder]:
        """IUserMailbox.create_folder."""

    def delete_folder(name: str) -> Deferred[None]:
        """IUserMailbox.delete_folder."""

    def rename_folder(old: str, new: str) -> Deferred[None]:
        """IUserMailbox.rename_folder."""

    def subscribe(name: str) -> Deferred[None]:
        """IUserMailbox.subscribe."""

    def unsubscribe(name: str) -> Deferred[None]:
        """IUserMailbox.unsubscribe."""

    def subscriptions() -> Deferred[list[str]]:
        """IUserMailbox.subscriptions."""

    def metadata() -> Deferred[dict[str, dict[str, bytes]]]:
        """IUserMailbox.metadata: the user's METADATA entries."""

    def set_metadata(
        key: str, changes: Mapping[str, bytes | None], max_entries: int
    ) -> Deferred[bool]:
        """IUserMailbox.set_metadata: fires once the change is durable."""

    def watch(callback: Callable[[], None]) -> Cancel:
        """Call ``callback`` (in the reactor thread; several times for one
        change, so the caller coalesces) when another process may have
        changed this user's folder list, subscriptions or METADATA entries
        on disk, until the returned cancel is called. A store that cannot
        tell (the memory store: every change is this process's; no inotify)
        never calls it. No disk access in the caller's thread."""


class IAsyncMailStore(Interface):
    """:class:`~pymta.mailstore.interface.IMailStore` with Deferred results."""

    def open_user(user: str, path: str) -> Deferred[IAsyncUserMailbox]:
        """IMailStore.open_user; the same object for every caller."""


class _Serial:
    """Runs calls through ``runner`` one after another, in call order;
    ``at_once`` work runs in the caller's thread when nothing is waiting
    (the order is the same: nothing runs before it), and when something
    is, through ``read_later`` if given (else ``runner``)."""

    def __init__(
        self,
        runner: Runner | None,
        reads_at_once: bool = False,
        read_later: Runner | None = None,
    ) -> None:
        self._runner = runner
        self._reads_at_once = reads_at_once
        self._read_later = read_later
        self._lock = DeferredLock()

    def hold(self, work: Callable[[], Deferred[T]]) -> Deferred[T]:
        """``work()`` in its turn, the next call waiting until the Deferred
        it returns fires (work that hops between threads and processes)."""
        return self._lock.run(work)

    def __call__(self, work: Callable[[], T], *, read: bool = False) -> Deferred[T]:
        at_once = read and self._reads_at_once
        if self._runner is None or (at_once and not self._lock.locked):
            # At once (a FETCH makes one such call per message: no more
            # than a fired Deferred).
            try:
                return succeed(work())
            except BaseException:
                return fail()
        if at_once and self._read_later is not None:
            # Behind a rescan (an inotify wake-up) every session's update
            # reads wait: each runs in its turn on the reactor thread, not
            # one thread hop after another.
            return self._lock.run(self._read_later, work)
        return self._lock.run(self._runner, work)


@implementer(IAsyncFolder)
class AsyncFolder:
    """The asynchronous face of one synchronous folder (see the module doc)."""

    def __init__(
        self,
        folder: IFolder,
        runner: Runner | None,
        reads_at_once: bool = False,
        watchers: WatcherPool | None = None,
        read_later: Runner | None = None,
    ) -> None:
        self.folder = folder
        self._runner = runner
        self._watchers = watchers
        self._run = _Serial(runner, reads_at_once, read_later)
        self._filling: Deferred[int] | None = None  # a header prefetch under way
        # By digest name, the UIDs whose values its kept file holds.
        self._kept_uids: dict[str, set[int]] = {}
        self._size: int | None = None  # messages as last listed through this face

    @property
    def name(self) -> str:
        return str(self.folder.name)

    @property
    def writable(self) -> bool:
        return bool(self.folder.writable)

    def _call(self, method: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._run(lambda: method(*args))

    def _read(self, method: Callable[..., T], *args: Any) -> Deferred[T]:
        # A read, or a light change (see the module doc): at once when
        # nothing of the folder waits.
        return self._run(lambda: method(*args), read=True)

    def refresh(self) -> Deferred[list[MessageInfo]]:
        return self._call(self.folder.refresh).addCallback(self._sized)

    def watched_rescan(self) -> Deferred[list[MessageInfo]]:
        """The store's watchers' refresh after an inotify event (see
        :data:`LIGHT_RESCAN`); not part of IAsyncFolder."""
        if self._size is not None and self._size <= LIGHT_RESCAN:
            return self._read(self.folder.refresh).addCallback(self._sized)
        return self.refresh()

    def _sized(self, messages: list[MessageInfo]) -> list[MessageInfo]:
        self._size = len(messages)
        return messages

    def rescan(self) -> Deferred[None]:
        return self._call(self.folder.rescan)

    def changed_on_disk(self) -> Deferred[bool]:
        return self._read(self.folder.changed_on_disk)

    def messages(self) -> Deferred[list[MessageInfo]]:
        return self._read(self.folder.messages).addCallback(self._sized)

    def get(self, uid: int) -> Deferred[MessageInfo]:
        return self._read(self.folder.get, uid)

    def get_many(self, uids: Collection[int]) -> Deferred[dict[int, MessageInfo]]:
        folder = self.folder
        return self._run(lambda: records_of(folder, uids), read=True)

    def get_dated(self, uids: Collection[int]) -> Deferred[dict[int, MessageInfo]]:
        folder = self.folder
        wanted = list(uids)

        def dated(records: dict[int, MessageInfo]) -> Any:
            if all(m.internal_date is not None for m in records.values()):
                return records
            # A date per file to read: in the store's threads.
            return self._run(partial(fill_then_get, folder, wanted))

        return self._run(lambda: records_of(folder, wanted), read=True).addCallback(dated)

    def fill_dates(self, uids: Collection[int], workers: Runner | None = None) -> Deferred[None]:
        wanted = list(uids)
        files = datefill.IDatedFiles(self.folder, None)
        runner = self._runner
        if files is None or workers is None or runner is None or len(wanted) < DATES_ON_WORKERS:
            return self._call(self.folder.fill_dates, wanted)
        # In the folder's turn, as the synchronous call would be.
        return self._run.hold(
            lambda: defer.ensureDeferred(datefill.fill(files, wanted, runner, workers))
        )

    def status(self) -> Deferred[FolderStatus]:
        return self._read(self.folder.status)

    def summary(self) -> Deferred[FolderSummary]:
        summarized = ISummarized(self.folder, None)
        if summarized is None:
            return self._read(partial(summary_of, self.folder))

        def then(summary: FolderSummary) -> FolderSummary:
            if not summarized.records_made():
                # Made in the store's threads now: a command that needs
                # them (pipelined behind the SELECT too) waits for them
                # there instead of making them on the reactor.
                self._call(summarized.make_records).addErrback(lambda _: None)
            return summary

        return self._read(summarized.summary).addCallback(then)

    def read(self, uid: int) -> Deferred[bytes]:
        return self._read(self.folder.read, uid)

    def open(self, uid: int) -> Deferred[BinaryIO]:
        return self._read(self.folder.open, uid)

    def header_bytes(self, uid: int) -> Deferred[bytes]:
        return self._read(self.folder.header_bytes, uid)

    def mime_structure(self, uid: int) -> Deferred[MimePart]:
        return self._read(self.folder.mime_structure, uid)

    def prefetch_headers(self, uids: Collection[int]) -> Deferred[int]:
        cache = IHeaderCache(self.folder, None)
        if cache is None:
            return succeed(0)
        if self._filling is not None:
            # One fill of this folder at a time: the next asks again once
            # it is done (what it read is then cached, not read twice).
            wanted = list(uids)
            return after_firing(self._filling).addCallback(lambda _: self.prefetch_headers(wanted))
        filling = prefetch.fill(cache, uids, self._runner)
        if filling is None:
            return succeed(0)
        self._filling = filling

        def done(result: object) -> object:
            if self._filling is filling:
                self._filling = None
            return result

        return filling.addBoth(done)

    def headers(self, uids: Collection[int]) -> Deferred[dict[int, bytes]]:
        wanted = list(uids)
        folder = self.folder

        def blocks() -> dict[int, bytes]:
            out: dict[int, bytes] = {}
            for uid in wanted:
                try:
                    out[uid] = folder.header_bytes(uid)
                except MailStoreError:
                    continue  # gone, or its file unreadable: left out
            return out

        if len(wanted) < prefetch.PREFETCH_MIN:
            # Too few to be worth a thread, however many are uncached.
            return self._run(blocks, read=True)
        d = self.prefetch_headers(wanted)
        return d.addCallback(lambda _: self._run(blocks, read=True))

    def headers_may_contain(
        self, needles: Collection[bytes], uids: Collection[int]
    ) -> Deferred[Collection[int] | None]:
        cache = IHeaderCache(self.folder, None)
        if cache is None:
            return succeed(None)
        return self._run(lambda: cache.headers_may_contain(needles, uids), read=True)

    def header_digests(
        self,
        uids: Collection[int],
        digest: digests.HeaderDigest,
        workers: Runner | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> Deferred[dict[int, Any]]:
        folder = self.folder
        files = digests.IHeaderDigests(folder, None)
        if files is None:
            # Nothing on disk to read (the memory store): at once.
            wanted = list(uids)
            return self._run(lambda: dict(digests.digest_here(folder, digest, wanted)), read=True)
        return defer.ensureDeferred(
            digests.digests(
                folder,
                files,
                uids,
                digest,
                self._runner,
                workers,
                stopped or (lambda: False),
                self._kept_uids,
                self.prefetch_headers,
            )
        )

    def kept_digests(
        self, uids: Collection[int], digest: digests.HeaderDigest
    ) -> Deferred[dict[int, Any]]:
        files = digests.IHeaderDigests(self.folder, None)
        if files is None:
            return succeed({})
        off = digests.elsewhere(self._runner)
        return defer.ensureDeferred(digests.kept_values(files, uids, digest, off, self._kept_uids))

    def scan(
        self,
        items: Sequence[tuple[Any, int]],
        match: Callable[[Any, MessageInfo, bytes], bool],
        workers: Runner | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> Deferred[list[tuple[Any, MessageInfo]]]:
        files = filescan.IMessageFiles(self.folder, None)
        if files is not None and workers is not None:
            return filescan.scan_files(self, files, items, match, workers, stopped)
        folder = self.folder
        return self._run(lambda: filescan.scan_here(folder, items, match, stopped))

    def set_flags(
        self,
        uid: int,
        flags: Collection[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Deferred[MessageInfo | None]:
        return self._read(self.folder.set_flags, uid, flags, mode, unchanged_since)

    def set_flags_many(
        self, uids: Collection[int], flags: Collection[str], mode: FlagMode
    ) -> Deferred[list[MessageInfo]]:
        if len(uids) <= LIGHT_MAX:
            return self._read(self.folder.set_flags_many, uids, flags, mode)
        return self._call(self.folder.set_flags_many, uids, flags, mode)

    def append(
        self, content: bytes, flags: Collection[str] = (), internal_date: float | None = None
    ) -> Deferred[int]:
        return self._call(self.folder.append, content, flags, internal_date)

    def append_many(self, contents: Sequence[Appended]) -> Deferred[list[int]]:
        folder = self.folder
        return self._run(lambda: append_all(folder, contents))

    def expunge(self, uids: Collection[int] | None = None) -> Deferred[list[int]]:
        return self._call(self.folder.expunge, uids)

    def expunged_since(self, modseq: int) -> Deferred[list[int]]:
        return self._read(self.folder.expunged_since, modseq)

    def copy(self, uids: Collection[int], target: IAsyncFolder) -> Deferred[list[tuple[int, int]]]:
        return self._call(self.folder.copy, uids, _synchronous(target))

    def move(self, uids: Collection[int], target: IAsyncFolder) -> Deferred[list[tuple[int, int]]]:
        return self._call(self.folder.move, uids, _synchronous(target))

    def claim_recent(self, uids: Collection[int] | None = None) -> Deferred[list[int]]:
        if uids is not None and len(uids) <= LIGHT_MAX:
            return self._read(self.folder.claim_recent, uids)
        return self._call(self.folder.claim_recent, uids)  # without UIDs: lists new/

    def lock(self) -> Deferred[IFolderLock | None]:
        return self._call(self.folder.lock)

    def add_listener(self, callback: Callable[[FolderChange], None]) -> None:
        self.folder.add_listener(callback)

    def remove_listener(self, callback: Callable[[FolderChange], None]) -> None:
        self.folder.remove_listener(callback)

    def watch(self, listener: Callable[[FolderChange], None]) -> Cancel:
        folder, watchers = self.folder, self._watchers
        folder.add_listener(listener)
        if watchers is not None:
            # The watcher rescans through this face, in order with the
            # folder's other calls (see LIGHT_RESCAN for where).
            watchers.acquire(folder, _Rescanning(self))
        watching = [True]

        def cancel() -> None:
            if not watching:
                return
            watching.clear()
            folder.remove_listener(listener)
            if watchers is not None:
                watchers.release(folder)

        return cancel


class _Rescanning:
    """What the store's folder watcher refreshes: a face's rescan."""

    def __init__(self, face: AsyncFolder) -> None:
        self._face = face

    def refresh(self) -> Deferred[list[MessageInfo]]:
        return self._face.watched_rescan()

    def changed_on_disk(self) -> Deferred[bool]:
        return self._face.changed_on_disk()


#: Above this many UIDs, records_of reads the whole index once.
INDEX_SCAN = 64


class NextTurn:
    """A runner that runs its work on the reactor thread in the reactor's
    next turn, all that is given until then in one go, in order (work
    given while it runs joins the same turn): the reads a folder's queue
    hands on one after another cost one turn, not one each."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._pending: collections.deque[tuple[Callable[[], Any], Deferred[Any]]] = (
            collections.deque()
        )
        self._call: IDelayedCall | None = None

    def __call__(self, work: Callable[[], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._pending.append((work, d))
        if self._call is None:
            self._call = self._clock.callLater(0, self._run)
        return d

    def _run(self) -> None:
        self._call = None
        while self._pending:
            work, d = self._pending.popleft()
            try:
                result = work()
            except BaseException:
                d.errback()
            else:
                d.callback(result)


def records_of(folder: IFolder, uids: Collection[int]) -> dict[int, MessageInfo]:
    """IAsyncFolder.get_many on a synchronous folder, in the calling thread."""
    if len(uids) > INDEX_SCAN:
        wanted = set(uids)
        with gcpause.paused():  # 100,000 entries: no cyclic collection meanwhile
            return {m.uid: m for m in folder.messages() if m.uid in wanted}
    out: dict[int, MessageInfo] = {}
    for uid in uids:
        try:
            out[uid] = folder.get(uid)
        except MailStoreError:
            continue
    return out


def summary_of(folder: IFolder) -> FolderSummary:
    """IAsyncFolder.summary of a folder without its own: from its records."""
    status = folder.status()
    return FolderSummary.of(
        folder.messages(), status.uidnext, status.uidvalidity, status.highest_modseq
    )


def fill_then_get(folder: IFolder, uids: Collection[int]) -> dict[int, MessageInfo]:
    """IAsyncFolder.get_dated on a synchronous folder, in the calling thread."""
    folder.fill_dates(uids)
    return records_of(folder, uids)


def append_all(folder: IFolder, contents: Sequence[Appended]) -> list[int]:
    """IAsyncFolder.append_many on a synchronous folder, in the calling
    thread: staged first where the folder can stage in this thread."""
    staging = IStagedAppend(folder, None)
    if staging is None or not staging.commit_thread_safe:
        committed: list[int] = []
        try:
            for content, flags, date in contents:
                committed.append(folder.append(content, flags, date))
        except BaseException:
            _undo(folder, committed)
            raise
        return committed
    staged: list[Staged] = []
    try:
        for content, flags, date in contents:
            staged.append(staging.stage(content, flags, date))
    except BaseException:
        for done in staged:
            staging.discard_staged(done)
        raise
    numbered: list[int] = []
    for i, done in enumerate(staged):
        try:
            numbered.append(staging.commit_staged(done))
        except BaseException:
            for rest in staged[i + 1 :]:
                staging.discard_staged(rest)
            _undo(folder, numbered)
            raise
    staging.sync_committed()
    return numbered


def _undo(folder: IFolder, uids: list[int]) -> None:
    """All or nothing (RFC 3502 6.3.11): expunge what was numbered before
    a failure (the failure is what the caller hears of)."""
    if uids:
        with contextlib.suppress(MailStoreError, OSError):
            folder.expunge(uids)


def after_firing(work: Deferred[Any]) -> Deferred[None]:
    """Fires (with None, never failing) once ``work`` has its result;
    ``work``'s own result is left to its callers (several waiters share
    one piece of work without changing its result)."""
    d: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        d.callback(None)
        return result

    work.addBoth(fire)
    return d


def _synchronous(target: IAsyncFolder) -> IFolder:
    if not isinstance(target, AsyncFolder):
        raise TypeError("target must be a folder of the same store")
    return target.folder


@implementer(IAsyncUserMailbox)
class AsyncUserMailbox:
    """The asynchronous face of one user's mailbox; folder objects are
    made once per synchronous folder, so every session shares them."""

    def __init__(
        self,
        mailbox: IUserMailbox,
        runner: Runner | None,
        reads_at_once: bool = False,
        watchers: WatcherPool | None = None,
        read_later: Runner | None = None,
    ) -> None:
        self.mailbox = mailbox
        self._runner = runner
        self._reads_at_once = reads_at_once
        self._watchers = watchers
        self._read_later = read_later
        self._run = _Serial(runner, reads_at_once, read_later)
        self._folders: dict[int, AsyncFolder] = {}

    @property
    def user(self) -> str:
        return str(self.mailbox.user)

    @property
    def separator(self) -> str:
        return str(self.mailbox.separator)

    def _face(self, folder: IFolder) -> IAsyncFolder:
        face = self._folders.get(id(folder))
        if face is None or face.folder is not folder:
            face = self._folders[id(folder)] = AsyncFolder(
                folder, self._runner, self._reads_at_once, self._watchers, self._read_later
            )
        return face

    def list_folders(self) -> Deferred[list[FolderInfo]]:
        return self._run(self.mailbox.list_folders)

    def folder(self, name: str) -> Deferred[IAsyncFolder]:
        # A folder once opened is a dictionary look-up: at once when
        # nothing waits, as a read.
        d = self._run(lambda: self.mailbox.folder(name), read=True)
        return d.addCallback(self._face)

    def create_folder(self, name: str, special_use: str | None = None) -> Deferred[IAsyncFolder]:
        d = self._run(lambda: self.mailbox.create_folder(name, special_use))
        return d.addCallback(self._face)

    def delete_folder(self, name: str) -> Deferred[None]:
        return self._run(lambda: self.mailbox.delete_folder(name))

    def rename_folder(self, old: str, new: str) -> Deferred[None]:
        return self._run(lambda: self.mailbox.rename_folder(old, new))

    def subscribe(self, name: str) -> Deferred[None]:
        return self._run(lambda: self.mailbox.subscribe(name))

    def unsubscribe(self, name: str) -> Deferred[None]:
        return self._run(lambda: self.mailbox.unsubscribe(name))

    def subscriptions(self) -> Deferred[list[str]]:
        return self._run(self.mailbox.subscriptions)

    def metadata(self) -> Deferred[dict[str, dict[str, bytes]]]:
        # Not a read at once: a stat and perhaps a read of a file, off the
        # reactor thread (invariant 4).
        return self._run(self.mailbox.metadata)

    def set_metadata(
        self, key: str, changes: Mapping[str, bytes | None], max_entries: int
    ) -> Deferred[bool]:
        wanted = dict(changes)
        return self._run(lambda: self.mailbox.set_metadata(key, wanted, max_entries))

    def watch(self, callback: Callable[[], None]) -> Cancel:
        if self._watchers is None:
            return _nothing
        return self._watchers.watch_mailbox(self.mailbox, callback)


def _nothing() -> None:
    """The cancel of a watch that needs no watching."""


@implementer(IAsyncMailStore)
class AsyncMailStore:
    """The asynchronous face of a synchronous store, its calls run by
    ``runner`` (None: at once; ``reads_at_once``: reads too when nothing of
    their folder waits, see the module doc). Stores make it:
    ``store.asynchronous()``; ``watchers``: the store's inotify pool
    behind ``watch()`` (None: listeners alone, as the memory store);
    ``read_later``: runs a read that waited for its folder's earlier
    calls (None: ``runner``)."""

    def __init__(
        self,
        store: IMailStore,
        runner: Runner | None,
        reads_at_once: bool = False,
        watchers: WatcherPool | None = None,
        read_later: Runner | None = None,
    ) -> None:
        self.store = store
        self._runner = runner
        self._reads_at_once = reads_at_once
        self._watchers = watchers
        self._read_later = read_later
        self._mailboxes: dict[int, AsyncUserMailbox] = {}

    def open_user(self, user: str, path: str) -> Deferred[IAsyncUserMailbox]:
        run = _Serial(self._runner)
        return run(lambda: self.store.open_user(user, path)).addCallback(self._face)

    def _face(self, mailbox: IUserMailbox) -> IAsyncUserMailbox:
        face = self._mailboxes.get(id(mailbox))
        if face is None or face.mailbox is not mailbox:
            face = self._mailboxes[id(mailbox)] = AsyncUserMailbox(
                mailbox, self._runner, self._reads_at_once, self._watchers, self._read_later
            )
        return face
