"""The contracts of the queue store and of group commit.

Mirrors Postfix's queue directories (incoming, active, deferred, hold,
corrupt) and its rule that a message is acknowledged only once durable.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from pymta.queue.model import Envelope

QUEUE_NAMES = ("incoming", "active", "deferred", "hold", "corrupt")


class QueueFileError(Exception):
    """A queue file failed validation; the store moves it to corrupt/."""


class ISyncBarrier(Interface):
    """Group commit: many writes made durable by one sync."""

    def sync() -> Deferred[None]:  # type: ignore[misc]
        """Fires once every write made before this call is on stable storage
        (file data and directory entries). Runs off the reactor thread;
        concurrent callers share one sync."""


class IQueueStore(Interface):
    """Queue files on disk: the only state the parts share."""

    def enqueue(envelope: Envelope, content: bytes) -> Deferred[str]:  # type: ignore[misc]
        """Write a new queue file into incoming/, make it durable, and fire
        with its queue id. Only then may a client be told 250."""

    def read(queue_id: str, queue: str) -> tuple[Envelope, bytes]:  # type: ignore[misc]
        """Read and validate a queue file; QueueFileError when it is bad
        (the caller then calls quarantine)."""

    def move(queue_id: str, source: str, target: str) -> None:  # type: ignore[misc]
        """Rename a queue file from one queue directory to another."""

    def mark_done(queue_id: str, queue: str, index: int) -> None:  # type: ignore[misc]
        """Record in place that recipient number index is done."""

    def set_next_attempt(queue_id: str, when: float) -> None:  # type: ignore[misc]
        """Record when a deferred message is next due (its file's mtime)."""

    def record_defer(queue_id: str, index: int, status: str, reason: str) -> None:  # type: ignore[misc]
        """Remember why recipient number index was deferred (Postfix's defer
        log), so that an expiry bounce can give the last reason."""

    def defer_reasons(queue_id: str) -> dict[int, tuple[str, str]]:  # type: ignore[misc]
        """The last (status, reason) recorded per recipient index."""

    def remove(queue_id: str, queue: str) -> None:  # type: ignore[misc]
        """Delete a queue file whose recipients are all done."""

    def quarantine(queue_id: str, queue: str, reason: str) -> None:  # type: ignore[misc]
        """Move a bad queue file to corrupt/ and log why."""

    def list(queue: str) -> list[str]:  # type: ignore[misc]
        """Queue ids present in a queue directory."""
