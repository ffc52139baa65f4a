"""digestwork: what a worker process runs for :mod:`pymta.mailstore.digests`.

A folder's message files read for their header block
(:class:`HeaderReader`: one ``os.read`` of :data:`FIRST_READ` bytes for
most, relative to the folder's directory opened once per batch, their
access times left alone), each
block given to the caller's :class:`HeaderDigest`, the values packed by
:mod:`marshal` with their line of the kept file (:func:`digest_files`,
:func:`digest_files_packed`). It runs in the scan worker processes and
in the store's threads alike.

The same processes read the INTERNALDATEs a first scan left unknown
(:func:`mtimes`, for :mod:`pymta.mailstore.datefill`).

It imports nothing of Twisted or zope.interface (nor any module that
does): a scan worker process, started on the first SORT or body SEARCH,
imports it and the caller's digest, and is ready in about half the CPU
time it took with them.

Untrusted input: the message files (read only up to their blank line,
symbolic links and non-regular files refused). Writes nothing; logs
nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import marshal
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymta.mailstore.headerblock import MESSAGE_OPEN_FLAGS, header_block

#: The first read of a message file: most headers fit (one system call).
FIRST_READ = 8192

#: Header reads leave the files' access times alone: the first read of a
#: file written since it was last read would otherwise write its inode
#: (relatime), a third of the cost of reading a fresh folder's headers
#: (8.0 against 5.5 us a file here). A Maildir's access times mean
#: nothing to its readers (new mail is what is in new/), and a sort's
#: look at the header is not the user reading the message. Cleared for
#: the process once the kernel refuses it (a process that neither owns
#: the files nor is root).
_no_atime = getattr(os, "O_NOATIME", 0)


class HeaderDigest(Protocol):
    """What the caller computes from each header, and how it is kept."""

    #: The kept file's name in the folder's directory ("" keeps nothing).
    name: str
    #: The kept file's first line starts with it (format and version).
    magic: bytes

    def __call__(self, header: bytes, internal_date: float) -> Any:
        """The value of one message (pure: runs in a worker process; of
        built-in types only, tuples, strings, numbers, None, as
        :mod:`marshal` packs them)."""

    def decode(self, item: Any) -> tuple[int, Any] | None:
        """(uid, value) of one JSON item read back; None if it is not one."""


@dataclass(frozen=True)
class HeaderReader:
    """Reads the header block of a folder's message files by index name, in
    any thread or process (it holds only the folder's path: picklable)."""

    path: str

    def __call__(self, filename: str, dir_fd: int | None = None) -> bytes | None:
        """The header block of ``filename`` (relative to ``dir_fd``, the
        folder's directory opened, when given), or None when it cannot be
        read. One ``os.read`` for most: a file shorter than
        :data:`FIRST_READ`, or whose blank line is in its first
        :data:`FIRST_READ` bytes, needs no more. An empty read is taken
        only from a regular file (a FIFO, opened O_NONBLOCK, reads empty
        or fails at once), and a longer header is read on only from one
        (an endless device would never end)."""
        global _no_atime
        path = f"{self.path}/{filename}" if dir_fd is None else filename
        try:
            try:
                fd = os.open(path, MESSAGE_OPEN_FLAGS | _no_atime, dir_fd=dir_fd)
            except PermissionError as e:
                if not _no_atime or e.errno != errno.EPERM:
                    raise
                # O_NOATIME is for the file's owner (or root) only: this
                # process is neither, so it reads as any reader does.
                _no_atime = 0
                fd = os.open(path, MESSAGE_OPEN_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            data = os.read(fd, FIRST_READ)
            if not data and not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a FIFO, not an empty message
            if len(data) == FIRST_READ and b"\n\n" not in data and b"\r\n\r\n" not in data:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                # A long header: read on to its blank line (or the end).
                while chunk := os.read(fd, 65536):
                    seen = len(data) - 3
                    data += chunk
                    if data.find(b"\n\n", seen) >= 0 or data.find(b"\r\n\r\n", seen) >= 0:
                        break
            return header_block(data)
        except OSError:
            return None
        finally:
            os.close(fd)


def digest_files(
    reader: HeaderReader,
    digest: HeaderDigest,
    batch: Sequence[tuple[int, str, float]],
) -> tuple[list[tuple[int, Any]], bytes, list[tuple[int, str, bytes]]]:
    """(Thread) the values of (uid, filename, INTERNALDATE) of ``batch``
    read from their files (one whose file could not be read is left out),
    their line of the kept file, and the header blocks read, as (uid,
    filename, block), for the store's header cache."""
    values: list[tuple[int, Any]] = []
    blocks: list[tuple[int, str, bytes]] = []
    try:
        # The folder's directory opened once: each file is then looked up
        # in it alone, not along the whole path.
        directory = os.open(reader.path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return values, b"", blocks  # the folder is gone (renamed, deleted)
    try:
        for uid, filename, date in batch:
            header = reader(filename, directory)
            if header is not None:
                values.append((uid, digest(header, date)))
                blocks.append((uid, filename, header))
    finally:
        os.close(directory)
    return values, (kept_line(digest, values) if digest.name and values else b""), blocks


def digest_files_packed(
    reader: HeaderReader,
    digest: HeaderDigest,
    batch: Sequence[tuple[int, str, float]],
) -> tuple[bytes, bytes]:
    """(Worker process) :func:`digest_files` with the values and header
    blocks packed by :mod:`marshal` (a tenth of pickle's time for tuples of
    strings and numbers; the line of the kept file is encoded here, not
    in the server). Unpack with :func:`unpacked`."""
    values, line, blocks = digest_files(reader, digest, batch)
    return marshal.dumps((values, blocks)), line


def unpacked(
    result: tuple[bytes, bytes],
) -> tuple[list[tuple[int, Any]], bytes, list[tuple[int, str, bytes]]]:
    """The values, line and header blocks of :func:`digest_files_packed`'s
    result (made by this program's own worker, never read from a file)."""
    values, blocks = marshal.loads(result[0])
    return values, result[1], blocks


def kept_line(digest: HeaderDigest, records: Iterable[tuple[int, Any]]) -> bytes:
    """One line of the kept file: the (uid, value) pairs as JSON lists,
    as they are (no Python-level conversion: a third of the time)."""
    batch = records if isinstance(records, list) else list(records)
    return json.dumps(batch, separators=(",", ":")).encode("ascii") + b"\n"


def mtimes(path: str, files: Iterable[tuple[int, str]]) -> dict[int, tuple[str, float]]:
    """``{uid: (filename, mtime)}`` of the message files (``new/...`` or
    ``cur/...``, of the folder at ``path``) that are there and regular:
    one ``fstatat`` each, relative to its open directory, never through a
    symbolic link (as a file is opened); one gone is left out. The
    INTERNALDATEs a first scan left unknown (:mod:`pymta.mailstore.datefill`:
    in the scan worker processes and the store's threads)."""
    out: dict[int, tuple[str, float]] = {}
    dir_fds: dict[str, int] = {}
    is_regular = stat.S_ISREG
    try:
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                dir_fds[sub] = os.open(f"{path}/{sub}", os.O_RDONLY | os.O_DIRECTORY)
        for uid, filename in files:
            dir_fd = dir_fds.get(filename[:3])
            if dir_fd is None:
                continue
            try:
                st = os.stat(filename[4:], dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if is_regular(st.st_mode):
                out[uid] = (filename, st.st_mtime)
    finally:
        for fd in dir_fds.values():
            os.close(fd)
    return out
