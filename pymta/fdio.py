"""fdio: write the whole of some bytes to a file descriptor.

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
