"""APPEND writes, fsyncs and numbers the message off the reactor call: in
the mail store's threads, through its asynchronous API (the memory store
answers at once). MULTIAPPEND writes and syncs every message before it
numbers any, so a failed write leaves nothing behind.

The store contract (``IStagedAppend``: stage, commit_staged, sync_committed, discard_staged)
runs against both stores; the IMAP tests give the Maildir store a thread
runner that keeps the work until the test runs it, as
tests/test_imap_prefetch.py does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.mailstore import folder_save, maildir_folder
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
    """alice logged in on a Maildir store whose thread work waits for the test."""
    (tmp_path / "w").mkdir(parents=True)
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "host", fsync=True, run_in_thread=runner)
    world = World(tmp_path / "w", store=store)
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()  # opening the mailbox: the store's threads
    assert s.read().startswith(b"a OK")
    return world, runner, s


def _append_cmd(tag: bytes = b"ap", flags: bytes = b"(\\Seen)") -> bytes:
    return b"%s APPEND INBOX %s {%d+}\r\n%s\r\n" % (tag, flags, len(MSG), MSG)


def test_append_writes_in_the_stores_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APPEND writes no file during the reactor call: the write and fsync,
    the numbering (with the index's fsync: a UID is never handed out twice)
    and the fsync of new/ run in one job of the store's threads; a
    pipelined NOOP waits its turn, and once the work is done the reply
    carries the right APPENDUID and the message is in new/."""
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

    assert runner.run_all() == 1  # write, number, sync: one job
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


def test_memory_store_appends_at_once(tmp_path: Path) -> None:
    """The memory store answers its asynchronous API at once: APPEND is
    answered in the same call, and a second session with the folder
    selected hears of the message (listeners called in the reactor thread)."""
    (tmp_path / "w").mkdir(parents=True)
    world = World(tmp_path / "w")
    watcher = world.connect()
    watcher.login()
    watcher.select()
    s = world.connect()
    s.login()
    assert s.send(_append_cmd()).startswith(b"ap OK [APPENDUID")
    assert b"* 1 EXISTS" in watcher.send("n NOOP")


def _multiappend_cmd() -> bytes:
    one = b"Subject: one\r\n\r\nx\r\n"
    two = b"Subject: two\r\n\r\ny\r\n"
    return b"m APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(one), one, len(two), two)


def test_multiappend_stages_all_in_one_job(tmp_path: Path) -> None:
    """MULTIAPPEND (RFC 3502) stores both messages in one job of the
    store's threads and answers both UIDs."""
    world, runner, s = _world(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    assert s.send(_multiappend_cmd()) == b""
    assert runner.run_all() == 1
    assert s.read() == b"m OK [APPENDUID %d 1:2] Append completed.\r\n" % inbox.uidvalidity
    assert [inbox.read(u) for u in (1, 2)] == [b"Subject: one\n\nx\n", b"Subject: two\n\ny\n"]


def test_multiappend_write_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the second message of a MULTIAPPEND cannot be written (a full
    disk), none is stored, no file is left in tmp/, and the answer is
    NO [OVERQUOTA] (RFC 3502 6.3.11: all or nothing)."""
    world, runner, s = _world(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    real_write = maildir_folder.MaildirFolder._write_tmp
    written: list[int] = []

    def second_fails(self: Any, content: bytes, idate: float) -> Any:
        if written:
            raise OSError(28, "No space left on device")
        written.append(1)
        return real_write(self, content, idate)

    monkeypatch.setattr(maildir_folder.MaildirFolder, "_write_tmp", second_fails)
    assert s.send(_multiappend_cmd()) == b""
    runner.run_all()
    assert s.read() == b"m NO [OVERQUOTA] Not enough disk space\r\n"
    assert inbox.messages() == []
    assert _tmp_files(inbox) == []


def test_failure_in_the_thread_answers_no(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails in the store's thread because the disk is full is
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
    """When new/ cannot be made durable after the numbering (an I/O error),
    the APPEND is not confirmed: ``NO [SERVERBUG]``, logged with its
    traceback, and the session goes on."""
    world, runner, s = _world(tmp_path)

    def broken(path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(folder_save, "fsync_dir", broken)
    assert s.send(_append_cmd() + b"n NOOP\r\n") == b""
    assert runner.run_all() == 1
    lines = s.read().split(b"\r\n")[:-1]
    assert lines == [b"ap NO [SERVERBUG] Internal error occurred.", b"n OK NOOP completed."]
    failures = [e for e in world.events if e.get("command") == "APPEND" and "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(OSError)


def test_session_lost_after_the_command_still_stores(tmp_path: Path) -> None:
    """A client that goes away once its whole APPEND is in (before the
    answer) still has the message stored (the server took it; as Dovecot
    saves a message once its literal is complete), and no file is left in
    tmp/."""
    world, runner, s = _world(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    assert s.send(_append_cmd()) == b""
    s.drop()
    runner.run_all()
    assert [m.uid for m in inbox.messages()] == [1]
    assert _tmp_files(inbox) == []


def test_without_runner_append_stays_synchronous(tmp_path: Path) -> None:
    """With a store that has no threads (a reactor without them) APPEND
    answers at once, with the same APPENDUID."""
    (tmp_path / "w").mkdir(parents=True)
    world = World(tmp_path / "w", store=MaildirStore(Clock(), "host", fsync=False))
    s = world.connect()
    s.login()
    inbox = world.mailbox().folder("INBOX")
    lines = s.send(_append_cmd()).split(b"\r\n")[:-1]
    assert lines == [b"ap OK [APPENDUID %d 1] Append completed." % inbox.uidvalidity]
