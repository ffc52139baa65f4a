"""appendlog: a text stream whose every flush is one append of whole lines.

pymta-only. With several reactor processes (``pymta_processes``) each one
opens ``maillog_file`` with O_APPEND; a write(2) to such a file lands whole
at its end, so lines from different processes never interleave as long as
each write holds whole lines. :class:`AppendLineStream` collects what the
maillog observer writes and hands it to the kernel in one ``os.write`` per
flush (a short write — a full disk — is completed by further writes).

Untrusted input: none. May write: the file it was opened on. Logs: nothing.
"""

from __future__ import annotations

import os


class AppendLineStream:
    """The minimal text stream MaillogObserver writes to (write, flush, close)."""

    def __init__(self, path: str, encoding: str = "utf-8") -> None:
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._encoding = encoding
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        if not self._pending or self._fd < 0:
            return
        data = "".join(self._pending).encode(self._encoding, "replace")
        self._pending = []
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def reopen(self) -> None:
        """Flush, then append to a new file at the same path (the old one was
        renamed by logrotate); the stream object stays the same."""
        if self._fd < 0:
            return
        self.flush()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        if self._fd < 0:
            return
        self.flush()
        os.close(self._fd)
        self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0
