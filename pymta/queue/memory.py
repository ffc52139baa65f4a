"""An in-memory queue store, for tests of the parts that use the queue.

Implements IQueueStore without a disk: same queue names, same rules (a
message lives in exactly one queue; read returns fresh copies, so callers
never share state with the store). ``corrupt(queue_id)`` makes the next
read of a message fail, so that quarantine paths can be tested. Nothing is
durable; enqueue fires at once. Changes are applied at once, which is one
schedule IQueueStore allows (in call order), and fire True, or False when
the queue file is missing (logged, as FileQueueStore logs a failed change).
"""

from __future__ import annotations

import builtins
import copy

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from zope.interface import implementer

from pymta.maillog import maillog
from pymta.queue.interface import QUEUE_NAMES, IQueueStore, ISpool, QueueFileError
from pymta.queue.model import Envelope
from pymta.queue.qid import QueueIdAllocator, check_queue_id
from pymta.queue.reference import BytesContent, IMessageContent
from pymta.queue.spool import MemorySpool, SpooledContent


class _Entry:
    __slots__ = ("bad", "content", "envelope", "lines", "mtime")

    def __init__(self, envelope: Envelope, content: bytes, mtime: float, lines: int | None) -> None:
        self.envelope = envelope
        self.content = content
        self.mtime = mtime
        self.lines = lines
        self.bad = False


@implementer(IQueueStore)
class MemoryQueueStore:
    """Queue files in dictionaries; ``clock`` (an IReactorTime, default a
    fresh task.Clock) gives queue ids and the initial next-attempt time.
    ``enqueued`` lists every id enqueued, in order."""

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock: IReactorTime = clock if clock is not None else Clock()
        self._queues: dict[str, dict[str, _Entry]] = {name: {} for name in QUEUE_NAMES}
        self._defer: dict[str, dict[int, tuple[str, str]]] = {}
        self._warned: set[str] = set()
        self._ids = QueueIdAllocator(self._now, pid=0)
        self.enqueued: builtins.list[str] = []

    def _now(self) -> float:
        return self._clock.seconds()

    def _queue(self, queue: str) -> dict[str, _Entry]:
        try:
            return self._queues[queue]
        except KeyError:
            raise ValueError(f"unknown queue {queue!r}") from None

    def _entry(self, queue_id: str, queue: str) -> _Entry:
        check_queue_id(queue_id)
        try:
            return self._queue(queue)[queue_id]
        except KeyError:
            raise FileNotFoundError(f"{queue}/{queue_id}") from None

    def new_queue_id(self) -> str:
        return self._ids()

    def open_spool(self, queue_id: str) -> ISpool:
        return MemorySpool(check_queue_id(queue_id))

    def enqueue(
        self,
        envelope: Envelope,
        content: bytes | SpooledContent,
        queue_id: str | None = None,
        queue: str = "incoming",
        lines: int | None = None,
    ) -> Deferred[str]:
        qid = check_queue_id(queue_id) if queue_id is not None else self._ids()
        if isinstance(content, SpooledContent):
            spool = content.spool
            if not isinstance(spool, MemorySpool):
                return fail(TypeError(f"{qid}: a spool of another store"))
            content = content.head + b"".join(spool.parts)
            spool.discard()
        elif lines is None:
            lines = content.count(b"\n")
        if self.find(qid) is not None:
            raise ValueError(f"queue id {qid} in use")
        if not envelope.arrival_time:
            envelope.arrival_time = self._now()
        self._queue(queue)[qid] = _Entry(
            copy.deepcopy(envelope), bytes(content), self._now(), lines
        )
        self.enqueued.append(qid)
        return succeed(qid)

    def read(self, queue_id: str, queue: str) -> tuple[Envelope, bytes]:
        entry = self._entry(queue_id, queue)
        if entry.bad:
            raise QueueFileError(f"{queue}/{queue_id}: marked corrupt")
        return copy.deepcopy(entry.envelope), entry.content

    def _missing(self, queue_id: str, what: str) -> Deferred[bool]:
        maillog("qmgr", f"{queue_id}: cannot {what} queue file: no such queue file", LogLevel.warn)
        return succeed(False)

    def read_envelope(self, queue_id: str, queue: str) -> tuple[Envelope, IMessageContent]:
        envelope, _content = self.read(queue_id, queue)
        return envelope, self.reference(queue_id, queue)

    def reference(self, queue_id: str, queue: str) -> IMessageContent:
        entry = self._entry(queue_id, queue)

        def done(index: int) -> None:
            if not 0 <= index < len(entry.envelope.recipients):
                raise IndexError(f"{queue_id}: no recipient {index}")
            entry.envelope.recipients[index].done = True

        return BytesContent(entry.content, queue_id, queue, done, entry.lines)

    def move(self, queue_id: str, source: str, target: str) -> Deferred[bool]:
        self._queue(target)
        try:
            entry = self._entry(queue_id, source)
        except FileNotFoundError:
            return self._missing(queue_id, f"move {source} to {target}")
        del self._queue(source)[queue_id]
        self._queue(target)[queue_id] = entry
        return succeed(True)

    def mark_done(self, queue_id: str, queue: str, index: int) -> Deferred[bool]:
        try:
            entry = self._entry(queue_id, queue)
        except FileNotFoundError:
            return self._missing(queue_id, "mark a recipient done in")
        if not 0 <= index < len(entry.envelope.recipients):
            raise IndexError(f"{queue_id}: no recipient {index}")
        entry.envelope.recipients[index].done = True
        return succeed(True)

    def set_next_attempt(self, queue_id: str, when: float) -> Deferred[bool]:
        queue = self.find(queue_id)
        if queue is None:
            return self._missing(queue_id, "set the next attempt time of")
        self._queues[queue][queue_id].mtime = when
        return succeed(True)

    def next_attempt(self, queue_id: str) -> float:
        queue = self.find(queue_id)
        if queue is None:
            raise KeyError(queue_id)
        return self._queues[queue][queue_id].mtime

    def record_defer(self, queue_id: str, index: int, status: str, reason: str) -> Deferred[bool]:
        check_queue_id(queue_id)
        self._defer.setdefault(queue_id, {})[index] = (status, reason)
        return succeed(True)

    def defer_reasons(self, queue_id: str) -> dict[int, tuple[str, str]]:
        check_queue_id(queue_id)
        return dict(self._defer.get(queue_id, {}))

    def record_delay_warning(self, queue_id: str, when: float) -> Deferred[bool]:
        check_queue_id(queue_id)
        self._warned.add(queue_id)
        return succeed(True)

    def delay_warning_sent(self, queue_id: str) -> bool:
        check_queue_id(queue_id)
        return queue_id in self._warned

    def remove(self, queue_id: str, queue: str) -> Deferred[bool]:
        try:
            self._entry(queue_id, queue)
        except FileNotFoundError:
            return self._missing(queue_id, "remove")
        del self._queues[queue][queue_id]
        self._defer.pop(queue_id, None)
        self._warned.discard(queue_id)
        return succeed(True)

    def quarantine(self, queue_id: str, queue: str, reason: str) -> Deferred[bool]:
        moved = self.move(queue_id, queue, "corrupt")
        maillog("qmgr", f"{queue_id}: corrupt queue file moved to corrupt: {reason}")
        return moved

    def list(self, queue: str) -> builtins.list[str]:
        return sorted(self._queue(queue))

    def find(self, queue_id: str) -> str | None:
        check_queue_id(queue_id)
        for name in QUEUE_NAMES:
            if queue_id in self._queues[name]:
                return name
        return None

    def remove_stale_temporaries(self, older_than: float) -> builtins.list[str]:
        # Entries are whole from the start: no write is ever half done.
        return []

    # test helpers ---------------------------------------------------------

    def corrupt(self, queue_id: str) -> None:
        """Make every later read of queue_id raise QueueFileError."""
        queue = self.find(queue_id)
        if queue is None:
            raise FileNotFoundError(queue_id)
        self._queues[queue][queue_id].bad = True
