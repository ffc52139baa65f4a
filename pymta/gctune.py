"""gctune: the cyclic garbage collector tuned for a long-running reactor.

pymta-only (Postfix is C and has no collector). Called once by the
programs that own their process — ``twistd pymta`` and the reactor
processes of ``pymta_processes`` — when the reactor starts; never by
embedding (``pymta.service.makeService``), whose host owns its collector.

CPython starts a generation-0 collection every 700 container allocations.
An SMTP message allocates several thousand (Deferreds, envelopes, header
tuples, log events), nearly all freed by reference counting moments
later, so the collector ran several times per message and walked the
objects then in flight every time: about 4% of the reactor's CPU at 20
connections (``bench/smtp_bench.py`` under ``perf record``, in
``gc_collect_main`` and its visitors). :func:`tune` raises the first
threshold to :data:`YOUNG_THRESHOLD`: a collection then finds most of a
batch's objects already freed, and runs a tenth as often. Cyclic garbage
still goes, a little later; memory grows by at most the few thousand young
objects the larger threshold lets accumulate.

It also moves everything alive at start (modules, configuration, tables:
a few hundred thousand objects) into the permanent generation
(``gc.freeze``), so that the rare full collections walk only what the
server made since, not its whole import-time heap.

Untrusted input: none. Writes: nothing. Logs: nothing.
"""

from __future__ import annotations

import gc

#: Container allocations (less deallocations) between young collections.
YOUNG_THRESHOLD = 10_000


def tune() -> None:
    """Freeze what exists now and raise the young generation's threshold
    (the older generations keep CPython's ratios)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
