"""watchers: the Maildir store's inotify watching, shared by its sessions.

The pool belongs to the store (:class:`pymta.mailstore.maildir.MaildirStore`
makes one) and is reached only through the store's asynchronous API:
``IAsyncFolder.watch(listener)`` acquires the folder's watcher and
cancelling releases it; the first acquire starts inotify on the folder's
``new/``, ``cur/`` and index (:class:`pymta.mailstore.watch.FolderWatcher`),
the last release stops it. The watcher refreshes the folder through the
store's asynchronous face (in the store's threads), whose listeners (every
session's view, NOTIFY) hear of deliveries and of other processes'
changes: IDLE is woken without polling, and IMAP never sees a path. Only
folders that provide :class:`~pymta.mailstore.interface.IWatchedFolder`
are watched (the memory store's need no watcher: its listeners hear of
every change).

``IAsyncUserMailbox.watch(callback)`` watches a user's mailbox root the
same way (:meth:`WatcherPool.watch_mailbox`): a change of an entry that
holds the folder list, the subscriptions or the METADATA entries
(:meth:`~pymta.mailstore.interface.IWatchedMailbox.is_list_entry`) calls
``callback`` (IMAP NOTIFY's MailboxName, SubscriptionChange and METADATA
events for other processes' changes).

All watchers of a pool share one inotify instance (:class:`SharedINotify`):
a watch is added with ``inotify_add_watch`` and dropped with
``inotify_rm_watch``, both cheap, whereas opening and closing an inotify
descriptor per SELECT / LOGOUT costs the kernel an RCU grace period (about
a millisecond, measured as 7% of the reactor's time in bench/imap_bench.py)
during which the reactor waits.

Untrusted input: none. Writes nothing; FolderWatcher logs its fallbacks,
the pool a root it cannot watch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pymta.mailstore.interface import IFolder, IWatchedFolder, IWatchedMailbox
from pymta.mailstore.watch import FolderWatcher

Callback = Callable[[Any, Any, int], None]

_log = Logger(namespace="pymta.mailstore")

#: What a mailbox root's watch waits for: IN_CREATE | IN_DELETE |
#: IN_MOVED_TO | IN_MOVED_FROM (folders made, deleted, renamed; the
#: subscriptions and METADATA files renamed into place).
ROOT_MASK = 0x00000100 | 0x00000200 | 0x00000080 | 0x00000040


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

                if not IReactorFDSet.providedBy(self._reactor):
                    # A reactor that cannot read a descriptor (task.Clock in
                    # tests): refuse before inotify_init, whose descriptor
                    # would be left open (the watcher then polls).
                    raise OSError("the reactor cannot read an inotify descriptor")
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
    """Reference-counted FolderWatchers keyed by folder object, and
    mailbox-root watches, on one shared inotify instance. ``make`` builds
    a watcher from (the folder to refresh, its directory, the reactor)."""

    def __init__(
        self,
        reactor: IReactorTime,
        make: Callable[[Any, str, IReactorTime], Any] | None = None,
    ) -> None:
        self._reactor = reactor
        self.notifier = SharedINotify(reactor)
        self._make = make or (
            lambda folder, path, reactor: FolderWatcher(
                folder, path, reactor, notifier_factory=self.notifier.view
            )
        )
        self._watchers: dict[int, tuple[Any, int]] = {}

    def acquire(self, folder: IFolder, refresh_through: Any = None) -> None:
        """Watch ``folder`` (one more holder); its watcher refreshes it
        through ``refresh_through`` (the store's asynchronous face of it:
        in the store's threads) when given, else directly."""
        if not IWatchedFolder.providedBy(folder):
            return
        path = IWatchedFolder(folder).watch_directory()
        key = id(folder)
        entry = self._watchers.get(key)
        if entry is None:
            target = refresh_through if refresh_through is not None else folder
            watcher = self._make(target, path, self._reactor)
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

    def watch_mailbox(self, mailbox: object, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (in the reactor thread) for each change on
        disk of an entry of ``mailbox``'s root that may change its folder
        list, subscriptions or METADATA entries; the callback coalesces.
        Returns the cancel. A mailbox that is not an IWatchedMailbox, or
        a root inotify cannot watch (logged), is not watched (the cancel
        does nothing): then only this process's changes are known."""
        if not IWatchedMailbox.providedBy(mailbox):
            return _nothing
        watched = IWatchedMailbox(mailbox)

        def event(_watch: object, path: FilePath[Any], _mask: int) -> None:
            if watched.is_list_entry(os.fsdecode(path.basename())):
                callback()

        try:
            view = self.notifier.view()
            view.watch(FilePath(watched.watch_directory()), mask=ROOT_MASK, callbacks=[event])
        except Exception as e:
            _log.info(
                "no inotify for the mailbox list of {root} ({error}); "
                "only this process's changes are told",
                root=watched.watch_directory(),
                error=e,
            )
            return _nothing
        return view.loseConnection

    def __len__(self) -> int:
        return len(self._watchers)


def _nothing() -> None:
    """The cancel of a watch that watches nothing."""
