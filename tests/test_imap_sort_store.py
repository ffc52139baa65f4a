"""SORT, THREAD and CONTEXT=SORT on the mail store's asynchronous API: with
the Maildir store's threads held (a runner the test drives), a SORT or
THREAD whose keys the store is reading answers only once it has, while
another session of the same folder is answered meanwhile; the answers are
those of a store that answers at once. And the store's header reader
(mailstore/digests.py) reads exactly each file's header block."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.imap import sort as sort_module
from pymta.imap import sortcache
from pymta.imap.sortcache import SortColumnsDigest, SortKeysDigest
from pymta.imap.sortkeys import DATE, DISPLAYFROM, FROM, IS_REPLY, MESSAGE_ID, REFERENCES, SUBJECT
from pymta.mailstore import digests
from pymta.mailstore.asyncstore import AsyncFolder
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


def held_sorter(
    tmp_path: Path, messages: list[bytes] = MESSAGES
) -> tuple[World, Session, QueuedRunner]:
    """alice's INBOX (``messages`` appended) on a new Maildir store whose
    threads wait for the test, selected; nothing of its sort keys kept in
    this process."""
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner)
    world = World(tmp_path, store=store)
    inbox = world.mailbox().folder("INBOX")
    for message in messages:
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


@pytest.mark.parametrize("columns_first", [sort_module.COLUMNS_FIRST, 1])
@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("SORT (SUBJECT) UTF-8 ALL", b"* SORT 2 1 3\r\n"),
        ("SORT (REVERSE DATE) UTF-8 ALL", b"* SORT 3 1 2\r\n"),
        ("THREAD REFERENCES UTF-8 ALL", b"* THREAD (2)(1 3)\r\n"),
    ],
)
def test_sort_waits_for_the_store_and_other_sessions_do_not(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    answer: bytes,
    columns_first: int,
) -> None:
    """A SORT or THREAD whose header keys the store reads in its threads is
    answered only once they ran (the reactor never reads a header); the
    same folder's other session gets its NOOP meanwhile; the answer is
    that of a store answering at once, and a second SORT is answered from
    the kept keys without the store. So with a first SORT that asks for
    its criteria's keys first (columns_first 1)."""
    monkeypatch.setattr(sort_module, "COLUMNS_FIRST", columns_first)
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


def asked_digests(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The header digests asked of the store from now on, in order: the
    positions of a SortColumnsDigest, "keys" for SortKeysDigest."""
    asked: list[object] = []
    real = AsyncFolder.header_digests

    def recording(self: AsyncFolder, uids: Any, digest: Any, *a: Any, **kw: Any) -> Any:
        assert isinstance(digest, SortColumnsDigest | SortKeysDigest)
        asked.append(digest.positions if isinstance(digest, SortColumnsDigest) else "keys")
        return real(self, uids, digest, *a, **kw)

    monkeypatch.setattr(AsyncFolder, "header_digests", recording)
    return asked


def answered_first(s: Session, runner: QueuedRunner, command: str) -> bytes:
    """Send ``command`` and run the store's jobs one at a time until it is
    answered (what is queued after stays queued)."""
    out = s.send(command)
    while b" OK " not in out:
        assert runner.jobs, out
        runner.run_one()
        out += s.read()
    return out


def answered(s: Session, runner: QueuedRunner, command: str) -> bytes:
    """What ``command`` was answered before its OK, the store's jobs run."""
    out = s.send(command)
    runner.run_all()
    out += s.read()
    tag = command.split()[0].encode()
    assert out.endswith(
        b"\r\n" + tag + b" OK " + command.split()[1].title().encode() + b" completed.\r\n"
    ), out
    return out[: out.rindex(tag + b" OK ")]


def test_first_sorts_ask_their_keys_only_and_every_key_once_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first SORT or THREAD of a folder (COLUMNS_FIRST messages or more
    without kept keys) has the store compute only the keys its criteria
    compare (with the one from the same field: FROM with DISPLAYFROM,
    SUBJECT with whether it was a reply), only those not there yet; once
    no command asked for keys of the folder for FILL_AFTER seconds, every
    key is asked in the background and kept on disk; after that any
    criterion is answered without the store, from any session."""
    monkeypatch.setattr(sort_module, "COLUMNS_FIRST", 1)
    world, s, runner = held_sorter(tmp_path)
    asked = asked_digests(monkeypatch)
    out = answered_first(s, runner, "q SORT (SUBJECT) UTF-8 ALL")
    assert out == b"* SORT 2 1 3\r\nq OK Sort completed.\r\n"
    assert asked == [(SUBJECT, IS_REPLY)]
    folder = s.proto.view.store.folder  # type: ignore[union-attr]
    kept_file = Path(folder.path) / sortcache.FILENAME
    assert not kept_file.exists()  # nothing of the first keys goes to disk
    world.clock.advance(sort_module.FILL_AFTER - 1)
    assert answered(s, runner, "f SORT (DISPLAYFROM) UTF-8 ALL") == b"* SORT 2 3 1\r\n"
    assert s.send("g SORT (FROM) UTF-8 ALL") == b"* SORT 2 3 1\r\ng OK Sort completed.\r\n"
    assert answered(s, runner, "t THREAD REFERENCES UTF-8 ALL") == b"* THREAD (2)(1 3)\r\n"
    assert asked == [(SUBJECT, IS_REPLY), (DISPLAYFROM, FROM), (DATE, MESSAGE_ID, REFERENCES)]
    world.clock.advance(sort_module.FILL_AFTER - 1)  # the last asked for keys just now
    assert asked[-1] != "keys"
    world.clock.advance(1)
    runner.run_all()
    assert asked[-1] == "keys"
    assert len(kept_file.read_bytes().split(b"\n")) == 3  # first line, one batch
    asked.clear()
    other = second_session(world, runner)
    assert other.send("c SORT (CC) UTF-8 ALL") == b"* SORT 1 2 3\r\nc OK Sort completed.\r\n"
    assert asked == [] and runner.jobs == []


def test_a_sort_of_every_key_waits_for_the_background_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An updating SORT (CONTEXT=SORT compares every key) that comes while
    every key of the folder is being asked in the background waits for
    that request instead of asking the store a second time; its answer
    is that of a store answering at once."""
    monkeypatch.setattr(sort_module, "COLUMNS_FIRST", 1)
    world, s, runner = held_sorter(tmp_path)
    asked = asked_digests(monkeypatch)
    answered_first(s, runner, "q SORT (SUBJECT) UTF-8 ALL")
    world.clock.advance(sort_module.FILL_AFTER)  # every key asked, held
    assert asked == [(SUBJECT, IS_REPLY), "keys"]
    assert s.send("u SORT RETURN (UPDATE ALL) (FROM) UTF-8 ALL") == b""
    runner.run_all()
    assert s.read().startswith(b'* ESEARCH (TAG "u") ALL 2:3,1\r\nu OK ')
    assert asked == [(SUBJECT, IS_REPLY), "keys"]


def test_a_restart_never_takes_the_first_keys_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stopped after a first SORT answered with only its keys and
    before every key was kept: the next process finds no record of those
    messages on disk (the kept file holds only whole keys), so it reads
    them and answers every criterion right; once every key was kept, a
    new process answers from the file without reading a message."""
    monkeypatch.setattr(sort_module, "COLUMNS_FIRST", 1)
    world, s, runner = held_sorter(tmp_path)
    answered_first(s, runner, "q SORT (SUBJECT) UTF-8 ALL")
    world.clock.advance(sort_module.FILL_AFTER)  # every key asked, not kept yet
    assert runner.jobs
    folder = s.proto.view.store.folder  # type: ignore[union-attr]
    kept = digests.load(folder.path, folder.uidvalidity, sortcache.SORT_KEYS, lambda: {1, 2, 3})
    assert kept == {}
    runner.jobs.clear()  # the server stops before every key is asked

    world, s, runner = held_sorter(tmp_path, [])  # the next process
    assert s.send("f SORT (FROM) UTF-8 ALL") == b""
    runner.run_all()
    assert s.read() == b"* SORT 2 3 1\r\nf OK Sort completed.\r\n"
    world.clock.advance(sort_module.FILL_AFTER)
    runner.run_all()  # every key asked once idle
    kept = digests.load(folder.path, folder.uidvalidity, sortcache.SORT_KEYS, lambda: {1, 2, 3})
    assert sorted(kept) == [1, 2, 3] and all(len(k) == 10 for k in kept.values())

    _, s, runner = held_sorter(tmp_path, [])  # and the one after
    asked = asked_digests(monkeypatch)
    assert s.send("t SORT (TO) UTF-8 ALL") == b""
    runner.run_all()
    assert s.read() == b"* SORT 1 2 3\r\nt OK Sort completed.\r\n"
    assert asked == []  # from the kept file alone


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


def test_header_reader_leaves_access_times_alone(tmp_path: Path) -> None:
    """Reading a header for a sort leaves the file's access time as it was
    (relatime would set it on the first read after a write), so a fresh
    folder's first SORT writes no inode; reading it does not depend on
    it (a process the kernel refuses O_NOATIME reads all the same)."""
    (tmp_path / "m").write_bytes(b"Subject: a\n\nbody\n")
    os.utime(tmp_path / "m", (1_000_000_000, 1_500_000_000))  # read before written
    assert digests.HeaderReader(str(tmp_path))("m") == b"Subject: a\n\n"
    assert os.stat(tmp_path / "m").st_atime == 1_000_000_000


def test_header_reader_reads_when_access_times_cannot_be_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the kernel refuses O_NOATIME (EPERM: a process that neither
    owns the file nor is root), the header is read all the same, and the
    flag is not asked for again."""
    from pymta.mailstore import digestwork

    (tmp_path / "m").write_bytes(b"Subject: a\n\nbody\n")
    real_open = os.open
    refused: list[int] = []

    def strict_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_NOATIME:
            refused.append(flags)
            raise PermissionError(errno.EPERM, "not the owner")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(digestwork, "_no_atime", os.O_NOATIME)
    monkeypatch.setattr(os, "open", strict_open)
    read = digests.HeaderReader(str(tmp_path))
    assert read("m") == b"Subject: a\n\n"
    assert read("m") == b"Subject: a\n\n"
    assert len(refused) == 1


def test_a_scan_worker_imports_no_twisted() -> None:
    """What a scan worker process imports to start and to run SORT's work
    (the pool's start function, the header reading, the sort digests)
    pulls in nothing of Twisted or zope.interface: a worker started by a
    first SORT is ready in a fraction of the CPU the server's modules
    take to import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import pymta.imap.scanworker, pymta.mailstore.digestwork, pymta.imap.sortdigest\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'zope'}))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout == "[]\n"
