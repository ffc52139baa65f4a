"""Wake a folder's listeners when other programs change it (Linux inotify).

Mirrors Dovecot's IDLE with inotify (``mailbox_idle_check_interval`` only
as a fallback): a delivery written by the delivery agent, Postfix or
another pymta process into ``new/`` or ``cur/``, or a change recorded in the
folder's index, makes the watcher call ``folder.refresh()`` once shortly
after (events are coalesced over ``delay`` seconds), and refresh() tells
the folder's listeners (IMAP IDLE sessions) what changed. Without inotify
(another OS, no watches left) the watcher falls back to a cheap
``changed_on_disk()`` check every ``poll_interval`` seconds.

The folder it refreshes is the store's asynchronous face (as the store's
:class:`~pymta.mailstore.watchers.WatcherPool` hands it): the rescan runs
in order with the folder's other calls, in the store's threads (or at
once for a small folder, :data:`pymta.mailstore.asyncstore.LIGHT_RESCAN`).
A synchronous folder works too (its calls run at once). One refresh runs
at a time; events during it make one more afterwards.

Untrusted input: none (event names only filter out the folder's own
cache and lock files; refresh() reads the disk as usual). Writes nothing.
Logs a failed refresh with its traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pymta.mailstore.index import INDEX_NAME

_log = Logger()

NotifierFactory = Callable[[Any], Any]


def _default_notifier(reactor: Any) -> Any:
    from twisted.internet import inotify

    return inotify.INotify(reactor)


class FolderWatcher:
    """Refreshes one Maildir folder when its directories change.

    ``folder`` has ``refresh()`` and ``changed_on_disk()`` (an
    IAsyncFolder, or an IFolder); ``path`` is the folder's directory
    (``MaildirFolder.path``). Call :meth:`start` when the first session
    wants to hear of changes (IMAP IDLE or SELECT), :meth:`stop` when the
    last one leaves.
    """

    def __init__(
        self,
        folder: Any,
        path: str,
        reactor: IReactorTime,
        delay: float = 0.05,
        poll_interval: float = 30.0,
        notifier_factory: NotifierFactory = _default_notifier,
    ) -> None:
        self._folder = folder
        self._path = path
        self._reactor = reactor
        self._delay = delay
        self._poll_interval = poll_interval
        self._notifier_factory = notifier_factory
        self._notifier: Any = None
        self._poller: LoopingCall | None = None
        self._pending: IDelayedCall | None = None
        self._running: Deferred[Any] | None = None  # a refresh under way
        self._again = False  # events came during it: one more after
        self._started = False
        self.inotify = False

    def start(self) -> None:
        """Begin watching (inotify if possible, else polling)."""
        if self._notifier is not None or self._poller is not None:
            return
        self._started = True
        notifier: Any = None
        try:
            notifier = self._notifier_factory(self._reactor)
            notifier.startReading()
            mask = 0x00000100 | 0x00000200 | 0x00000080 | 0x00000040 | 0x00000002
            # IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_MODIFY
            for sub in ("", "new", "cur"):
                target = FilePath(os.path.join(self._path, sub) if sub else self._path)
                notifier.watch(target, mask=mask, callbacks=[self._event])
            self._notifier = notifier
            self.inotify = True
        except Exception as e:
            _log.info("no inotify for {path} ({error}); polling", path=self._path, error=e)
            if notifier is not None:
                # The watches added before one failed (no watches left:
                # fs.inotify.max_user_watches) would outlive the watcher.
                with contextlib.suppress(Exception):
                    notifier.loseConnection()
            self._poller = LoopingCall(self._poll)
            self._poller.clock = self._reactor
            self._poller.start(self._poll_interval, now=False)

    def stop(self) -> None:
        """Stop watching; a pending refresh is cancelled (one under way
        finishes: its listeners may still want it)."""
        self._started = False
        self._again = False
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        self.inotify = False

    def _event(self, _watch: object, path: FilePath[Any], _mask: int) -> None:
        # In the folder's own directory only the index matters; the cache,
        # lock files and the like change on every read. (Twisted's INotify
        # gives paths as bytes.)
        if (
            os.fsdecode(path.dirname()) == self._path.rstrip("/")
            and os.fsdecode(path.basename()) != INDEX_NAME
        ):
            return
        if self._pending is None or not self._pending.active():
            self._pending = self._reactor.callLater(self._delay, self._refresh)

    def _poll(self) -> None:
        if self._running is not None:
            return  # a refresh under way looks anyway
        d = maybeDeferred(self._folder.changed_on_disk)
        d.addCallback(lambda changed: self._refresh() if changed else None)
        d.addErrback(lambda f: _log.failure("checking {path} failed", f, path=self._path))

    def _refresh(self) -> None:
        self._pending = None
        if self._running is not None:
            self._again = True
            return
        running = self._running = maybeDeferred(self._folder.refresh)
        running.addErrback(lambda f: _log.failure("refreshing {path} failed", f, path=self._path))

        def done(_: object) -> None:
            self._running = None
            if self._again and self._started:
                self._again = False
                self._refresh()

        running.addCallback(done)
