"""The mail store contract: users' mailboxes, folders, messages and UIDs.

Mirrors Dovecot's mail storage as POP3 and IMAP (RFC 3501, RFC 9051,
RFC 7162 CONDSTORE/QRESYNC, RFC 4315 UIDPLUS, RFC 6154 SPECIAL-USE) need it.
Two implementations: :class:`pymta.mailstore.maildir.MaildirStore` (Maildir++
on disk, shared with Postfix/Dovecot/mutt) and
:class:`pymta.mailstore.memory.MemoryStore` (tests); one contract test runs
against both.

Names and values at this seam:

- Folder names are Unicode ``str``; the hierarchy separator is
  :data:`SEPARATOR` (``/``). ``INBOX`` (any case) is the inbox. The IMAP layer
  converts to and from modified UTF-7 on the wire; the Maildir store writes
  mUTF-7 directory names on disk (Dovecot's default), so the two never mix.
- Flags are IMAP names: system flags (:data:`SYSTEM_FLAGS`, ``\\Seen``...) in
  ``MessageInfo.flags``, keywords (``$Forwarded``, ``NonJunk``...) in
  ``MessageInfo.keywords``. Calls that take flags take both mixed together.
- UIDs never change and are never reused within one UIDVALIDITY.
- Every change (append, flag change, expunge) raises the folder's
  HIGHESTMODSEQ (RFC 7162) and is told to the folder's listeners.

Folder objects are shared: within one store, ``folder(name)`` returns the
same object to every session, so a change made through one session reaches
the listeners of all. Sessions keep their own view (sequence numbers) on top.

Calls are synchronous and may block on the local disk for a short time (a
few file operations; see each implementation's docstring for the costs).
Servers use ``store.asynchronous()``: the same contract with Deferred
results (:mod:`pymta.mailstore.asyncstore`), each store running its calls
as it must (the Maildir store in its own threads, one folder's calls in
order; the memory store at once). POP3 and IMAP's message commands go
through it, SEARCH, the updating searches and NOTIFY included (the
Maildir store fills its header cache and scans message files in its own
threads: :mod:`pymta.mailstore.prefetch`, :mod:`pymta.mailstore.filescan`).
SORT and THREAD still read the header cache through the synchronous
folder and :class:`IHeaderCache`. Delivery agents file mail through
:class:`IMailDelivery`.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from pymta.queue.reference import IMessageContent

SEPARATOR = "/"

SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

# RFC 6154 special-use attributes, and the folders created for a new user.
SPECIAL_USE = ("\\Drafts", "\\Sent", "\\Trash", "\\Junk", "\\Archive")
DEFAULT_FOLDERS: tuple[tuple[str, str], ...] = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


class MailStoreError(Exception):
    """A store operation failed (I/O error, corrupt state that cannot be repaired)."""


#: The errors of a write that the store's state, not a bug, explains: a
#: file system that is read-only, full, over quota, or not ours to write.
WRITE_ERRNOS = frozenset((errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM))


class StoreNotWritable(MailStoreError):
    """A write to the store failed because the store cannot be written now
    (``errno`` is one of :data:`WRITE_ERRNOS`): reading still works, and a
    client gets a code that says why (IMAP ``[OVERQUOTA]`` for a full file
    system or quota, RFC 5530; ``[NOPERM]`` for a read-only one, as
    Dovecot answers), never an internal error."""

    def __init__(self, error: int, text: str) -> None:
        super().__init__(text)
        self.errno = error

    @property
    def full(self) -> bool:
        """No space or over quota (ENOSPC, EDQUOT), rather than read-only."""
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


def not_writable(error: BaseException | None) -> StoreNotWritable | None:
    """``error`` as a StoreNotWritable when it is one, or an OSError of
    :data:`WRITE_ERRNOS`; None for anything else (a real fault)."""
    if isinstance(error, StoreNotWritable):
        return error
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        return StoreNotWritable(error.errno, str(error))
    return None


class NoSuchFolder(MailStoreError):
    """The folder does not exist."""


class FolderExists(MailStoreError):
    """CREATE or RENAME onto a folder that already exists."""


class InvalidFolderName(MailStoreError):
    """A folder name from a client is not acceptable (empty part, ``.``, ``..``,
    control characters, too long, the on-disk separator...)."""


class NoSuchMessage(MailStoreError):
    """The UID is not (or no longer) in the folder."""


class FlagMode(enum.Enum):
    """How set_flags combines the given flags with the message's (IMAP STORE
    FLAGS / +FLAGS / -FLAGS)."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class MessageInfo:
    """What the index knows of one message, without opening its file.

    ``size`` is the file's size as stored (LF line ends); ``rfc822_size`` the
    size with CRLF line ends, which POP3 LIST/STAT and IMAP RFC822.SIZE
    report (Dovecot's ``,S=`` and ``,W=``). ``internal_date`` is seconds since
    the epoch (IMAP INTERNALDATE; the file's mtime in Maildir), or None
    while the store has not read it yet (a Maildir folder's scan does not
    ``stat`` the files it finds, as Dovecot's does not): a caller that
    shows or compares dates asks for them first
    (:meth:`IFolder.fill_dates`, the asynchronous ``get_dated``). ``recent`` is
    true while the message is still in Maildir ``new/`` (no session has
    claimed it, IMAP ``\\Recent``). ``filename`` is the implementation's name
    for the stored message (``cur/1700000000.M1P2.host,S=10,W=12:2,S`` in
    Maildir), for logs and tools only.
    """

    uid: int
    size: int
    rfc822_size: int
    internal_date: float | None
    flags: frozenset[str]
    keywords: frozenset[str]
    modseq: int
    filename: str
    recent: bool = False

    @property
    def all_flags(self) -> frozenset[str]:
        """System flags and keywords together, as IMAP FETCH FLAGS shows them."""
        # Without keywords (most messages), the flags themselves: no new set
        # to build and hash for every message of a FETCH 1:* FLAGS.
        return self.flags | self.keywords if self.keywords else self.flags


def known_date(info: MessageInfo) -> float:
    """The internal date of a record whose date was asked for
    (:meth:`IFolder.fill_dates`): its value, or 0 (the epoch) for a
    message whose file was gone before its date could be read (expunged
    by another program meanwhile: the next scan removes it)."""
    date = info.internal_date
    return 0.0 if date is None else date


@dataclass(frozen=True)
class MimePart:
    """One MIME entity of a message, with byte offsets into the stored file,
    cached so that IMAP BODYSTRUCTURE and BODY[1.2] need no re-parse.

    Offsets are into the stored bytes (LF line ends): ``header_start`` to
    ``body_start`` is the header block (with its blank line), ``body_start``
    to ``end`` the body. ``rfc822_body_size`` and ``lines`` describe the body
    with CRLF line ends, as BODYSTRUCTURE reports them. ``params`` and
    ``disposition_params`` keep their order; names are lower case.
    ``parts`` are the children of a multipart, or the one encapsulated
    message of a message/rfc822 (whose own ``parts`` follow the same rule).
    """

    content_type: str  # lower case, e.g. "text"
    subtype: str  # lower case, e.g. "plain"
    params: tuple[tuple[str, str], ...]
    content_id: str | None
    description: str | None
    encoding: str  # lower case, "7bit" when absent
    disposition: str | None
    disposition_params: tuple[tuple[str, str], ...]
    language: str | None
    location: str | None
    md5: str | None
    header_start: int
    body_start: int
    end: int
    rfc822_body_size: int
    lines: int
    parts: tuple[MimePart, ...] = ()


@dataclass(frozen=True)
class FolderInfo:
    """One line of a folder listing (IMAP LIST): its name, its RFC 6154
    special-use attribute (or None), and whether it has child folders
    (RFC 3348 CHILDREN)."""

    name: str
    special_use: str | None = None
    has_children: bool = False


@dataclass(frozen=True)
class FolderChange:
    """What listeners hear: ``kind`` is ``append``, ``flags``, ``expunge`` or ``uidvalidity``
    (the folder was renumbered: sessions on it must end, RFC 3501 2.3.1.1);
    ``uids`` the messages concerned (ascending); ``modseq`` the folder's
    HIGHESTMODSEQ after the change."""

    kind: str
    uids: tuple[int, ...]
    modseq: int


@dataclass(frozen=True)
class FolderStatus:
    """IMAP STATUS items, computed from the index."""

    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highest_modseq: int
    size: int = 0  # sum of rfc822_size (RFC 8438 STATUS=SIZE)

    @classmethod
    def of(
        cls, records: Collection[MessageInfo], uidnext: int, uidvalidity: int, highest_modseq: int
    ) -> FolderStatus:
        """The status of a folder holding ``records``: one pass over them,
        no copy (a SELECT or STATUS of 100,000 messages asks for this;
        three sums over a copied list cost 2.5 times as much)."""
        recent = unseen = size = 0
        for m in records:
            if m.recent:
                recent += 1
            if "\\Seen" not in m.flags:
                unseen += 1
            size += m.rfc822_size
        return cls(len(records), recent, unseen, uidnext, uidvalidity, highest_modseq, size)


@dataclass(frozen=True)
class FolderSummary:
    """What SELECT and EXAMINE announce of a folder (RFC 3501 6.3.1,
    RFC 7162 3.1.2.1), without a record per message: the UIDs in
    ascending order, those still \\Recent, the place (from 1) of the
    first message without \\Seen (0: none), every keyword a message
    carries, the UIDs whose internal date is not known yet, and the
    folder's UIDNEXT, UIDVALIDITY and HIGHESTMODSEQ."""

    uids: Sequence[int]
    recent: Sequence[int]
    first_unseen: int
    keywords: frozenset[str]
    undated: Sequence[int]
    uidnext: int
    uidvalidity: int
    highest_modseq: int

    @classmethod
    def of(
        cls, records: Iterable[MessageInfo], uidnext: int, uidvalidity: int, highest_modseq: int
    ) -> FolderSummary:
        """The summary of a folder holding ``records`` (ascending UIDs)."""
        uids: list[int] = []
        recent: list[int] = []
        undated: list[int] = []
        keywords: set[str] = set()
        first_unseen = 0
        for n, m in enumerate(records, 1):
            uids.append(m.uid)
            if m.recent:
                recent.append(m.uid)
            if m.keywords:
                keywords |= m.keywords
            if not first_unseen and "\\Seen" not in m.flags:
                first_unseen = n
            if m.internal_date is None:
                undated.append(m.uid)
        return cls(
            uids,
            recent,
            first_unseen,
            frozenset(keywords),
            undated,
            uidnext,
            uidvalidity,
            highest_modseq,
        )


class ISummarized(Interface):
    """Optional for a folder: :class:`FolderSummary` made without a record
    per message (a Maildir folder's first scan makes none)."""

    def summary() -> FolderSummary:
        """The folder's summary, as the index says it now."""

    def records_made() -> bool:
        """False while the index holds messages whose records are not made
        yet (made by the first call that needs them, or :meth:`make_records`)."""

    def make_records() -> None:
        """Make the records not made yet (the store's threads: 100,000 in
        about 0.2 s)."""


class IFolderLock(Interface):
    """An exclusive hold on a folder (POP3 holds INBOX for a session)."""

    def release() -> None:
        """Give the lock up; harmless when called twice."""


class IFolder(Interface):
    """One folder: a list of messages numbered by UID."""

    name = Attribute("The folder's name (``INBOX`` or e.g. ``Archive/2024``).")
    uidvalidity = Attribute("int: UIDVALIDITY; changes only if the UIDs could not be kept.")
    uidnext = Attribute("int: the UID the next message will get (RFC 3501 UIDNEXT).")
    highest_modseq = Attribute("int: the folder's HIGHESTMODSEQ (RFC 7162).")
    writable = Attribute(
        "bool: False while the store is known to be read-only (a write or the "
        "index lock failed with EROFS, EACCES or EPERM): sessions may only read. "
        "A full store (ENOSPC) stays writable: expunges are how space comes back."
    )

    def refresh() -> list[MessageInfo]:
        """Bring the folder up to date with the disk: number messages that
        other writers put in ``new/`` or ``cur/``, and notice expunges and flag
        changes made by other processes. Returns the newly numbered messages
        (ascending UID). Listeners hear of every change found."""

    def rescan() -> None:
        """:meth:`refresh` without the list of new messages (SELECT reads
        every record afterwards anyway)."""

    def changed_on_disk() -> bool:
        """A cheap check (a few stat calls) whether another process may have
        changed the folder since the last refresh; True means call refresh()."""

    def messages() -> list[MessageInfo]:
        """Every message, in ascending UID order, from the index."""

    def get(uid: int) -> MessageInfo:
        """The message with this UID; NoSuchMessage when there is none."""

    def fill_dates(uids: Collection[int]) -> None:
        """Make the internal date of these messages known in the index
        (Maildir: one ``stat`` of each file whose date the scan that found
        it left unknown, kept in the index for every later reader); UIDs
        not present, or whose file is gone meanwhile, are skipped. May
        wait on the disk: the asynchronous API runs it in the store's
        threads, and only when a date is missing."""

    def status() -> FolderStatus:
        """Counts for IMAP STATUS / SELECT, from the index."""

    def read(uid: int) -> bytes:
        """The whole message as stored (LF line ends)."""

    def open(uid: int) -> BinaryIO:
        """The message as a binary file opened for reading (caller closes)."""

    def header_bytes(uid: int) -> bytes:
        """The message's header block, up to and including the blank line
        (LF line ends). Cached in the index after first use."""

    def mime_structure(uid: int) -> MimePart:
        """The message's MIME structure. Cached in the index after first use."""

    def set_flags(
        uid: int,
        flags: Collection[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> MessageInfo | None:
        """Change a message's flags and keywords; returns the message with its
        new flags and modseq. With ``unchanged_since`` (RFC 7162
        UNCHANGEDSINCE), changes nothing and returns None when the message's
        modseq is greater. When nothing changes the modseq stays. NoSuchMessage
        when the UID is gone. Unknown ``\\`` flags are ignored (\\Recent
        cannot be set)."""

    def set_flags_many(
        uids: Collection[int], flags: Collection[str], mode: FlagMode
    ) -> list[MessageInfo]:
        """set_flags for several messages at once, as one change (one lock,
        one index write, one modseq and one notice for all): POP3's \\Seen
        at QUIT, IMAP STORE on a range. UIDs that are not (or no longer)
        present are skipped. Returns the messages present, ascending by
        UID, with their flags after the change."""

    def append(
        content: bytes,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> int:
        """Store a new message (LF line ends; CRLF is converted) durably and
        return its UID. ``internal_date`` defaults to now (the store's clock)."""

    def expunge(uids: Collection[int] | None = None) -> list[int]:
        """Remove messages for good. With ``uids``, those of them that are
        present; without, every message flagged \\Deleted (IMAP EXPUNGE).
        Returns the UIDs removed, ascending."""

    def expunged_since(modseq: int) -> list[int]:
        """UIDs expunged after ``modseq`` (RFC 7162 QRESYNC VANISHED (EARLIER)).
        May return more than were expunged since then (never fewer) when
        older history was compacted away."""

    def copy(uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        """Copy messages (with flags, keywords and internal date) to another
        folder of the same store; returns (source UID, new UID) pairs in
        ascending source order (RFC 4315 COPYUID)."""

    def move(uids: Collection[int], target: IFolder) -> list[tuple[int, int]]:
        """As copy, then expunge the sources (RFC 6851 MOVE)."""

    def claim_recent(uids: Collection[int] | None = None) -> list[int]:
        """Mark every message still in ``new/`` as seen by a session (Maildir:
        rename into ``cur/``, as Dovecot does on SELECT and POP3 login) and
        return their UIDs: the caller is the one session that reports them
        as ``\\Recent``. With ``uids``, only those of them (the messages a
        POP3 session showed, claimed when it ends)."""

    def lock() -> IFolderLock | None:
        """Take the folder's exclusive session lock (across processes), or
        None when another session holds it (POP3 ``[IN-USE]``)."""

    def add_listener(callback: Callable[[FolderChange], None]) -> None:
        """Call ``callback`` after each change made through this store (any
        session in this process) or found by refresh(). IMAP IDLE and other
        sessions learn of changes this way without polling. A change made in
        a worker thread is told in the reactor thread (when the store's
        clock is a reactor that runs threads), so listeners may write."""

    def remove_listener(callback: Callable[[FolderChange], None]) -> None:
        """Stop calling ``callback``; harmless if it was not registered."""


class IHeaderCache(Interface):
    """Optional for an :class:`IFolder`: fill its header cache from header
    blocks read in a worker thread, so a command over many messages with
    uncached headers does not read every file in the reactor thread. The
    store's own (private to :mod:`pymta.mailstore`): servers ask the
    asynchronous API (``prefetch_headers``, ``headers``,
    ``headers_may_contain``, ``header_digests``)."""

    def uncached_headers(uids: Collection[int]) -> list[tuple[int, str]]:
        """``(uid, filename)`` of those messages whose header block is not
        cached (reactor thread; unknown UIDs are left out)."""

    def read_headers(wanted: Sequence[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
        """The header blocks of ``wanted``, keyed like it. Thread-safe: reads
        the message files only and changes no shared state; a file gone
        meanwhile (expunged, renamed) is left out."""

    def cache_headers(blocks: dict[tuple[int, str], bytes]) -> int:
        """Store header blocks that :meth:`read_headers` returned (reactor
        thread); those of messages expunged meanwhile are skipped. Returns
        how many were stored."""

    def headers_may_contain(needles: Collection[bytes], uids: Iterable[int]) -> set[int]:
        """Those of ``uids`` whose cached header block, lower-cased, holds
        one of ``needles`` (lower-case bytes), and those whose block is not
        cached: a header SEARCH need test no other message (reactor thread)."""


@dataclass(frozen=True)
class Staged:
    """A message written durably for a folder but not yet in it (see
    :class:`IStagedAppend`): ``path`` is the store's temporary file ("" for
    a store without files), ``content`` the bytes when the store keeps them
    in memory (else None)."""

    path: str
    content: bytes | None
    size: int
    rfc822_size: int
    internal_date: float
    flags: frozenset[str]
    keywords: frozenset[str]


class IStagedAppend(Interface):
    """Optional for an :class:`IFolder`: append in two steps, so the slow
    part (writing and fsyncing the file) runs in a worker thread and only
    the numbering runs in the reactor thread (or, when the store allows, in
    a worker thread too)."""

    commit_thread_safe = Attribute(
        "bool: commit_staged may run in a worker thread (it takes the folder's"
        " own locks, and listeners hear of the new message in the reactor"
        " thread). The server then numbers there too, so the index's fsync"
        " does not hold up the reactor."
    )

    def stage(
        content: bytes,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> Staged:
        """Write the message (CRLF converted to LF) durably where the folder
        can take it in cheaply. Thread-safe: touches no shared state. Raises
        :class:`MailStoreError` (or ``OSError``) when it cannot."""

    def commit_staged(staged: Staged) -> int:
        """Put a staged message into the folder and return its new UID
        (reactor thread, or any thread if :attr:`commit_thread_safe`; under
        the folder's locks; listeners are told as for
        :meth:`IFolder.append`). The staged file is gone afterwards, whether
        or not this succeeded. The UID is durable on return; the message's
        new place in the folder only after :meth:`sync_committed`."""

    def sync_committed() -> None:
        """Make what earlier :meth:`commit_staged` calls put into the folder
        durable (its directory entries). Thread-safe, may wait for the disk:
        the server confirms an APPEND only after it returned. Raises
        ``OSError`` when it cannot."""

    def discard_staged(staged: Staged) -> None:
        """Throw away a staged message that will not be committed (harmless
        if it is gone already)."""


class IWatchedFolder(Interface):
    """Optional for an :class:`IFolder`: other processes change it on disk
    (deliveries, another server), and the store can watch it for them
    (inotify, :mod:`pymta.mailstore.watchers`) so that IDLE needs no
    polling. A store whose every change goes through its own objects (the
    memory store) tells its listeners already and provides none."""

    def watch_directory() -> str:
        """The directory to watch, as the folder is placed now: its
        ``new/``, ``cur/`` and index changes mean refresh()."""


class IWatchedMailbox(Interface):
    """Optional for an :class:`IUserMailbox`: other processes create,
    delete and rename its folders and change its subscriptions on disk,
    and the store can say where to watch for that (IMAP NOTIFY's
    MailboxName and SubscriptionChange, :mod:`pymta.imap.notify`)."""

    def watch_directory() -> str:
        """The directory whose entries are the folders and the subscriptions."""

    def is_list_entry(entry: str) -> bool:
        """Whether a change of this entry of watch_directory() may change
        the folder list or the subscriptions."""


class IMailDelivery(Interface):
    """The mail store's delivery API: how delivery agents (virtual, local;
    LMTP and Sieve's ``fileinto``) file one queued message into a folder.
    :class:`pymta.mailstore.deliver.MaildirDelivery` (Maildir, durable
    through the group commit) and :class:`pymta.mailstore.memory.MemoryDelivery`
    (tests); one contract test runs against both."""

    def deliver(
        maildir: str,
        prefix: bytes,
        message: IMessageContent,
        mark: Callable[[], None] | None = None,
        *,
        folder: str = "INBOX",
        flags: Collection[str] = (),
        create: bool = False,
    ) -> Deferred[str]:
        """File ``prefix`` (delivery headers) followed by the queued
        ``message`` (:class:`pymta.queue.reference.IMessageContent`, read
        in blocks) into ``folder`` of the mailbox whose root is
        ``maildir``, with ``flags`` (system flags and keywords mixed, as
        APPEND takes them; none: the message is new, \\Recent). Fires with
        a name of the stored message (Maildir: its path) once it is
        durable, after ``mark`` (the queue file's done mark) ran; an
        OSError of ``mark`` is ignored. A missing folder is created only
        with ``create``; else the Deferred fails with NoSuchFolder (the
        caller may fall back to INBOX, as Sieve's implicit keep does).
        Errors (OSError: the agent defers, EDQUOT/ENOSPC as mailbox full)
        are errbacks, never raised."""


class IUserMailbox(Interface):
    """One user's folders."""

    user = Attribute("The user's name (as authenticated).")
    separator = Attribute("The hierarchy separator in folder names: ``/``.")
    root = Attribute(
        "The directory of the mailbox (its Maildir root), where the quota"
        " file lives; None for a store without files (memory)."
    )

    def list_folders() -> list[FolderInfo]:
        """Every folder, INBOX first, then by name."""

    def folder(name: str) -> IFolder:
        """The folder (shared by every session of this store); NoSuchFolder."""

    def create_folder(name: str, special_use: str | None = None) -> IFolder:
        """Create a folder (missing parents too, RFC 3501 CREATE);
        FolderExists, InvalidFolderName."""

    def delete_folder(name: str) -> None:
        """Delete a folder and its messages. Its children stay (RFC 3501
        DELETE). INBOX cannot be deleted (InvalidFolderName)."""

    def rename_folder(old: str, new: str) -> None:
        """Rename a folder and all its children (RFC 3501 RENAME); UIDs and
        UIDVALIDITY travel with it. Renaming INBOX moves its messages into
        the new folder and leaves INBOX empty."""

    def subscribe(name: str) -> None:
        """Add a name to the subscriptions (it need not exist, RFC 3501)."""

    def unsubscribe(name: str) -> None:
        """Remove a name from the subscriptions."""

    def subscriptions() -> list[str]:
        """The subscribed names, sorted."""

    def metadata() -> dict[str, dict[str, bytes]]:
        """The user's METADATA entries (RFC 5464), as a copy:
        ``entries[key][entry name] = value``, the key ``""`` for the
        server's entries, else the one the caller chose for a mailbox
        (IMAP: its MAILBOXID). The Maildir store reads its file again when
        another process changed it (:mod:`pymta.mailstore.metadata`)."""

    def set_metadata(key: str, changes: Mapping[str, bytes | None], max_entries: int) -> bool:
        """Set (a value) or remove (None) the entries ``changes`` under
        ``key``, durably before returning; False, and nothing changed,
        when the user would then hold more than ``max_entries`` entries."""


class IMailStore(Interface):
    """Opens users' mailboxes."""

    def open_user(user: str, path: str) -> IUserMailbox:
        """The mailbox of ``user`` whose Maildir root (INBOX) is ``path``.
        Creates it when missing. The special-use folders of
        :data:`DEFAULT_FOLDERS` are made, subscribed, on the first use of
        anything but INBOX (so a POP3-only user never gets them)."""

    def asynchronous() -> object:
        """The store's asynchronous API
        (:class:`pymta.mailstore.asyncstore.IAsyncMailStore`): the same
        calls with Deferred results, run as the store decides (the Maildir
        store in its threads, the memory store at once). One object per
        store."""


__all__: Sequence[str] = (
    "DEFAULT_FOLDERS",
    "SEPARATOR",
    "SPECIAL_USE",
    "SYSTEM_FLAGS",
    "WRITE_ERRNOS",
    "FlagMode",
    "FolderChange",
    "FolderExists",
    "FolderInfo",
    "FolderStatus",
    "IFolder",
    "IFolderLock",
    "IMailDelivery",
    "IMailStore",
    "IUserMailbox",
    "IWatchedFolder",
    "InvalidFolderName",
    "MailStoreError",
    "MessageInfo",
    "MimePart",
    "NoSuchFolder",
    "NoSuchMessage",
    "StoreNotWritable",
    "known_date",
    "not_writable",
)
