"""One Maildir++ folder: numbering, flags, appends, copies and expunges.

Mirrors Dovecot's Maildir storage, split by job as Dovecot splits it:
:mod:`~pymta.mailstore.folder_base` (state, ``_locked()``, the index),
:mod:`~pymta.mailstore.folder_scan` (sync: what other programs did),
:mod:`~pymta.mailstore.folder_read` (messages, headers, structures),
:mod:`~pymta.mailstore.folder_flags` (flags, keywords, \\Recent),
:mod:`~pymta.mailstore.folder_save` (append, copy, expunge), over
:mod:`~pymta.mailstore.files` and the one writer :mod:`~pymta.mailstore.save`.
This module puts the layers together and adds the session lock and the
listeners. The folder's messages are
the files of ``new/`` and ``cur/``, numbered in ``pymta-uidlist``
(:mod:`pymta.mailstore.index`), with parsed headers and MIME structures in
``pymta-cache`` (:mod:`pymta.mailstore.cache`); see
:mod:`pymta.mailstore.maildir` for the layout, the crash-safety argument and
what each call may cost.

Untrusted input: file names in ``new/`` and ``cur/`` (dot files, odd
characters and anything but a regular file, e.g. a symbolic link, are
ignored: files are opened with O_NOFOLLOW), ``,S=``/``,W=`` size hints
(taken when both are there and possible, as Dovecot takes them, else
the file is measured: :mod:`~pymta.mailstore.folder_scan`), ``dovecot-keywords``, and the
index and cache files. Writes messages in ``tmp/``, ``new/``, ``cur/``, the
index, cache, ``dovecot-keywords`` and the lock files of the folder; every
use of the folder lets :mod:`pymta.mailstore.tmpclean` remove stale
``tmp/`` files (in a thread, every few hours). Logs index rebuilds.
"""

from __future__ import annotations

import fcntl
import os

from zope.interface import implementer

from pymta.mailstore.digests import IHeaderDigests
from pymta.mailstore.files import (
    SESSION_LOCK,
    MaildirLock,
)
from pymta.mailstore.filescan import IMessageFiles
from pymta.mailstore.folder_base import Listener
from pymta.mailstore.folder_save import FolderSave
from pymta.mailstore.interface import (
    WRITE_ERRNOS,
    FolderStatus,
    FolderSummary,
    IFolder,
    IFolderLock,
    IHeaderCache,
    IStagedAppend,
    ISummarized,
    IWatchedFolder,
)


@implementer(
    IFolder,
    IHeaderCache,
    IStagedAppend,
    IMessageFiles,
    IHeaderDigests,
    IWatchedFolder,
    ISummarized,
)
class MaildirFolder(FolderSave):
    """One Maildir++ folder and its index. Shared by every session of the store."""

    def watch_directory(self) -> str:
        return self.path

    def summary(self) -> FolderSummary:
        """ISummarized: after a first scan, from the index's columns
        (:class:`~pymta.mailstore.index.Numbered`): no record made."""
        self._ensure_loaded()
        with self._mutex:  # another thread may be changing the index
            index = self._index
            numbered = index.numbered
            if numbered is None:
                return FolderSummary.of(
                    index.records.values(), index.uidnext, index.uidvalidity, index.highest_modseq
                )
            uids = numbered.uids
            return FolderSummary(
                uids,
                numbered.recent(),
                numbered.first_unseen(),
                numbered.keywords(),
                uids,  # a first scan reads no date
                index.uidnext,
                index.uidvalidity,
                index.highest_modseq,
            )

    def records_made(self) -> bool:
        return self._index.numbered is None

    def make_records(self) -> None:
        with self._mutex:
            self._index.make_records()

    def status(self) -> FolderStatus:
        self._ensure_loaded()
        with self._mutex:
            index = self._index
            numbered = index.numbered
            if numbered is None:
                return super().status()
            return FolderStatus(
                len(numbered),
                len(numbered.recent()),
                numbered.unseen(),
                index.uidnext,
                index.uidvalidity,
                index.highest_modseq,
                numbered.size(),
            )

    def lock(self) -> IFolderLock | None:
        path = os.path.join(self.path, SESSION_LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            # A store that cannot be written: flock needs only a read-only
            # descriptor; without the file (none can be made) there is no
            # lock to take, and two sessions can only read alike.
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return MaildirLock(-1)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return MaildirLock(fd)

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)
