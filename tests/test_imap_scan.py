"""Body SEARCH off the reactor (pymta.imap.scan): the files are read and tested
in the scan runner, one scan per user at a time, the answer as before."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.imap import message_commands, scan
from pymta.imap.parser import tokenize
from pymta.mailstore import files, filescan, maildir_folder
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

COUNT = 40
NEEDLES = [n for n in range(1, COUNT + 1) if n % 7 == 0]


def world_with_bodies(tmp_path: Path, count: int = COUNT) -> World:
    (tmp_path / "w").mkdir(parents=True)
    world = World(tmp_path / "w", store=MaildirStore(Clock(), "host", fsync=False))
    for user in ("alice", "bob"):
        inbox = world.mailbox(user).folder("INBOX")
        for n in range(1, count + 1):
            body = b"the needle is here" if n in NEEDLES else b"nothing to see"
            inbox.append(b"From: a@example.org\nSubject: m%d\n\n%s %d\n" % (n, body, n))
    return world


def logged_in(world: World, user: str = "alice") -> Session:
    s = world.connect()
    password = "secret" if user == "alice" else "hunter2"
    s.login(f"{user}@example.org", password)
    s.select()
    return s


@pytest.fixture
def thread_checks(monkeypatch: pytest.MonkeyPatch) -> tuple[QueuedRunner, list[str]]:
    """A scan runner, and a record of what ran where: message files read by
    the scan must be read "in the thread", and the folder's own methods (the
    reactor's index and caches) must never be called there."""
    runner = QueuedRunner()
    where: list[str] = []
    real_read = files.read_message_path

    def read(path: str, size: int) -> bytes | None:
        where.append("thread read" if runner.in_thread else "reactor read")
        return real_read(path, size)

    monkeypatch.setattr(files, "read_message_path", read)
    for name in ("get", "read", "open", "header_bytes", "messages", "refresh"):
        real = getattr(maildir_folder.MaildirFolder, name)

        def guarded(self: Any, *args: Any, _real: Any = real, _name: str = name) -> Any:
            if runner.in_thread:
                where.append(f"folder.{_name} in thread")
            return _real(self, *args)

        monkeypatch.setattr(maildir_folder.MaildirFolder, name, guarded)
    return runner, where


def expected_answer() -> bytes:
    return b"* SEARCH " + b" ".join(b"%d" % n for n in NEEDLES)


def test_body_search_reads_files_in_the_scan_runner(
    tmp_path: Path, thread_checks: tuple[QueuedRunner, list[str]]
) -> None:
    """SEARCH BODY reads no message file in the reactor call: the snapshot is
    handed to the scan runner, the reply and a pipelined NOOP wait, then the
    answer is the one the in-reactor path gives; in the worker only files are
    read, never the folder's index or caches."""
    runner, where = thread_checks
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)
    assert s.send(b"q SEARCH BODY needle\r\nn NOOP\r\n") == b""
    assert len(runner.jobs) == 1
    assert runner.run_all() == 1
    assert where == ["thread read"] * COUNT
    lines = s.read().split(b"\r\n")[:-1]
    assert lines == [expected_answer(), b"q OK Search completed.", b"n OK NOOP completed."]
    assert s.lines("t UID SEARCH TEXT m14") == []
    runner.run_all()
    assert s.read().split(b"\r\n")[:-1] == [b"* SEARCH 14", b"t OK Search completed."]

    world.factory.scan_in_thread = None  # the old path, in the reactor
    t = logged_in(world)
    assert t.lines("q SEARCH BODY needle") == lines[:2]


def test_header_only_search_does_not_use_the_scan_runner(
    tmp_path: Path, thread_checks: tuple[QueuedRunner, list[str]]
) -> None:
    """A SEARCH without BODY or TEXT stays on its own path (index, header cache)."""
    runner, _ = thread_checks
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)
    assert s.lines("q SEARCH SUBJECT m7") == [b"* SEARCH 7", b"q OK Search completed."]
    assert runner.jobs == []


@pytest.mark.parametrize(("prestart_at", "started"), [(COUNT, scan.SCAN_PROCESSES), (COUNT + 1, 0)])
def test_a_big_folder_selected_starts_the_scan_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prestart_at: int, started: int
) -> None:
    """A SELECT of a folder of PRESTART_MESSAGES or more starts the scan
    workers in the reactor's turn after its answer (one trivial job per
    worker process, nobody waiting for it), so the folder's first SORT or
    body SEARCH does not wait for them; a smaller folder's SELECT does
    not."""
    monkeypatch.setattr(scan, "PRESTART_MESSAGES", prestart_at)
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = world.connect()
    s.login()
    assert s.send("b SELECT INBOX").endswith(b"b OK [READ-WRITE] Select completed.\r\n")
    assert runner.jobs == []  # the answer first
    world.clock.advance(0)
    assert len(runner.jobs) == started
    runner.run_all()


def test_big_folder_is_scanned_in_batches_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files go to the runner in batches of BATCH_MESSAGES, one batch in
    flight per scan; the matches come back in sequence order."""
    monkeypatch.setattr(filescan, "BATCH_MESSAGES", 8)
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)
    assert s.send("q SEARCH BODY needle") == b""
    batches = 0
    while runner.jobs:
        assert len(runner.jobs) == 1
        runner.run_one()
        batches += 1
    assert batches == COUNT // 8
    assert s.read().split(b"\r\n")[:-1] == [expected_answer(), b"q OK Search completed."]


def test_one_scan_per_user_others_wait_their_turn(tmp_path: Path) -> None:
    """Two sessions of one user: the second body SEARCH waits until the first
    is answered; another user's scan does not wait for them."""
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    first, second, other = logged_in(world), logged_in(world), logged_in(world, "bob")
    assert first.send("a SEARCH BODY needle") == b""
    assert second.send("b SEARCH BODY needle") == b""
    assert other.send("c SEARCH BODY needle") == b""
    assert len(runner.jobs) == 2  # alice's first scan and bob's
    assert world.factory.scan_gate.waiting("alice@example.org") == 1
    runner.run_one()  # alice's first
    assert first.read().endswith(b"a OK Search completed.\r\n")
    assert len(runner.jobs) == 2  # bob's, and now alice's second
    runner.run_all()
    assert second.read().split(b"\r\n")[:-1] == [expected_answer(), b"b OK Search completed."]
    assert other.read().split(b"\r\n")[:-1] == [expected_answer(), b"c OK Search completed."]
    assert world.factory.scan_gate.waiting("alice@example.org") == 0


def test_renamed_file_is_found_again_and_expunged_one_left_out(tmp_path: Path) -> None:
    """A message whose flags another session changed while the scan waited
    (its file renamed) is read again under its new name; one expunged
    meanwhile is left out, without an error."""
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s, other = logged_in(world), logged_in(world)
    assert s.send("q UID SEARCH BODY needle") == b""
    renamed, expunged = NEEDLES[0], NEEDLES[1]
    other.send(f"x UID STORE {renamed} +FLAGS (\\Seen)")
    other.send(f"y UID STORE {expunged} +FLAGS (\\Deleted)")
    other.send("z EXPUNGE")
    assert runner.run_all() == 2  # all, then the renamed one again
    lines = s.read().split(b"\r\n")[:-1]
    kept = [n for n in NEEDLES if n != expunged]
    assert lines[0] == b"* SEARCH " + b" ".join(b"%d" % n for n in kept)
    assert lines[-1] == b"q OK Search completed."


def test_error_in_the_worker_is_no_serverbug_and_frees_the_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the worker is logged and answered NO [SERVERBUG]; the user's
    next scan runs; a session that leaves while its scan waits gives its
    turn back without running."""
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)
    real = filescan.match_files

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(filescan, "match_files", broken)
    assert s.send("q SEARCH BODY needle") == b""
    runner.run_all()
    assert s.lines("n NOOP") == [
        b"q NO [SERVERBUG] Internal error occurred. Refer to server log for more information.",
        b"n OK NOOP completed.",
    ]
    failures = [e for e in world.events if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(RuntimeError)
    monkeypatch.setattr(filescan, "match_files", real)

    leaving, waiting = logged_in(world), logged_in(world)
    assert leaving.send("a SEARCH BODY needle") == b""
    assert waiting.send("b SEARCH BODY needle") == b""
    leaving.drop()
    runner.run_all()
    assert waiting.read().split(b"\r\n")[:-1] == [expected_answer(), b"b OK Search completed."]
    assert world.factory.scan_gate.waiting("alice@example.org") == 0


def test_scan_work_is_picklable_for_the_worker_processes(tmp_path: Path) -> None:
    """What goes to a scan worker process (the store's file reader, the
    session's SearchMatch with its criteria tokens and saved result, the
    batch of index records) survives pickling, and the unpickled work
    gives the same matches as the original."""
    world = world_with_bodies(tmp_path)
    folder = world.mailbox().folder("INBOX")
    messages = folder.messages()
    batch = [(i, (n, False), info) for i, (n, info) in enumerate(enumerate(messages, 1))]
    match = scan.SearchMatch(
        tokenize(b"OR BODY needle $"), frozenset({3}), False, len(batch), messages[-1].uid
    )
    work = partial(
        filescan.match_files, filescan.IMessageFiles(folder).message_reader(), match, batch
    )
    matched, unread = pickle.loads(pickle.dumps(work))()
    assert [position + 1 for position in matched] == sorted([3, *NEEDLES])  # $ is UID 3
    assert unread == []
    assert (matched, unread) == work()


def test_error_before_the_scan_starts_is_answered_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while the snapshot is taken (in the reactor, before any batch)
    is also logged and answered NO [SERVERBUG], never left unanswered, and
    the user's turn is given back."""
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)

    def broken(view: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(message_commands, "_snapshot", broken)
    assert s.lines("q SEARCH BODY needle") == [
        b"q NO [SERVERBUG] Internal error occurred. Refer to server log for more information."
    ]
    assert runner.jobs == []
    assert world.factory.scan_gate.waiting("alice@example.org") == 0
    monkeypatch.undo()
    assert s.send("r SEARCH BODY needle") == b""
    runner.run_all()
    assert s.read().split(b"\r\n")[:-1] == [expected_answer(), b"r OK Search completed."]
