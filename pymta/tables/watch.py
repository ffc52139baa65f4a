"""Notice when a table's file changes, checking at most once a second.

Postfix daemons pick up a rebuilt table by restarting; pymta runs as one
long-lived process, so file-backed tables re-read their file when its
identity (device, inode, size, mtime) changes. The check is a stat(2) done at
most once per interval of the injected clock, so a busy server does not stat
on every lookup. Reads nothing but file metadata; writes and logs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

Stamp = tuple[int, int, int, int]


def stamp(path: str) -> Stamp:
    """The identity of path's current contents; OSError when it cannot be stat'ed."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatch:
    """Says whether path changed since the last accepted stamp."""

    def __init__(self, path: str, clock: Callable[[], float], interval: float = 1.0) -> None:
        self.path = path
        self._clock = clock
        self._interval = interval
        self._stamp: Stamp | None = None
        self._checked: float | None = None

    def accept(self, current: Stamp) -> None:
        """Remember current as the stamp of what is loaded now."""
        self._stamp = current
        self._checked = self._clock()

    def changed(self) -> Stamp | None:
        """The new stamp when the file changed (checked at most once per interval).

        None when unchanged, not yet due for a check, or gone (a vanished
        file keeps the loaded contents: Postfix keeps using an open table).
        """
        now = self._clock()
        if self._checked is not None and now - self._checked < self._interval:
            return None
        self._checked = now
        try:
            current = stamp(self.path)
        except OSError:
            return None
        if current == self._stamp:
            return None
        return current
