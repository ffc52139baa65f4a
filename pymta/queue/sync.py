"""Group commit: many queue writes made durable by one sync.

pymta's answer to "250 only after fsync" at high rates (DESIGN.md invariant
1 and 4). Writers create and rename their files without syncing, then call
``sync()``; one worker performs a single ``syncfs(2)`` of the queue file
system (or, with ``pymta_sync_method = fsync``, one fsync per file written
and per directory touched) and fires every waiter's Deferred at once.

Rule: a write made before ``sync()`` was called is covered only by a sync
that *started* after the call. Callers that arrive while a sync runs wait
for the next one, which starts as soon as the running one ends; so at most
one sync runs at a time and each serves everyone who came during the last.

The sync runs in a thread (the reactor's thread pool by default), never on
the reactor thread. A failed sync errbacks every waiter of that batch with
the OSError (the message is then not acknowledged: smtpd answers 451).

Trusts: the paths handed to it (the queue store makes them). Writes:
nothing. Logs: nothing (callers log the outcome).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.queue.interface import ISyncBarrier

SYNC_METHODS = ("syncfs", "fsync")

RunInThread = Callable[[Callable[[], None]], "Deferred[None]"]


@implementer(ISyncBarrier)
class ImmediateSyncBarrier:
    """Fires at once without syncing anything (tests; tmpfs). Counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def sync(self, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        self.calls += 1
        return succeed(None)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    result: Callable[[int], int] = func
    return result


def syncfs_directory(directory: str) -> None:
    """syncfs(2) the file system holding directory; OSError on failure."""
    func = _load_syncfs()
    if func is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if func(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs {directory}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def fsync_paths(files: Sequence[str], dirs: Sequence[str]) -> None:
    """fsync each file, then each directory (their new entries)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for path in dirs:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Waiter:
    __slots__ = ("deferred", "dirs", "files")

    def __init__(self, files: Sequence[str], dirs: Sequence[str]) -> None:
        self.deferred: Deferred[None] = Deferred()
        self.files = files
        self.dirs = dirs


@implementer(ISyncBarrier)
class SyncBarrier:
    """Group commit over ``directory``'s file system.

    ``method`` is ``syncfs`` (one syncfs per batch; file lists ignored) or
    ``fsync`` (every file and directory named by the batch's callers,
    directories de-duplicated). ``reactor`` supplies the thread pool.
    Tests inject ``run_in_thread`` (how a batch's work is run: returns a
    Deferred) and ``sync_function`` (what a batch does, given the batch's
    files and directories).
    """

    def __init__(
        self,
        directory: str,
        method: str = "syncfs",
        reactor: Any = None,
        *,
        run_in_thread: RunInThread | None = None,
        sync_function: Callable[[Sequence[str], Sequence[str]], None] | None = None,
    ) -> None:
        if method not in SYNC_METHODS:
            raise ValueError(f"unknown sync method {method!r}: expected syncfs or fsync")
        self.directory = directory
        self.method = method
        if sync_function is None:
            if method == "syncfs":
                sync_function = self._syncfs
            else:
                sync_function = fsync_paths
        self._sync_function = sync_function
        if run_in_thread is None:
            if reactor is None:
                from twisted.internet import reactor as default_reactor

                reactor = default_reactor
            pool_reactor = reactor

            def run_in_thread(work: Callable[[], None]) -> Deferred[None]:
                return deferToThreadPool(pool_reactor, pool_reactor.getThreadPool(), work)

        self._run_in_thread = run_in_thread
        self._pending: list[_Waiter] = []
        self._running = False
        self.syncs = 0

    def _syncfs(self, files: Sequence[str], dirs: Sequence[str]) -> None:
        syncfs_directory(self.directory)

    def sync(self, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        waiter = _Waiter(files, dirs)
        self._pending.append(waiter)
        if not self._running:
            self._start()
        return waiter.deferred

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        self._running = True
        self.syncs += 1
        files: list[str] = []
        dirs: list[str] = []
        if self.method == "fsync":
            seen: set[str] = set()
            for waiter in batch:
                files.extend(waiter.files)
                for path in waiter.dirs:
                    if path not in seen:
                        seen.add(path)
                        dirs.append(path)
        sync_function = self._sync_function

        def work() -> None:
            sync_function(files, dirs)

        try:
            d = self._run_in_thread(work)
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addBoth(self._finished, batch)

    def _finished(self, result: object, batch: list[_Waiter]) -> None:
        self._running = False
        # Start the next batch before firing: a waiter's callback that calls
        # sync() again must queue behind a sync that starts after it.
        if self._pending:
            self._start()
        for waiter in batch:
            if isinstance(result, Failure):
                waiter.deferred.errback(result)
            else:
                waiter.deferred.callback(None)
