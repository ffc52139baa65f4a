"""postdrop: put one file into the maildrop directory, durably.

Mirrors Postfix's postdrop(1) without its set-gid bit: the maildrop
directory ``$queue_directory/maildrop`` has mode 1733 (anyone may create a
file, nobody but its owner can list it, the sticky bit stops users from
renaming or removing each other's files), so sendmail writes there as the
submitting user and the kernel records who that was (the file's owner).

A file is written under a temporary name (``tmp.`` + its final name) with
O_EXCL and O_NOFOLLOW, mode 0600 (no other user can read it), fsync'd,
renamed to its final name (lower-case hex: a microsecond time stamp and 64
random bits, so that names are not guessable and sort by age), and then the
directory entry is made durable: fsync of the directory when the user may
open it, else syncfs(2) of its file system (the directory is not readable
by ordinary users). Only then does sendmail exit 0. pickup never reads a
``tmp.`` file: a name without the prefix is always a whole file.

When pickup finds more files than ``pymta_maildrop_count_limit`` it creates
``$queue_directory/public/maildrop.full``; sendmail then refuses new mail
with EX_TEMPFAIL until pickup has caught up and removed the flag.
Untrusted input: none. Writes: the maildrop file (and the directory when it
is missing and the user may create it). Logs nothing.
"""

from __future__ import annotations

import os
import stat
import time

MAILDROP = "maildrop"
TEMPORARY_PREFIX = "tmp."
_HEX_DIGITS = frozenset("0123456789abcdef")


def is_final_name(name: str) -> bool:
    """A name pickup reads: hex time stamp (microseconds, 13 to 16 digits)
    and 16 random hex digits (no regular expression: see record.py)."""
    return 29 <= len(name) <= 32 and _HEX_DIGITS.issuperset(name)


#: The mode of the maildrop directory: world-writable, sticky, not listable.
MAILDROP_MODE = 0o1733
FULL_FLAG = os.path.join("public", "maildrop.full")


class MaildropFull(Exception):
    """pickup has flagged the maildrop as full (pymta_maildrop_count_limit)."""


def maildrop_directory(queue_directory: str) -> str:
    return os.path.join(queue_directory, MAILDROP)


def full_flag_path(queue_directory: str) -> str:
    return os.path.join(queue_directory, FULL_FLAG)


def ensure_maildrop(queue_directory: str) -> str:
    """The maildrop directory, created with mode 1733 when missing (by
    whoever may: root, or the queue's owner); owned like the queue."""
    path = maildrop_directory(queue_directory)
    if os.path.isdir(path):
        return path
    if not os.path.isdir(queue_directory):
        # never started yet: whoever may create the queue (root) prepares it
        os.makedirs(queue_directory, 0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return path
    except PermissionError:
        raise PermissionError(
            f"{path} is missing and this user may not create it: start pymta once "
            "(pickup creates it) or create it with mode 1733"
        ) from None
    os.chmod(path, MAILDROP_MODE)  # mkdir's mode is cut by the umask
    if os.geteuid() == 0:
        owner = os.stat(queue_directory)
        os.chown(path, owner.st_uid, owner.st_gid)
    return path


def new_name(now: float | None = None) -> str:
    """A final maildrop file name (see FINAL_NAME)."""
    stamp = int((time.time() if now is None else now) * 1_000_000)
    return f"{stamp:013x}{os.urandom(8).hex()}"


def _syncfs(fd: int) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"syncfs: {os.strerror(errno)}")


def _sync_directory(directory: str, file_fd: int) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        _syncfs(file_fd)  # the directory is not readable by this user
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_file(queue_directory: str, data: bytes) -> str:
    """Write data as a new maildrop file; its path once durable. OSError on failure."""
    if os.path.exists(full_flag_path(queue_directory)):
        raise MaildropFull
    directory = ensure_maildrop(queue_directory)
    mode = os.stat(directory).st_mode
    if not stat.S_ISDIR(mode):
        raise NotADirectoryError(f"{directory} is not a directory")
    name = new_name()
    final = os.path.join(directory, name)
    temporary = os.path.join(directory, TEMPORARY_PREFIX + name)
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.rename(temporary, final)
        _sync_directory(directory, fd)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    return final
