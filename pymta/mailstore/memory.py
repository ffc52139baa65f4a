"""An in-memory mail store, for tests of the POP3 and IMAP servers.

Implements :mod:`pymta.mailstore.interface` with the same semantics as the
Maildir store (one contract test runs against both) and keeps nothing on
disk. ``MemoryFolder.deliver_external(content)`` stands for a message that
another program dropped into ``new/``: it is numbered at the next refresh().
Time comes from the injected clock.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import BinaryIO

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymta.mailstore.asyncstore import AsyncMailStore, IAsyncMailStore
from pymta.mailstore.interface import (
    DEFAULT_FOLDERS,
    SEPARATOR,
    FlagMode,
    FolderChange,
    FolderExists,
    FolderInfo,
    FolderStatus,
    IFolder,
    IFolderLock,
    IMailDelivery,
    IMailStore,
    InvalidFolderName,
    IStagedAppend,
    IUserMailbox,
    MailStoreError,
    MessageInfo,
    MimePart,
    NoSuchFolder,
    NoSuchMessage,
    Staged,
    known_date,
)
from pymta.mailstore.metadata import Entries, apply_changes, copy_of
from pymta.mailstore.mime import parse_mime
from pymta.mailstore.names import (
    INBOX,
    header_block,
    normalize,
    rfc822_size,
    split_flags,
    validate_folder_name,
)
from pymta.queue.reference import IMessageContent, read_all

Listener = Callable[[FolderChange], None]


@implementer(IFolderLock)
class MemoryLock:
    def __init__(self, folder: MemoryFolder) -> None:
        self._folder: MemoryFolder | None = folder

    def release(self) -> None:
        if self._folder is not None:
            self._folder._locked = False
            self._folder = None


def _flagged(
    info: MessageInfo,
    system: frozenset[str],
    keywords: frozenset[str],
    mode: FlagMode,
    modseq: int,
) -> MessageInfo | None:
    """info with its flags changed as mode says, or None when nothing changes."""
    if mode is FlagMode.REPLACE:
        new_flags, new_kw = system, keywords
    elif mode is FlagMode.ADD:
        new_flags, new_kw = info.flags | system, info.keywords | keywords
    else:
        new_flags, new_kw = info.flags - system, info.keywords - keywords
    if (new_flags, new_kw) == (info.flags, info.keywords):
        return None
    return replace(info, flags=new_flags, keywords=new_kw, modseq=modseq)


@implementer(IFolder, IStagedAppend)
class MemoryFolder:
    """A folder kept in dicts."""

    commit_thread_safe = False  # listeners are called in the committing thread

    def __init__(self, name: str, uidvalidity: int, clock: IReactorTime) -> None:
        self.name = name
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highest_modseq = 1
        self.writable = True
        self.special_use: str | None = None
        self._clock = clock
        self._messages: dict[int, MessageInfo] = {}
        self._content: dict[int, bytes] = {}
        self._expunged: list[tuple[int, int]] = []
        self._pending: list[bytes] = []
        self._listeners: list[Listener] = []
        self._locked = False

    def _notify(self, kind: str, uids: list[int]) -> None:
        if not uids:
            return
        change = FolderChange(kind, tuple(sorted(uids)), self.highest_modseq)
        for listener in list(self._listeners):
            listener(change)

    def _add(
        self,
        content: bytes,
        flags: frozenset[str],
        keywords: frozenset[str],
        internal_date: float,
        recent: bool,
    ) -> MessageInfo:
        content = content.replace(b"\r\n", b"\n")
        uid = self.uidnext
        self.uidnext += 1
        self.highest_modseq += 1
        info = MessageInfo(
            uid=uid,
            size=len(content),
            rfc822_size=rfc822_size(content),
            internal_date=internal_date,
            flags=flags,
            keywords=keywords,
            modseq=self.highest_modseq,
            filename=f"{'new' if recent else 'cur'}/{uid}",
            recent=recent,
        )
        self._messages[uid] = info
        self._content[uid] = content
        return info

    def deliver_external(self, content: bytes) -> None:
        """Simulate another program writing a message into ``new/``."""
        self._pending.append(content)

    def refresh(self) -> list[MessageInfo]:
        found = [
            self._add(c, frozenset(), frozenset(), self._clock.seconds(), True)
            for c in self._pending
        ]
        self._pending.clear()
        self._notify("append", [m.uid for m in found])
        return found

    def rescan(self) -> None:
        self.refresh()

    def changed_on_disk(self) -> bool:
        return bool(self._pending)

    def messages(self) -> list[MessageInfo]:
        return list(self._messages.values())

    def get(self, uid: int) -> MessageInfo:
        try:
            return self._messages[uid]
        except KeyError:
            raise NoSuchMessage(f"{self.name}: no UID {uid}") from None

    def fill_dates(self, uids: Collection[int]) -> None:
        """Nothing to do: every message here got its date when stored."""

    def status(self) -> FolderStatus:
        return FolderStatus.of(
            self._messages.values(), self.uidnext, self.uidvalidity, self.highest_modseq
        )

    def read(self, uid: int) -> bytes:
        self.get(uid)
        return self._content[uid]

    def open(self, uid: int) -> BinaryIO:
        return io.BytesIO(self.read(uid))

    def header_bytes(self, uid: int) -> bytes:
        return header_block(self.read(uid))

    def mime_structure(self, uid: int) -> MimePart:
        return parse_mime(self.read(uid))

    def set_flags(
        self,
        uid: int,
        flags: Collection[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> MessageInfo | None:
        info = self.get(uid)
        if unchanged_since is not None and info.modseq > unchanged_since:
            return None
        system, keywords = split_flags(flags)
        new = _flagged(info, system, keywords, mode, self.highest_modseq + 1)
        if new is None:
            return info
        self.highest_modseq += 1
        self._messages[uid] = new
        self._notify("flags", [uid])
        return new

    def set_flags_many(
        self, uids: Collection[int], flags: Collection[str], mode: FlagMode
    ) -> list[MessageInfo]:
        system, keywords = split_flags(flags)
        modseq = self.highest_modseq + 1
        out: list[MessageInfo] = []
        changed: list[int] = []
        for uid in sorted(set(uids)):
            info = self._messages.get(uid)
            if info is None:
                continue
            new = _flagged(info, system, keywords, mode, modseq)
            if new is not None:
                self._messages[uid] = info = new
                changed.append(uid)
            out.append(info)
        if changed:
            self.highest_modseq = modseq
            self._notify("flags", changed)
        return out

    def append(
        self,
        content: bytes,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> int:
        return self.commit_staged(self.stage(content, flags, internal_date))

    def stage(
        self,
        content: bytes,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> Staged:
        content = content.replace(b"\r\n", b"\n")
        system, keywords = split_flags(flags)
        when = self._clock.seconds() if internal_date is None else internal_date
        return Staged("", content, len(content), rfc822_size(content), when, system, keywords)

    def commit_staged(self, staged: Staged) -> int:
        if staged.content is None:
            raise MailStoreError("staged message has no content (discarded or not ours)")
        # \Recent for the next session, as the Maildir store (RFC 3501 2.3.2).
        info = self._add(staged.content, staged.flags, staged.keywords, staged.internal_date, True)
        self._notify("append", [info.uid])
        return info.uid

    def sync_committed(self) -> None:
        pass  # nothing on disk

    def discard_staged(self, staged: Staged) -> None:
        pass

    def expunge(self, uids: Collection[int] | None = None) -> list[int]:
        if uids is None:
            gone = [u for u, m in self._messages.items() if "\\Deleted" in m.flags]
        else:
            gone = sorted(u for u in set(uids) if u in self._messages)
        if not gone:
            return []
        self.highest_modseq += 1
        for uid in gone:
            del self._messages[uid]
            del self._content[uid]
            self._expunged.append((uid, self.highest_modseq))
        self._notify("expunge", gone)
        return gone

    def expunged_since(self, modseq: int) -> list[int]:
        return sorted(u for u, m in self._expunged if m > modseq)

    def copy(self, uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        if not isinstance(target, MemoryFolder):
            raise TypeError("target must be a folder of the same store")
        pairs: list[tuple[int, int]] = []
        added: list[int] = []
        for uid in sorted(set(uids)):
            if uid not in self._messages:
                continue
            info = self._messages[uid]
            new = target._add(self._content[uid], info.flags, info.keywords, known_date(info), True)
            pairs.append((uid, new.uid))
            added.append(new.uid)
        target._notify("append", added)
        return pairs

    def move(self, uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        pairs = self.copy(uids, target)
        self.expunge([old for old, _ in pairs])
        return pairs

    def claim_recent(self, uids: Collection[int] | None = None) -> list[int]:
        claimed: list[int] = []
        wanted = None if uids is None else set(uids)
        for uid, info in self._messages.items():
            if info.recent and (wanted is None or uid in wanted):
                self._messages[uid] = replace(info, recent=False, filename=f"cur/{uid}")
                claimed.append(uid)
        return claimed

    def lock(self) -> IFolderLock | None:
        if self._locked:
            return None
        self._locked = True
        return MemoryLock(self)

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)


@implementer(IUserMailbox)
class MemoryUserMailbox:
    separator = SEPARATOR
    root: str | None = None  # no files: no quota file

    def __init__(self, user: str, clock: IReactorTime) -> None:
        self.user = user
        self._clock = clock
        self._uidvalidity = int(clock.seconds())
        self._folders: dict[str, MemoryFolder] = {}
        self._subscriptions: set[str] = set()
        self._metadata: Entries = {}
        self._folders[INBOX] = self._new_folder(INBOX)

    def _new_folder(self, name: str) -> MemoryFolder:
        # Each folder gets its own UIDVALIDITY, rising, as Dovecot does.
        self._uidvalidity = max(self._uidvalidity + 1, int(self._clock.seconds()))
        return MemoryFolder(name, self._uidvalidity, self._clock)

    def list_folders(self) -> list[FolderInfo]:
        names = sorted(self._folders, key=lambda n: (n != INBOX, n))
        return [
            FolderInfo(
                name=n,
                special_use=self._folders[n].special_use,
                has_children=any(o.startswith(n + SEPARATOR) for o in self._folders),
            )
            for n in names
        ]

    def folder(self, name: str) -> IFolder:
        name = normalize(name)
        try:
            return self._folders[name]
        except KeyError:
            raise NoSuchFolder(name) from None

    def create_folder(self, name: str, special_use: str | None = None) -> IFolder:
        parts = validate_folder_name(name)
        name = SEPARATOR.join(parts)
        if name in self._folders:
            raise FolderExists(name)
        for i in range(1, len(parts)):
            parent = SEPARATOR.join(parts[:i])
            if parent not in self._folders:
                self._folders[parent] = self._new_folder(parent)
        folder = self._new_folder(name)
        folder.special_use = special_use
        self._folders[name] = folder
        return folder

    def delete_folder(self, name: str) -> None:
        name = normalize(name)
        if name == INBOX:
            raise InvalidFolderName("INBOX cannot be deleted")
        if name not in self._folders:
            raise NoSuchFolder(name)
        del self._folders[name]

    def rename_folder(self, old: str, new: str) -> None:
        old = normalize(old)
        new = SEPARATOR.join(validate_folder_name(new))
        if old not in self._folders:
            raise NoSuchFolder(old)
        if new in self._folders:
            raise FolderExists(new)
        if old == INBOX:
            inbox = self._folders[INBOX]
            target = self.create_folder(new)
            inbox.move([m.uid for m in inbox.messages()], target)
            return
        for name in sorted(self._folders):
            if name == old or name.startswith(old + SEPARATOR):
                folder = self._folders.pop(name)
                folder.name = new + name[len(old) :]
                self._folders[folder.name] = folder

    def subscribe(self, name: str) -> None:
        name = normalize(name)
        if name != INBOX:
            name = SEPARATOR.join(validate_folder_name(name))
        self._subscriptions.add(name)

    def unsubscribe(self, name: str) -> None:
        self._subscriptions.discard(normalize(name))

    def subscriptions(self) -> list[str]:
        return sorted(self._subscriptions)

    def metadata(self) -> dict[str, dict[str, bytes]]:
        return copy_of(self._metadata)

    def set_metadata(self, key: str, changes: Mapping[str, bytes | None], max_entries: int) -> bool:
        return apply_changes(self._metadata, key, changes, max_entries)


@implementer(IMailStore)
class MemoryStore:
    """Users' mailboxes in memory, keyed by path."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._users: dict[str, MemoryUserMailbox] = {}
        self._asynchronous: AsyncMailStore | None = None

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    def asynchronous(self) -> IAsyncMailStore:
        """This store's asynchronous API: every call answered at once."""
        if self._asynchronous is None:
            self._asynchronous = AsyncMailStore(self, None)
        return self._asynchronous

    def open_user(self, user: str, path: str) -> IUserMailbox:
        mailbox = self._users.get(path)
        if mailbox is None:
            mailbox = MemoryUserMailbox(user, self._clock)
            mailbox.subscribe(INBOX)
            for name, use in DEFAULT_FOLDERS:
                mailbox.create_folder(name, use)
                mailbox.subscribe(name)
            self._users[path] = mailbox
        return mailbox


@implementer(IMailDelivery)
class MemoryDelivery:
    """The delivery API (:class:`IMailDelivery`) into a :class:`MemoryStore`:
    ``maildir`` names the mailbox as ``open_user`` keys it (by path); the
    name it fires with is ``<maildir>#<folder>/<uid>``. For tests of agents
    that file mail (Sieve, LMTP) without a file system."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def deliver(
        self,
        maildir: str,
        prefix: bytes,
        message: IMessageContent,
        mark: Callable[[], None] | None = None,
        *,
        folder: str = INBOX,
        flags: Collection[str] = (),
        create: bool = False,
    ) -> Deferred[str]:
        try:
            mailbox = self._store.open_user(maildir, maildir)
            name = normalize(folder)
            try:
                target = mailbox.folder(name)
            except NoSuchFolder:
                if not create:
                    raise
                target = mailbox.create_folder(name)
            assert isinstance(target, MemoryFolder)
            content = prefix + read_all(message)
            system, keywords = split_flags(flags)
            when = self._store.clock.seconds()
            info = target._add(content, system, keywords, when, not (system or keywords))
            target._notify("append", [info.uid])
        except Exception:
            return fail()
        if mark is not None:
            with contextlib.suppress(OSError):
                mark()
        return succeed(f"{maildir}#{target.name}/{info.uid}")
