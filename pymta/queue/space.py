"""Free space of the queue file system: a statvfs reading, kept fresh.

Mirrors Postfix's fsspace(3) as smtpd_check_queue() uses it: the space
that unprivileged processes may still fill (``f_bavail * f_frsize``) on
the file system that holds ``queue_directory``. smtpd asks at every MAIL
FROM (see :mod:`pymta.smtpd.protocol`) and gets the latest reading, which
is about ``interval`` seconds old at most (one second by default): while
running, a timer on the injected clock reads again every interval, in a
worker thread. statvfs is one system call, but on a network file system
it waits for the server, and the reactor never waits. Before the first
reading there is no answer (None), and nothing is refused for lack of
one; :meth:`QueueSpace.read_now` takes the first at start-up.

Nothing here is untrusted input or writes. A failing statvfs (the queue
directory gone, a dead NFS server) is logged once as a warning; the last
good reading stays in use and the next try is an interval later.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["QueueSpace", "free_bytes"]

_log = Logger(namespace="pymta.queue")

RunInThread = Callable[[Callable[[], int]], "Deferred[int]"]


class _StatVfsResult(Protocol):
    @property
    def f_bavail(self) -> int: ...

    @property
    def f_frsize(self) -> int: ...


StatVfs = Callable[[str], _StatVfsResult]


def free_bytes(path: str, statvfs: StatVfs = os.statvfs) -> int:
    """Bytes an unprivileged process may still write on path's file system
    (Postfix's fsspace: blocks available to non-root times fragment size)."""
    result = statvfs(path)
    return int(result.f_bavail) * int(result.f_frsize)


class QueueSpace:
    """The free space of the file system under one directory, read every
    ``interval`` seconds while started."""

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        *,
        statvfs: StatVfs = os.statvfs,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._statvfs = statvfs
        self._interval = interval
        self._free: int | None = None
        self._reading = False
        self._failing = False
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        """Read now and every interval from now on, in a thread."""
        if self._loop is None:
            self._loop = LoopingCall(self.refresh)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def read_now(self) -> int | None:
        """Read at once, on the calling thread: for start-up, before serving."""
        try:
            free = free_bytes(self.path, self._statvfs)
        except OSError as e:
            self._failed(Failure(e))
            return self._free
        self._got(free)
        return free

    def available(self) -> int | None:
        """Free bytes from the latest reading (None before the first)."""
        return self._free

    def refresh(self) -> None:
        """Start a reading in a thread, unless one is still under way (a
        slow NFS server gets one question at a time)."""
        if self._reading:
            return
        self._reading = True
        path, statvfs = self.path, self._statvfs
        d = self._run_in_thread(lambda: free_bytes(path, statvfs))
        d.addCallbacks(self._got, self._failed)

    def _got(self, free: int) -> None:
        self._reading = False
        self._free = free
        if self._failing:
            self._failing = False
            _log.info("statvfs {path}: works again", path=self.path)

    def _failed(self, failure: Failure) -> Any:
        self._reading = False
        if not failure.check(OSError):
            _log.failure("statvfs {path} failed", failure, path=self.path)
        elif not self._failing:
            self._failing = True
            _log.warn(
                "statvfs {path}: {error}; the free space check uses the last reading",
                path=self.path,
                error=failure.getErrorMessage(),
            )
        return None
