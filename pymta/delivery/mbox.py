"""mbox: append one message to a UNIX mbox file under fcntl and dot locks.

Mirrors Postfix's mail_copy() in mailbox mode with deliver_flock/dot_lockfile:
a ``From sender date`` line, ``>From `` quoting of body lines that start
with ``From ``, a blank line after the message, both locks named by the
``*_mailbox_lock`` parameter (``fcntl``, ``flock``, ``dotlock``). A lock held
by someone else is not waited for: the caller defers with ``4.2.0 mailbox
busy`` and the queue manager retries later. A write error truncates the file
back to its old size so that a half-written message never stays behind.
The append is durable (through the group-commit barrier) before the locks
are released and before the Deferred fires. The whole append — locks,
copy of the queued content in blocks with ``>From `` quoting carried
across block ends, sync, release and the caller's done mark — runs on the
barrier's thread: the reactor never waits on the mailbox.

Untrusted input: the message content (quoted, never interpreted). May write:
the mbox file (created 0600, missing parent directories 0700) and
``<mbox>.lock``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pymta.fdio import write_all
from pymta.queue.reference import BLOCK_SIZE, IMessageContent
from pymta.sync import ISyncBarrier, barrier_run

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
    """The bytes appended for one message: separator, headers, quoted
    content, blank line (what append writes, at once)."""
    body = quote_from(headers + content)
    if not body.endswith(b"\n"):
        body += b"\n"
    return from_line(sender, now) + body + b"\n"


class FromQuoter:
    """quote_from over a message that arrives in blocks: the unfinished last
    line of a block waits for the next, so each piece quoted starts at a
    line start and the result equals quote_from of the whole."""

    def __init__(self) -> None:
        self._rest = b""
        self.last = b""  # the last byte passed on (for the final newline)

    def feed(self, block: bytes) -> bytes:
        data = self._rest + block if self._rest else block
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        if not cut:
            return b""
        self.last = b"\n"
        return quote_from(data[:cut])

    def end(self) -> bytes:
        out = quote_from(self._rest) if self._rest else b""
        self._rest = b""
        if out:
            self.last = out[-1:]
        return out


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
    sender: str,
    headers: bytes,
    message: IMessageContent,
    sync: ISyncBarrier,
    now: float,
    locks: Sequence[str] = ("fcntl", "dotlock"),
    size_limit: int = 0,
    mark: Callable[[], None] | None = None,
) -> Deferred[None]:
    """Append one message (``From`` line, ``headers``, the quoted content,
    a blank line) to the mbox at ``path`` under ``locks``; fires once
    durable and unlocked, after ``mark`` ran (its OSError is ignored).

    Errbacks with MailboxBusy, MailboxLimit or OSError (nothing of the
    message then stays in the file)."""
    held: dict[str, object] = {}

    def unlock() -> None:
        fd = held.pop("fd", None)
        if isinstance(fd, int):
            os.close(fd)  # also drops the fcntl/flock locks
        dotlock = held.pop("dotlock", None)
        if isinstance(dotlock, str):
            _unlink(dotlock)

    def write() -> None:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            # virtual(8) creates missing parent directories of a mailbox file.
            os.makedirs(parent, mode=0o700, exist_ok=True)
        if "dotlock" in locks:
            held["dotlock"] = _dotlock(path, now)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:
            unlock()
            raise
        held["fd"] = fd
        try:
            _lock(fd, path, locks)
            start = os.fstat(fd).st_size
            held["start"] = start
            try:
                _copy(fd, start, sender, headers, message, now, size_limit, path)
            except BaseException:
                os.ftruncate(fd, start)
                raise
        except BaseException:
            unlock()
            raise

    def release() -> None:
        unlock()
        if mark is not None:
            try:
                mark()
            except OSError:
                pass  # the queue manager marks it, a moment later

    def failed(failure: Failure) -> Failure:
        # The sync failed after a whole write: take the message back out.
        fd = held.get("fd")
        start = held.get("start")
        if isinstance(fd, int) and isinstance(start, int):
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
        unlock()
        return failure

    d = barrier_run(sync, write, (path,), (os.path.dirname(path) or ".",), after=release)
    return d.addErrback(failed)


def _lock(fd: int, path: str, locks: Sequence[str]) -> None:
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


def _copy(
    fd: int,
    start: int,
    sender: str,
    headers: bytes,
    message: IMessageContent,
    now: float,
    size_limit: int,
    path: str,
) -> None:
    written = 0

    def put(data: bytes) -> None:
        nonlocal written
        if not data:
            return
        written += len(data)
        if size_limit and start + written > size_limit:
            raise MailboxLimit(f"{path}: mailbox size limit {size_limit} exceeded")
        write_all(fd, data)

    quoter = FromQuoter()
    put(from_line(sender, now))
    put(quoter.feed(headers))
    reader = message.open()
    try:
        while True:
            block = reader.read(BLOCK_SIZE)
            if not block:
                break
            put(quoter.feed(block))
    finally:
        reader.close()
    put(quoter.end())
    # mbox_record's ending: the message ends in a newline, then a blank line.
    put(b"\n\n" if quoter.last != b"\n" else b"\n")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
