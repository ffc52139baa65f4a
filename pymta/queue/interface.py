"""The contracts of the queue store and of group commit.

Mirrors Postfix's queue directories (incoming, active, deferred, hold,
corrupt) and its rule that a message is acknowledged only once durable.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from pymta.queue.model import Envelope

QUEUE_NAMES = ("incoming", "active", "deferred", "hold", "corrupt")


class QueueFileError(Exception):
    """A queue file failed validation; the store moves it to corrupt/."""


class ISyncBarrier(Interface):
    """Group commit: many writes made durable by one sync."""

    def sync(files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        """Fires once every write made before this call is on stable storage
        (file data and directory entries). Runs off the reactor thread;
        concurrent callers share one sync.

        ``files`` and ``dirs`` name what the caller wrote: a barrier that
        syncs the whole file system (syncfs) ignores them, one that fsyncs
        file by file (``pymta_sync_method = fsync``) syncs exactly those."""

    def run(work, durable=True, files=(), dirs=(), after=None):  # type: ignore[no-untyped-def]
        """Run work (a callable doing file-system changes) off the reactor
        thread, in call order, and fire with its result — when durable,
        after a sync that started once work was done, and after ``after``
        (a callable) ran once that sync succeeded."""


class IQueueStore(Interface):
    """Queue files on disk: the only state the parts share."""

    def new_queue_id() -> str:
        """Allocate a fresh queue id (cleanup needs it for the Received
        header before the content exists); pass it to enqueue."""

    def enqueue(
        envelope: Envelope, content: bytes, queue_id: str | None = None, queue: str = "incoming"
    ) -> Deferred[str]:
        """Write a new queue file into incoming/ (or ``queue``: hold/ for a
        header_checks HOLD), make it durable, and fire with its queue id
        (``queue_id`` from new_queue_id, or a fresh one). Only then may a
        client be told 250."""

    def read(queue_id: str, queue: str) -> tuple[Envelope, bytes]:
        """Read and validate a queue file; QueueFileError when it is bad
        (the caller then calls quarantine)."""

    def move(queue_id: str, source: str, target: str) -> None:
        """Rename a queue file from one queue directory to another."""

    def mark_done(queue_id: str, queue: str, index: int) -> None:
        """Record in place that recipient number index is done."""

    def set_next_attempt(queue_id: str, when: float) -> None:
        """Record when a deferred message is next due (its file's mtime)."""

    def record_defer(queue_id: str, index: int, status: str, reason: str) -> None:
        """Remember why recipient number index was deferred (Postfix's defer
        log), so that an expiry bounce can give the last reason."""

    def defer_reasons(queue_id: str) -> dict[int, tuple[str, str]]:
        """The last (status, reason) recorded per recipient index."""

    def record_delay_warning(queue_id: str, when: float) -> None:
        """Remember that the delay warning of queue_id was sent (it survives
        restarts, so that the warning goes out once per message)."""

    def delay_warning_sent(queue_id: str) -> bool:
        """Whether record_delay_warning was called for queue_id."""

    def remove(queue_id: str, queue: str) -> None:
        """Delete a queue file whose recipients are all done."""

    def quarantine(queue_id: str, queue: str, reason: str) -> None:
        """Move a bad queue file to corrupt/ and log why."""

    def list(queue: str) -> list[str]:
        """Queue ids present in a queue directory."""

    def next_attempt(queue_id: str) -> float:
        """When a queued message is next due (its file's mtime); raises
        KeyError when no queue holds it."""

    def find(queue_id: str) -> str | None:
        """The name of the queue that holds queue_id, or None."""
