"""trigger: the queue manager's public FIFO (``public/qmgr``), as Postfix's.

Mirrors Postfix's qmgr trigger channel (mail_trigger.c, qmgr.c): the
server creates the FIFO ``$queue_directory/public/qmgr`` and reads
one-byte requests from it; commands such as ``pymta flush`` / ``pymta
postqueue -f`` write to it. Requests (Postfix's letters):

- ``F`` — flush: forget dead destinations and retry all deferred mail now
  (QueueManager.flush);
- ``D`` or ``W`` — wake up: deliver the deferred mail that is due;
- anything else is ignored.

Several requests read at once are coalesced (one flush per read). The FIFO
is opened read-write, so that the reader never sees end-of-file when the
last writer closes. Untrusted input: the bytes written to the FIFO (anyone
allowed to write it may ask for a flush, as in Postfix; no data is
interpreted beyond the request letters). Writes: creates the FIFO. Logs:
a warning when the FIFO cannot be created.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Protocol

from twisted.application import service
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_log = Logger(namespace="pymta.qmgr")

FIFO_NAME = os.path.join("public", "qmgr")
FLUSH = b"F"
WAKEUP = b"W"
DEFERRED = b"D"


class _Target(Protocol):
    def flush(self) -> None: ...

    def scan(self) -> None: ...


def fifo_path(queue_directory: str) -> str:
    """Where the qmgr FIFO of a queue directory lives."""
    return os.path.join(queue_directory, FIFO_NAME)


def dispatch(data: bytes, target: _Target) -> None:
    """Act on the requests in data (see module doc)."""
    if FLUSH in data:
        target.flush()
    elif WAKEUP in data or DEFERRED in data:
        target.scan()


def send_trigger(queue_directory: str, request: bytes = FLUSH) -> None:
    """Write a request to a running server's FIFO.

    Raises ConnectionRefusedError when no server is reading it (Postfix:
    "mail system is down") and FileNotFoundError when there is no FIFO."""
    path = fifo_path(queue_directory)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise ConnectionRefusedError(errno.ENXIO, "no queue manager is running") from None
        raise
    try:
        os.write(fd, request)
    finally:
        os.close(fd)


@implementer(IReadDescriptor)
class _FifoReader:
    def __init__(self, fd: int, target: _Target) -> None:
        self._fd = fd
        self._target = target

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "qmgr-trigger"

    def connectionLost(self, reason: Failure) -> None:
        pass

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        dispatch(data, self._target)


class TriggerService(service.Service):
    """Creates and reads the FIFO while running; ``reactor`` provides
    IReactorFDSet (addReader/removeReader)."""

    name = "qmgr-trigger"

    def __init__(self, queue_directory: str, target: _Target, reactor: Any) -> None:
        self.path = fifo_path(queue_directory)
        self._target = target
        self._reactor = reactor
        self._reader: _FifoReader | None = None

    def startService(self) -> None:
        super().startService()
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            try:
                mode = os.lstat(self.path).st_mode
                if not stat.S_ISFIFO(mode):
                    os.unlink(self.path)
                    raise FileNotFoundError
            except FileNotFoundError:
                os.mkfifo(self.path, 0o622)
            fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as e:
            _log.warn("cannot open the qmgr trigger FIFO {path}: {error}", path=self.path, error=e)
            return
        self._reader = _FifoReader(fd, self._target)
        self._reactor.addReader(self._reader)

    def stopService(self) -> None:
        super().stopService()
        reader, self._reader = self._reader, None
        if reader is not None:
            self._reactor.removeReader(reader)
            os.close(reader.fileno())
