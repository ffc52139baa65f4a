"""Header SEARCH with a cold header cache has the mail store read the files
in its threads (the asynchronous API's prefetch_headers), off the reactor
call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from pymta.imap import message_commands
from pymta.imap.view import SelectedView
from pymta.mailstore import folder_read, maildir_folder
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.prefetch import PREFETCH_MIN
from tests.test_imap_harness import Session, World

COUNT = PREFETCH_MIN * 3
NEEDLES = [n for n in range(1, COUNT + 1) if n % 25 == 0]


class QueuedRunner:
    """A thread runner that keeps the work until the test runs it, marking
    that it runs "in the worker thread"; an exception in the work fails its
    Deferred, as ``deferToThreadPool`` does."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.in_thread = False

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((work, d))
        return d

    def run_one(self) -> None:
        """Run the oldest job (its Deferred fires on this thread, after)."""
        work, d = self.jobs.pop(0)
        self.in_thread = True
        try:
            result = work()
        except Exception:
            self.in_thread = False
            d.errback()
        else:
            self.in_thread = False
            d.callback(result)

    def run_all(self) -> int:
        ran = 0
        while self.jobs:
            self.run_one()
            ran += 1
        return ran


class StoreRunner:
    """The Maildir store's thread runner in these tests: everything at
    once, until :func:`hold` hands its work to a QueuedRunner."""

    def __init__(self) -> None:
        self.via: QueuedRunner | None = None

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        if self.via is None:
            return maybeDeferred(work)
        return self.via(work)


_runners: dict[int, StoreRunner] = {}


def hold(world: World, runner: QueuedRunner | None) -> None:
    """From now on the store's thread work waits in ``runner`` (None:
    at once again)."""
    _runners[id(world.store)].via = runner


def world_with_big_inbox(tmp_path: Path, threads: bool = True) -> World:
    """COUNT messages in INBOX; the store's thread work runs at once (in a
    StoreRunner, see :func:`hold`), or without ``threads`` in the caller."""
    (tmp_path / "w").mkdir(parents=True)
    store_runner = StoreRunner() if threads else None
    store = MaildirStore(Clock(), "host", fsync=False, run_in_thread=store_runner)
    if store_runner is not None:
        _runners[id(store)] = store_runner
    world = World(tmp_path / "w", store=store)
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
    real_read = folder_read.read_header_file
    real_open = maildir_folder.MaildirFolder.open

    def read(path: str) -> bytes | None:
        counts["prefetch"] += 1
        return real_read(path)

    def open_(self: Any, uid: int) -> Any:
        counts["sync"] += 1
        return real_open(self, uid)

    monkeypatch.setattr(folder_read, "read_header_file", read)
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
    s = logged_in(world)
    hold(world, runner)
    assert len(view_of(s).store.folder.uncached_headers(view_of(s).uids)) == COUNT  # type: ignore[attr-defined]

    reply = s.send(b"q UID SEARCH SUBJECT needle\r\nn NOOP\r\n")
    assert reply == b""  # nothing answered yet, the NOOP waits its turn
    assert counted == {"prefetch": 0, "sync": 0}
    assert len(runner.jobs) == 1

    seen_in_thread: list[bool] = []
    real = folder_read.read_header_file

    def watched(path: str) -> bytes | None:
        seen_in_thread.append(runner.in_thread)
        return real(path)

    folder_read.read_header_file = watched
    try:
        # The reads, then the NOOP's rescan (the store's thread work too).
        assert runner.run_all() == 2
    finally:
        folder_read.read_header_file = real
    assert seen_in_thread == [True] * COUNT
    assert counted["sync"] == 0  # the search itself found every header cached
    lines = s.read().split(b"\r\n")[:-1]
    expected = b"* SEARCH " + b" ".join(b"%d" % n for n in NEEDLES)
    assert lines == [expected, b"q OK Search completed.", b"n OK NOOP completed."]

    # Without threads (the store reads in the caller), on a fresh copy: the same.
    other = world_with_big_inbox(tmp_path / "sync", threads=False)
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
    s = logged_in(world)
    hold(world, runner)
    assert s.send("q UID SEARCH SUBJECT needle") == b""
    folder = view_of(s).store.folder  # type: ignore[attr-defined]
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
    assert folder.uncached_headers([gone]) == []


def test_few_uncached_headers_stay_synchronous(tmp_path: Path) -> None:
    """Below PREFETCH_MIN uncached headers no thread is used: the reply comes
    within the same call, as before."""
    world = world_with_big_inbox(tmp_path)
    runner = QueuedRunner()
    s = logged_in(world)
    hold(world, runner)
    folder: Any = view_of(s).store.folder  # type: ignore[attr-defined] # the Maildir folder (its header cache)
    uids = view_of(s).uids
    folder.cache_headers(folder.read_headers(folder.uncached_headers(uids[: COUNT - 5])))
    assert len(folder.uncached_headers(uids)) == 5
    reply = s.lines("q SEARCH SUBJECT needle")
    assert reply[-1] == b"q OK Search completed."
    assert runner.jobs == []


def test_search_of_a_big_folder_lets_other_sessions_in_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SEARCH over more than SEARCH_SLICE messages tests that many per
    reactor turn: another session is answered between the turns, the
    searching session's pipelined NOOP waits for the SEARCH, and the
    answer is the one a single pass gives. After a cold-cache prefetch in
    the thread runner the slices follow the same way."""
    monkeypatch.setattr(message_commands, "SEARCH_SLICE", 50)
    world = world_with_big_inbox(tmp_path)
    runner = QueuedRunner()
    clock = world.clock
    s, other = logged_in(world), logged_in(world)
    hold(world, runner)
    expected = b"* SEARCH " + b" ".join(b"%d" % n for n in NEEDLES)

    assert s.send(b"q UID SEARCH SUBJECT needle\r\nn NOOP\r\n") == b""
    assert runner.run_all() == 1  # the cold cache, read in the "thread"
    hold(world, None)  # the NOOPs' rescans (the cache file changed) at once
    turns = 0
    while not s.transport.value().endswith(b"n OK NOOP completed.\r\n"):
        assert other.send("o NOOP") == b"o OK NOOP completed.\r\n"
        one_turn(clock)
        turns += 1
        assert turns < 100
    assert turns == COUNT // 50  # one turn per further slice of 50
    lines = s.read().split(b"\r\n")[:-1]
    assert lines == [expected, b"q OK Search completed.", b"n OK NOOP completed."]

    # Warm now: no prefetch, the slices alone; the same answer.
    assert s.send(b"r UID SEARCH SUBJECT needle\r\n") == b""
    for _ in range(COUNT // 50):
        one_turn(clock)
    assert s.read().split(b"\r\n")[:-1] == [expected, b"r OK Search completed."]


def one_turn(clock: Clock) -> None:
    """Run the one call due now, as one turn of a real reactor would
    (Clock.advance(0) would also run what that call schedules)."""
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    assert len(due) == 1, due
    clock.calls.remove(due[0])
    due[0].func(*due[0].args, **due[0].kw)


def test_unexpected_error_in_a_sliced_search_answers_no(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that strikes in a later slice of a SEARCH is logged and
    answered NO [SERVERBUG]; the session goes on. A session that leaves
    mid-search stops the slices."""
    monkeypatch.setattr(message_commands, "SEARCH_SLICE", 50)
    world = world_with_big_inbox(tmp_path)
    s = logged_in(world)
    calls = 0
    fail_at = 120
    real_parse = message_commands.parse_search

    def counted_parse(*args: Any, **kwargs: Any) -> Any:
        criteria = real_parse(*args, **kwargs)
        real_test = criteria.test

        def test(cand: Any) -> bool:
            nonlocal calls
            calls += 1
            if calls == fail_at:
                raise RuntimeError("bug")
            return bool(real_test(cand))

        return replace(criteria, test=test)

    monkeypatch.setattr(message_commands, "parse_search", counted_parse)
    assert s.send(b"q SEARCH ALL\r\n") == b""
    assert calls == 50
    one_turn(world.clock)
    one_turn(world.clock)
    assert s.lines("n NOOP") == [
        b"q NO [SERVERBUG] Internal error occurred. Refer to server log for more information.",
        b"n OK NOOP completed.",
    ]
    failures = [e for e in world.events if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(RuntimeError)

    calls, fail_at = 0, -1
    assert s.send(b"r SEARCH ALL\r\n") == b""
    s.drop()
    world.clock.advance(0)
    assert calls == 50  # the first slice only
