"""pymta.qmgr: Postfix's queue manager (see docs/architecture.md).

- :mod:`~pymta.qmgr.manager`: QueueManager, incoming to delivered, deferred or bounced.
- :mod:`~pymta.qmgr.scheduler`: per-transport and per-destination concurrency.
- :mod:`~pymta.qmgr.feedback`: slow start and dead destinations.
- :mod:`~pymta.qmgr.policy`: backoff and lifetimes.
- :mod:`~pymta.qmgr.trigger`: the ``public/qmgr`` FIFO (``pymta flush``).
- :mod:`~pymta.qmgr.log`: qmgr's log lines.
"""
