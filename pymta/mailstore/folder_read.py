"""folder_read: read a Maildir folder's messages, headers and structures.

Mirrors Dovecot's maildir-mail.c: a message is read from its file (O_NOFOLLOW,
regular files only) under the name the index gives, looked for again when
another program renamed it meanwhile; header blocks and MIME structures are
kept in the folder's cache (:mod:`pymta.mailstore.cache`) after first use,
never under a UID that lives only in memory. The header cache can be
filled from a worker thread (:class:`pymta.mailstore.interface.IHeaderCache`),
and header digests computed from the files in worker processes
(:class:`pymta.mailstore.digests.IHeaderDigests`).

Untrusted input: the message files (parsed only by :mod:`pymta.mailstore.mime`)
and the cache file. May write: the cache. Logs nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import BinaryIO

from pymta.mailstore import mime
from pymta.mailstore.digests import HeaderReader
from pymta.mailstore.files import (
    MESSAGE_OPEN_FLAGS,
    MessageFileReader,
    open_message,
    read_all,
    read_header,
    read_header_file,
)
from pymta.mailstore.folder_scan import FolderScan
from pymta.mailstore.interface import (
    FolderStatus,
    MailStoreError,
    MessageInfo,
    MimePart,
    NoSuchMessage,
)


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
        return [(uid, filename) for uid, filename, _date in self.uncached_files(uids)]

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

    def uncached_files(self, uids: Collection[int]) -> list[tuple[int, str, float]]:
        self._ensure_loaded()
        with self._mutex:
            uidvalidity = self._index.uidvalidity
            records = self._index.records
            live = [uid for uid in uids if uid in records]
            missing = self._cache.missing(uidvalidity, b"H", live)
            return [(uid, records[uid].filename, records[uid].internal_date) for uid in missing]

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
