"""folder_save: put messages into a Maildir folder and take them out -
APPEND, COPY, MOVE, EXPUNGE.

Mirrors Dovecot's maildir-save.c and maildir-copy.c: the message is written
into ``tmp/`` by the store's one writer (:mod:`pymta.mailstore.save`, one
naming scheme with deliveries), fsync'd, renamed into ``cur/`` and only
then numbered in the index (a crash in between leaves a file the next scan
numbers, never a UID given twice). APPEND can stage the file in a worker
thread and number it later (:class:`pymta.mailstore.interface.IStagedAppend`);
COPY hard-links the source file into the target's ``tmp/`` under the
source's lock and numbers it under the target's, never both locks at once.
EXPUNGE unlinks the files and leaves tombstones in the index (RFC 7162
VANISHED), compacting the cache when it has grown.

Untrusted input: the message bytes (stored, not interpreted). May write:
files in ``tmp/`` and ``cur/`` (and remove them), the index, the cache. Logs nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

from pymta.fdio import fsync_dir
from pymta.mailstore.files import (
    link_or_copy,
)
from pymta.mailstore.folder_flags import FolderFlags
from pymta.mailstore.interface import (
    WRITE_ERRNOS,
    FolderChange,
    IFolder,
    MessageInfo,
    Staged,
    StoreNotWritable,
)
from pymta.mailstore.names import (
    flags_to_letters,
    rfc822_size,
    split_flags,
)
from pymta.mailstore.save import tmp_path, write_tmp

# (staged file in tmp/, size, rfc822 size, internal date, flags, keywords)
NewFile = tuple[str, int, int, float, frozenset[str], frozenset[str]]


class FolderSave(FolderFlags):
    """The saving layer of a Maildir folder (see the module doc)."""

    def _tmp_path(self, size: int, vsize: int) -> str:
        return tmp_path(self.path, self._names, size, vsize)

    def _write_tmp(self, content: bytes, internal_date: float) -> tuple[str, int, int]:
        """Write a message into tmp/ durably (:mod:`pymta.mailstore.save`);
        returns (tmp path, size, rfc822 size)."""
        size, vsize = len(content), rfc822_size(content)
        tmp = self._tmp_path(size, vsize)
        try:
            write_tmp(tmp, (content,), self._fsync, internal_date)
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise StoreNotWritable(e.errno, f"{self.name}: {e}") from e
            raise
        return tmp, size, vsize

    def _add_locked(
        self, entries: list[NewFile], notices: list[FolderChange], sync_dir: bool = True
    ) -> list[int]:
        """Rename staged files (in our tmp/) into new/ and number them (lock
        held); returns their UIDs in order. Without ``sync_dir`` the caller
        makes the renames durable (:meth:`sync_committed`).

        new/, with the flag letters in the name: mail added by APPEND or COPY
        is \\Recent for the next session that selects the folder (RFC 3501
        2.3.2, as Dovecot), and \\Recent here is "still in new/"; claiming
        moves it to cur/ with the same letters."""
        infos: list[MessageInfo] = []
        uid = self._index.uidnext
        modseq = self._index.highest_modseq
        try:
            with self._own_change():
                for tmp, size, vsize, idate, flags, keywords in entries:
                    self._letters_for(keywords)
                    letters = flags_to_letters(flags, keywords, self._kw_letters)
                    name = f"{os.path.basename(tmp)}:2,{letters}"
                    os.rename(tmp, os.path.join(self.path, "new", name))
                    modseq += 1
                    infos.append(
                        MessageInfo(
                            uid, size, vsize, idate, flags, keywords, modseq, f"new/{name}", True
                        )
                    )
                    uid += 1
            if infos and sync_dir:
                self.sync_committed()
            # A client's UID is handed out only once it is in the file.
            self._index.put(infos, [], self._dir_stamp, strict=True)
        except (StoreNotWritable, OSError) as e:
            if not isinstance(e, StoreNotWritable) and e.errno not in WRITE_ERRNOS:
                raise
            # Nothing numbered: take back what was renamed (the caller
            # removes what is left in tmp/).
            for info in infos:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, info.filename))
            raise
        if infos:
            notices.append(FolderChange("append", tuple(i.uid for i in infos), modseq))
        return [i.uid for i in infos]

    def append(
        self,
        content: bytes,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> int:
        return self._commit(self.stage(content, flags, internal_date), sync_dir=True)

    def stage(
        self,
        content: bytes,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> Staged:
        """Write the message into tmp/ and fsync it (no lock, no index: safe
        in a worker thread)."""
        content = content.replace(b"\r\n", b"\n")
        system, keywords = split_flags(flags)
        idate = self._clock.seconds() if internal_date is None else internal_date
        tmp, size, vsize = self._write_tmp(content, idate)
        return Staged(tmp, None, size, vsize, idate, system, keywords)

    # _locked serialises threads and processes and tells listeners in the
    # reactor thread: commit_staged may run in a worker.
    commit_thread_safe = True

    def commit_staged(self, staged: Staged) -> int:
        """Rename a staged file into cur/ and number it (any thread); the
        rename is made durable by :meth:`sync_committed`."""
        return self._commit(staged, sync_dir=False)

    def _commit(self, staged: Staged, sync_dir: bool) -> int:
        entry = (
            staged.path,
            staged.size,
            staged.rfc822_size,
            staged.internal_date,
            staged.flags,
            staged.keywords,
        )
        try:
            with self._locked() as notices:
                uids = self._add_locked([entry], notices, sync_dir=sync_dir)
        finally:
            self.discard_staged(staged)
        return uids[0]

    def sync_committed(self) -> None:
        """fsync new/, where commits rename their messages to (thread-safe)."""
        if self._fsync:
            fsync_dir(os.path.join(self.path, "new"))

    def discard_staged(self, staged: Staged) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged.path)

    def copy(self, uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        if not isinstance(target, FolderSave):
            raise TypeError("target must be a folder of the same store")
        staged: list[tuple[int, NewFile]] = []
        try:
            # Link into the target's tmp/ under our lock (names are current
            # then), number under the target's: never both locks at once.
            with self._locked() as notices:
                for uid in sorted(set(uids)):
                    info = self._index.records.get(uid)
                    if info is None:
                        continue
                    tmp = target._tmp_path(info.size, info.rfc822_size)
                    try:
                        link_or_copy(os.path.join(self.path, info.filename), tmp)
                    except FileNotFoundError:
                        # Renamed or removed by another program: look again.
                        notices.extend(self._scan_locked(force=True))
                        info = self._index.records.get(uid)
                        if info is None:
                            continue
                        link_or_copy(os.path.join(self.path, info.filename), tmp)
                    date = info.internal_date
                    if date is None:
                        # Never read (the scan that found it does not stat):
                        # the link's, which is the file's (a copy across file
                        # systems would have its own: the source's then).
                        date = _mtime_of(os.path.join(self.path, info.filename), tmp)
                    entry = (tmp, info.size, info.rfc822_size, date)
                    staged.append((uid, (*entry, info.flags, info.keywords)))
            with target._locked() as notices:
                new_uids = target._add_locked([e for _, e in staged], notices)
        finally:
            for _, (tmp, *_rest) in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # left over only when numbering failed
        return [(old, new) for (old, _), new in zip(staged, new_uids, strict=True)]

    def move(self, uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        pairs = self.copy(uids, target)
        self.expunge([old for old, _ in pairs])
        return pairs

    def expunge(self, uids: Collection[int] | None = None) -> list[int]:
        with self._locked() as notices:
            records = self._index.records
            if uids is None:
                gone = [u for u, m in records.items() if "\\Deleted" in m.flags]
            else:
                gone = sorted(u for u in set(uids) if u in records)
            if not gone:
                return []
            modseq = self._index.highest_modseq + 1
            with self._own_change():
                for uid in gone:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.path, records[uid].filename))
            self._index.put([], [(u, modseq) for u in gone], self._dir_stamp)
            with self._mutex:
                records = self._index.records
                if self._cache.needs_compaction(len(records)):
                    self._cache.compact(self._index.uidvalidity, records.keys())
            notices.append(FolderChange("expunge", tuple(gone), modseq))
            return gone

    def expunged_since(self, modseq: int) -> list[int]:
        self._ensure_loaded()
        if modseq < self._index.floor:
            # History older than the floor was compacted away: every UID
            # below UIDNEXT that is not present may have been expunged.
            present = self._index.records
            return [u for u in range(1, self._index.uidnext) if u not in present]
        return sorted(u for u, m in self._index.tombstones if m > modseq)


def _mtime_of(source: str, copy: str) -> float:
    """The source file's mtime (INTERNALDATE), or its copy's when the source
    was renamed meanwhile (a hard link: the same file)."""
    try:
        return os.stat(source, follow_symlinks=False).st_mtime
    except OSError:
        return os.stat(copy, follow_symlinks=False).st_mtime
