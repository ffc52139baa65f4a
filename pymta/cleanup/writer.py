"""Message writers: the content of a message handed to cleanup as it arrives.

Postfix's smtpd streams a message into cleanup record by record, and
cleanup writes the queue file as it goes; pymta's smtpd does the same
through :class:`MessageWriter`. The first ``threshold`` bytes (the header
block of almost every message, and the whole of a small one) stay in
memory; once a message grows past them the rest goes to a spool in the
queue (pymta.queue.spool) as it arrives, and memory per session no longer
grows with the message. At ``finish`` a message that stayed in memory
takes the path of ``Cleanup.submit``; a spooled one is queued from its
rewritten first bytes and the spool (``Cleanup.submit_spooled``), without
its content ever being one bytes object.

:class:`BufferedMessageWriter` gathers the content and calls a
``submit(envelope, content)``: for cleanups that take whole messages
(test fakes), with the line count. Untrusted: the content (only passed on). Writes: the spool
through the queue store. Logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.cleanup.interface import IMessageWriter
from pymta.queue.interface import IQueueStore, ISpool
from pymta.queue.model import Envelope

#: Content kept in memory before a message is spooled (its header block
#: must end within it to be rewritten without reading the spool back).
SPOOL_THRESHOLD = 256 * 1024

#: ``submit(envelope, content, lines)``
Submit = Callable[[Envelope, bytes, "int | None"], "Deferred[str]"]
#: ``submit_spooled(envelope, head, spool, lines)``
SubmitSpooled = Callable[[Envelope, bytes, ISpool, "int | None"], "Deferred[str]"]


@implementer(IMessageWriter)
class MessageWriter:
    """Content in memory up to ``threshold`` bytes, then in a spool."""

    def __init__(
        self,
        store: IQueueStore,
        submit: Submit,
        submit_spooled: SubmitSpooled,
        threshold: int = SPOOL_THRESHOLD,
    ) -> None:
        self._store = store
        self._submit = submit
        self._submit_spooled = submit_spooled
        self._threshold = threshold
        self._parts: list[bytes] = []
        self._head = b""
        self._spool: ISpool | None = None
        self._ended = False
        self.size = 0

    @property
    def spool(self) -> ISpool | None:
        """The spool once the message outgrew the threshold (None before)."""
        return self._spool

    def write(self, data: bytes) -> Deferred[None] | None:
        if self._ended:
            raise RuntimeError("message writer used after finish or abort")
        self.size += len(data)
        if self._spool is not None:
            return self._spool.write(data)
        self._parts.append(data)
        if self.size <= self._threshold:
            return None
        content = b"".join(self._parts)
        self._parts = []
        self._head = content[: self._threshold]
        self._spool = self._store.open_spool(self._store.new_queue_id())
        return self._spool.write(content[self._threshold :])

    def finish(self, envelope: Envelope, lines: int | None = None) -> Deferred[str]:
        if self._ended:
            return fail(RuntimeError("message writer used after finish or abort"))
        self._ended = True
        spool, self._spool = self._spool, None
        if spool is None:
            content = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts = []
            return self._submit(envelope, content, lines)
        head, self._head = self._head, b""

        def closed(_: object) -> Deferred[str]:
            return self._submit_spooled(envelope, head, spool, lines)

        def failed(failure: Failure) -> Failure:
            spool.discard()
            return failure

        return spool.close().addCallbacks(closed, failed)

    def abort(self) -> None:
        self._ended = True
        self._parts = []
        self._head = b""
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.discard()


@implementer(IMessageWriter)
class BufferedMessageWriter:
    """Gathers the content and hands it to ``submit`` whole at ``finish``."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        self._parts: list[bytes] = []
        self.size = 0
        self.aborted = False

    def write(self, data: bytes) -> Deferred[None] | None:
        self.size += len(data)
        self._parts.append(data)
        return None

    def finish(self, envelope: Envelope, lines: int | None = None) -> Deferred[str]:
        content = b"".join(self._parts)
        self._parts = []
        return self._submit(envelope, content, lines)

    def abort(self) -> None:
        self.aborted = True
        self._parts = []
