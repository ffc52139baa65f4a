"""IMAP's folder commands on the mail store's asynchronous API: with the
Maildir store's calls held in its "threads" (a runner the test drives),
CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB, LIST-STATUS and STATUS of a
folder changed on disk answer only once the store has, a pipelined command
waits and is answered after them, in order; the answers and the store's
errors are those the synchronous path gave."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.mailstore.maildir import MaildirStore, MaildirUserMailbox
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def held(tmp_path: Path) -> tuple[World, Session, QueuedRunner]:
    """alice logged in on a Maildir store whose thread work waits for the test."""
    runner = QueuedRunner()
    world = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner))
    world.mailbox().folder("INBOX").append(MSG)
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()  # opening the mailbox: the store's threads
    assert s.read().startswith(b"a OK")
    return world, s, runner


def answer(s: Session, runner: QueuedRunner, command: str) -> list[bytes]:
    """Send ``command`` and a NOOP: nothing until the store's work has run,
    then both answers, the NOOP's last."""
    assert s.send(command + "\r\nn NOOP") == b""
    assert runner.jobs
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    assert lines[-1] == b"n OK NOOP completed."
    return lines[:-1]


def test_create_rename_delete_wait_for_the_store(tmp_path: Path) -> None:
    """CREATE, RENAME and DELETE run in the store's threads and are answered
    after them; the folders are there (or gone) when the OK is sent."""
    world, s, runner = held(tmp_path)
    assert answer(s, runner, "c CREATE Work") == [b"c OK Create completed."]
    assert "Work" in {f.name for f in world.mailbox().list_folders()}
    assert answer(s, runner, "r RENAME Work Play") == [b"r OK Rename completed."]
    assert answer(s, runner, "d DELETE Play") == [b"d OK Delete completed."]
    names = {f.name for f in world.mailbox().list_folders()}
    assert "Play" not in names and "Work" not in names


def test_store_errors_are_answered_as_before(tmp_path: Path) -> None:
    """The store's errors, arriving from its threads, get the codes the
    synchronous path gave: [ALREADYEXISTS], [NONEXISTENT], [CANNOT]."""
    _, s, runner = held(tmp_path)
    answer(s, runner, "c CREATE Work")
    assert answer(s, runner, "c CREATE Work") == [b"c NO [ALREADYEXISTS] Mailbox already exists"]
    assert answer(s, runner, "r RENAME Nope Other") == [
        b"r NO [NONEXISTENT] Mailbox doesn't exist: Nope"
    ]
    answer(s, runner, "c CREATE Other")
    assert answer(s, runner, "r RENAME Work Other") == [
        b"r NO [ALREADYEXISTS] Target mailbox already exists"
    ]
    assert answer(s, runner, "d DELETE Nope") == [b"d NO [NONEXISTENT] Mailbox doesn't exist: Nope"]
    (cannot,) = answer(s, runner, "d DELETE INBOX")
    assert cannot.startswith(b"d NO [CANNOT] ")


def test_read_only_store_is_answered_noperm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder change that fails in the store's thread because the file
    system is read-only is answered NO [NOPERM], not a server bug."""
    _, s, runner = held(tmp_path)

    def read_only(self: MaildirUserMailbox, name: str, special_use: str | None = None) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(MaildirUserMailbox, "create_folder", read_only)
    assert answer(s, runner, "c CREATE Work") == [b"c NO [NOPERM] Mail store is read-only"]


def test_subscriptions_and_listing_wait_for_the_store(tmp_path: Path) -> None:
    """SUBSCRIBE writes the subscriptions in the store's threads; LIST and
    LSUB read the folder list there and answer as the synchronous path."""
    _, s, runner = held(tmp_path)
    answer(s, runner, "c CREATE Work")
    assert answer(s, runner, "s SUBSCRIBE Work") == [b"s OK Subscribe completed."]
    assert answer(s, runner, 'l LIST "" W*') == [
        b'* LIST (\\HasNoChildren) "/" "Work"',
        b"l OK List completed.",
    ]
    assert answer(s, runner, 'l LSUB "" W*') == [
        b'* LSUB (\\HasNoChildren) "/" "Work"',
        b"l OK Lsub completed.",
    ]
    assert answer(s, runner, "u UNSUBSCRIBE Work") == [b"u OK Unsubscribe completed."]
    assert answer(s, runner, 'l LSUB "" W*') == [b"l OK Lsub completed."]


def test_list_status_and_status_of_a_changed_folder(tmp_path: Path) -> None:
    """LIST-STATUS gives each listed folder's STATUS right after it, from
    the store's threads; STATUS of a folder changed on disk (a delivery by
    another program) scans it there first and counts the new message."""
    _, s, runner = held(tmp_path)
    assert answer(s, runner, 'l LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN))') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 1 UNSEEN 1)',
        b"l OK List completed.",
    ]
    new = tmp_path / "alice" / "new" / "1700000001.M1P1.other"
    new.write_bytes(MSG)
    assert answer(s, runner, "t STATUS INBOX (MESSAGES)") == [
        b'* STATUS "INBOX" (MESSAGES 2)',
        b"t OK Status completed.",
    ]
    assert s.lines("t STATUS Nope (MESSAGES)") == [
        b"t NO [NONEXISTENT] Mailbox doesn't exist: Nope"
    ]
