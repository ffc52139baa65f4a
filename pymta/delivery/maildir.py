"""maildir: write one message into a Maildir, durably (tmp, sync, rename, sync).

Mirrors Postfix's mail_copy() in Maildir mode (virtual(8), local(8)) and
the Maildir naming of D. J. Bernstein's maildir(5), with Dovecot's
``,S=<size>,W=<CRLF size>`` suffix so that Dovecot and pymta's mailstore
know both sizes without reading the file. The file is created in ``tmp/`` (O_EXCL, mode 0600), made
durable through the group-commit barrier and renamed into ``new/``; only
then does the returned Deferred fire, and only then may the recipient be
marked done (at-least-once). The message is copied from the queue file in
blocks on the barrier's thread (never whole in memory); the sizes, counted
as it goes, name the file in ``new/``. The caller's ``mark`` (the queue
file's done mark) runs on that thread right after the rename, before the
reactor hears of it: a process crash after the rename does not deliver
the message again (Postfix's agents mark at the same point).

Untrusted input: none here; the caller has validated the path. May write:
``<maildir>/{cur,new,tmp}`` (created 0700 when missing) and one file; files
killed deliveries left in ``tmp/`` over 36 hours ago are removed
(:mod:`pymta.mailstore.tmpclean`, in a thread, every few hours).
Errors are OSError raised or errbacked to the caller, which maps them to a
deferral.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from pymta.delivery.durable import barrier_run
from pymta.mailstore.tmpclean import TmpCleaner
from pymta.queue.interface import ISyncBarrier
from pymta.queue.reference import BLOCK_SIZE, IMessageContent


def _safe_hostname(hostname: str) -> str:
    # maildir(5): "/" and ":" cannot appear in the host part of a name.
    return hostname.replace("/", "\\057").replace(":", "\\072")


class MaildirWriter:
    """Delivers bytes into Maildirs; one instance serves every mailbox."""

    def __init__(
        self,
        sync: ISyncBarrier,
        clock: IReactorTime,
        hostname: str | None = None,
        pid: int | None = None,
        tmp_cleaner: TmpCleaner | None = None,
    ) -> None:
        self._sync = sync
        self._tmp_cleaner = tmp_cleaner or TmpCleaner(clock)
        self._clock = clock
        self._hostname = _safe_hostname(hostname or socket.gethostname())
        self._pid = os.getpid() if pid is None else pid
        self._counter = 0
        self._known: set[str] = set()

    def base_name(self) -> str:
        """``<secs>.M<usecs>P<pid>Q<n>.<host>``: unique per process."""
        now = self._clock.seconds()
        secs = int(now)
        usecs = int((now - secs) * 1_000_000)
        self._counter += 1
        return f"{secs}.M{usecs}P{self._pid}Q{self._counter}.{self._hostname}"

    def unique_name(self, size: int, wire_size: int | None = None) -> str:
        """``<base name>,S=<size>[,W=<wire size>]``. ``W=`` is Dovecot's size
        with CRLF line ends, which POP3 and IMAP report; with it the mail
        store need not read the file."""
        return _sized(self.base_name(), size, wire_size)

    def ensure(self, maildir: str) -> None:
        """Create ``maildir`` and its cur/new/tmp (mode 0700) when missing."""
        if maildir in self._known:
            return
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), mode=0o700, exist_ok=True)
        self._known.add(maildir)

    def deliver(
        self,
        maildir: str,
        prefix: bytes,
        message: IMessageContent,
        mark: Callable[[], None] | None = None,
        flags: str = "",
    ) -> Deferred[str]:
        """Write ``prefix`` (delivery headers) and the queued ``message``
        into ``maildir``; fires with the path in new/ once durable, after
        ``mark`` ran (its OSError is ignored: the caller then marks).
        With ``flags`` (Maildir letters, e.g. ``FS`` from Sieve's
        imap4flags) the file goes to cur/ named ``...:2,FS`` instead, as
        Dovecot's LDA saves a message with flags.

        The file-system work runs on the barrier's thread when it has one
        (``run``), in the same batch as the sync that covers it, so the
        reactor never waits on the disk.
        """
        # What killed deliveries left in tmp/ goes, every few hours, in a
        # thread of its own (not in the sync batch this delivery waits for).
        self._tmp_cleaner.touched(maildir)
        base = self.base_name()
        tmp_dir = os.path.join(maildir, "tmp")
        new_dir = os.path.join(maildir, "cur" if flags else "new")
        suffix = ":2," + "".join(sorted(set(flags))) if flags else ""
        tmp_path = os.path.join(tmp_dir, base)
        published: list[str] = []

        def write_tmp() -> None:
            self.ensure(maildir)
            try:
                fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                # The Maildir vanished after we cached it: recreate once.
                self._known.discard(maildir)
                self.ensure(maildir)
                fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                size, lines = _copy(fd, prefix, message)
            except OSError:
                os.close(fd)
                _unlink_quietly(tmp_path)
                raise
            os.close(fd)
            published.append(os.path.join(new_dir, _sized(base, size, size + lines) + suffix))

        def rename() -> None:
            try:
                os.rename(tmp_path, published[0])
            except OSError:
                _unlink_quietly(tmp_path)
                raise
            if mark is not None:
                try:
                    mark()
                except OSError:
                    pass  # the queue manager marks it, a moment later

        def failed_first_sync(failure: object) -> object:
            _unlink_quietly(tmp_path)
            return failure

        # maildir(5) and Postfix: the rename needs no sync of its own. It runs
        # on the barrier's thread right after the batch's sync, before the
        # Deferred fires, and the done mark right after it: a crash leaves
        # the message delivered and marked, or still queued (delivered
        # again), never lost.
        d = barrier_run(self._sync, write_tmp, (tmp_path,), (tmp_dir,), after=rename)
        d.addErrback(failed_first_sync)
        d.addCallback(lambda _: published[0])
        return d  # type: ignore[return-value]


def _sized(base: str, size: int, wire_size: int | None) -> str:
    name = f"{base},S={size}"
    return name if wire_size is None else f"{name},W={wire_size}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(fd: int, prefix: bytes, message: IMessageContent) -> tuple[int, int]:
    """Write prefix and the message's content to fd in blocks; (bytes, lines)."""
    _write_all(fd, prefix)
    size, lines = len(prefix), prefix.count(b"\n")
    reader = message.open()
    try:
        while True:
            block = reader.read(BLOCK_SIZE)
            if not block:
                break
            _write_all(fd, block)
            size += len(block)
            lines += block.count(b"\n")
    finally:
        reader.close()
    return size, lines


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
