"""The scan pool's workers started ahead of need (pymta.imap.scan.ScanPool.prestart):
a SELECT or EXAMINE of a big folder starts them after its answer, off the
reactor thread; a small folder's SELECT leaves them to the first scan."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from pymta.imap import scan
from tests.test_imap_harness import World


class FakePool(scan.ScanPool):
    """A scan pool that only counts prestart calls."""

    def __init__(self) -> None:
        super().__init__(reactor=None)
        self.prestarted: list[bytes] = []
        self.session: Any = None

    def prestart(self) -> None:
        self.prestarted.append(b"")


def world_with(tmp_path: Path, count: int) -> tuple[World, FakePool]:
    world = World(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    for n in range(count):
        inbox.append(b"Subject: m%d\n\nbody\n" % n)
    pool = FakePool()
    world.factory.scan_in_thread = pool
    return world, pool


@pytest.mark.parametrize("command", ["SELECT", "EXAMINE"])
def test_big_folder_selected_prestarts_the_workers_after_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A SELECT or EXAMINE of a folder of PRESTART_MESSAGES messages asks the
    scan pool to start its workers once, in the reactor's next turn: the
    whole answer is written first (it never waits for them)."""
    monkeypatch.setattr(scan, "PRESTART_MESSAGES", 5)
    world, pool = world_with(tmp_path, 5)
    s = world.connect()
    pool.session = s
    s.login()
    assert pool.prestarted == []
    reply = s.send(f"s1 {command} INBOX")
    assert b"* 5 EXISTS" in reply
    assert b"s1 OK [READ-" in reply
    assert pool.prestarted == []
    world.clock.advance(0)
    assert len(pool.prestarted) == 1


def test_small_folder_selected_leaves_the_workers_to_the_first_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below PRESTART_MESSAGES a SELECT starts no worker."""
    monkeypatch.setattr(scan, "PRESTART_MESSAGES", 5)
    world, pool = world_with(tmp_path, 4)
    s = world.connect()
    pool.session = s
    s.login()
    assert b"* 4 EXISTS" in s.select()
    world.clock.advance(0)
    assert pool.prestarted == []


class RecordingReactor:
    """What ScanPool asks of the reactor, recorded, nothing run."""

    def __init__(self) -> None:
        self.in_thread: list[tuple[Any, ...]] = []
        self.triggers: list[tuple[Any, ...]] = []

    def callInThread(self, f: Any, *args: Any) -> None:
        self.in_thread.append((f, *args))

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.triggers.append(args)


def test_prestart_does_its_work_in_a_reactor_pool_thread() -> None:
    """prestart neither makes the pool nor starts a process in the calling
    (reactor) thread: it hands both to a reactor pool thread, once (a
    second prestart does nothing); the pool is shut down with the
    reactor."""
    fake = RecordingReactor()
    pool = scan.ScanPool(fake)
    before = multiprocessing.active_children()
    pool.prestart()
    pool.prestart()
    assert multiprocessing.active_children() == before
    assert pool._pools == []
    assert fake.in_thread == [(pool._start_workers,)]
    assert fake.triggers == [("during", "shutdown", pool._shutdown)]


@pytest_twisted.inlineCallbacks
def test_prestarted_workers_run_the_first_scan() -> Any:
    """With the real reactor: after prestart, SCAN_PROCESSES worker processes
    are running before any scan was asked, and the first scan runs in one
    of them (no further process is started for it)."""
    pool = scan.ScanPool(reactor)
    before = set(multiprocessing.active_children())
    pool.prestart()
    try:
        # No event tells when a process has been spawned: poll, with a deadline.
        deadline = time.monotonic() + 30
        while len(set(multiprocessing.active_children()) - before) < scan.SCAN_PROCESSES:
            assert time.monotonic() < deadline, "workers not started"
            d: Deferred[None] = Deferred()
            reactor.callLater(0.05, d.callback, None)  # type: ignore[attr-defined]
            yield d
        workers = set(multiprocessing.active_children()) - before
        pid = yield pool(os.getpid)
        assert pid in {p.pid for p in workers}
        assert set(multiprocessing.active_children()) - before == workers
    finally:
        pool._shutdown()
    # Once stopped (reactor shutdown), a scan is refused, no new pool made.
    failures: list[Any] = []
    pool(os.getpid).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(RuntimeError)
