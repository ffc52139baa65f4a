"""The contract of the queue store (group commit: :mod:`pymta.sync`).

Mirrors Postfix's queue directories (incoming, active, deferred, hold,
corrupt) and its rule that a message is acknowledged only once durable.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from pymta.queue.model import Envelope

if TYPE_CHECKING:
    from pymta.queue.reference import IMessageContent

QUEUE_NAMES = ("incoming", "active", "deferred", "hold", "corrupt")


class QueueFileError(Exception):
    """A queue file failed validation; the store moves it to corrupt/."""


class ISpool(Interface):
    """The part of a message's content that arrives after its first bytes,
    written to the queue's file system as it arrives (cleanup's spool; see
    pymta.queue.spool). Writes run off the reactor thread, in call order."""

    queue_id = Attribute("the queue id the message will get (it names the spool file)")
    size = Attribute("bytes handed to write() so far")

    def write(data: bytes) -> Deferred[None] | None:
        """Append data. None, or a Deferred when the writes not yet on disk
        exceed the spool's high-water mark: a caller that can pause its
        source (smtpd: the socket) waits for it before writing more."""

    def close() -> Deferred[None]:
        """Fires once every write is on the file (not synced: enqueue makes
        the queue file durable); errbacks with the first write error."""

    def read() -> Deferred[bytes]:
        """The whole spooled content, read off the reactor (for the checks
        that need the message in one piece)."""

    def discard() -> None:
        """Delete the spool after the pending writes (the message was
        refused, or its client left in the middle of DATA)."""


@dataclass
class SpooledContent:
    """A message's content as enqueue takes it: ``head`` (in memory, the
    rewritten headers) followed by everything in ``spool``."""

    head: bytes
    spool: ISpool

    @property
    def size(self) -> int:
        return len(self.head) + int(self.spool.size)


class IQueueStore(Interface):
    """Queue files on disk: the only state the parts share.

    Changes and their order. The changing methods — ``move``,
    ``mark_done``, ``set_next_attempt``, ``record_defer``,
    ``record_delay_warning``, ``remove``, ``quarantine`` — are applied in
    call order: each one after every change called before it, so a change
    may name the queue a file is in *once the earlier changes are applied*
    (``move(id, "incoming", "active")`` then ``mark_done(id, "active", 0)``
    is right at once). A change may be applied later than its call returns
    (FileQueueStore: on the sync barrier's thread, without a sync of its
    own, as Postfix does not sync them either) or at once
    (MemoryQueueStore); callers must not tell the two apart. Each returns
    a Deferred that fires once the change is applied: with True, or with
    False when it failed (the store logged why: a change that is lost means
    a message delivered again or tried sooner, never lost). It never
    errbacks. A reader (``read``, ``list``, ``find``, ``next_attempt``,
    ``defer_reasons``, ``delay_warning_sent``) is sure to see a change only
    once its Deferred has fired. A malformed queue id or queue name, or a
    recipient index out of range, raises at the call: a programming error.
    """

    def new_queue_id() -> str:
        """Allocate a fresh queue id (cleanup needs it for the Received
        header before the content exists); pass it to enqueue."""

    def enqueue(
        envelope: Envelope,
        content: bytes | SpooledContent,
        queue_id: str | None = None,
        queue: str = "incoming",
        lines: int | None = None,
    ) -> Deferred[str]:
        """Write a new queue file into incoming/ (or ``queue``: hold/ for a
        header_checks HOLD), make it durable, and fire with its queue id
        (``queue_id`` from new_queue_id, or a fresh one). Only then may a
        client be told 250. ``content`` is the message, or its first bytes
        and a spool holding the rest (closed; the store deletes the spool
        once the queue file holds its content or the write failed).
        ``lines`` is the content's LF count when the caller knows it; the
        store counts content given as bytes without it, and keeps it with
        the message (IMessageContent.lines)."""

    def open_spool(queue_id: str) -> ISpool:
        """A new, empty spool for the content of queue_id (from new_queue_id)."""

    def read(queue_id: str, queue: str) -> tuple[Envelope, bytes]:
        """Read and validate a queue file; QueueFileError when it is bad
        (the caller then calls quarantine)."""

    def read_envelope(queue_id: str, queue: str) -> tuple[Envelope, IMessageContent]:
        """Validate a queue file as ``read`` does, reading its records but
        not its content: the envelope, and the content by reference.
        Blocking I/O: the queue manager calls it on a worker thread."""

    def reference(queue_id: str, queue: str) -> IMessageContent:
        """The content of a file this store wrote or read lately, by
        reference, without I/O (a delivery's ``queue`` is ``active``);
        KeyError when the store no longer remembers its layout (then use
        read_envelope)."""

    def move(queue_id: str, source: str, target: str) -> Deferred[bool]:
        """Rename a queue file from one queue directory to another (a change)."""

    def mark_done(queue_id: str, queue: str, index: int) -> Deferred[bool]:
        """Record in place that recipient number index is done (a change)."""

    def set_next_attempt(queue_id: str, when: float) -> Deferred[bool]:
        """Record when a deferred message is next due (its file's mtime), in
        whichever queue holds it once the earlier changes are applied."""

    def record_defer(queue_id: str, index: int, status: str, reason: str) -> Deferred[bool]:
        """Remember why recipient number index was deferred (Postfix's defer
        log), so that an expiry bounce can give the last reason (a change)."""

    def defer_reasons(queue_id: str) -> dict[int, tuple[str, str]]:
        """The last (status, reason) recorded per recipient index."""

    def record_delay_warning(queue_id: str, when: float) -> Deferred[bool]:
        """Remember that the delay warning of queue_id was sent (it survives
        restarts, so that the warning goes out once per message; a change)."""

    def delay_warning_sent(queue_id: str) -> bool:
        """Whether record_delay_warning was called for queue_id."""

    def remove(queue_id: str, queue: str) -> Deferred[bool]:
        """Delete a queue file whose recipients are all done (a change)."""

    def quarantine(queue_id: str, queue: str, reason: str) -> Deferred[bool]:
        """Move a bad queue file to corrupt/ and log why (a change)."""

    def list(queue: str) -> list[str]:
        """Queue ids present in a queue directory (in incoming/, only the
        files whose writer finished them)."""

    def next_attempt(queue_id: str) -> float:
        """When a queued message is next due (its file's mtime); raises
        KeyError when no queue holds it."""

    def find(queue_id: str) -> str | None:
        """The name of the queue that holds queue_id, or None."""

    def remove_stale_temporaries(older_than: float) -> builtins.list[str]:
        """Delete half-written queue files (in incoming/, not marked ready
        by a writer that died) last changed before ``older_than``; their
        names. Called by the queue manager at start, before any process
        writes."""
