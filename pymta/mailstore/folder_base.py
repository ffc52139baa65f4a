"""folder_base: a Maildir folder's state, its lock and its index.

The bottom layer of :class:`pymta.mailstore.maildir_folder.MaildirFolder`
(Dovecot's maildir-storage and maildir-uidlist): the folder's place, its
UID index (:mod:`pymta.mailstore.index`) and cache, the keyword letters
(:mod:`pymta.mailstore.keywords`), and ``_locked()``, which every change
goes through: it serialises threads (the folder's mutex) and processes (the
index's flock), brings the index up to date, and tells the listeners what
changed afterwards - in the reactor thread. The layers above add the
scan (:mod:`~pymta.mailstore.folder_scan`), reading
(:mod:`~pymta.mailstore.folder_read`), flags
(:mod:`~pymta.mailstore.folder_flags`) and saving
(:mod:`~pymta.mailstore.folder_save`).

Untrusted input: the index file (:mod:`pymta.mailstore.index` checks it).
May write: the index, its lock file, ``pymta-uidlist.corrupt``. Logs index
rebuilds as ``mailstore: warning: ...``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python import threadable

from pymta.maillog import maillog
from pymta.mailstore.cache import MessageCache
from pymta.mailstore.dovecot import read_dovecot_uidlist
from pymta.mailstore.freshscan import Listing
from pymta.mailstore.gcpause import paused
from pymta.mailstore.index import (
    IndexChange,
    IndexConflict,
    IndexCorrupt,
    UidIndex,
)
from pymta.mailstore.interface import (
    WRITE_ERRNOS,
    FolderChange,
    NoSuchFolder,
    StoreNotWritable,
)
from pymta.mailstore.keywords import KeywordLetters
from pymta.mailstore.names import (
    MaildirNames,
)
from pymta.mailstore.tmpclean import TmpCleaner

Listener = Callable[[FolderChange], None]

# A directory changed this recently may change again within the same mtime
# tick, unseen. File systems with nanosecond stamps tick every few ms (the
# kernel's coarse clock); those with whole seconds (or FAT's two) need more.
RECENT_WINDOW_FINE = 0.1
RECENT_WINDOW_COARSE = 2.0

_NO_FLAGS: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

#: A file the index does not know yet, as a scan found and measured it:
#: (sub, name, "sub/name", its ``:2,`` letters, size, RFC822 size, mtime
#: or None: not read, see pymta.mailstore.folder_scan).
NewFile = tuple[str, str, str, str, int, int, float | None]
_log = Logger()


class FolderBase:
    """One Maildir++ folder's state, lock and index (see the module doc)."""

    def __init__(
        self,
        next_uidvalidity: Callable[[int | None], int],
        name: str,
        path: str,
        clock: IReactorTime,
        hostname: str,
        fsync: bool,
        tmp_cleaner: TmpCleaner | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self._next_uidvalidity = next_uidvalidity
        self._clock = clock
        self._names = MaildirNames(clock, hostname)
        self._fsync = fsync
        self._tmp_cleaner = tmp_cleaner or TmpCleaner(clock)
        self._index = UidIndex(path, fsync)
        self._cache = MessageCache(path)
        self._listeners: list[Listener] = []
        self._mutex = threading.RLock()
        self._dir_stamp: tuple[int, int] | None = None
        self._keywords = KeywordLetters(path)
        # A listing and the files new to the index, measured and in arrival
        # order, made by a scan before it took the lock
        # (pymta.mailstore.folder_scan): (stamp, files, {base: new file}).
        self._prepared: (
            tuple[tuple[int, int] | None, dict[str, tuple[str, str]], dict[str, NewFile]] | None
        ) = None
        # The same for a folder never indexed, as columns
        # (pymta.mailstore.freshscan): (stamp, listing).
        self._prepared_listing: tuple[tuple[int, int] | None, Listing] | None = None
        # A first scan numbered the folder under the lock held now: another
        # listing under it would find only what a change in the same mtime
        # tick hid, as the next scan will (its stamp is left untrusted).
        self._numbered_under_lock = False

    # -- attributes ------------------------------------------------------

    @property
    def uidvalidity(self) -> int:
        self._ensure_loaded()
        return self._index.uidvalidity

    @property
    def uidnext(self) -> int:
        self._ensure_loaded()
        return self._index.uidnext

    @property
    def highest_modseq(self) -> int:
        self._ensure_loaded()
        return self._index.highest_modseq

    def _relocate(self, name: str, path: str) -> None:
        """Follow a RENAME of this folder."""
        with self._mutex:
            self.name = name
            self.path = path
            self._cache.close()
            self._index = UidIndex(path, self._fsync)
            self._cache = MessageCache(path)
            self._keywords = KeywordLetters(path)
            self._dir_stamp = None
            self._prepared = None
            self._prepared_listing = None

    # -- the lock and the index ----------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[FolderChange]]:
        """Serialise with other threads and processes, bring the index up to
        date, and afterwards tell listeners what changed (also what was
        found before a failure). A write the store cannot take (read-only,
        full: WRITE_ERRNOS) raises StoreNotWritable, not a bare OSError."""
        notices: list[FolderChange] = []
        # Files dead writers left in tmp/ go, every few hours, in a thread.
        self._tmp_cleaner.touched(self.path)
        try:
            with self._mutex:
                if not os.path.isdir(os.path.join(self.path, "cur")):
                    raise NoSuchFolder(self.name)
                with self._index.locked():
                    self._numbered_under_lock = False
                    with paused():  # an index of 100,000 lines, or a first scan
                        notices.extend(self._load_locked())
                    yield notices
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise StoreNotWritable(e.errno, f"{self.name}: {e}") from e
            raise
        finally:
            if notices and self._listeners:
                self._tell_from_any_thread(notices)

    def _tell_from_any_thread(self, notices: list[FolderChange]) -> None:
        call_from_thread = getattr(self._clock, "callFromThread", None)
        in_worker = threadable.ioThread is not None and not threadable.isInIOThread()
        if call_from_thread is not None and in_worker:
            # A change made in a worker thread (pop3d's QUIT): sessions
            # hear of it in the reactor thread, where they may write.
            call_from_thread(self._tell, notices)
        else:
            self._tell(notices)

    @property
    def writable(self) -> bool:
        """False while the store is read-only (the index lock could only be
        opened for reading: EROFS, EACCES, EPERM)."""
        return self._index.read_only_errno is None

    def _tell(self, notices: list[FolderChange]) -> None:
        for change in notices:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    # One broken session must not break the change for the
                    # caller (already on disk) nor for the other listeners.
                    _log.failure("mail store listener failed on {change}", change=change)

    def _ensure_loaded(self) -> None:
        if not self._index.loaded:
            with self._locked():
                pass

    def _load_locked(self) -> list[FolderChange]:
        index = self._index
        if not index.exists():
            imported = read_dovecot_uidlist(self.path)
            if imported is None:
                self._renumber(None)
                return self._scan_locked(force=True)
            # A Maildir Dovecot served: keep its UIDs (clients stay in sync).
            uidvalidity, uidnext, uids = imported
            self._index.create(uidvalidity, uidnext)
            self._dir_stamp = None
            return self._scan_locked(force=True, preassigned=uids)
        try:
            first = not index.loaded
            notices = _group(index.sync())
            if first:
                # A restart: pick up what was delivered while we were away,
                # unless the last complete scan (by any process) saw the
                # directories as they are now.
                stamp = self._dir_stat(raw=True)
                if stamp is not None and stamp == index.scan_stamp:
                    self._dir_stamp = stamp
                else:
                    notices += self._scan_locked()
            return notices
        except IndexConflict as e:
            # UIDs we gave only in memory went to other messages in another
            # process: its file stands; our sessions start over.
            maillog("mailstore", f"warning: {e}; reloading {self.path}", LogLevel.warn)
            index.forget()
            self._dir_stamp = None
            index.sync()
            return [FolderChange("uidvalidity", (), 1), *self._scan_locked(force=True)]
        except IndexCorrupt as e:
            old = index.uidvalidity
            maillog("mailstore", f"warning: {e}; renumbering {self.path}", LogLevel.warn)
            with contextlib.suppress(OSError):
                os.rename(index.path, index.path + ".corrupt")
            self._renumber(old)
            notices = [FolderChange("uidvalidity", (), 1)]
            return notices + self._scan_locked(force=True)

    def _renumber(self, old_uidvalidity: int | None) -> None:
        """Start a new index under a new UIDVALIDITY (every message will be
        numbered again by the scan that follows)."""
        uidvalidity = self._next_uidvalidity(old_uidvalidity)
        self._index.create(uidvalidity)
        self._dir_stamp = None

    def _dir_stat(self, raw: bool = False) -> tuple[int, int] | None:
        """The mtimes of new/ and cur/; None (do not trust) while they may
        still change within their current mtime tick, unless ``raw``."""
        try:
            new = os.stat(os.path.join(self.path, "new"))
            cur = os.stat(os.path.join(self.path, "cur"))
        except FileNotFoundError:
            return None
        # A change in the same mtime tick as our stat would go unseen; trust
        # the stamp only once the directories have been quiet for a moment.
        if raw:
            return (new.st_mtime_ns, cur.st_mtime_ns)
        latest = max(new.st_mtime_ns, cur.st_mtime_ns)
        coarse = new.st_mtime_ns % 1_000_000_000 == 0 and cur.st_mtime_ns % 1_000_000_000 == 0
        window = RECENT_WINDOW_COARSE if coarse else RECENT_WINDOW_FINE
        if latest / 1e9 > self._clock.seconds() - window:
            return None
        return (new.st_mtime_ns, cur.st_mtime_ns)

    def _scan_locked(
        self, force: bool = False, preassigned: dict[str, int] | None = None
    ) -> list[FolderChange]:
        """Bring the index up to date with new/ and cur/ (lock held); the
        scan layer (:class:`pymta.mailstore.folder_scan.FolderScan`) does it."""
        raise NotImplementedError

    # -- keywords (dovecot-keywords, pymta.mailstore.keywords) ----------

    @property
    def _kw_names(self) -> dict[str, str]:
        return self._keywords.names

    @property
    def _kw_letters(self) -> dict[str, str]:
        return self._keywords.letters

    def _load_keywords(self) -> None:
        self._keywords.load()

    def _letters_for(self, keywords: frozenset[str]) -> None:
        """Give letters to new keywords while there are free ones (lock held)."""
        self._keywords.assign(keywords)


def _group(changes: list[IndexChange]) -> list[FolderChange]:
    """Turn records read from another process's writes into notices."""
    appended: list[int] = []
    flagged: list[int] = []
    expunged: list[int] = []
    modseq = 0
    for c in changes:
        if c.new is None:
            expunged.append(c.uid)
        elif c.old is None:
            appended.append(c.uid)
            modseq = max(modseq, c.new.modseq)
        elif (c.old.flags, c.old.keywords) != (c.new.flags, c.new.keywords):
            flagged.append(c.uid)
            modseq = max(modseq, c.new.modseq)
    notices = []
    if expunged:
        notices.append(FolderChange("expunge", tuple(sorted(set(expunged))), modseq))
    if flagged:
        notices.append(FolderChange("flags", tuple(sorted(set(flagged))), modseq))
    if appended:
        notices.append(FolderChange("append", tuple(sorted(set(appended))), modseq))
    return notices
