"""Header SEARCH with a cold header cache reads the files off the reactor call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pymta.imap.prefetch import PREFETCH_MIN
from pymta.imap.view import SelectedView
from pymta.mailstore import maildir_folder
from pymta.mailstore.interface import IHeaderCache
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World

COUNT = PREFETCH_MIN * 3
NEEDLES = [n for n in range(1, COUNT + 1) if n % 25 == 0]


class QueuedRunner:
    """A thread runner that keeps the work until the test runs it, marking
    that it runs "in the worker thread"."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.in_thread = False

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((work, d))
        return d

    def run_all(self) -> int:
        ran = 0
        while self.jobs:
            work, d = self.jobs.pop(0)
            self.in_thread = True
            try:
                result = work()
            finally:
                self.in_thread = False
            d.callback(result)
            ran += 1
        return ran


def world_with_big_inbox(tmp_path: Path) -> World:
    (tmp_path / "w").mkdir(parents=True)
    world = World(tmp_path / "w", store=MaildirStore(Clock(), "host", fsync=False))
    inbox = world.mailbox().folder("INBOX")
    for n in range(1, COUNT + 1):
        subject = b"needle %d" % n if n in NEEDLES else b"message %d" % n
        inbox.append(b"From: a@example.org\nSubject: " + subject + b"\n\nbody\n")
    return world


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts message files read for headers, by the prefetch and by the
    folder's own (synchronous) path."""
    counts = {"prefetch": 0, "sync": 0}
    real_read = maildir_folder.read_header_file
    real_open = maildir_folder.MaildirFolder.open

    def read(path: str) -> bytes | None:
        counts["prefetch"] += 1
        return real_read(path)

    def open_(self: Any, uid: int) -> Any:
        counts["sync"] += 1
        return real_open(self, uid)

    monkeypatch.setattr(maildir_folder, "read_header_file", read)
    monkeypatch.setattr(maildir_folder.MaildirFolder, "open", open_)
    return counts


def view_of(s: Session) -> SelectedView:
    assert s.proto.view is not None
    return s.proto.view


def logged_in(world: World) -> Session:
    s = world.connect()
    s.login()
    s.select()
    return s


def test_cold_search_reads_headers_in_the_runner_and_answers_the_same(
    tmp_path: Path, counted: dict[str, int]
) -> None:
    """A header SEARCH over many uncached messages reads no file in the
    reactor call: it hands the reads to the thread runner, holds its reply
    and a pipelined NOOP until they are done, then answers exactly as the
    synchronous path does, from the now warm cache."""
    world = world_with_big_inbox(tmp_path)
    runner = QueuedRunner()
    world.factory.run_in_thread = runner
    s = logged_in(world)
    assert len(IHeaderCache(view_of(s).folder).uncached_headers(view_of(s).uids)) == COUNT

    reply = s.send(b"q UID SEARCH SUBJECT needle\r\nn NOOP\r\n")
    assert reply == b""  # nothing answered yet, the NOOP waits its turn
    assert counted == {"prefetch": 0, "sync": 0}
    assert len(runner.jobs) == 1

    seen_in_thread: list[bool] = []
    real = maildir_folder.read_header_file

    def watched(path: str) -> bytes | None:
        seen_in_thread.append(runner.in_thread)
        return real(path)

    maildir_folder.read_header_file = watched
    try:
        assert runner.run_all() == 1
    finally:
        maildir_folder.read_header_file = real
    assert seen_in_thread == [True] * COUNT
    assert counted["sync"] == 0  # the search itself found every header cached
    lines = s.read().split(b"\r\n")[:-1]
    expected = b"* SEARCH " + b" ".join(b"%d" % n for n in NEEDLES)
    assert lines == [expected, b"q OK Search completed.", b"n OK NOOP completed."]

    # The synchronous path (no runner), on a fresh copy, gives the same answer.
    other = world_with_big_inbox(tmp_path / "sync")
    other.factory.run_in_thread = None
    t = logged_in(other)
    assert t.lines("q UID SEARCH SUBJECT needle") == lines[:2]
    assert counted["sync"] == COUNT


def test_message_expunged_during_prefetch_is_skipped(
    tmp_path: Path, counted: dict[str, int]
) -> None:
    """A message expunged by another session while its header is read in the
    worker is left out of the cache and of the answer, without an error."""
    world = world_with_big_inbox(tmp_path)
    runner = QueuedRunner()
    world.factory.run_in_thread = runner
    s = logged_in(world)
    assert s.send("q UID SEARCH SUBJECT needle") == b""
    folder = view_of(s).folder
    work, d = runner.jobs.pop(0)
    blocks = work()  # read, then the message goes before the cache is filled
    gone = NEEDLES[0]
    folder.expunge([gone])
    d.callback(blocks)
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    # UID SEARCH may report the expunge (RFC 3501 7.4.1); the answer skips it.
    assert lines[0] == b"* SEARCH " + b" ".join(b"%d" % n for n in NEEDLES[1:])
    assert lines[-1] == b"q OK Search completed."
    assert counted["sync"] == 0
    assert IHeaderCache(folder).uncached_headers([gone]) == []


def test_few_uncached_headers_stay_synchronous(tmp_path: Path) -> None:
    """Below PREFETCH_MIN uncached headers no thread is used: the reply comes
    within the same call, as before."""
    world = world_with_big_inbox(tmp_path)
    runner = QueuedRunner()
    world.factory.run_in_thread = runner
    s = logged_in(world)
    folder = IHeaderCache(view_of(s).folder)
    uids = view_of(s).uids
    folder.cache_headers(folder.read_headers(folder.uncached_headers(uids[: COUNT - 5])))
    assert len(folder.uncached_headers(uids)) == 5
    reply = s.lines("q SEARCH SUBJECT needle")
    assert reply[-1] == b"q OK Search completed."
    assert runner.jobs == []
