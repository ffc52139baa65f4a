"""Progress of long admin work on a terminal: ``postsuper: 12,000/100,000``.

pymta-only (Postfix's commands are silent; a site with 100,000 queued
messages or a large aliases file then waits without a sign). Shown only
when standard error is a terminal, at most five times a second, on one
line that is rewritten in place and cleared at the end; pipes, cron and
logs see nothing. Writes: standard error only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

__all__ = ["Progress", "counted"]

T = TypeVar("T")

#: Seconds between two updates of the line.
INTERVAL = 0.2


class Progress:
    """One line of progress for ``label`` (``total`` 0: unknown)."""

    def __init__(
        self,
        label: str,
        total: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._shown = False
        self._next = clock() + INTERVAL  # quick work shows nothing at all
        isatty = getattr(self._stream, "isatty", None)
        self._enabled = bool(isatty and isatty())

    def step(self, n: int = 1) -> None:
        self.done += n
        if self._enabled and self._clock() >= self._next:
            self._next = self._clock() + INTERVAL
            of = f"/{self.total:,}" if self.total else ""
            self._stream.write(f"\r{self.label}: {self.done:,}{of}\x1b[K")
            self._stream.flush()
            self._shown = True

    def finish(self) -> None:
        """Clear the line (the command prints its own summary after)."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def counted(items: Iterable[T], progress: Progress) -> Iterator[T]:
    """The items, stepping progress once for each as it is consumed."""
    for item in items:
        yield item
        progress.step()
