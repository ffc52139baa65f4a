"""mbox: append one message to a UNIX mbox file under fcntl and dot locks.

Mirrors Postfix's mail_copy() in mailbox mode with deliver_flock/dot_lockfile:
a ``From sender date`` line, ``>From `` quoting of body lines that start
with ``From ``, a blank line after the message, both locks named by the
``*_mailbox_lock`` parameter (``fcntl``, ``flock``, ``dotlock``). A lock held
by someone else is not waited for: the caller defers with ``4.2.0 mailbox
busy`` and the queue manager retries later. A write error truncates the file
back to its old size so that a half-written message never stays behind.
The append is durable (through the group-commit barrier) before the locks
are released and before the Deferred fires.

Untrusted input: the message content (quoted, never interpreted). May write:
the mbox file (created 0600, missing parent directories 0700) and
``<mbox>.lock``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Sequence

from twisted.internet.defer import Deferred

from pymta.delivery.durable import barrier_sync
from pymta.queue.interface import ISyncBarrier

# Postfix's stale_lock_time: a dotlock older than this is removed.
STALE_LOCK_TIME = 500.0


class MailboxBusy(Exception):
    """Another process holds a lock on the mailbox."""


class MailboxLimit(Exception):
    """Appending would exceed the mailbox size limit."""


def from_line(sender: str, now: float) -> bytes:
    """The mbox separator: ``From sender Www Mmm dd hh:mm:ss yyyy`` (UTC)."""
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(now))
    return f"From {sender or 'MAILER-DAEMON'}  {stamp}\n".encode()


def quote_from(content: bytes) -> bytes:
    """``>From `` quoting of every line that starts with ``From ``."""
    if content.startswith(b"From "):
        content = b">" + content
    return content.replace(b"\nFrom ", b"\n>From ")


def mbox_record(sender: str, now: float, headers: bytes, content: bytes) -> bytes:
    """The bytes appended for one message: separator, headers, quoted content, blank line."""
    body = quote_from(headers + content)
    if not body.endswith(b"\n"):
        body += b"\n"
    return from_line(sender, now) + body + b"\n"


def _dotlock(path: str, now: float) -> str:
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            age = now - os.stat(lock).st_mtime
        except FileNotFoundError:
            age = STALE_LOCK_TIME + 1
        if age <= STALE_LOCK_TIME:
            raise MailboxBusy(f"{lock} exists") from None
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise MailboxBusy(f"{lock} exists") from None
    os.close(fd)
    return lock


def append(
    path: str,
    record: bytes,
    sync: ISyncBarrier,
    now: float,
    locks: Sequence[str] = ("fcntl", "dotlock"),
    size_limit: int = 0,
) -> Deferred[None]:
    """Append ``record`` to the mbox at ``path`` under ``locks``; fires once durable.

    Raises MailboxBusy, MailboxLimit or OSError synchronously when the append
    cannot start; errbacks with OSError when the sync fails.
    """
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        # virtual(8) creates missing parent directories of a mailbox file.
        os.makedirs(parent, mode=0o700, exist_ok=True)
    dotlock = _dotlock(path, now) if "dotlock" in locks else None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        if dotlock:
            _unlink(dotlock)
        raise
    try:
        if "fcntl" in locks:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    raise MailboxBusy(f"{path} is locked") from None
                raise
        if "flock" in locks:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MailboxBusy(f"{path} is locked") from None
        start = os.fstat(fd).st_size
        if size_limit and start + len(record) > size_limit:
            raise MailboxLimit(f"{path}: mailbox size limit {size_limit} exceeded")
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.ftruncate(fd, start)
            raise
    except BaseException:
        os.close(fd)
        if dotlock:
            _unlink(dotlock)
        raise

    def release(result: object) -> object:
        os.close(fd)  # also drops the fcntl/flock locks
        if dotlock:
            _unlink(dotlock)
        return result

    def truncate(failure: object) -> object:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        return failure

    d = barrier_sync(sync, (path,), (os.path.dirname(path) or ".",))
    d.addErrback(truncate)
    d.addBoth(release)
    return d


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
