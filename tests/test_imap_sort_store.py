"""SORT, THREAD and CONTEXT=SORT on the mail store's asynchronous API: with
the Maildir store's threads held (a runner the test drives), a SORT or
THREAD whose keys the store is reading answers only once it has, while
another session of the same folder is answered meanwhile; the answers are
those of a store that answers at once. And the store's header reader
(mailstore/digests.py) reads exactly each file's header block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.imap import sortcache
from pymta.mailstore import digests
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_async_store import second_session
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

MESSAGES = [
    b"From: Zed <zed@x.org>\nSubject: Re: lunch\nMessage-ID: <a@x>\n"
    b"Date: Wed, 15 Nov 2023 10:00:00 +0000\n\nbody\n",
    b"From: amy@x.org\nSubject: budget\nMessage-ID: <b@x>\n"
    b"Date: Tue, 14 Nov 2023 10:00:00 +0000\n\nbody\n",
    b"From: Bob <bob@x.org>\nSubject: lunch\nMessage-ID: <c@x>\nReferences: <a@x>\n"
    b"Date: Thu, 16 Nov 2023 10:00:00 +0000\n\nbody\n",
]


def held_sorter(tmp_path: Path) -> tuple[World, Session, QueuedRunner]:
    """alice's INBOX of MESSAGES on a Maildir store whose threads wait for
    the test, selected; nothing of its sort keys kept in this process."""
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner)
    world = World(tmp_path, store=store)
    inbox = world.mailbox().folder("INBOX")
    for message in MESSAGES:
        inbox.append(message)
    inbox.claim_recent()
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()
    assert s.read().startswith(b"a OK")
    s.send("b SELECT INBOX")
    runner.run_all()
    assert b"b OK [READ-WRITE]" in s.read()
    sortcache.clear()
    return world, s, runner


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("SORT (SUBJECT) UTF-8 ALL", b"* SORT 2 1 3\r\n"),
        ("SORT (REVERSE DATE) UTF-8 ALL", b"* SORT 3 1 2\r\n"),
        ("THREAD REFERENCES UTF-8 ALL", b"* THREAD (2)(1 3)\r\n"),
    ],
)
def test_sort_waits_for_the_store_and_other_sessions_do_not(
    tmp_path: Path, command: str, answer: bytes
) -> None:
    """A SORT or THREAD whose header keys the store reads in its threads is
    answered only once they ran (the reactor never reads a header); the
    same folder's other session gets its NOOP meanwhile; the answer is
    that of a store answering at once, and a second SORT is answered from
    the kept keys without the store."""
    world, s, runner = held_sorter(tmp_path)
    other = second_session(world, runner)
    assert s.send(f"q {command}") == b""
    sorting = list(runner.jobs)  # the store's work for the SORT, held
    assert sorting
    runner.jobs.clear()
    other.send("n NOOP")
    runner.run_all()  # the NOOP's own rescan, in the store's threads
    assert other.read() == b"n OK NOOP completed.\r\n"
    assert s.read() == b""
    runner.jobs[:0] = sorting
    runner.run_all()
    assert s.read() == answer + b"q OK " + command.split()[0].title().encode() + b" completed.\r\n"
    assert s.send(f"r {command}").startswith(answer)


def test_updating_sort_reads_a_joining_message_through_the_store(tmp_path: Path) -> None:
    """CONTEXT=SORT: a message delivered meanwhile joins the kept result at
    its place in sort order, its keys read through the store."""
    world, s, runner = held_sorter(tmp_path)
    s.send("q SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL")
    runner.run_all()
    assert s.read().startswith(b'* ESEARCH (TAG "q") ALL 2,1,3\r\n')
    world.mailbox().folder("INBOX").append(
        b"From: c@x.org\nSubject: apples\nMessage-ID: <d@x>\n\nbody\n"
    )
    s.send("n NOOP")
    runner.run_all()
    out = s.read()
    assert b"* 4 EXISTS\r\n" in out
    assert b'* ESEARCH (TAG "q") ADDTO (1 4)\r\n' in out
    assert out.endswith(b"n OK NOOP completed.\r\n")


@pytest.mark.parametrize(
    ("content", "header"),
    [
        (b"Subject: a\n\nbody\n", b"Subject: a\n\n"),
        (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n\r\n"),
        (b"Subject: no body\n", b"Subject: no body\n"),
        (b"\nbody only\n", b"\n"),
        # Longer than the first read, the blank line across the next reads.
        (b"X: " + b"y" * (digests.FIRST_READ - 4) + b"\n\nbody", None),
        (b"X: " + b"y" * (digests.FIRST_READ - 5) + b"\r\n\r\nbody", None),
        (b"X: " + b"y" * 200_000 + b"\n\nbody", None),
        (b"X: " + b"y" * (digests.FIRST_READ - 3), None),
    ],
)
def test_header_reader_reads_the_header_block(
    tmp_path: Path, content: bytes, header: bytes | None
) -> None:
    """HeaderReader gives the header block (up to and including the blank
    line, or the whole file without one) however long it is and wherever
    its blank line falls."""
    (tmp_path / "m").write_bytes(content)
    if header is None:
        end = content.find(b"\n\n")
        end = content.find(b"\r\n\r\n") + 4 if b"\r\n\r\n" in content else end + 2
        header = content if end < 2 else content[:end]
    assert digests.HeaderReader(str(tmp_path))("m") == header


def test_header_reader_skips_what_is_not_a_message_file(tmp_path: Path) -> None:
    """A FIFO, a symbolic link or a missing file in the folder is not read
    (None), never waited on or followed."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "real").write_bytes(b"Subject: a\n\n")
    os.symlink(tmp_path / "real", tmp_path / "link")
    read = digests.HeaderReader(str(tmp_path))
    assert read("fifo") is None and read("link") is None and read("gone") is None
    assert read("real") == b"Subject: a\n\n"
