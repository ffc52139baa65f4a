"""fdio: write the whole of some bytes to a file descriptor; sync a directory.

``os.write`` may take less than it is given (a signal, a nearly full file
system, a pipe); every writer that holds a raw descriptor instead of a
Python file object loops until all is written, and this is that loop, for
the queue's files and the mail store's alike. Blocking: call it where disk
I/O belongs (a worker or barrier thread). Raises the OSError of a write
that fails; what was written before stays written.
"""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: str) -> None:
    """Make a directory's entries durable (a new file, a rename into it,
    an unlink), as fsync(2) of the file alone does not."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
