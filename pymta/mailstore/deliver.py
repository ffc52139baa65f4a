"""deliver: the mail store's delivery API - file one queued message into a
Maildir folder, durably, with flags and keywords.

The one way mail is filed into a Maildir, for every agent that files it
(Postfix's mail_copy() in Maildir mode for virtual(8) and local(8);
Dovecot's LDA and LMTP saving into a folder): :meth:`MaildirDelivery.deliver`
takes the Maildir root, the folder (``INBOX`` or e.g. ``Lists/pymta``, as
Sieve's ``fileinto`` names it), the flags and keywords (Sieve's
``imap4flags``), the delivery headers to put first and the queued message
by reference (:class:`pymta.queue.reference.IMessageContent`), and fires
with the path of the new file once it is durable.

How, and why in this order (:mod:`pymta.mailstore.save` writes the file):

1. On the group-commit barrier's thread (the reactor never waits on the
   disk): make the folder when missing (the root with ``cur/ new/ tmp/``;
   a folder below it only when ``create``, else :class:`NoSuchFolder`),
   give new keywords their ``dovecot-keywords`` letters under the folder's
   index lock, and write the headers into ``tmp/`` and copy the content
   after them (:func:`pymta.mailstore.save.write_delivery`: in the kernel
   from the queue file, with the line count the queue file carries; else
   in 64 KiB blocks, never whole in memory, counted as they pass).
2. The quota check (``quota_check``), the one place a quota is enforced:
   called with the folder's path and the message's size once it is
   written; an OSError it raises (EDQUOT: the agent defers with 4.2.2)
   refuses the message and removes the file.
3. The barrier's sync (one for the whole batch) makes the file durable.
4. The rename into ``new/`` (no flags) or ``cur/`` (``:2,`` letters),
   then ``mark`` - the queue file's done mark - on the same thread before
   the reactor hears of it: a process killed after the rename does not
   deliver again (Postfix's agents mark at the same point); one killed
   before it delivers again, never loses.

The folder's index learns of the message when a session next looks (the
file in ``new/``/``cur/`` is what counts, as for any other Maildir writer).
Untrusted input: none (the caller checked the path; folder names are
validated by :func:`pymta.mailstore.names.validate_folder_name`). May
write: the Maildir's folders, one file, ``dovecot-keywords``. Errors:
OSError, NoSuchFolder or InvalidFolderName errbacked to the caller, which
maps them to a status (a full disk defers, never bounces).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Collection

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymta.mailstore.files import make_folder_dir
from pymta.mailstore.index import LOCK_NAME
from pymta.mailstore.interface import FolderExists, IMailDelivery, NoSuchFolder
from pymta.mailstore.keywords import KeywordLetters
from pymta.mailstore.names import (
    INBOX,
    MaildirNames,
    flags_to_letters,
    folder_dirname,
    normalize,
    split_flags,
    validate_folder_name,
)
from pymta.mailstore.save import publish, published_name, unlink_quietly, write_delivery
from pymta.mailstore.tmpclean import TmpCleaner
from pymta.queue.reference import IMessageContent
from pymta.sync import ISyncBarrier, barrier_run

#: ``quota_check(folder_path, size)``: raise OSError to refuse a message.
QuotaCheck = Callable[[str, int], None]
#: Folder paths kept (one per mailbox and folder delivered to; the bound
#: only guards memory on a server with very many mailboxes).
_PATH_CACHE_LIMIT = 4096


@implementer(IMailDelivery)
class MaildirDelivery:
    """Files queued messages into Maildirs (:class:`IMailDelivery`); one instance serves every
    mailbox of the process (its names come from the process's one
    sequence). ``sync`` is the delivery side's group-commit barrier."""

    def __init__(
        self,
        sync: ISyncBarrier,
        clock: IReactorTime,
        hostname: str | None = None,
        pid: int | None = None,
        tmp_cleaner: TmpCleaner | None = None,
        quota_check: QuotaCheck | None = None,
        names: MaildirNames | None = None,
    ) -> None:
        self._sync = sync
        self._tmp_cleaner = tmp_cleaner or TmpCleaner(clock)
        self.names = names or MaildirNames(clock, hostname or socket.gethostname(), pid)
        self._quota_check = quota_check
        self._known: set[str] = set()
        # (maildir, folder) -> the folder's directory (see _folder_path)
        # and its tmp/
        self._paths: dict[tuple[str, str], tuple[str, str]] = {}

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
        """File ``prefix`` (delivery headers) and the queued ``message`` into
        ``folder`` of the Maildir whose root (INBOX) is ``maildir``; fire
        with the new file's path once durable and after ``mark`` ran (its
        OSError is ignored: the queue manager then marks). ``flags`` mixes
        system flags and keywords, as IMAP APPEND does; with any, the
        message goes to ``cur/`` (seen by no session, but not \\Recent, as
        Dovecot files it). A missing folder is made only when ``create``."""
        paths = self._paths.get((maildir, folder))
        if paths is None:
            try:
                folder_path = self._folder_path(maildir, folder)
            except Exception:
                return fail()
            # A pure function of the two names (no file is looked at): kept
            # for the next delivery, within a bound.
            if len(self._paths) >= _PATH_CACHE_LIMIT:
                self._paths.clear()
            paths = self._paths[(maildir, folder)] = (
                folder_path,
                os.path.join(folder_path, "tmp"),
            )
        path, tmp_dir = paths
        system, keywords = split_flags(flags)
        has_flags = bool(system or keywords)
        # What killed deliveries left in tmp/ goes, every few hours, in a
        # thread of its own (not in the sync batch this delivery waits for).
        self._tmp_cleaner.touched(path)
        base = self.names.base_name()
        tmp = tmp_dir + os.sep + base  # os.path.join: tmp_dir ends in "tmp"
        published: list[str] = []

        def write() -> None:
            self._ensure(maildir, path, create)
            letters = self._letters(path, system, keywords) if has_flags else None
            try:
                size, lines = write_delivery(tmp, prefix, message)
            except FileNotFoundError:
                # The Maildir vanished after we cached it: make it once more.
                self._known.discard(path)
                self._ensure(maildir, path, create)
                size, lines = write_delivery(tmp, prefix, message)
            if self._quota_check is not None:
                try:
                    self._quota_check(path, size)
                except BaseException:
                    unlink_quietly(tmp)
                    raise
            published.append(os.path.join(path, published_name(base, size, lines, letters)))

        def rename() -> None:
            publish(tmp, published[0])
            if mark is not None:
                try:
                    mark()
                except OSError:
                    pass  # the queue manager marks it, a moment later

        def failed_first_sync(failure: object) -> object:
            unlink_quietly(tmp)
            return failure

        # The rename runs on the barrier's thread right after the batch's
        # sync, before the Deferred fires, and the done mark right after it.
        d = barrier_run(self._sync, write, (tmp,), (tmp_dir,), after=rename)
        # One entry for both outcomes (the errback's failure passes on).
        d.addCallbacks(lambda _: published[0], failed_first_sync)
        return d  # type: ignore[return-value]

    @staticmethod
    def _folder_path(maildir: str, folder: str) -> str:
        folder = normalize(folder)
        if folder != INBOX:
            validate_folder_name(folder)
        # One spelling per folder (no trailing "/" from the maps' value), as
        # the store's folders name themselves: tmp/ cleaning keys on it.
        return os.path.normpath(os.path.join(maildir, folder_dirname(folder)))

    def _ensure(self, maildir: str, path: str, create: bool) -> None:
        """Make the root's cur/new/tmp (mode 0700) and, when ``create``,
        the folder; remembered, so a delivery costs no stat for it."""
        if path in self._known:
            return
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), mode=0o700, exist_ok=True)
        if path != os.path.normpath(maildir) and not os.path.isdir(os.path.join(path, "cur")):
            if not create:
                raise NoSuchFolder(path)
            root = os.path.normpath(maildir)
            # Maildir++ is flat (.A.B beside .A): the parents too, as CREATE.
            parts = os.path.basename(os.path.normpath(path))[1:].split(".")
            for end in range(1, len(parts) + 1):
                folder_dir = os.path.join(root, "." + ".".join(parts[:end]))
                if not os.path.isdir(os.path.join(folder_dir, "cur")):
                    with contextlib.suppress(FolderExists):  # another writer's
                        make_folder_dir(root, folder_dir)
        self._known.add(path)

    @staticmethod
    def _letters(path: str, system: frozenset[str], keywords: frozenset[str]) -> str:
        """The ``:2,`` letters; new keywords get theirs in dovecot-keywords
        under the folder's index lock, which the folder's own writers hold
        when they do the same."""
        letters = KeywordLetters(path)
        if keywords:
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                letters.assign(keywords)
            finally:
                os.close(fd)  # closing drops the flock
        return flags_to_letters(system, keywords, letters.letters)
