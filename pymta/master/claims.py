"""claims: which reactor process owns a queue file in incoming/ or active/.

pymta-only (Postfix has one qmgr, so it needs no such thing). With
``pymta_processes`` above 1 every process runs a queue manager that
delivers the mail its own smtpd accepted; a process that dies leaves its
messages in incoming/ or active/. Ownership is an exclusive ``flock`` on
the queue file, held from the moment a queue manager takes the message
until its file has been removed or moved to deferred/: the kernel drops
the locks of a process that dies, so the master can tell the orphans
(:meth:`QueueClaims.claim` succeeds) from the messages a live worker is
delivering (it fails) and recover only the former.

A process takes the lock on a message it accepted when its queue store
writes the file (:meth:`QueueClaims.adopt`, given the writer's open
descriptor, before the file is marked ready): the message is never
without an owner, and its queue manager's claim costs no system call.
Others take it by opening the file (:meth:`QueueClaims.claim`).

A lock follows the inode through renames (incoming -> active ->
deferred). It is released on the queue store's background thread, after
the changes the queue manager made to the file before (done flags, the
unlink or the move to deferred/): another process that claims the file
next sees those changes.

Untrusted input: none (queue ids are checked by the store). May write:
nothing; opens queue files read-only. Logs: nothing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, fail, succeed

from pymta.sync import ISyncBarrier

T = TypeVar("T")

#: Resolves (queue_id, queue) to a file path (FileQueueStore.path).
PathOf = Callable[[str, str], str]


class QueueClaims:
    """Exclusive flocks on queue files, one per message this process owns."""

    def __init__(self, path_of: PathOf, sync: ISyncBarrier | None = None) -> None:
        self._path_of = path_of
        self._sync = sync
        self._held: dict[str, int] = {}

    def claim(self, queue_id: str, queue: str) -> bool:
        """Take the file of queue_id in queue; False when another process
        owns it or it is no longer there (moved or removed meanwhile)."""
        if queue_id in self._held:
            return True
        path = self._path_of(queue_id, queue)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The previous owner may have moved or removed the file between
            # our open and its unlock: the lock is only ours if the name
            # still leads to the inode we locked.
            if not _same_file(fd, path):
                raise BlockingIOError
        except OSError:
            os.close(fd)
            return False
        self._held[queue_id] = fd
        return True

    def adopt(self, queue_id: str, fd: int) -> bool:
        """Own a file this process just created, through ``fd`` (its
        writer's descriptor, which the claim keeps open from now on).
        Called on the queue store's thread before the file is ready, so
        no other process has a reason to hold it; False (fd untouched)
        if the lock cannot be had all the same."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        self._held[queue_id] = fd
        return True

    def release(self, queue_id: str) -> None:
        """Give up queue_id (after its file was removed or moved to deferred/)."""
        fd = self._held.pop(queue_id, None)
        if fd is None:
            return
        if self._sync is None:
            os.close(fd)
            return
        # After every file change queued before this one (see module doc).
        self._sync.run(lambda: os.close(fd), durable=False)

    def after_pending(self, work: Callable[[], T]) -> Deferred[T]:
        """Run work (a directory listing) after the file changes this process
        queued so far, so that it does not see a file this process is still
        moving out of incoming/ or active/."""
        if self._sync is None:
            try:
                return succeed(work())
            except Exception as e:
                return fail(e)
        result: Deferred[T] = self._sync.run(work, durable=False)
        return result

    def held(self) -> list[str]:
        """Queue ids this process holds (tests)."""
        return list(self._held)


def _same_file(fd: int, path: str) -> bool:
    try:
        named = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
