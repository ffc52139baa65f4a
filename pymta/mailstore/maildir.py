"""Maildir++ mailboxes on the local file system: the mail store.

Mirrors Dovecot's Maildir storage (``mail_location = maildir:~/Maildir``,
LAYOUT=maildir++), so Postfix, Dovecot, mutt and pymta can share a Maildir:

- INBOX is the Maildir root; the folder ``A/B`` is the directory ``.A.B``
  (parts in modified UTF-7, Dovecot's default), with ``new/ cur/ tmp/`` and
  an empty ``maildirfolder`` file. ``subscriptions`` in the root lists the
  subscribed folders one per line (Courier's format, which Dovecot reads).
- Flags live in the ``:2,`` suffix of file names; keywords in the letters
  a-z named by the folder's ``dovecot-keywords``. A message is moved from
  ``new/`` to ``cur/`` when a session claims it (claim_recent) or changes
  its flags, as Dovecot does.
- UIDs, UIDVALIDITY, sizes, dates, flags and modseqs are in the folder's
  ``pymta-uidlist`` (:mod:`pymta.mailstore.index`), parsed headers and MIME
  structures in ``pymta-cache`` (:mod:`pymta.mailstore.cache`); the root's
  ``pymta-uidvalidity`` holds the last UIDVALIDITY given out, so a folder
  deleted and created again never gets an old one back. Special-use
  attributes are in each folder's ``pymta-special-use``.
- Any program may drop messages into ``new/`` or ``cur/``; refresh() numbers
  them in file-name order (Maildir names start with the delivery time).
- Changes by other programs are found by refresh() (or its cheap
  changed_on_disk() check). The store watches for them itself: its
  asynchronous API's ``watch()`` (of a folder: IMAP's selected view,
  IDLE, NOTIFY; of a user's mailbox: NOTIFY's folder list) acquires the
  store's :class:`~pymta.mailstore.watchers.WatcherPool`, whose inotify
  watchers refresh the folder in the store's threads on changes, so IMAP
  IDLE needs no polling and never learns a path. Within one process, use
  one MaildirStore: its folder objects (and their listeners) are what
  sessions share.
- The user's METADATA entries (RFC 5464) are in ``pymta-metadata`` in the
  root (:mod:`pymta.mailstore.metadata`).
- A folder Dovecot served keeps its UIDs: with no ``pymta-uidlist`` yet,
  UIDVALIDITY and UIDs are taken from ``dovecot-uidlist``
  (:mod:`pymta.mailstore.dovecot`).

Crash safety: a message is written to ``tmp/``, fsync'd and renamed into
place before its UID is written (and fsync'd) into the index; a crash in
between leaves a file the next refresh numbers, never a UID given twice.
An index that cannot be read is set aside as ``pymta-uidlist.corrupt`` and
the folder renumbered under a new UIDVALIDITY (clients resynchronise).

A store that cannot be written (read-only file system, full disk, quota)
is still read: locks are taken on read-only descriptors, new mail is
numbered in memory until the index takes it (:mod:`pymta.mailstore.index`),
the cache is only read, and \\Recent is not claimed. A folder on a
read-only file system says so (``writable`` False); writes raise
:class:`~pymta.mailstore.interface.StoreNotWritable` with the errno, which
IMAP and POP3 turn into ``[OVERQUOTA]``/``[NOPERM]``/``[SYS/TEMP]``.

Untrusted input: file names (listdir gives no ``/``; dot files, odd
characters and anything but a regular file, e.g. a symbolic link, are
ignored: files are opened with O_NOFOLLOW), ``,S=``/``,W=`` size hints (used
only when ``S=`` matches the real size), folder names from clients
(:func:`pymta.mailstore.names.validate_folder_name`), and every index file.

Blocking: every call does a few file-system operations on the user's
Maildir. append() and operations that change the index fsync (a few ms on
a disk, none with ``fsync=False``); refresh() lists ``new/`` and ``cur/``
when their mtime changed (tens of ms for 100,000 messages); the first use
of a folder reads its index (about 0.3 s per 100,000 messages). Index
writes take a ``flock`` that another process may hold for as long as one
such operation. Callers that must not block (the IMAP server) can run these
calls in a thread; each folder serialises its own calls with a lock.

Logs: index rebuilds and damaged files, as ``mailstore: warning: ...``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import stat
import threading
from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymta.fdio import fsync_dir
from pymta.mailstore.asyncstore import AsyncMailStore, IAsyncMailStore, NextTurn, Runner
from pymta.mailstore.files import (
    SPECIAL_USE_FILE,
    MaildirLock,
    atomic_write,
    make_folder_dir,
)
from pymta.mailstore.interface import (
    DEFAULT_FOLDERS,
    SEPARATOR,
    WRITE_ERRNOS,
    FolderExists,
    FolderInfo,
    IFolder,
    IMailStore,
    InvalidFolderName,
    IUserMailbox,
    IWatchedMailbox,
    NoSuchFolder,
)
from pymta.mailstore.maildir_folder import MaildirFolder
from pymta.mailstore.metadata import FILENAME as METADATA_FILE
from pymta.mailstore.metadata import MetadataFile
from pymta.mailstore.names import (
    DISK_SEPARATOR,
    INBOX,
    dirname_to_folder,
    folder_dirname,
    normalize,
    unique_number,
    validate_folder_name,
)
from pymta.mailstore.prefetch import reactor_thread_runner
from pymta.mailstore.tmpclean import TmpCleaner
from pymta.mailstore.watchers import WatcherPool

UIDVALIDITY_FILE = "pymta-uidvalidity"
SUBSCRIPTIONS = "subscriptions"
SETUP_MARKER = "pymta-setup"


@implementer(IUserMailbox, IWatchedMailbox)
class MaildirUserMailbox:
    """A user's Maildir++ root and its folders."""

    separator = SEPARATOR

    def __init__(
        self,
        user: str,
        root: str,
        clock: IReactorTime,
        hostname: str,
        fsync: bool,
        tmp_cleaner: TmpCleaner | None = None,
    ) -> None:
        self.user = user
        self.root = root
        self._clock = clock
        self._hostname = hostname
        self._fsync = fsync
        self._tmp_cleaner = tmp_cleaner or TmpCleaner(clock)
        self._folders: dict[str, MaildirFolder] = {}
        self._mutex = threading.RLock()
        self._metadata = MetadataFile(root, fsync)
        # The special-use folders are made on first use of anything but
        # INBOX (as Dovecot's autocreate is lazy): a POP3 session, which
        # only ever sees INBOX, never pays for them.
        self._set_up = os.path.exists(os.path.join(root, SETUP_MARKER))

    def _ensure_set_up(self) -> None:
        if not self._set_up:
            with self._mutex:
                if not self._set_up:
                    try:
                        self.set_up_defaults()
                    except OSError as e:
                        if e.errno not in WRITE_ERRNOS:
                            raise
                        return  # a store that cannot be written: next time
                    self._set_up = True

    def next_uidvalidity(self, old: int | None) -> int:
        """A UIDVALIDITY never given out before in this Maildir (above
        ``old`` and the root's ``pymta-uidvalidity``), and record it."""
        path = os.path.join(self.root, UIDVALIDITY_FILE)
        try:
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            # A store that cannot be written: a value above everything
            # given so far, not recorded (the index that needs it cannot
            # be written either; it is made again when it can).
            return max(int(self._clock.seconds()), self._last_uidvalidity(path) + 1, (old or 0) + 1)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = self._last_uidvalidity(path)
            value = max(int(self._clock.seconds()), last + 1, (old or 0) + 1)
            atomic_write(path, b"%d\n" % value, self._fsync)
            return value
        finally:
            os.close(fd)

    @staticmethod
    def _last_uidvalidity(path: str) -> int:
        try:
            with open(path, encoding="ascii") as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def set_up_defaults(self) -> None:
        """Once per Maildir (``pymta-setup`` marks it done), as Dovecot's
        ``auto = subscribe`` does: create the special-use folders that are
        missing, give existing ones of those names their attribute, and
        subscribe INBOX and them. The delivery agent may have created the
        Maildir itself before the user's first login: this runs then."""
        # Costs one fsync of the root and one of the subscriptions, however
        # many folders are made: none of it is mail, and the marker comes
        # last, so a crash before it only means doing this again.
        for name, use in DEFAULT_FOLDERS:
            path = self._path(name)
            if self._is_folder_dir(path):
                marker = os.path.join(path, SPECIAL_USE_FILE)
                if not os.path.exists(marker):
                    atomic_write(marker, use.encode("ascii") + b"\n", self._fsync)
                continue
            with contextlib.suppress(FolderExists):
                self._make_dir(path, use)
        with self._mutex:
            names = self._read_subscriptions()
            wanted = {INBOX, *(n for n, _ in DEFAULT_FOLDERS)}
            if not wanted <= names:
                self._write_subscriptions(names | wanted)
        if self._fsync:
            fsync_dir(self.root)
        atomic_write(os.path.join(self.root, SETUP_MARKER), b"", False)

    def _path(self, name: str) -> str:
        return os.path.join(self.root, folder_dirname(name))

    def _is_folder_dir(self, path: str) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode) and os.path.isdir(os.path.join(path, "cur"))

    def _names(self) -> list[str]:
        names = [INBOX]
        for entry in os.listdir(self.root):
            name = dirname_to_folder(entry)
            if name is not None and self._is_folder_dir(os.path.join(self.root, entry)):
                names.append(name)
        return names

    def list_folders(self) -> list[FolderInfo]:
        self._ensure_set_up()
        names = sorted(self._names(), key=lambda n: (n != INBOX, n))
        out = []
        for name in names:
            special = None
            if name != INBOX:
                with contextlib.suppress(OSError):
                    with open(os.path.join(self._path(name), SPECIAL_USE_FILE)) as f:
                        special = f.read().strip() or None
            children = any(o.startswith(name + SEPARATOR) for o in names)
            out.append(FolderInfo(name=name, special_use=special, has_children=children))
        return out

    def folder(self, name: str) -> IFolder:
        name = normalize(name)
        if name != INBOX:
            self._ensure_set_up()
        with self._mutex:
            cached = self._folders.get(name)
            if cached is not None and self._is_folder_dir(cached.path):
                return cached
            if name != INBOX:
                try:
                    validate_folder_name(name)
                except InvalidFolderName:
                    raise NoSuchFolder(name) from None
            path = self._path(name)
            if not self._is_folder_dir(path):
                raise NoSuchFolder(name)
            folder = MaildirFolder(
                self.next_uidvalidity,
                name,
                path,
                self._clock,
                self._hostname,
                self._fsync,
                self._tmp_cleaner,
            )
            self._folders[name] = folder
            return folder

    def _make_dir(self, path: str, special_use: str | None) -> None:
        make_folder_dir(self.root, path, special_use)

    def create_folder(self, name: str, special_use: str | None = None) -> IFolder:
        self._ensure_set_up()
        parts = validate_folder_name(name)
        name = SEPARATOR.join(parts)
        if name == INBOX or self._is_folder_dir(self._path(name)):
            raise FolderExists(name)
        for i in range(1, len(parts)):
            parent = SEPARATOR.join(parts[:i])
            if not self._is_folder_dir(self._path(parent)):
                with contextlib.suppress(FolderExists):
                    self._make_dir(self._path(parent), None)
        self._make_dir(self._path(name), special_use)
        if self._fsync:
            fsync_dir(self.root)
        return self.folder(name)

    def delete_folder(self, name: str) -> None:
        self._ensure_set_up()
        name = normalize(name)
        if name == INBOX:
            raise InvalidFolderName("INBOX cannot be deleted")
        path = self._path(name) if dirname_to_folder(folder_dirname(name)) else ""
        if not path or not self._is_folder_dir(path):
            raise NoSuchFolder(name)
        # Rename first (atomic: the folder is gone at once), then remove.
        trash = os.path.join(self.root, f"..pymta-deleted-{os.getpid()}-{unique_number()}")
        os.rename(path, trash)
        with self._mutex:
            self._folders.pop(name, None)
        shutil.rmtree(trash, ignore_errors=True)

    def rename_folder(self, old: str, new: str) -> None:
        self._ensure_set_up()
        old = normalize(old)
        new = SEPARATOR.join(validate_folder_name(new))
        if new == INBOX or self._is_folder_dir(self._path(new)):
            raise FolderExists(new)
        if old == INBOX:
            inbox = self.folder(INBOX)
            target = self.create_folder(new)
            inbox.move([m.uid for m in inbox.messages()], target)
            return
        if not self._is_folder_dir(self._path(old)):
            raise NoSuchFolder(old)
        if new.startswith(old + SEPARATOR):
            raise InvalidFolderName(f"cannot move {old!r} into itself")
        old_dir = folder_dirname(old)
        new_dir = folder_dirname(new)
        with self._mutex:
            for entry in sorted(os.listdir(self.root)):
                if entry != old_dir and not entry.startswith(old_dir + DISK_SEPARATOR):
                    continue
                target_dir = new_dir + entry[len(old_dir) :]
                os.rename(os.path.join(self.root, entry), os.path.join(self.root, target_dir))
                old_name = dirname_to_folder(entry)
                folder = self._folders.pop(old_name, None) if old_name else None
                new_name = dirname_to_folder(target_dir)
                if folder is not None and new_name is not None:
                    folder._relocate(new_name, os.path.join(self.root, target_dir))
                    self._folders[new_name] = folder
        if self._fsync:
            fsync_dir(self.root)

    # -- subscriptions (Courier's one-name-per-line file) ---------------

    def _read_subscriptions(self) -> set[str]:
        try:
            with open(os.path.join(self.root, SUBSCRIPTIONS), encoding="utf-8") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return set()
        out: set[str] = set()
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if line.upper() == INBOX:
                out.add(INBOX)
                continue
            name = dirname_to_folder(DISK_SEPARATOR + line)
            if name is not None:
                out.add(name)
        return out

    def _write_subscriptions(self, names: set[str]) -> None:
        lines = sorted(INBOX if n == INBOX else folder_dirname(n)[1:] for n in names)
        data = "".join(line + "\n" for line in lines).encode("ascii")
        atomic_write(os.path.join(self.root, SUBSCRIPTIONS), data, self._fsync)

    def subscribe(self, name: str) -> None:
        self._ensure_set_up()
        name = normalize(name)
        if name != INBOX:
            name = SEPARATOR.join(validate_folder_name(name))
        with self._mutex:
            names = self._read_subscriptions()
            if name not in names:
                names.add(name)
                self._write_subscriptions(names)

    def unsubscribe(self, name: str) -> None:
        self._ensure_set_up()
        name = normalize(name)
        with self._mutex:
            names = self._read_subscriptions()
            if name in names:
                names.discard(name)
                self._write_subscriptions(names)

    def subscriptions(self) -> list[str]:
        self._ensure_set_up()
        return sorted(self._read_subscriptions())

    def metadata(self) -> dict[str, dict[str, bytes]]:
        return self._metadata.read()

    def set_metadata(self, key: str, changes: Mapping[str, bytes | None], max_entries: int) -> bool:
        return self._metadata.change(key, changes, max_entries)

    def watch_directory(self) -> str:
        return self.root

    def is_list_entry(self, entry: str) -> bool:
        # Maildir++ folders are ".Name" directories of the root (a deleted
        # one is first renamed to "..pymta-deleted-..."); the subscriptions
        # and METADATA files are rewritten through a rename into place.
        return (
            entry.startswith(".")
            or entry.startswith(SUBSCRIPTIONS)
            or entry.startswith(METADATA_FILE)
        )


@implementer(IMailStore)
class MaildirStore:
    """Opens Maildir++ mailboxes; one shared object per Maildir root.

    ``clock`` gives internal dates, file names and UIDVALIDITY (the reactor
    in production); ``hostname`` goes into new file names; ``fsync=False``
    is for benchmarks and tests on scratch directories only; ``tmp_cleaner``
    removes what dead writers left in the folders' tmp/ (its default runs
    in the reactor's thread pool); ``run_in_thread`` runs the calls of the
    asynchronous API (:meth:`asynchronous`; default: the reactor's thread
    pool, or at once for a clock without threads); ``watchers`` is the
    inotify pool behind the asynchronous API's ``watch()`` (default: one
    on ``clock``, shared by every folder and mailbox of this store, so by
    every IMAP listener of the process).
    """

    def __init__(
        self,
        clock: IReactorTime,
        hostname: str | None = None,
        fsync: bool = True,
        tmp_cleaner: TmpCleaner | None = None,
        run_in_thread: Runner | None = None,
        watchers: WatcherPool | None = None,
    ) -> None:
        self._clock = clock
        self._runner = run_in_thread or reactor_thread_runner(clock)
        # A read that waited for its folder's earlier calls (every IDLE
        # session's update read after an inotify rescan) runs in its turn
        # on the reactor thread, as a read does when nothing waits: in the
        # reactor's next turn with the reads queued behind it, not a thread
        # hop each. A runner given (tests) runs them, as before.
        self._read_later: Runner | None = None
        if run_in_thread is None and self._runner is not None:
            self._read_later = NextTurn(clock)
        #: What the asynchronous API's watch() acquires (inotify watchers).
        self.watchers = watchers if watchers is not None else WatcherPool(clock)
        self._asynchronous: AsyncMailStore | None = None
        self._tmp_cleaner = tmp_cleaner or TmpCleaner(clock)
        self._hostname = hostname or socket.gethostname()
        self._fsync = fsync
        self._users: dict[str, MaildirUserMailbox] = {}
        self._mutex = threading.Lock()

    def asynchronous(self) -> IAsyncMailStore:
        """This store's asynchronous API (:mod:`pymta.mailstore.asyncstore`):
        calls that may wait on the disk in the store's threads, reads of one
        message or of the index at once when nothing waits, one folder's
        calls in order."""
        if self._asynchronous is None:
            self._asynchronous = AsyncMailStore(
                self,
                self._runner,
                reads_at_once=True,
                watchers=self.watchers,
                read_later=self._read_later,
            )
        return self._asynchronous

    def open_user(self, user: str, path: str) -> IUserMailbox:
        root = os.path.realpath(path)
        with self._mutex:
            mailbox = self._users.get(root)
            if mailbox is not None:
                return mailbox
            os.makedirs(root, 0o700, exist_ok=True)
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(root, sub), 0o700, exist_ok=True)
            mailbox = MaildirUserMailbox(
                user, root, self._clock, self._hostname, self._fsync, self._tmp_cleaner
            )
            self._users[root] = mailbox
            return mailbox


__all__ = ("MaildirFolder", "MaildirLock", "MaildirStore", "MaildirUserMailbox")
