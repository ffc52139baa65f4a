"""One FolderWatcher per selected Maildir folder, shared by its sessions.

Sessions that select a folder acquire its watcher, and release it when
they leave; the first acquire starts inotify on the folder's ``new/``,
``cur/`` and index (:class:`pymta.mailstore.watch.FolderWatcher`), the last
release stops it. The watcher calls ``folder.refresh()``, whose listeners
(every session's view) hear of deliveries and of other processes'
changes: IDLE is woken without polling. Folders without a ``path`` (the
memory store) need no watcher.

Untrusted input: none. Writes nothing; FolderWatcher logs its fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from pymta.mailstore.interface import IFolder
from pymta.mailstore.watch import FolderWatcher


class WatcherPool:
    """Reference-counted FolderWatchers keyed by folder object."""

    def __init__(
        self,
        reactor: IReactorTime,
        make: Callable[[IFolder, str, IReactorTime], Any] | None = None,
    ) -> None:
        self._reactor = reactor
        self._make = make or (lambda folder, path, reactor: FolderWatcher(folder, path, reactor))
        self._watchers: dict[int, tuple[Any, int]] = {}

    def acquire(self, folder: IFolder) -> None:
        path = getattr(folder, "path", None)
        if not isinstance(path, str):
            return
        key = id(folder)
        entry = self._watchers.get(key)
        if entry is None:
            watcher = self._make(folder, path, self._reactor)
            watcher.start()
            self._watchers[key] = (watcher, 1)
        else:
            self._watchers[key] = (entry[0], entry[1] + 1)

    def release(self, folder: IFolder) -> None:
        key = id(folder)
        entry = self._watchers.get(key)
        if entry is None:
            return
        watcher, count = entry
        if count <= 1:
            del self._watchers[key]
            watcher.stop()
        else:
            self._watchers[key] = (watcher, count - 1)

    def __len__(self) -> int:
        return len(self._watchers)
