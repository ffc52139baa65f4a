"""watchers: one FolderWatcher per watched folder, shared by its sessions.

Sessions that select a folder acquire its watcher, and release it when
they leave; the first acquire starts inotify on the folder's ``new/``,
``cur/`` and index (:class:`pymta.mailstore.watch.FolderWatcher`), the last
release stops it. The watcher calls ``folder.refresh()``, whose listeners
(every session's view) hear of deliveries and of other processes'
changes: IDLE is woken without polling. Only folders that provide
:class:`~pymta.mailstore.interface.IWatchedFolder` are watched (the memory
store's need no watcher: its listeners hear of every change).

All watchers of a pool share one inotify instance (:class:`SharedINotify`):
a watch is added with ``inotify_add_watch`` and dropped with
``inotify_rm_watch``, both cheap, whereas opening and closing an inotify
descriptor per SELECT / LOGOUT costs the kernel an RCU grace period (about
a millisecond, measured as 7% of the reactor's time in bench/imap_bench.py)
during which the reactor waits.

Untrusted input: none. Writes nothing; FolderWatcher logs its fallbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.filepath import FilePath

from pymta.mailstore.interface import IFolder, IWatchedFolder
from pymta.mailstore.watch import FolderWatcher

Callback = Callable[[Any, Any, int], None]


class SharedINotify:
    """One twisted INotify for many FolderWatchers, each seeing it through a
    :class:`_NotifierView` (the notifier interface FolderWatcher uses).

    Watches are counted per path: two views watching one directory share
    the kernel watch, and each hears its events.
    """

    def __init__(self, reactor: Any, factory: Callable[[Any], Any] | None = None) -> None:
        self._reactor = reactor
        self._factory = factory
        self._inotify: Any = None
        self._subscribers: dict[bytes, list[Callback]] = {}

    def view(self, _reactor: Any = None) -> _NotifierView:
        if self._inotify is None:
            if self._factory is not None:
                notifier = self._factory(self._reactor)
            else:
                from twisted.internet import inotify

                notifier = inotify.INotify(self._reactor)
            notifier.startReading()
            self._inotify = notifier
        return _NotifierView(self)

    def watch(self, path: FilePath[Any], mask: int, callback: Callback) -> None:
        key = path.asBytesMode().path
        subscribers = self._subscribers.get(key)
        if subscribers is None:
            self._inotify.watch(path, mask=mask, callbacks=[self._dispatch])
            subscribers = self._subscribers[key] = []
        subscribers.append(callback)

    def unwatch(self, path: FilePath[Any], callback: Callback) -> None:
        key = path.asBytesMode().path
        subscribers = self._subscribers.get(key)
        if subscribers is None:
            return
        if callback in subscribers:
            subscribers.remove(callback)
        if not subscribers:
            del self._subscribers[key]
            # The kernel drops the watch itself when the directory is
            # deleted; removing it again is then an error to ignore.
            with contextlib.suppress(Exception):
                self._inotify.ignore(path)

    def _dispatch(self, watch: Any, path: FilePath[Any], mask: int) -> None:
        key = watch.path.asBytesMode().path
        for callback in list(self._subscribers.get(key, ())):
            callback(watch, path, mask)

    def __len__(self) -> int:
        return len(self._subscribers)


class _NotifierView:
    """What one FolderWatcher sees of a SharedINotify: stopping it removes
    only this watcher's watches."""

    def __init__(self, shared: SharedINotify) -> None:
        self._shared = shared
        self._watches: list[tuple[FilePath[Any], Callback]] = []

    def startReading(self) -> None:
        """Already reading: the shared instance started when first used."""

    def watch(
        self, path: FilePath[Any], mask: int, callbacks: list[Callback] | None = None
    ) -> None:
        for callback in callbacks or ():
            self._shared.watch(path, mask, callback)
            self._watches.append((path, callback))

    def loseConnection(self) -> None:
        watches, self._watches = self._watches, []
        for path, callback in watches:
            self._shared.unwatch(path, callback)


class WatcherPool:
    """Reference-counted FolderWatchers keyed by folder object, on one
    shared inotify instance."""

    def __init__(
        self,
        reactor: IReactorTime,
        make: Callable[[IFolder, str, IReactorTime], Any] | None = None,
    ) -> None:
        self._reactor = reactor
        self.notifier = SharedINotify(reactor)
        self._make = make or (
            lambda folder, path, reactor: FolderWatcher(
                folder, path, reactor, notifier_factory=self.notifier.view
            )
        )
        self._watchers: dict[int, tuple[Any, int]] = {}

    def acquire(self, folder: IFolder) -> None:
        if not IWatchedFolder.providedBy(folder):
            return
        path = IWatchedFolder(folder).watch_directory()
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
