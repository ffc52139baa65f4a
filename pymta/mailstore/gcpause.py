"""gcpause: no cyclic garbage collection while the store builds big images.

A folder's first scan, or the load of its index, makes a few objects per
message (a record, its attributes, an index line): 100,000 messages are
half a million objects that live on, and the cyclic collector, which
runs after every few hundred allocations and walks the whole heap each
time the heap has grown by a quarter, spends about an eighth of such a
scan walking them again and again (valgrind's instruction count of a
first scan of 20,000 files, in process). None of these objects form
cycles, so :func:`paused` stops the collector while the work runs and
starts it again after, as the Python documentation advises for phases
that only allocate.

Process-wide, thread-safe: the collector stays stopped while any caller
is inside, and comes back (if it was on when the first one came in)
when the last one leaves, also on an exception. Nothing is freed later
than it would be otherwise but objects in reference cycles, which wait
until the collector runs again. Writes nothing; logs nothing.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_inside = 0
_was_enabled = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector stopped for the duration (see the module doc)."""
    global _inside, _was_enabled
    with _lock:
        if _inside == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _was_enabled:
                gc.enable()
