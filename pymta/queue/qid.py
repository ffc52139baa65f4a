"""Queue ids: allocation and validation.

Mirrors Postfix's queue ids (mail_queue.c): uppercase hex names that are
unique among every process sharing one queue directory. An id is the
microseconds since the epoch (13 hex digits, strictly increasing within a
process) followed by the process id (6 hex digits), so two processes never
make the same id and one process never makes the same id twice.

A queue id becomes a path: :func:`check_queue_id` rejects anything that does
not look like one. A malformed id reaching the store is a programming error
(Postfix panics); it raises ValueError.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

# Accept a range of lengths so that files made by a future id layout still
# read; only hex digits ever reach a path.
QUEUE_ID_RE = re.compile(r"[0-9A-F]{6,24}")


def is_queue_id(name: str) -> bool:
    """True when name is a well-formed queue id (directory scans skip others)."""
    return QUEUE_ID_RE.fullmatch(name) is not None


def check_queue_id(queue_id: str) -> str:
    """Return queue_id unchanged, or raise ValueError for a malformed one."""
    if not isinstance(queue_id, str) or QUEUE_ID_RE.fullmatch(queue_id) is None:
        raise ValueError(f"malformed queue id {queue_id!r}")
    return queue_id


class QueueIdAllocator:
    """Makes queue ids from an injected clock (seconds, float) and a pid."""

    def __init__(self, now: Callable[[], float], pid: int | None = None) -> None:
        self._now = now
        self._pid = (os.getpid() if pid is None else pid) & 0xFFFFFF
        self._last = 0

    def __call__(self) -> str:
        usec = int(self._now() * 1_000_000)
        # Strictly increasing even when the clock stands still or steps back.
        if usec <= self._last:
            usec = self._last + 1
        self._last = usec
        return f"{usec & 0xFFFFFFFFFFFFF:013X}{self._pid:06X}"
