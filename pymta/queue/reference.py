"""reference: a queued message by reference — what qmgr hands a delivery agent.

Mirrors what Postfix's qmgr sends its agents (deliver_request.c): the queue
name, the queue id, where the content starts in the queue file and how long
it is, and the recipients (with their places in the file). The agent opens
the queue file itself and reads the content in blocks; nothing holds a whole
message in memory, however large. As Postfix's agents do
(deliver_completed.c), an agent marks a recipient done in the queue file
itself, the moment its delivery is safe: a process crash after that point
never repeats it.

:class:`QueueFileContent` is the queue file's (FileQueueStore);
:class:`BytesContent` holds bytes (MemoryQueueStore and tests).

Untrusted: nothing new (the queue store validated the file's records when it
read them, or wrote them itself). May write: one byte per recipient done
(``R-`` becomes ``RD``, os.pwrite, not synced: a power loss may repeat a
delivery, a process crash does not). Logs: nothing (callers do).
"""

from __future__ import annotations

import errno
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Attribute, Interface, implementer

from pymta.fdio import write_all

#: How much an agent reads at a time: big enough for few system calls,
#: small enough that 20 sessions with 10 MiB messages stay a few MiB.
BLOCK_SIZE = 64 * 1024

DONE = b"D"


class ContentReader(Protocol):
    """A reader of one message's content (LF line ends, as queued)."""

    def read(self, size: int = -1) -> bytes: ...

    def close(self) -> None: ...


class IMessageContent(Interface):
    """One queued message's content, by reference, and its done marks."""

    queue = Attribute("The queue directory the file is in (``active`` for a delivery).")
    queue_id = Attribute("The message's queue id.")
    offset = Attribute("Where the content starts in the queue file (bytes).")
    size = Attribute("The content's length in bytes (LF line ends).")
    marked = Attribute("The recipient indexes that mark_done marked (a set).")
    header = Attribute(
        "The content's header section (without its blank line) when the store"
        " had it in memory (see known_header), else None: read it from open()."
    )
    lines = Attribute(
        "The number of LF in the content when the queue file carries it (counted"
        " as the message was received), else None: count while reading."
    )

    def open() -> ContentReader:
        """A reader positioned at the content's first byte; ``read(n)``
        returns at most n bytes, b"" at the end. Blocking file I/O: agents
        read in blocks of BLOCK_SIZE, on a worker thread or one block per
        reactor turn."""

    def mark_done(index: int) -> None:
        """Mark recipient number index done in the queue file now (one byte
        in place; safe on any thread). Raises OSError when it cannot, and
        then does not add index to ``marked``."""


def blocks(content: IMessageContent, size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """The content in blocks of at most size bytes (blocking I/O)."""
    reader = content.open()
    try:
        while True:
            block = reader.read(size)
            if not block:
                return
            yield block
    finally:
        reader.close()


def read_all(content: IMessageContent) -> bytes:
    """The whole content (for what needs it whole and bounded: tests, and
    callers that check the size first)."""
    return b"".join(blocks(content))


def head(content: IMessageContent, limit: int) -> bytes:
    """The first ``limit`` bytes of the content (or all, if shorter)."""
    reader = content.open()
    try:
        parts: list[bytes] = []
        wanted = limit
        while wanted > 0:
            block = reader.read(min(wanted, BLOCK_SIZE))
            if not block:
                break
            parts.append(block)
            wanted -= len(block)
        return b"".join(parts)
    finally:
        reader.close()


#: A header section up to this size travels with the reference
#: (``IMessageContent.header``): the store has it in memory when it writes
#: the file or reads its records on a worker thread, and the delivery
#: agents' loop check then opens no file on the reactor. A longer one is
#: read from the file, as before. Bounds the memory per active message.
HEADER_CACHE_SIZE = 4 * 1024


def known_header(start: bytes, size: int) -> bytes | None:
    """The header section (without the blank line) of content of ``size``
    bytes that begins with ``start``, when ``start`` shows all of it and it
    is at most HEADER_CACHE_SIZE bytes; else None. Same result as reading
    the content up to its blank line (pymta.delivery.headers.header_block)."""
    start = start[: HEADER_CACHE_SIZE + 2]
    if start.startswith(b"\n"):
        return b""
    end = start.find(b"\n\n")
    if end >= 0:
        return start[: end + 1] if end + 1 <= HEADER_CACHE_SIZE else None
    if len(start) == size and size <= HEADER_CACHE_SIZE:
        return start  # no blank line: the whole content is header
    return None


#: Content up to this size may be read in the reactor (a few preads of a
#: file the kernel just wrote); larger content is read on a worker thread.
INLINE_LIMIT = 256 * 1024


def read_content(content: IMessageContent) -> Deferred[bytes]:
    """The whole content, for the few uses that need it whole (a forward
    through cleanup, a returned message in a bounce): read in the reactor
    when small, on a worker thread otherwise."""
    if content.size <= INLINE_LIMIT:
        try:
            return succeed(read_all(content))
        except OSError:
            return fail()
    from twisted.internet.threads import deferToThread

    return deferToThread(read_all, content)


#: copy_file_range's refusals that mean "not here, copy it yourself": the
#: target on another file system (EXDEV: Linux before 5.3, and since 5.19
#: unless both are of one type that copies between them), a file system
#: or file it does not support (EINVAL, EOPNOTSUPP), a kernel without it
#: (ENOSYS), a seccomp filter that denies it (EPERM), a swap file (ETXTBSY).
_NO_KERNEL_COPY = frozenset(
    (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.ETXTBSY)
)


def copy_content(content: IMessageContent, fd: int) -> int:
    """Append the content to the file open for writing at ``fd`` (at its
    current position) and return the bytes written: from a queue file in
    the kernel (``os.copy_file_range``: the bytes never enter Python, and
    land in the target's page cache as a write's would, so the caller's
    fsync or syncfs covers them), else, or where the kernel refuses, in
    blocks of BLOCK_SIZE. Blocking file I/O: call it off the reactor."""
    done = 0
    if isinstance(content, QueueFileContent) and _kernel_copy:
        source = os.open(content.path, os.O_RDONLY)
        try:
            while done < content.size:
                try:
                    n = os.copy_file_range(source, fd, content.size - done, content.offset + done)
                except OSError as e:
                    if e.errno not in _NO_KERNEL_COPY:
                        raise
                    break  # the rest in blocks, from where the kernel stopped
                if n == 0:
                    # The store validated the length: a damaged disk or
                    # another writer shrank the file.
                    raise OSError(f"queue file truncated at offset {content.offset + done}")
                done += n
            if done == content.size:
                return done
            reader: ContentReader = _SliceReader(source, content.offset + done, content.size - done)
            source = -1  # the reader closes it
        finally:
            if source >= 0:
                os.close(source)
    else:
        reader = content.open()
    try:
        while True:
            block = reader.read(BLOCK_SIZE)
            if not block:
                return done
            write_all(fd, block)
            done += len(block)
    finally:
        reader.close()


_kernel_copy = hasattr(os, "copy_file_range")


class _SliceReader:
    """Reads [offset, offset + size) of a file by position (os.pread)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._position = offset
        self._left = size

    def read(self, size: int = -1) -> bytes:
        if self._fd < 0:
            raise ValueError("read of a closed queue file")
        wanted = self._left if size < 0 else min(size, self._left)
        if wanted <= 0:
            return b""
        data = os.pread(self._fd, wanted, self._position)
        if not data:
            # The file shrank under us: the store validated its length, so
            # only a damaged disk or another writer does this.
            raise OSError(f"queue file truncated at offset {self._position}")
        self._position += len(data)
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IMessageContent)
class QueueFileContent:
    """The content of a queue file at ``path``; ``flags`` are the offsets of
    the recipients' done flags (pymta.queue.record)."""

    def __init__(
        self,
        path: str,
        queue: str,
        queue_id: str,
        offset: int,
        size: int,
        flags: Sequence[int],
        header: bytes | None = None,
        lines: int | None = None,
    ) -> None:
        self.path = path
        self.queue = queue
        self.queue_id = queue_id
        self.offset = offset
        self.size = size
        self.header = header
        self.lines = lines
        self._flags = tuple(flags)
        self._lock = threading.Lock()
        self.marked: set[int] = set()

    def open(self) -> ContentReader:
        fd = os.open(self.path, os.O_RDONLY)
        return _SliceReader(fd, self.offset, self.size)

    def mark_done(self, index: int) -> None:
        if not 0 <= index < len(self._flags):
            raise IndexError(f"{self.queue_id}: no recipient {index}")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, DONE, self._flags[index])
        finally:
            os.close(fd)
        with self._lock:
            self.marked.add(index)

    def __repr__(self) -> str:
        return f"<QueueFileContent {self.queue}/{self.queue_id} +{self.offset} {self.size}B>"


@implementer(IMessageContent)
class BytesContent:
    """Content held as bytes; ``on_done(index)`` records a mark (the memory
    store's envelope), or nothing when None."""

    def __init__(
        self,
        data: bytes,
        queue_id: str = "",
        queue: str = "active",
        on_done: Callable[[int], None] | None = None,
        lines: int | None = None,
    ) -> None:
        self._data = bytes(data)
        self.queue = queue
        self.queue_id = queue_id
        self.offset = 0
        self.size = len(self._data)
        self.header: bytes | None = None  # read from the bytes (cheap)
        self.lines = lines
        self._on_done = on_done
        self.marked: set[int] = set()

    def open(self) -> ContentReader:
        return io.BytesIO(self._data)

    def mark_done(self, index: int) -> None:
        if self._on_done is not None:
            self._on_done(index)
        self.marked.add(index)

    def __repr__(self) -> str:
        return f"<BytesContent {self.queue}/{self.queue_id} {self.size}B>"
