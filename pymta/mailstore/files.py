"""files: reading and writing a Maildir folder's files, safely.

Mirrors the file helpers of Dovecot's maildir storage (maildir-util.c,
maildir-filename.c): message files are opened with O_NOFOLLOW and
O_NONBLOCK and taken only when regular (a symbolic link or a FIFO that
another program left is skipped, never followed or waited on); small state
files are replaced atomically (written beside, renamed over); a new folder
directory is built complete and renamed into place; copies are hard links
where the file system allows, as Dovecot copies.

Every function here is thread-safe: it touches only the paths it is given.
Untrusted input: the files and their ``,S=``/``,W=`` size hints (used only
when ``S=`` is the real size). May write: what its caller names. Logs
nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from zope.interface import implementer

from pymta.fdio import write_all
from pymta.mailstore.headerblock import MESSAGE_OPEN_FLAGS
from pymta.mailstore.interface import FolderExists, IFolderLock
from pymta.mailstore.names import (
    filename_sizes,
    header_block,
    rfc822_size,
    rfc822_size_of_stream,
    split_filename,
    unique_number,
)

# (size, rfc822 size, mtime) of a message file, as measure_file finds them
Measured = tuple[int, int, float]

SESSION_LOCK = "pymta-session.lock"
MAILDIRFOLDER = "maildirfolder"
SPECIAL_USE_FILE = "pymta-special-use"


def atomic_write(path: str, data: bytes, fsync: bool) -> None:
    """Replace ``path`` with ``data`` at once: readers see the old file or
    the new one, never half of it."""
    tmp = f"{path}.{os.getpid()}.{unique_number()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def open_message(path: str) -> int:
    """Open a message file refusing symbolic links and non-regular files."""
    fd = os.open(path, MESSAGE_OPEN_FLAGS)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def read_header_file(path: str) -> bytes | None:
    """The header block of one message file, or None when it cannot be read
    (gone, not a regular file). Reads until the blank line, not the body."""
    try:
        fd = os.open(path, MESSAGE_OPEN_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return read_header(partial(os.read, fd))
    except OSError:
        return None
    finally:
        os.close(fd)


def read_message_path(path: str, size_hint: int) -> bytes | None:
    """The whole of one message file (about ``size_hint`` bytes), or None
    when it cannot be read (gone, not a regular file)."""
    try:
        fd = os.open(path, MESSAGE_OPEN_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return read_all(fd, size_hint)
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class MessageFileReader:
    """Reads a folder's message files by index name, in any thread or
    process (it holds only the folder's path: picklable)."""

    path: str

    def __call__(self, filename: str, size: int) -> bytes | None:
        return read_message_path(f"{self.path}/{filename}", size)


def read_header(read: Callable[[int], bytes]) -> bytes:
    """The header block of what ``read`` gives, read in 64 KiB pieces only
    until the blank line (not the body)."""
    data = b""
    while True:
        chunk = read(65536)
        data += chunk
        if not chunk or b"\n\n" in data or b"\r\n\r\n" in data:
            return header_block(data)


def read_all(fd: int, size: int) -> bytes:
    """The whole of an open regular file of (about) ``size`` bytes: one read
    unless it has grown since its fstat."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def measure_file(path: str, filename: str) -> Measured | None:
    """``(size, rfc822 size, mtime)`` of the message file ``filename`` (as
    ``cur/NAME``) of the folder at ``path``; None if unusable (gone, not a
    regular file). Uses a ``,S=``/``,W=`` hint only when ``S=`` is the real
    size, else counts the lines. Thread-safe."""
    try:
        fd = os.open(f"{path}/{filename}", MESSAGE_OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size, vsize_hint = filename_sizes(split_filename(filename[4:])[0])
        if size == st.st_size and vsize_hint is not None:
            return size, vsize_hint, st.st_mtime
        # No usable hint: count the lines (one read for a file of ordinary
        # size; big ones in chunks, never whole in memory).
        want = min(st.st_size + 1, 1 << 20)
        data = os.read(fd, want)
        if len(data) < want:  # all of it: no read just to see EOF
            return len(data), rfc822_size(data), st.st_mtime
        first = [data]

        def read(n: int) -> bytes:
            return first.pop() if first else os.read(fd, n)

        size, vsize = rfc822_size_of_stream(read)
        return size, vsize, st.st_mtime
    except OSError:
        return None
    finally:
        os.close(fd)


def measure_at(dir_fd: int, path: str, sub: str, name: str) -> Measured | None:
    """:func:`measure_file` of the entry ``name`` of the folder's ``sub``
    directory (``new`` or ``cur``), open as ``dir_fd``, with one
    ``fstatat`` (no path to walk) and no open when the name carries both
    sizes and ``S=`` is the real size (Dovecot's names, and every name
    pymta and most delivery agents write): what a folder's first scan
    does for each of its files. A symbolic link or anything but a regular
    file is None, as with O_NOFOLLOW. ``path`` is the folder's, for a name
    without usable hints, whose file is read. Thread-safe."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    size, vsize_hint = filename_sizes(name.partition(":")[0])
    if size == st.st_size and vsize_hint is not None:
        return size, vsize_hint, st.st_mtime
    return measure_file(path, f"{sub}/{name}")


@implementer(IFolderLock)
class MaildirLock:
    """A held ``flock`` on the folder's ``pymta-session.lock``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def link_or_copy(src: str, target: str) -> None:
    """A hard link (as Dovecot copies), or a real copy where links cannot
    be made (another file system). Never follows a symbolic link."""
    try:
        os.link(src, target, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, target, follow_symlinks=False)


def make_folder_dir(root: str, path: str, special_use: str | None = None) -> None:
    """Create the folder directory ``path`` (under the Maildir ``root``)
    complete - ``cur/ new/ tmp/``, the ``maildirfolder`` file, and the
    ``pymta-special-use`` file when ``special_use`` - then rename it into
    place, so no one ever sees half a folder. FolderExists when another
    writer made it first."""
    tmp = os.path.join(root, f"..pymta-new-{os.getpid()}-{unique_number()}")
    os.mkdir(tmp, 0o700)
    for sub in ("cur", "new", "tmp"):
        os.mkdir(os.path.join(tmp, sub), 0o700)
    open(os.path.join(tmp, MAILDIRFOLDER), "wb").close()
    if special_use:
        with open(os.path.join(tmp, SPECIAL_USE_FILE), "w") as f:
            f.write(special_use + "\n")
    try:
        os.rename(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FolderExists(path) from None
        raise
