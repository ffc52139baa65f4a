"""APPEND writes, fsyncs and numbers the message off the reactor call (a
store that must number on the reactor thread, the memory store, does so there).

The store contract (``IStagedAppend``: stage, commit_staged, sync_committed, discard_staged)
runs against both stores; the IMAP tests inject a thread runner that keeps
the work until the test runs it, as tests/test_imap_prefetch.py does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.mailstore import maildir_folder
from pymta.mailstore.interface import FolderChange, IFolder, IStagedAppend, IUserMailbox
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryStore
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

MSG = b"From: a@example.org\r\nSubject: staged\r\n\r\nbody\r\n"


@pytest.fixture(params=["memory", "maildir"])
def mailbox(request: pytest.FixtureRequest, tmp_path: Path) -> IUserMailbox:
    clock = Clock()
    clock.advance(1_700_000_000)
    if request.param == "memory":
        return MemoryStore(clock).open_user("u", str(tmp_path / "u"))
    store = MaildirStore(clock, hostname="test", fsync=False)
    return store.open_user("u", str(tmp_path / "u"))


def _tmp_files(folder: IFolder) -> list[str]:
    path = getattr(folder, "path", None)
    return [] if path is None else os.listdir(os.path.join(path, "tmp"))


def test_stage_then_commit(mailbox: IUserMailbox) -> None:
    """Staging leaves the folder untouched (no UID used, no listener told);
    committing numbers the message with the next UID, with its flags,
    keywords and internal date, LF line ends, and tells the listeners."""
    folder = mailbox.folder("INBOX")
    assert verifyObject(IStagedAppend, folder)
    heard: list[FolderChange] = []
    folder.add_listener(heard.append)
    first = folder.append(b"Subject: one\n\nx\n")
    heard.clear()
    before = (folder.uidnext, folder.highest_modseq)

    staged = IStagedAppend(folder).stage(MSG, ["\\Seen", "$Forwarded"], 1_600_000_000.0)
    assert (folder.uidnext, folder.highest_modseq) == before
    assert [m.uid for m in folder.messages()] == [first]
    assert heard == []

    uid = IStagedAppend(folder).commit_staged(staged)
    IStagedAppend(folder).sync_committed()
    assert uid == first + 1 == before[0]
    info = folder.get(uid)
    assert info.flags == frozenset({"\\Seen"})
    assert info.keywords == frozenset({"$Forwarded"})
    assert info.internal_date == 1_600_000_000.0
    assert folder.read(uid) == MSG.replace(b"\r\n", b"\n")
    assert [c.kind for c in heard] == ["append"] and heard[0].uids == (uid,)
    assert _tmp_files(folder) == []


def test_discard_staged(mailbox: IUserMailbox) -> None:
    """A staged message that is discarded never reaches the folder and
    leaves no file behind; discarding twice is harmless."""
    folder = mailbox.folder("INBOX")
    staging = IStagedAppend(folder)
    staged = staging.stage(MSG)
    if getattr(folder, "path", None) is not None:
        assert len(_tmp_files(folder)) == 1
    staging.discard_staged(staged)
    staging.discard_staged(staged)
    assert _tmp_files(folder) == []
    assert folder.messages() == []


def _world(tmp_path: Path) -> tuple[World, QueuedRunner, Session]:
    (tmp_path / "w").mkdir(parents=True)
    world = World(tmp_path / "w", store=MaildirStore(Clock(), "host", fsync=True))
    runner = QueuedRunner()
    world.factory.run_in_thread = runner
    s = world.connect()
    s.login()
    return world, runner, s


def _append_cmd(tag: bytes = b"ap", flags: bytes = b"(\\Seen)") -> bytes:
    return b"%s APPEND INBOX %s {%d+}\r\n%s\r\n" % (tag, flags, len(MSG), MSG)


def test_append_writes_in_the_runner_and_numbers_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APPEND writes no file during the reactor call: the write and fsync,
    the numbering (with the index's fsync: a UID is never handed out twice)
    and the fsync of cur/ run in one job of the thread runner; a
    pipelined NOOP waits its turn, and once the work is done the reply
    carries the right APPENDUID and the message is in cur/."""
    world, runner, s = _world(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    inbox.append(b"Subject: before\n\nx\n")
    writes: list[bool] = []
    fsyncs: list[bool] = []
    real_write, real_fsync = maildir_folder.MaildirFolder._write_tmp, os.fsync

    def write(self: Any, content: bytes, idate: float) -> Any:
        writes.append(runner.in_thread)
        return real_write(self, content, idate)

    def fsync(fd: int) -> None:
        fsyncs.append(runner.in_thread)
        real_fsync(fd)

    monkeypatch.setattr(maildir_folder.MaildirFolder, "_write_tmp", write)
    monkeypatch.setattr(maildir_folder.os, "fsync", fsync)

    reply = s.send(_append_cmd() + b"n NOOP\r\n")
    assert reply == b""
    assert writes == [] and len(runner.jobs) == 1
    assert len(inbox.messages()) == 1

    assert runner.run_all() == 1  # stage, commit_staged and sync_committed
    assert writes == [True]
    assert fsyncs == [True, True, True]  # the file, the index, new/
    lines = s.read().split(b"\r\n")[:-1]
    assert lines == [
        b"ap OK [APPENDUID %d 2] Append completed." % inbox.uidvalidity,
        b"n OK NOOP completed.",
    ]
    info = inbox.get(2)
    assert info.flags == frozenset({"\\Seen"})
    assert info.filename.startswith("new/")  # \Recent until a SELECT claims it
    assert inbox.read(2) == MSG.replace(b"\r\n", b"\n")


def test_a_store_that_numbers_in_the_reactor_gets_two_jobs(tmp_path: Path) -> None:
    """A store whose commit_staged must run in the reactor thread (the
    memory store calls its listeners there) is numbered between two runner
    jobs, stage and sync_committed, while a second session with the folder
    selected hears of the message."""
    (tmp_path / "w").mkdir(parents=True)
    world = World(tmp_path / "w")
    runner = QueuedRunner()
    world.factory.run_in_thread = runner
    watcher = world.connect()
    watcher.login()
    watcher.select()
    s = world.connect()
    s.login()
    assert s.send(_append_cmd()) == b""
    seen_in_reactor: list[bool] = []
    folder = world.mailbox().folder("INBOX")
    folder.add_listener(lambda change: seen_in_reactor.append(runner.in_thread))
    assert runner.run_all() == 2
    assert seen_in_reactor == [False]
    assert s.read().startswith(b"ap OK [APPENDUID")
    assert b"* 1 EXISTS" in watcher.send("n NOOP")


def test_failure_in_the_thread_answers_no(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails in the worker thread because the disk is full is
    answered ``NO [OVERQUOTA]`` (RFC 5530), not as a server bug, with no
    traceback logged; the folder is unchanged and the session goes on."""
    world, runner, s = _world(tmp_path)
    inbox = world.mailbox().folder("INBOX")

    def full(self: Any, content: bytes, idate: float) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(maildir_folder.MaildirFolder, "_write_tmp", full)
    assert s.send(_append_cmd() + b"n NOOP\r\n") == b""
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    assert lines == [b"ap NO [OVERQUOTA] Not enough disk space", b"n OK NOOP completed."]
    assert inbox.messages() == []
    assert not [e for e in world.events if "log_failure" in e]


def test_failed_directory_sync_answers_no(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When cur/ cannot be made durable after the numbering (an I/O error),
    the APPEND is not confirmed: ``NO [SERVERBUG]``, logged, and the
    session goes on."""
    world, runner, s = _world(tmp_path)

    def broken(self: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(maildir_folder.MaildirFolder, "sync_committed", broken)
    assert s.send(_append_cmd() + b"n NOOP\r\n") == b""
    assert runner.run_all() == 1
    lines = s.read().split(b"\r\n")[:-1]
    assert lines == [b"ap NO [SERVERBUG] Internal error occurred.", b"n OK NOOP completed."]
    failures = [e for e in world.events if e.get("command") == "APPEND" and "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(OSError)


def test_session_lost_while_staging_leaves_no_file(tmp_path: Path) -> None:
    """When the client goes away while the message is being written, the
    staged file is removed and nothing is appended."""
    world, runner, s = _world(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    assert s.send(_append_cmd()) == b""
    s.drop()
    runner.run_all()
    assert inbox.messages() == []
    assert _tmp_files(inbox) == []


def test_without_runner_append_stays_synchronous(tmp_path: Path) -> None:
    """With no thread runner (a reactor without threads) APPEND answers at
    once, with the same APPENDUID."""
    world, _, s = _world(tmp_path)
    world.factory.run_in_thread = None
    s.proto.run_in_thread = None
    inbox = world.mailbox().folder("INBOX")
    lines = s.send(_append_cmd()).split(b"\r\n")[:-1]
    assert lines == [b"ap OK [APPENDUID %d 1] Append completed." % inbox.uidvalidity]
