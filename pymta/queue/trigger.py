"""trigger: cleanup's word to the queue manager that a queue file is ready.

Mirrors the trigger Postfix's cleanup(8) sends to qmgr(8) through the
``public/qmgr`` FIFO once a queue file is durable in incoming/: the queue
manager learns a queue id, not a message (it reads nothing; the agents read
the content from the queue file). :class:`IQueueTrigger` is what cleanup is
given; the queue manager provides it. :class:`TriggerChannel` stands where
Postfix's FIFO stands: cleanup, bounce and the delivery agents are built
before the queue manager (it needs them, they need cleanup), so cleanup
writes to the channel and the queue manager reads from it while it runs
(:meth:`TriggerChannel.listen` at its start, :meth:`TriggerChannel.close`
at its stop). A trigger that nobody reads is lost, as a FIFO write with no
qmgr: the file waits in incoming/ for the queue manager's next start, which
recovers incoming/ first.

Untrusted input: none (queue ids made by the store). Writes: nothing.
Logs: nothing.
"""

from __future__ import annotations

from zope.interface import Interface, implementer

from pymta.queue.model import Envelope


class IQueueTrigger(Interface):
    """Who is told that a new queue file is durable in incoming/."""

    def queued(queue_id: str, envelope: Envelope) -> None:
        """queue_id is durable in incoming/ with this envelope (the one
        cleanup wrote: the receiver may keep it and need not read the
        file's records). Never blocks; a receiver with no room leaves the
        file in incoming/ for later."""


@implementer(IQueueTrigger)
class TriggerChannel:
    """An IQueueTrigger that passes each trigger to the receiver listening
    now, if any (see module doc)."""

    def __init__(self) -> None:
        self._receiver: IQueueTrigger | None = None

    def listen(self, receiver: IQueueTrigger) -> None:
        """Pass the triggers from now on to receiver (the queue manager)."""
        self._receiver = receiver

    def close(self) -> None:
        """Pass no more triggers (the receiver stopped)."""
        self._receiver = None

    def queued(self, queue_id: str, envelope: Envelope) -> None:
        if self._receiver is not None:
            self._receiver.queued(queue_id, envelope)
