"""folder_read: read a Maildir folder's messages, headers and structures.

Mirrors Dovecot's maildir-mail.c: a message is read from its file (O_NOFOLLOW,
regular files only) under the name the index gives, looked for again when
another program renamed it meanwhile; header blocks and MIME structures are
kept in the folder's cache (:mod:`pymta.mailstore.cache`) after first use,
never under a UID that lives only in memory. The header cache can be
filled from a worker thread (:class:`pymta.mailstore.interface.IHeaderCache`),
and header digests computed from the files in worker processes
(:class:`pymta.mailstore.digests.IHeaderDigests`).

INTERNALDATE on demand (:meth:`FolderRead.fill_dates`): a folder's scan
leaves the date of the files it found unknown (``-`` in the index,
:mod:`pymta.mailstore.folder_scan`); the first command that shows or
compares it (FETCH INTERNALDATE, SEARCH BEFORE/ON/SINCE/OLDER/YOUNGER,
SORT ARRIVAL and DATE, THREAD, COPY) has the store ``stat`` those files
in its threads, without the folder's lock, then gives the index's
image their dates under the lock (same modseq: not a change any session
hears of) and keeps them in the folder's date file
(:mod:`pymta.mailstore.datefile`, one write, not an index line each), so
no file is stat'ed twice, by this process or another: a fill takes what
that file holds first. A file renamed meanwhile (flags changed by another
program) is looked for again after a rescan.

Untrusted input: the message files (parsed only by :mod:`pymta.mailstore.mime`),
the cache file and the date file. May write: the cache, the date file.
Logs nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import BinaryIO

from zope.interface import implementer

from pymta.mailstore import datefile, mime
from pymta.mailstore.datefill import DatePlan, IDatedFiles
from pymta.mailstore.digests import HeaderReader
from pymta.mailstore.digestwork import mtimes
from pymta.mailstore.files import (
    MESSAGE_OPEN_FLAGS,
    MessageFileReader,
    open_message,
    read_all,
    read_header,
    read_header_file,
)
from pymta.mailstore.folder_scan import FolderScan
from pymta.mailstore.gcpause import paused
from pymta.mailstore.interface import (
    FolderStatus,
    MailStoreError,
    MessageInfo,
    MimePart,
    NoSuchMessage,
    known_date,
)


@implementer(IDatedFiles)
class FolderRead(FolderScan):
    """The reading layer of a Maildir folder (see the module doc)."""

    def messages(self) -> list[MessageInfo]:
        self._ensure_loaded()
        with self._mutex:  # another thread may be changing the dict
            return list(self._index.records.values())

    def get(self, uid: int) -> MessageInfo:
        self._ensure_loaded()
        try:
            return self._index.records[uid]
        except KeyError:
            raise NoSuchMessage(f"{self.name}: no UID {uid}") from None

    def fill_dates(self, uids: Collection[int]) -> None:
        plan = self.undated_files(uids)
        if plan is not None:
            self.put_read_dates(plan, mtimes(self.path, plan.files))

    def undated_files(self, uids: Collection[int]) -> DatePlan | None:
        """What a fill of these messages' dates must read: those whose date
        is unknown, less those the date file holds (their dates taken from
        it); None when nothing is unknown (thread-safe)."""
        self._ensure_loaded()
        records = self._index.records
        # (A tuple per message: no cyclic collection meanwhile.)
        with self._mutex, paused():  # another thread may be changing the dict
            unknown = [
                (uid, info.filename)
                for uid in uids
                if (info := records.get(uid)) is not None and info.internal_date is None
            ]
            uidvalidity = self._index.uidvalidity
        if not unknown:
            return None
        # What an earlier fill kept (this process or another: a restart)
        # needs no stat; the rest is read without the lock (deliveries and
        # other processes need not wait for thousands of stat calls).
        kept = datefile.load(self.path, uidvalidity)
        if kept:
            from_file = {uid: kept[uid] for uid, _ in unknown if uid in kept}
            unknown = [(uid, name) for uid, name in unknown if uid not in from_file]
        else:
            from_file = {}
        return DatePlan(uidvalidity, from_file, unknown)

    def put_read_dates(self, plan: DatePlan, dates: dict[int, tuple[str, float]]) -> None:
        """Give the records of ``plan`` the dates read (``dates``: the
        :func:`mtimes` of its files) and those the date file held, under
        the folder's lock; a file not found (renamed by another program)
        is looked for again after a rescan; the dates read are kept in the
        date file (thread-safe)."""
        with paused():  # a record made again per date (pymta.mailstore.gcpause)
            read, live = self._put_read_dates(plan, dates)
        if dates and read:
            fresh = {u: read[u] for u in dates if u in read}
            datefile.save(self.path, plan.uidvalidity, fresh, live)

    def _put_read_dates(
        self, plan: DatePlan, dates: dict[int, tuple[str, float]]
    ) -> tuple[dict[int, float], set[int]]:
        unknown = plan.files
        with self._locked() as notices:
            records = self._index.records
            if len(dates) < len(unknown):
                # Renamed (flags changed by another program) or removed
                # since the index was read: look again once.
                notices.extend(self._scan_locked())
                again = [
                    (uid, info.filename)
                    for uid, _ in unknown
                    if uid not in dates
                    and (info := records.get(uid)) is not None
                    and info.internal_date is None
                ]
                dates.update(mtimes(self.path, again))
            read = {
                uid: mtime
                for uid, (filename, mtime) in dates.items()
                if (info := records.get(uid)) is not None
                and info.internal_date is None
                and info.filename == filename
            }
            # Dates kept by UID stand (under the same UIDVALIDITY) whatever
            # the file's name is now.
            if self._index.uidvalidity == plan.uidvalidity:
                read.update(
                    (uid, date)
                    for uid, date in plan.from_file.items()
                    if (info := records.get(uid)) is not None and info.internal_date is None
                )
            else:
                read.clear()  # numbered afresh meanwhile: read again
            # In the index's image only: the dates read go to the date
            # file (one write), not as one index line each.
            self._index.put_dates(read, write=False)
            return read, set(records) if dates else set()

    def status(self) -> FolderStatus:
        self._ensure_loaded()
        with self._mutex:  # another thread may be changing the dict
            index = self._index
            return FolderStatus.of(
                index.records.values(), index.uidnext, index.uidvalidity, index.highest_modseq
            )

    def rescan(self) -> None:
        """:meth:`refresh` without its answer: the listeners hear of the
        changes, the caller reads the records afterwards (SELECT: the
        list of 100,000 new records a first scan would return is not
        built for nothing)."""
        with paused():  # many records made at once (pymta.mailstore.gcpause)
            self._prepare_scan()
            with self._locked() as notices:
                notices.extend(self._scan_locked())

    def open(self, uid: int) -> BinaryIO:
        info = self.get(uid)
        try:
            fd = open_message(os.path.join(self.path, info.filename))
        except FileNotFoundError:
            # Renamed or removed by another program: look again.
            self.refresh()
            info = self.get(uid)
            try:
                fd = open_message(os.path.join(self.path, info.filename))
            except FileNotFoundError:
                raise NoSuchMessage(f"{self.name}: UID {uid} is gone") from None
        except OSError as e:
            raise MailStoreError(f"{self.name}: UID {uid}: {e}") from e
        return os.fdopen(fd, "rb")

    def read(self, uid: int) -> bytes:
        # The hot path of POP3 RETR: open, fstat, one read, close (a buffered
        # file object would add its own fstat, a second read and more Python).
        info = self.get(uid)
        try:
            fd = os.open(f"{self.path}/{info.filename}", MESSAGE_OPEN_FLAGS)
        except FileNotFoundError:
            with self.open(uid) as f:  # renamed or removed meanwhile
                return f.read()
        except OSError as e:
            raise MailStoreError(f"{self.name}: UID {uid}: {e}") from e
        try:
            # The size the index knows, and the file is at its end: done (no
            # fstat). Anything else - another size, not a regular file (a
            # FIFO opened O_NONBLOCK reads empty or EAGAIN, never blocks) -
            # is looked at closely.
            data = os.read(fd, info.size + 1)
            if len(data) == info.size:
                return data
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", info.filename)
            os.lseek(fd, 0, os.SEEK_SET)
            return read_all(fd, st.st_size)
        except OSError as e:
            raise MailStoreError(f"{self.name}: UID {uid}: {e}") from e
        finally:
            os.close(fd)

    def _cached(self, kind: bytes, uid: int, compute: Callable[[int], bytes]) -> bytes:
        """A cache entry, computed (``compute(uid)``) and stored on first use.
        The cache's in-memory table is not thread-safe: hold the folder's
        mutex."""
        with self._mutex:
            self.get(uid)
            uidvalidity = self._index.uidvalidity
            value = self._cache.get(uidvalidity, kind, uid)
            if value is None:
                value = compute(uid)
                # Never cache under a UID that is only in memory: after a
                # crash it may go to another message.
                if uid not in self._index.memory_uids:
                    self._cache.put(uidvalidity, kind, uid, value)
            return value

    def header_bytes(self, uid: int) -> bytes:
        # The common case inline (a header SEARCH asks for every message's
        # block): loaded index, known UID, cached entry. Anything else takes
        # the full path, which loads, raises NoSuchMessage or reads the file.
        with self._mutex:
            index = self._index
            if index.loaded and uid in index.records:
                value = self._cache.get(index.uidvalidity, b"H", uid)
                if value is not None:
                    return value
        return self._cached(b"H", uid, self._read_header_block)

    def _read_header_block(self, uid: int) -> bytes:
        with self.open(uid) as f:
            return read_header(f.read)

    # -- the header cache, filled from a worker thread (IHeaderCache) -------

    def uncached_headers(self, uids: Collection[int]) -> list[tuple[int, str]]:
        missing = self._uncached(uids)
        with self._mutex:
            records = self._index.records
            return [
                (uid, info.filename) for uid in missing if (info := records.get(uid)) is not None
            ]

    def headers_may_contain(self, needles: Collection[bytes], uids: Iterable[int]) -> set[int]:
        self._ensure_loaded()
        with self._mutex:
            return self._cache.containing(self._index.uidvalidity, b"H", needles, uids)

    def read_headers(self, wanted: Sequence[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
        path = self.path
        blocks: dict[tuple[int, str], bytes] = {}
        for uid, filename in wanted:
            block = read_header_file(f"{path}/{filename}")
            if block is not None:
                blocks[(uid, filename)] = block
        return blocks

    # -- header digests off the reactor (digests.IHeaderDigests) ------------

    def header_reader(self) -> HeaderReader:
        return HeaderReader(self.path)

    def _uncached(self, uids: Collection[int]) -> list[int]:
        """Those of ``uids`` present whose header block is not cached."""
        self._ensure_loaded()
        with self._mutex:
            records = self._index.records
            live = [uid for uid in uids if uid in records]
            return self._cache.missing(self._index.uidvalidity, b"H", live)

    def uncached_files(self, uids: Collection[int]) -> list[tuple[int, str, float]]:
        missing = self._uncached(uids)
        # The header digests fall back on the date (SORT DATE, THREAD): made
        # known first (this runs in the store's threads).
        self.fill_dates(missing)
        with self._mutex:
            records = self._index.records
            return [
                (uid, info.filename, known_date(info))
                for uid in missing
                if (info := records.get(uid)) is not None
            ]

    def kept_file(self) -> tuple[str, int]:
        self._ensure_loaded()
        return self.path, self._index.uidvalidity

    def live_uids(self) -> set[int]:
        self._ensure_loaded()
        with self._mutex:
            return set(self._index.records)

    def message_reader(self) -> Callable[[str, int], bytes | None]:
        # The place as it is now: a RENAME of the folder later ends the scan
        # of what then looks gone, as an expunge would.
        return MessageFileReader(self.path)

    def cache_headers(self, blocks: dict[tuple[int, str], bytes]) -> int:
        self._ensure_loaded()
        with self._mutex:
            records = self._index.records
            # A message is never changed once stored: a block read under an
            # older name (flags changed meanwhile) is still its header.
            memory = self._index.memory_uids  # not cached: see _cached
            values = {
                uid: block
                for (uid, _), block in blocks.items()
                if uid in records and uid not in memory
            }
            return self._cache.put_many(self._index.uidvalidity, b"H", values)

    def mime_structure(self, uid: int) -> MimePart:
        def compute(uid: int) -> bytes:
            return mime.to_json(mime.parse_mime(self.read(uid))).encode("utf-8")

        try:
            return mime.from_json(self._cached(b"M", uid, compute).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            # A damaged entry (the cache is only advisory): parse afresh.
            return mime.parse_mime(self.read(uid))
