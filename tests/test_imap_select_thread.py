"""The first SELECT / STATUS of a big unindexed Maildir measures its files
off the reactor call: in the mail store's threads, through its
asynchronous API (the runner the Maildir store is given). Only the files
whose names lack their sizes are measured (stat'ed, read): the others'
sizes come from their names, and their dates are read when a command
needs them."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.mailstore import folder_scan, maildir_folder
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.prefetch import PREFETCH_MIN
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

COUNT = PREFETCH_MIN * 2 + 5


def unhinted(first: int, count: int) -> int:
    """How many of write_files' messages first.. have no size hint."""
    return sum(1 for n in range(first, first + count) if n % 3 == 0)


#: The files of big_world's INBOX that a first scan must measure.
UNHINTED = unhinted(1, COUNT)


def message(n: int) -> bytes:
    return b"From: a@example.org\nSubject: message %d\n\nbody %d\nline two\n" % (n, n)


def write_files(maildir: Path, first: int, count: int, sub: str = "cur") -> list[str]:
    """Messages written straight into the Maildir, as another program would:
    every third without a size hint (its lines must be counted), every
    fourth already \\Seen, a few with a keyword letter."""
    names = []
    for n in range(first, first + count):
        data = message(n)
        base = f"{1_700_000_000 + n}.M{n}P1.host"
        if n % 3:
            lines = data.count(b"\n")
            base += f",S={len(data)},W={len(data) + lines}"
        letters = ("S" if n % 4 == 0 else "") + ("a" if n % 10 == 0 else "")
        name = f"{base}:2,{letters}" if sub == "cur" else base
        (maildir / sub / name).write_bytes(data)
        names.append(f"{sub}/{name}")
    return names


def big_world(
    tmp_path: Path, clock: Clock | None = None, store_runner: QueuedRunner | None = None
) -> World:
    """A user whose INBOX holds COUNT messages and no index yet (the store's
    asynchronous API runs its thread work in ``store_runner``: at once
    when None)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    maildir = tmp_path / "alice"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "dovecot-keywords").write_text("0 $Important\n")
    write_files(maildir, 1, COUNT - 10)
    write_files(maildir, COUNT - 9, 10, sub="new")
    store = MaildirStore(clock or Clock(), "host", fsync=False, run_in_thread=store_runner)
    return World(tmp_path, store=store)


class Measured(list[bool | None]):
    """For each message file measured, whether the runner was running the
    work then (None: measured with no runner in use)."""

    runner: QueuedRunner | None = None


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> Measured:
    calls = Measured()
    real = folder_scan.measure_at

    def watched(dir_fd: int, path: str, sub: str, name: str) -> Any:
        calls.append(calls.runner.in_thread if calls.runner is not None else None)
        return real(dir_fd, path, sub, name)

    monkeypatch.setattr(folder_scan, "measure_at", watched)
    return calls


def normalised(lines: list[bytes]) -> list[bytes]:
    """The answer without its UIDVALIDITY value (a new one per index)."""
    return [re.sub(rb"UIDVALIDITY \d+", b"UIDVALIDITY N", line) for line in lines]


def logged_in(world: World) -> Session:
    s = world.connect()
    s.login()
    return s


def sync_answer(tmp_path: Path, command: str) -> list[bytes]:
    world = big_world(tmp_path)
    world.factory.run_in_thread = None
    return normalised(logged_in(world).lines(command))


def store_threaded(
    tmp_path: Path, calls: Measured, clock: Clock | None = None
) -> tuple[World, QueuedRunner, Session]:
    """big_world with the store's thread work held for the test, alice
    logged in."""
    runner = QueuedRunner()
    world = big_world(tmp_path, clock, store_runner=runner)
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()  # opening the mailbox
    assert s.read().startswith(b"a OK")
    calls.runner = runner
    return world, runner, s


def test_first_select_measures_files_in_the_stores_threads_and_answers_the_same(
    tmp_path: Path, measured: Measured
) -> None:
    """SELECT of a big Maildir without an index reads no message file in the
    reactor call: the directories are listed and the files measured in the
    store's threads, the reply and a pipelined NOOP wait, and the answer
    is the synchronous path's."""
    _, runner, s = store_threaded(tmp_path / "threaded", measured)
    assert s.send(b"s SELECT INBOX\r\nn NOOP\r\n") == b""
    assert measured == []
    assert len(runner.jobs) == 1  # the scan
    runner.run_all()  # (ten \Recent are claimed at once after it)
    assert measured == [True] * UNHINTED
    lines = normalised(s.read().split(b"\r\n")[:-1])
    assert b"* %d EXISTS" % COUNT in lines
    assert b"* 10 RECENT" in lines
    assert lines[-2:] == [b"s OK [READ-WRITE] Select completed.", b"n OK NOOP completed."]

    del measured[:]
    measured.runner = None
    expected = sync_answer(tmp_path / "sync", "s SELECT INBOX")
    assert measured == [None] * UNHINTED  # the synchronous path reads them itself
    assert lines[:-1] == expected
    # The sizes and flags measured are those the index serves.
    fetched = s.lines("f FETCH 1:* (RFC822.SIZE FLAGS)")
    assert len(fetched) == COUNT + 1
    assert fetched[2] == b"* 3 FETCH (RFC822.SIZE %d FLAGS ())" % (len(message(3)) + 5)
    assert fetched[9] == b"* 10 FETCH (RFC822.SIZE %d FLAGS ($Important))" % (len(message(10)) + 5)
    assert fetched[3].endswith(b"FLAGS (\\Seen))")


def test_examine_leaves_recent_and_a_missing_folder_is_no(
    tmp_path: Path, measured: Measured
) -> None:
    """EXAMINE scans in the store's threads too, shows \\Recent without
    claiming it (nothing moves out of new/); SELECT of a folder that is
    not there is NO [NONEXISTENT]."""
    _, runner, s = store_threaded(tmp_path, measured)
    assert s.send("e EXAMINE INBOX") == b""
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    assert b"* 10 RECENT" in lines and lines[-1] == b"e OK [READ-ONLY] Select completed."
    assert len(os.listdir(tmp_path / "alice" / "new")) == 10
    assert s.lines("s SELECT Nope") == [b"s NO [NONEXISTENT] Mailbox doesn't exist: Nope"]


def test_status_of_big_unindexed_folder_uses_the_stores_runner(
    tmp_path: Path, measured: Measured
) -> None:
    """STATUS on a big unindexed folder measures its files in the store's
    threads (the runner of its asynchronous API), answers nothing before,
    and then answers as the synchronous path does."""
    runner = QueuedRunner()
    world = big_world(tmp_path / "threaded", store_runner=runner)
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()  # opening the mailbox
    assert s.read().startswith(b"a OK")
    measured.runner = runner
    command = "t STATUS INBOX (MESSAGES UNSEEN RECENT UIDNEXT SIZE)"
    assert s.send(command) == b""
    assert measured == []
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    assert all(measured) and len(measured) == UNHINTED
    assert lines[0].startswith(b'* STATUS "INBOX" (MESSAGES %d ' % COUNT)
    assert lines == sync_answer(tmp_path / "sync", command)


def test_deliveries_while_away_are_measured_in_the_stores_threads(
    tmp_path: Path, measured: Measured
) -> None:
    """A folder with an index, reopened by a new process after many
    deliveries into new/: the index is loaded without scanning, and only the
    new files are measured, in the store's threads."""
    world = big_world(tmp_path)
    world.factory.run_in_thread = None
    logged_in(world).select()  # builds the index synchronously
    write_files(tmp_path / "alice", 1000, PREFETCH_MIN, sub="new")
    del measured[:]
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner)
    restarted = World(tmp_path, store=store)
    s = restarted.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()
    s.read()
    measured.runner = runner
    assert s.send("s SELECT INBOX") == b""
    assert measured == []
    runner.run_all()
    assert measured == [True] * unhinted(1000, PREFETCH_MIN)
    lines = s.read().split(b"\r\n")[:-1]
    assert b"* %d EXISTS" % (COUNT + PREFETCH_MIN) in lines
    assert b"* %d RECENT" % PREFETCH_MIN in lines


def test_unchanged_directories_need_no_second_scan(
    tmp_path: Path, measured: Measured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the directories did not change while the runner worked (their
    mtimes are older than the clock's recent window), the index matches
    them afterwards: no listing is repeated in the reactor thread, and the
    scan stamp is recorded for the next process."""
    clock = Clock()
    clock.advance(time.time() + 60)
    world, runner, s = store_threaded(tmp_path, measured, clock)
    listed: list[bool] = []
    real = maildir_folder.MaildirFolder._list

    def watched(self: maildir_folder.MaildirFolder) -> Any:
        listed.append(runner.in_thread)
        return real(self)

    monkeypatch.setattr(maildir_folder.MaildirFolder, "_list", watched)
    assert s.send("s SELECT INBOX") == b""
    runner.run_all()
    assert s.read().endswith(b"s OK [READ-WRITE] Select completed.\r\n")
    assert listed == [True]
    folder = world.mailbox().folder("INBOX")
    assert not folder.changed_on_disk()
    assert len(folder.messages()) == COUNT
    assert measured == [True] * UNHINTED
