"""save: the one Maildir writer - a message into ``tmp/``, then into place.

Mirrors Dovecot's maildir-save.c and maildir(5): a message is written into
the folder's ``tmp/`` under a name no other writer uses (O_EXCL, mode
0600), made durable, and only then renamed into ``new/`` (no flags: a
message no session has seen) or ``cur/`` (with its ``:2,`` flag letters).
A crash leaves the message in place or a file in ``tmp/`` that
:mod:`pymta.mailstore.tmpclean` removes after 36 hours; never half a
message in ``new/`` or ``cur/``.

Every writer of the store goes through here, with one naming scheme
(:class:`pymta.mailstore.names.MaildirNames`, one sequence per process):

- deliveries (:mod:`pymta.mailstore.deliver`: the virtual and local
  agents, LMTP and Sieve) write the delivery headers and copy the queued
  content after them (:func:`write_delivery`: inside the kernel from the
  queue file, with the line count the queue file carries; in blocks
  otherwise), the group-commit barrier makes it durable, :func:`publish`
  renames it;
- IMAP APPEND (the folder's ``stage``) writes the client's bytes with
  :func:`write_tmp` and an fsync of its own, the folder numbers it;
- COPY links the source file to a :func:`tmp_path` of the target folder.

Thread-safe: every function touches only the paths it is given (callers
run them on a worker thread). Untrusted input: the message (copied, never
interpreted). May write: one file in ``tmp/`` and its rename. Logs
nothing; errors are OSError to the caller.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from pymta.fdio import write_all
from pymta.mailstore.names import MaildirNames, sized_name
from pymta.queue.reference import IMessageContent, blocks, copy_content


def tmp_path(folder_path: str, names: MaildirNames, size: int, rfc822_size: int) -> str:
    """A fresh ``tmp/`` path of the folder at ``folder_path``, with both
    sizes in its name (APPEND and COPY know them before writing)."""
    return os.path.join(folder_path, "tmp", sized_name(names.base_name(), size, rfc822_size))


def write_tmp(
    path: str, blocks: Iterable[bytes], fsync: bool, mtime: float | None = None
) -> tuple[int, int]:
    """Create ``path`` (O_EXCL, 0600), write ``blocks`` one after another
    (a message is never needed whole in memory), fsync it when ``fsync``
    and give it ``mtime`` (IMAP INTERNALDATE) when not None. Returns
    (bytes, line ends) written. On any failure nothing is left at ``path``
    (a full file system keeps no half message) and the OSError is raised."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            size = lines = 0
            for block in blocks:
                write_all(fd, block)
                size += len(block)
                lines += block.count(b"\n")
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
    except BaseException:
        unlink_quietly(path)
        raise
    return size, lines


def write_delivery(path: str, prefix: bytes, message: IMessageContent) -> tuple[int, int]:
    """Create ``path`` (O_EXCL, 0600) holding ``prefix`` (the delivery
    headers) and then the queued ``message``, not synced (the delivery's
    barrier syncs it); (bytes, line ends) as :func:`write_tmp`. When the
    queue file carries the content's line count, the content is copied
    without Python reading it (:func:`pymta.queue.reference.copy_content`);
    otherwise it is read in blocks and counted. On any failure nothing is
    left at ``path``."""
    if message.lines is None:
        return write_tmp(path, _with_prefix(prefix, message), fsync=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            write_all(fd, prefix)
            copied = copy_content(message, fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(path)
        raise
    return len(prefix) + copied, prefix.count(b"\n") + int(message.lines)


def _with_prefix(prefix: bytes, message: IMessageContent) -> Iterator[bytes]:
    yield prefix
    yield from blocks(message)


def published_name(base: str, size: int, lines: int, letters: str | None) -> str:
    """Where a message written as ``tmp/<base>`` goes: ``new/<base>,S=,W=``
    without flags (``letters`` None), ``cur/<base>,S=,W=:2,<letters>`` with
    them. ``W=`` counts each LF as CRLF, as POP3 and IMAP report sizes
    (stored mail has LF line ends)."""
    name = sized_name(base, size, size + lines)
    return f"new/{name}" if letters is None else f"cur/{name}:2,{letters}"


def publish(tmp: str, target: str) -> None:
    """Rename a written ``tmp/`` file into ``new/`` or ``cur/``; on failure
    the ``tmp/`` file goes too and the OSError is raised. maildir(5) and
    Postfix: the rename needs no sync of its own (the file's data was
    durable before it; a lost rename leaves a delivery to repeat)."""
    try:
        os.rename(tmp, target)
    except OSError:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
