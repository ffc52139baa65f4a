"""maildirsize: the Maildir++ quota file, kept as Dovecot's quota driver
``maildir`` keeps it.

Dovecot (``quota = maildir``), Courier, maildrop and Exim read and write
``maildirsize`` in the root of a Maildir++ mailbox: a first line with the
limits, ``<bytes>S,<messages>C`` (``0S`` when there is none; a limit of
0 is left out, as Dovecot writes it), then lines ``<bytes> <messages>``
whose sums are the usage: the first written when the usage was counted,
each later one a change (``-2048 -1`` for an expunge), appended with
``O_APPEND``. A reader counts again (and the file is written anew, to a
temporary file renamed over it) when it is missing, damaged (a NUL byte,
a line that is not two numbers, a negative sum), 5120 bytes or longer,
its limits are not the configured ones, or it says the mailbox is over
quota while it holds more than one change or is older than 15 minutes.

pymta's usage is counted from the files (:mod:`pymta.quota.usage`); each
time it is counted for a user with a quota (before a delivery, an APPEND,
a GETQUOTA), :func:`sync` makes ``maildirsize`` say the same: nothing
when it does, else one change line with the difference, or the whole
file anew under the rules above. After a delivery, :func:`add` appends
the delivery's own change line without counting again. So a site moving from Dovecot to pymta, or
back, keeps its quota usage: Dovecot reading the file gets pymta's count.
The file is only written, never believed: pymta's own checks use the
count.

Blocking file I/O: callers run it off the reactor. Untrusted input: the
file (anyone with shell access can write it; parsed with bounds, a bad
one is replaced). Writes ``maildirsize`` (owned like the Maildir when run
as root). Logs nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from pymta.quota.rules import QuotaLimit

FILENAME = "maildirsize"
#: A file this long or longer is counted again and written anew (Dovecot
#: reads at most this much).
MAX_SIZE = 5120
#: An over-quota file older than this is not trusted (Dovecot's
#: MAILDIRSIZE_STALE_SECS).
STALE_SECONDS = 15 * 60


@dataclass(frozen=True)
class MaildirSize:
    """What a ``maildirsize`` file says."""

    storage: int  # the bytes limit, 0: none
    messages: int  # the messages limit, 0: none
    used_bytes: int
    used_messages: int
    changes: int  # lines after the first usage line
    length: int  # bytes in the file


def header(limit: QuotaLimit) -> bytes:
    """The limits line as Dovecot writes it: ``1073741824S``,
    ``1073741824S,1000C``, ``1000C``, or ``0S`` without limits."""
    storage, messages = limit.storage or 0, limit.messages or 0
    parts = []
    if storage or not messages:
        parts.append(b"%dS" % storage)
    if messages:
        parts.append(b"%dC" % messages)
    return b",".join(parts)


def _limits(line: bytes) -> tuple[int, int] | None:
    storage = messages = 0
    for item in line.split(b","):
        number, unit = item[:-1], item[-1:]
        if not number.isdigit() or unit not in (b"S", b"C"):
            return None
        if unit == b"S":
            storage = int(number)
        else:
            messages = int(number)
    return storage, messages


def parse(data: bytes) -> MaildirSize | None:
    """The file's limits and sums; None when it is damaged or too long to
    be believed (Dovecot counts again then)."""
    if len(data) >= MAX_SIZE or b"\0" in data:
        return None
    # A last line without its LF is being written: left out.
    end = data.rfind(b"\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\n")
    limits = _limits(lines[0])
    if limits is None:
        return None
    used_bytes = used_messages = 0
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != 2:
            return None
        try:
            used_bytes += int(fields[0])
            used_messages += int(fields[1])
        except ValueError:
            return None
    if used_bytes < 0 or used_messages < 0 or len(lines) < 2:
        return None
    return MaildirSize(*limits, used_bytes, used_messages, len(lines) - 2, len(data))


def _trusted(found: MaildirSize, limit: QuotaLimit, mtime: float, now: float) -> bool:
    """Whether a reader keeps the file rather than counting again."""
    if (found.storage, found.messages) != (limit.storage or 0, limit.messages or 0):
        return False
    over = (found.storage and found.used_bytes > found.storage) or (
        found.messages and found.used_messages > found.messages
    )
    return not over or (found.changes == 0 and mtime >= now - STALE_SECONDS)


def sync(maildir: str, limit: QuotaLimit, used_bytes: int, used_messages: int) -> None:
    """Make ``maildir``/maildirsize say ``limit`` and this usage: a change
    line appended when the file is otherwise good, else the file anew.
    Errors are ignored (the file is a courtesy to other programs; the next
    count tries again)."""
    path = os.path.join(maildir, FILENAME)
    try:
        found = _believed(path, limit)
    except FileNotFoundError:
        found = None
    except OSError:
        return
    with contextlib.suppress(OSError):
        if found is not None:
            more_bytes = used_bytes - found.used_bytes
            more_messages = used_messages - found.used_messages
            if not more_bytes and not more_messages:
                return
            if _append(path, found, more_bytes, more_messages):
                return
        write(maildir, limit, used_bytes, used_messages)


def add(maildir: str, limit: QuotaLimit, more_bytes: int, more_messages: int) -> bool:
    """Append one change line (a delivery's ``2048 1``) to a good file, as
    Dovecot does at each save, without counting the mailbox. False when
    the file is missing, damaged, stale or full (or cannot be written):
    the caller counts then, and :func:`sync` writes it anew."""
    path = os.path.join(maildir, FILENAME)
    try:
        found = _believed(path, limit)
        return found is not None and _append(path, found, more_bytes, more_messages)
    except OSError:
        return False


def _believed(path: str, limit: QuotaLimit) -> MaildirSize | None:
    """The file at ``path`` when it is good and trusted for ``limit``, else
    None; OSError (FileNotFoundError when there is none)."""
    with open(path, "rb") as f:
        data = f.read(MAX_SIZE + 1)
        mtime = os.fstat(f.fileno()).st_mtime
    found = parse(data) if data else None
    if found is None or not _trusted(found, limit, mtime, time.time()):
        return None
    return found


def _append(path: str, found: MaildirSize, more_bytes: int, more_messages: int) -> bool:
    """One change line appended (O_APPEND) when the file stays under
    MAX_SIZE; False when it would not (it is written anew then)."""
    change = b"%d %d\n" % (more_bytes, more_messages)
    if found.length + len(change) >= MAX_SIZE:
        return False
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, change)
    finally:
        os.close(fd)
    return True


def write(maildir: str, limit: QuotaLimit, used_bytes: int, used_messages: int) -> None:
    """Write the file anew (a temporary file renamed over it): the limits
    line and one usage line. OSError when it cannot be written."""
    path = os.path.join(maildir, FILENAME)
    temp = f"{path}.{os.getpid()}.tmp"
    text = header(limit) + b"\n%d %d\n" % (used_bytes, used_messages)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text)
        if os.geteuid() == 0:
            # Dovecot runs as the mail user: the file must stay theirs.
            owner = os.stat(maildir)
            os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.close(fd)
    try:
        os.rename(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
