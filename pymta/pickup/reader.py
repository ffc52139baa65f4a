"""Open, check and read one maildrop file (runs in a pool thread).

Mirrors the checks of Postfix's pickup.c before it copies a file to
cleanup: the file is opened with O_NOFOLLOW and O_NONBLOCK (a symbolic
link or a FIFO planted in maildrop cannot make pickup read elsewhere or
hang), must be a regular file with one link (a hard link to someone
else's file is refused), and no larger than message_size_limit allows.
The submitting user is the file's owner as the kernel reports it
(fstat), never anything written in the file; that uid's login name is
checked against authorized_submit_users here — the check that counts.

:func:`read_file` returns a :class:`Good` file, a :class:`Bad` one (with
the reason pickup logs when it moves the file to corrupt/), an
:class:`Unauthorized` one, an :class:`Unreadable` one (pickup is not
allowed to open it: left in place), ``None`` when the file is gone, or raises
AuthorizationUnavailable (try later). Untrusted input: the file, its name
and its metadata. Writes and logs nothing.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from pymta.sendmail.authorized import TableOpener, is_authorized, login_name
from pymta.sendmail.record import MaildropFileError, MaildropMessage, decode

#: Room for the envelope records beyond the content's size limit.
ENVELOPE_ALLOWANCE = 1024 * 1024


@dataclass
class Good:
    uid: int
    login: str
    message: MaildropMessage


@dataclass
class Bad:
    uid: int | None
    reason: str


@dataclass
class Unreadable:
    """pickup may not open the file (it runs as a user who is not root):
    the file stays where it is."""

    reason: str


@dataclass
class Unauthorized:
    uid: int
    login: str


def read_file(
    path: str,
    size_limit: int,
    authorized_entries: list[str],
    open_table: TableOpener | None = None,
) -> Good | Bad | Unauthorized | Unreadable | None:
    """Check and read one maildrop file (see the module docstring)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except PermissionError as e:
        return Unreadable(e.strerror or "Permission denied")
    except OSError as e:
        # ELOOP: a symbolic link; anything else we cannot open is bad too.
        if os.path.islink(path):
            return Bad(None, "symbolic link")
        return Bad(None, f"cannot open: {e.strerror}")
    try:
        st = os.fstat(fd)
        uid = st.st_uid
        if not stat.S_ISREG(st.st_mode):
            return Bad(uid, "not a regular file")
        if st.st_nlink != 1:
            return Bad(uid, f"file has {st.st_nlink} links")
        if size_limit and st.st_size > size_limit + ENVELOPE_ALLOWANCE:
            return Bad(uid, f"file too big ({st.st_size} bytes)")
        chunks: list[bytes] = []
        remaining = st.st_size + 1  # read one byte past: a growing file is bad
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        return Bad(uid, "file changed while read")
    try:
        message = decode(data)
    except MaildropFileError as e:
        return Bad(uid, str(e))
    if size_limit and len(message.content) > size_limit:
        return Bad(uid, f"message too big ({len(message.content)} bytes > message_size_limit)")
    login = login_name(uid)
    if not is_authorized(login, authorized_entries, open_table):
        return Unauthorized(uid, login)
    return Good(uid, login, message)
