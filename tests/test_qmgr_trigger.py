"""The qmgr trigger FIFO (public/qmgr): creation, requests, and the CLI side."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pymta.qmgr.trigger import TriggerService, dispatch, fifo_path, send_trigger


class Target:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def flush(self) -> None:
        self.calls.append("flush")

    def scan(self) -> None:
        self.calls.append("scan")


class FakeReactor:
    """Records addReader/removeReader instead of polling."""

    def __init__(self) -> None:
        self.readers: list[Any] = []

    def addReader(self, reader: Any) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.remove(reader)


@pytest.mark.parametrize(
    ("data", "calls"),
    [
        (b"F", ["flush"]),
        (b"FFFF", ["flush"]),
        (b"WF", ["flush"]),
        (b"W", ["scan"]),
        (b"DD", ["scan"]),
        (b"x\n", []),
    ],
)
def test_dispatch(data: bytes, calls: list[str]) -> None:
    """F flushes (once per read, however many), W/D scan, other bytes are ignored."""
    target = Target()
    dispatch(data, target)
    assert target.calls == calls


def test_service_creates_fifo_and_reads_requests(tmp_path: Path) -> None:
    """startService makes public/qmgr a FIFO and registers a reader; a flush
    written by send_trigger reaches QueueManager.flush; stop unregisters."""
    reactor = FakeReactor()
    target = Target()
    svc = TriggerService(str(tmp_path), target, reactor)
    svc.startService()
    path = fifo_path(str(tmp_path))
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    (reader,) = reactor.readers
    reader.doRead()  # nothing written yet: no request, no error
    assert target.calls == []
    send_trigger(str(tmp_path))
    send_trigger(str(tmp_path))
    reader.doRead()
    assert target.calls == ["flush"]
    svc.stopService()
    assert reactor.readers == []


def test_stale_file_is_replaced_by_a_fifo(tmp_path: Path) -> None:
    """A regular file left where the FIFO belongs is replaced."""
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "qmgr").write_text("junk")
    svc = TriggerService(str(tmp_path), Target(), FakeReactor())
    svc.startService()
    assert stat.S_ISFIFO(os.stat(fifo_path(str(tmp_path))).st_mode)
    svc.stopService()


def test_send_trigger_without_server(tmp_path: Path) -> None:
    """No FIFO: FileNotFoundError; a FIFO nobody reads: ConnectionRefusedError
    (the write never blocks)."""
    with pytest.raises(FileNotFoundError):
        send_trigger(str(tmp_path))
    (tmp_path / "public").mkdir()
    os.mkfifo(fifo_path(str(tmp_path)))
    with pytest.raises(ConnectionRefusedError):
        send_trigger(str(tmp_path))
