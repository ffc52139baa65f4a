"""pymta.queue: the mail queue on disk (see docs/architecture.md).

- :mod:`~pymta.queue.interface`: IQueueStore, the contract of a queue store.
- :mod:`~pymta.queue.store`: FileQueueStore, Postfix's queue directories.
- :mod:`~pymta.queue.memory`: the same contract in memory, for tests.
- :mod:`~pymta.queue.record`: the queue-file format.
- :mod:`~pymta.queue.qid`: queue ids.
- :mod:`~pymta.queue.model`: the envelope: sender, recipients and their state.
- :mod:`~pymta.queue.trigger`: IQueueTrigger, cleanup's word to the queue
  manager that a queue file is ready (a queue id, not the message).

Group commit, shared with delivery, is :mod:`pymta.sync`.
"""
