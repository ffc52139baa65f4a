"""One Maildir++ folder: numbering, flags, appends, copies and expunges.

Mirrors Dovecot's maildir-sync and maildir-save: the folder's messages are
the files of ``new/`` and ``cur/``, numbered in ``pymta-uidlist``
(:mod:`pymta.mailstore.index`), with parsed headers and MIME structures in
``pymta-cache`` (:mod:`pymta.mailstore.cache`); see
:mod:`pymta.mailstore.maildir` for the layout, the crash-safety argument and
what each call may cost.

Untrusted input: file names in ``new/`` and ``cur/`` (dot files, odd
characters and anything but a regular file, e.g. a symbolic link, are
ignored: files are opened with O_NOFOLLOW), ``,S=``/``,W=`` size hints
(used only when ``S=`` matches the real size), ``dovecot-keywords``, and the
index and cache files. Writes messages in ``tmp/``, ``new/``, ``cur/``, the
index, cache, ``dovecot-keywords`` and the lock files of the folder; every
use of the folder lets :mod:`pymta.mailstore.tmpclean` remove stale
``tmp/`` files (in a thread, every few hours). Logs index rebuilds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import BinaryIO

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python import threadable
from zope.interface import implementer

from pymta.maillog import maillog
from pymta.mailstore import mime
from pymta.mailstore.cache import MessageCache
from pymta.mailstore.dovecot import read_dovecot_uidlist
from pymta.mailstore.index import (
    IndexChange,
    IndexConflict,
    IndexCorrupt,
    UidIndex,
    message_info,
)
from pymta.mailstore.interface import (
    WRITE_ERRNOS,
    FlagMode,
    FolderChange,
    FolderStatus,
    IFolder,
    IFolderLock,
    IFolderScan,
    IHeaderCache,
    IMessageFiles,
    IStagedAppend,
    MailStoreError,
    MessageInfo,
    MimePart,
    NoSuchFolder,
    NoSuchMessage,
    ScanListing,
    Staged,
    StoreNotWritable,
)
from pymta.mailstore.names import (
    filename_sizes,
    flags_to_letters,
    header_block,
    is_acceptable_filename,
    letters_to_flags,
    rfc822_size,
    rfc822_size_of_stream,
    split_filename,
    split_flags,
)
from pymta.mailstore.tmpclean import TmpCleaner

Listener = Callable[[FolderChange], None]
# (staged file in tmp/, size, rfc822 size, internal date, flags, keywords)
NewFile = tuple[str, int, int, float, frozenset[str], frozenset[str]]
# (size, rfc822 size, mtime) of a message file, as measure_file finds them
Measured = tuple[int, int, float]

SESSION_LOCK = "pymta-session.lock"
KEYWORDS_FILE = "dovecot-keywords"
# A directory changed this recently may change again within the same mtime
# tick, unseen. File systems with nanosecond stamps tick every few ms (the
# kernel's coarse clock); those with whole seconds (or FAT's two) need more.
RECENT_WINDOW_FINE = 0.1
RECENT_WINDOW_COARSE = 2.0

_unique = itertools.count(1)
_log = Logger()


def unique_number() -> int:
    """A number never returned before in this process (for file names)."""
    return next(_unique)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(path: str, data: bytes, fsync: bool) -> None:
    tmp = f"{path}.{os.getpid()}.{unique_number()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


_MESSAGE_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
_NO_FLAGS: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def _open_message(path: str) -> int:
    """Open a message file refusing symbolic links and non-regular files."""
    fd = os.open(path, _MESSAGE_OPEN_FLAGS)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def read_header_file(path: str) -> bytes | None:
    """The header block of one message file, or None when it cannot be read
    (gone, not a regular file). Reads until the blank line, not the body."""
    try:
        fd = os.open(path, _MESSAGE_OPEN_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _read_header(partial(os.read, fd))
    except OSError:
        return None
    finally:
        os.close(fd)


def read_message_path(path: str, size_hint: int) -> bytes | None:
    """The whole of one message file (about ``size_hint`` bytes), or None
    when it cannot be read (gone, not a regular file)."""
    try:
        fd = os.open(path, _MESSAGE_OPEN_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _read_all(fd, size_hint)
    except OSError:
        return None
    finally:
        os.close(fd)


_ARRIVAL = re.compile(r"(\d+)\.M(\d+)")


def arrival_key(name: str) -> tuple[int, int, str]:
    """A Maildir file name's place in arrival order: ``<secs>.M<usecs>...``
    compared as numbers (as text, M123456 would sort before M99999 of the
    same second, and new mail would get its UIDs out of order)."""
    match = _ARRIVAL.match(name)
    if match is None:
        head = name.split(".", 1)[0]
        return (int(head) if head.isdigit() else 0, 0, name)
    return (int(match.group(1)), int(match.group(2)), name)


@dataclass(frozen=True)
class MessageFileReader:
    """Reads a folder's message files by index name, in any thread or
    process (it holds only the folder's path: picklable)."""

    path: str

    def __call__(self, filename: str, size: int) -> bytes | None:
        return read_message_path(f"{self.path}/{filename}", size)


def _read_header(read: Callable[[int], bytes]) -> bytes:
    """The header block of what ``read`` gives, read in 64 KiB pieces only
    until the blank line (not the body)."""
    data = b""
    while True:
        chunk = read(65536)
        data += chunk
        if not chunk or b"\n\n" in data or b"\r\n\r\n" in data:
            return header_block(data)


def _read_all(fd: int, size: int) -> bytes:
    """The whole of an open regular file of (about) ``size`` bytes: one read
    unless it has grown since its fstat."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def measure_file(path: str, filename: str) -> Measured | None:
    """``(size, rfc822 size, mtime)`` of the message file ``filename`` (as
    ``cur/NAME``) of the folder at ``path``; None if unusable (gone, not a
    regular file). Uses a ``,S=``/``,W=`` hint only when ``S=`` is the real
    size, else counts the lines. Thread-safe."""
    try:
        fd = os.open(f"{path}/{filename}", _MESSAGE_OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size, vsize_hint = filename_sizes(split_filename(filename[4:])[0])
        if size == st.st_size and vsize_hint is not None:
            return size, vsize_hint, st.st_mtime
        # No usable hint: count the lines (one read for a file of ordinary
        # size; big ones in chunks, never whole in memory).
        want = min(st.st_size + 1, 1 << 20)
        data = os.read(fd, want)
        if len(data) < want:  # all of it: no read just to see EOF
            return len(data), rfc822_size(data), st.st_mtime
        first = [data]

        def read(n: int) -> bytes:
            return first.pop() if first else os.read(fd, n)

        size, vsize = rfc822_size_of_stream(read)
        return size, vsize, st.st_mtime
    except OSError:
        return None
    finally:
        os.close(fd)


@implementer(IFolderLock)
class MaildirLock:
    """A held ``flock`` on the folder's ``pymta-session.lock``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IFolder, IHeaderCache, IStagedAppend, IFolderScan, IMessageFiles)
class MaildirFolder:
    """One Maildir++ folder and its index. Shared by every session of the store."""

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
        self._hostname = hostname.replace("/", "\\057").replace(":", "\\072")
        self._fsync = fsync
        self._tmp_cleaner = tmp_cleaner or TmpCleaner(clock)
        self._index = UidIndex(path, fsync)
        self._cache = MessageCache(path)
        self._listeners: list[Listener] = []
        self._mutex = threading.RLock()
        self._dir_stamp: tuple[int, int] | None = None
        self._kw_stamp: tuple[int, int] | None = None
        self._kw_names: dict[str, str] = {}
        self._kw_letters: dict[str, str] = {}
        # Loading the index without the scan that would follow (IFolderScan).
        self._defer_scan = False

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
            self._dir_stamp = None

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
                elif not self._defer_scan:  # else _dir_stamp stays None: scan later
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

    # -- directory scanning ------------------------------------------------

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

    @contextlib.contextmanager
    def _own_change(self) -> Iterator[None]:
        """Our own renames need no rescan, unless someone else changed the
        directories since the last scan. (Another program's change in the
        same mtime tick as ours, a few ms, is seen only at the directory's
        next change: the price of not listing 100,000 names after each
        STORE. Deliveries go to new/, which our flag changes do not touch.)"""
        before = self._dir_stat(raw=True)
        yield
        if self._dir_stamp is not None and before == self._dir_stamp:
            self._dir_stamp = self._dir_stat(raw=True)

    def _list(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            for name in names:
                if is_acceptable_filename(name):
                    found[split_filename(name)[0]] = (sub, name)
        return found

    def _scan_locked(
        self, force: bool = False, preassigned: dict[str, int] | None = None
    ) -> list[FolderChange]:
        current = self._dir_stat(raw=True)
        if not force and current is not None:
            if current == self._dir_stamp:
                return []
            if current == self._index.scan_stamp:
                # Another process changed the directories on top of a state
                # it trusted and wrote that stamp with the records we have
                # just read: our image matches them without a listing.
                self._dir_stamp = current
                return []
        stamp = self._dir_stat()  # taken before listing: later changes show
        index = self._index
        found = self._list()
        missing = [b for b in index.by_base if b not in found]
        if missing:
            # A message renamed (flags changed by another program) between
            # our two listdirs would look gone: look again before expunging.
            found.update(self._list())
        self._load_keywords()
        modseq = index.highest_modseq
        updates: list[MessageInfo] = []
        expunged: list[tuple[int, int]] = []
        changed: list[int] = []
        for base, uid in list(index.by_base.items()):
            info = index.records[uid]
            where = found.pop(base, None)
            if where is None:
                if not expunged:
                    modseq += 1
                expunged.append((uid, modseq))
                continue
            filename = f"{where[0]}/{where[1]}"
            if filename == info.filename:
                continue
            flags, keywords = letters_to_flags(split_filename(where[1])[1], self._kw_names)
            # Keywords with no letter live only in the index: keep them.
            keywords |= frozenset(k for k in info.keywords if k not in self._kw_letters)
            if (flags, keywords) != (info.flags, info.keywords):
                modseq += 1
                changed.append(uid)
                info = replace(info, flags=flags, keywords=keywords, modseq=modseq)
            updates.append(replace(info, filename=filename, recent=where[0] == "new"))
        added: list[MessageInfo] = []
        uid = index.uidnext
        taken = set(index.records)
        for sub, name in sorted(found.values(), key=lambda where: arrival_key(where[1])):
            old_uid = (preassigned or {}).get(split_filename(name)[0])
            fresh = old_uid is None or old_uid in taken or old_uid >= index.uidnext
            new_uid = uid if fresh or old_uid is None else old_uid
            made = self._describe(sub, name, new_uid, modseq + 1)
            if made is not None:
                modseq += 1
                added.append(made)
                taken.add(made.uid)
                uid += 1 if fresh else 0
        added.sort(key=lambda m: m.uid)  # messages() lists in UID order
        index.put(updates + added, expunged, stamp)
        self._dir_stamp = stamp
        notices: list[FolderChange] = []
        if expunged:
            notices.append(FolderChange("expunge", tuple(u for u, _ in expunged), modseq))
        if changed:
            notices.append(FolderChange("flags", tuple(sorted(changed)), modseq))
        if added:
            notices.append(FolderChange("append", tuple(m.uid for m in added), modseq))
        return notices

    def _describe(self, sub: str, name: str, uid: int, modseq: int) -> MessageInfo | None:
        """Index entry for a file another program wrote (None if unusable)."""
        filename = f"{sub}/{name}"
        measured = measure_file(self.path, filename)
        if measured is None:
            return None
        size, vsize, mtime = measured
        letters = split_filename(name)[1]
        flags, keywords = letters_to_flags(letters, self._kw_names) if letters else _NO_FLAGS
        return message_info(
            uid, size, vsize, mtime, flags, keywords, modseq, filename, sub == "new"
        )

    # -- scanning with the file reads in a worker thread (IFolderScan) -------

    def scan_snapshot(self, minimum: int) -> dict[str, str] | None:
        with self._mutex:
            index = self._index
            if not index.loaded:
                if not os.path.isdir(os.path.join(self.path, "cur")):
                    return None  # gone: the command says so as before
                if not index.exists():
                    if read_dovecot_uidlist(self.path) is not None:
                        return None  # keep Dovecot's UIDs: the usual scan
                    with index.locked():
                        if not index.exists():
                            self._renumber(None)  # empty; _dir_stamp None
                self._defer_scan = True
                try:
                    self._ensure_loaded()
                finally:
                    self._defer_scan = False
            if not self.changed_on_disk():
                return None
            try:
                entries = len(os.listdir(f"{self.path}/new")) + len(os.listdir(f"{self.path}/cur"))
            except OSError:
                return None
            if entries - len(index.records) < minimum:
                return None
            return {base: index.records[uid].filename for base, uid in index.by_base.items()}

    def list_unindexed(self, known: dict[str, str]) -> ScanListing:
        stamp = self._dir_stat()  # taken before listing: later changes show
        found = self._list()
        complete = all(
            (where := found.get(base)) is not None and f"{where[0]}/{where[1]}" == filename
            for base, filename in known.items()
        )
        new = sorted(
            ((name, sub) for base, (sub, name) in found.items() if base not in known),
            key=lambda item: arrival_key(item[0]),
        )
        return ScanListing(stamp, complete, [f"{sub}/{name}" for name, sub in new])

    def measure_files(self, filenames: Sequence[str]) -> dict[str, Measured]:
        path = self.path
        measured: dict[str, Measured] = {}
        for filename in filenames:
            found = measure_file(path, filename)
            if found is not None:
                measured[filename] = found
        return measured

    def add_measured(self, measured: dict[str, Measured]) -> int:
        with self._locked() as notices:
            index = self._index
            self._load_keywords()
            uid, modseq = index.uidnext, index.highest_modseq
            added: list[MessageInfo] = []
            for filename, (size, vsize, mtime) in measured.items():
                base, letters = split_filename(filename[4:])
                if base in index.by_base:
                    continue  # indexed meanwhile (another session's scan)
                modseq += 1
                flags, keywords = (
                    letters_to_flags(letters, self._kw_names) if letters else _NO_FLAGS
                )
                added.append(
                    message_info(
                        uid,
                        size,
                        vsize,
                        mtime,
                        flags,
                        keywords,
                        modseq,
                        filename,
                        filename.startswith("new/"),
                    )
                )
                uid += 1
            if added:
                index.put(added, [])
                notices.append(FolderChange("append", tuple(m.uid for m in added), modseq))
            return len(added)

    def finish_scan(self, listing: ScanListing) -> None:
        with self._locked():
            current = self._dir_stat(raw=True)
            if listing.complete and listing.stamp is not None and current == listing.stamp:
                self._index.put([], [], listing.stamp)
                self._dir_stamp = listing.stamp

    # -- keywords (dovecot-keywords) ------------------------------------

    def _load_keywords(self) -> None:
        path = os.path.join(self.path, KEYWORDS_FILE)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._kw_names, self._kw_letters, self._kw_stamp = {}, {}, None
            return
        if self._kw_stamp == (st.st_ino, st.st_mtime_ns):
            return
        names: dict[str, str] = {}
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    num, _, keyword = line.rstrip("\n").partition(" ")
                    if num.isdigit() and int(num) < 26 and keyword:
                        names[chr(ord("a") + int(num))] = keyword
        except OSError:
            return
        self._kw_names = names
        self._kw_letters = {v: k for k, v in names.items()}
        self._kw_stamp = (st.st_ino, st.st_mtime_ns)

    def _letters_for(self, keywords: frozenset[str]) -> None:
        """Give letters to new keywords while there are free ones (lock held)."""
        self._load_keywords()
        new = sorted(k for k in keywords if k not in self._kw_letters and k != "$Forwarded")
        free = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in self._kw_names]
        if not new or not free:
            return
        for keyword, letter in zip(new, free, strict=False):
            self._kw_names[letter] = keyword
        text = "".join(f"{ord(c) - ord('a')} {k}\n" for c, k in sorted(self._kw_names.items()))
        atomic_write(os.path.join(self.path, KEYWORDS_FILE), text.encode("utf-8"), False)
        self._kw_stamp = None
        self._load_keywords()

    # -- reading -----------------------------------------------------------

    def refresh(self) -> list[MessageInfo]:
        with self._locked() as notices:
            notices.extend(self._scan_locked())
            appended = sorted(u for n in notices if n.kind == "append" for u in n.uids)
            return [self._index.records[u] for u in appended if u in self._index.records]

    def changed_on_disk(self) -> bool:
        if not self._index.loaded or not self._index.is_current():
            return True
        current = self._dir_stat(raw=True)
        return current is None or current != self._dir_stamp

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
        msgs = self.messages()
        return FolderStatus(
            messages=len(msgs),
            recent=sum(1 for m in msgs if m.recent),
            unseen=sum(1 for m in msgs if "\\Seen" not in m.flags),
            uidnext=self._index.uidnext,
            uidvalidity=self._index.uidvalidity,
            highest_modseq=self._index.highest_modseq,
            size=sum(m.rfc822_size for m in msgs),
        )

    def open(self, uid: int) -> BinaryIO:
        info = self.get(uid)
        try:
            fd = _open_message(os.path.join(self.path, info.filename))
        except FileNotFoundError:
            # Renamed or removed by another program: look again.
            self.refresh()
            info = self.get(uid)
            try:
                fd = _open_message(os.path.join(self.path, info.filename))
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
            fd = os.open(f"{self.path}/{info.filename}", _MESSAGE_OPEN_FLAGS)
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
            return _read_all(fd, st.st_size)
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
            return _read_header(f.read)

    # -- the header cache, filled from a worker thread (IHeaderCache) -------

    def uncached_headers(self, uids: Collection[int]) -> list[tuple[int, str]]:
        self._ensure_loaded()
        with self._mutex:
            uidvalidity = self._index.uidvalidity
            records = self._index.records
            live = [uid for uid in uids if uid in records]
            missing = self._cache.missing(uidvalidity, b"H", live)
            return [(uid, records[uid].filename) for uid in missing]

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

    # -- changing ----------------------------------------------------------

    def _new_name(self, size: int, vsize: int) -> str:
        now = self._clock.seconds()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        return f"{sec}.M{usec}P{os.getpid()}Q{unique_number()}.{self._hostname},S={size},W={vsize}"

    def _rename_to(self, info: MessageInfo, letters: str) -> str:
        """Move a message's file into cur/ with these flag letters; returns
        the new ``cur/...`` name. FileNotFoundError when it is gone."""
        # filename is "new/..." or "cur/..." (the index refuses anything else)
        target = f"cur/{info.filename[4:].partition(':')[0]}:2,{letters}"
        if target != info.filename:
            os.rename(f"{self.path}/{info.filename}", f"{self.path}/{target}")
        return target

    def _flagged_locked(
        self,
        info: MessageInfo,
        system: frozenset[str],
        keywords: frozenset[str],
        mode: FlagMode,
        modseq: int,
        notices: list[FolderChange],
    ) -> MessageInfo | None:
        """The message with its flags changed and its file renamed (lock
        held, inside _own_change), or None when nothing changes. Follows a
        rename by another program; NoSuchMessage when the file is gone."""
        if mode is FlagMode.REPLACE:
            new_flags, new_kw = system, keywords
        elif mode is FlagMode.ADD:
            new_flags, new_kw = info.flags | system, info.keywords | keywords
        else:
            new_flags, new_kw = info.flags - system, info.keywords - keywords
        if new_flags == info.flags and new_kw == info.keywords:
            return None
        if new_kw:
            self._letters_for(new_kw)
        letters = flags_to_letters(new_flags, new_kw, self._kw_letters)
        try:
            filename = self._rename_to(info, letters)
        except FileNotFoundError:
            notices.extend(self._scan_locked(force=True))
            uid = info.uid
            if uid not in self._index.records:
                raise NoSuchMessage(f"{self.name}: UID {uid} is gone") from None
            info = self._index.records[uid]
            filename = self._rename_to(info, letters)
        return message_info(
            info.uid,
            info.size,
            info.rfc822_size,
            info.internal_date,
            new_flags,
            new_kw,
            modseq,
            filename,
            False,
        )

    def set_flags(
        self,
        uid: int,
        flags: Collection[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> MessageInfo | None:
        system, keywords = split_flags(flags)
        with self._locked() as notices:
            info = self._index.records.get(uid)
            if info is None:
                raise NoSuchMessage(f"{self.name}: no UID {uid}")
            if unchanged_since is not None and info.modseq > unchanged_since:
                return None
            modseq = self._index.highest_modseq + 1
            with self._own_change():
                changed = self._flagged_locked(info, system, keywords, mode, modseq, notices)
            if changed is None:
                return info
            self._index.put([changed], [], self._dir_stamp)
            notices.append(FolderChange("flags", (uid,), modseq))
            return changed

    def set_flags_many(
        self, uids: Collection[int], flags: Collection[str], mode: FlagMode
    ) -> list[MessageInfo]:
        # One lock, one directory check and one index append for all: a POP3
        # QUIT marking 200 messages \Seen costs 200 renames and little more.
        system, keywords = split_flags(flags)
        with self._locked() as notices:
            modseq = self._index.highest_modseq + 1
            records = self._index.records
            out: list[MessageInfo] = []
            changed: list[MessageInfo] = []
            with self._own_change():
                for uid in sorted(set(uids)):
                    info = records.get(uid)
                    if info is None:
                        continue
                    try:
                        new = self._flagged_locked(info, system, keywords, mode, modseq, notices)
                    except NoSuchMessage:
                        continue
                    if new is None:
                        out.append(info)
                    else:
                        out.append(new)
                        changed.append(new)
            if changed:
                self._index.put(changed, [], self._dir_stamp)
                notices.append(FolderChange("flags", tuple(i.uid for i in changed), modseq))
            return out

    def _tmp_path(self, size: int, vsize: int) -> str:
        return os.path.join(self.path, "tmp", self._new_name(size, vsize))

    def _write_tmp(self, content: bytes, internal_date: float) -> tuple[str, int, int]:
        """Write a message into tmp/ durably; returns (tmp path, size, rfc822 size)."""
        size, vsize = len(content), rfc822_size(content)
        tmp = self._tmp_path(size, vsize)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise StoreNotWritable(e.errno, f"{self.name}: {e}") from e
            raise
        try:
            try:
                _write_all(fd, content)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.utime(tmp, (internal_date, internal_date))
        except OSError as e:
            # A full file system: no half message left in tmp/.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
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

    def copy(self, uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        if not isinstance(target, MaildirFolder):
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
                        _link_or_copy(os.path.join(self.path, info.filename), tmp)
                    except FileNotFoundError:
                        # Renamed or removed by another program: look again.
                        notices.extend(self._scan_locked(force=True))
                        info = self._index.records.get(uid)
                        if info is None:
                            continue
                        _link_or_copy(os.path.join(self.path, info.filename), tmp)
                    entry = (tmp, info.size, info.rfc822_size, info.internal_date)
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

    def claim_recent(self, uids: Collection[int] | None = None) -> list[int]:
        with self._locked() as notices:
            notices.extend(self._scan_locked())
            records = self._index.records
            if uids is None:
                candidates = list(records.values())
            else:
                candidates = [records[u] for u in sorted(set(uids)) if u in records]
            updates: list[MessageInfo] = []
            with self._own_change():
                for info in candidates:
                    if not info.recent:
                        continue
                    letters = flags_to_letters(info.flags, info.keywords, self._kw_letters)
                    try:
                        filename = self._rename_to(info, letters)
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        if e.errno not in WRITE_ERRNOS:
                            raise
                        # A store that cannot be written: the rest stay in
                        # new/ (and \Recent); reading goes on.
                        break
                    updates.append(
                        message_info(
                            info.uid,
                            info.size,
                            info.rfc822_size,
                            info.internal_date,
                            info.flags,
                            info.keywords,
                            info.modseq,
                            filename,
                            False,
                        )
                    )
            self._index.put(updates, [], self._dir_stamp)
            return [i.uid for i in updates]

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


def _link_or_copy(src: str, target: str) -> None:
    """A hard link (as Dovecot copies), or a real copy where links cannot
    be made (another file system). Never follows a symbolic link."""
    try:
        os.link(src, target, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, target, follow_symlinks=False)


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
