"""A folder's first scan without a record per message: the listing parsed
as columns (:mod:`pymta.mailstore.freshscan`), the index lines written
by one join, the records made on first use, and SELECT's summary made
from the columns. Each behaviour is compared with the general scan
(the same folder with the column path turned off), which writes the
index a previous pymta writes and reads."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.mailstore import folder_scan, freshscan
from pymta.mailstore.index import INDEX_NAME, UidIndex
from pymta.mailstore.interface import FolderStatus, FolderSummary
from pymta.mailstore.maildir import MaildirFolder, MaildirStore
from tests.test_imap_harness import World
from tests.test_imap_prefetch import QueuedRunner


def message(n: int) -> bytes:
    return b"From: a@example.org\nSubject: message %d\n\nbody %d\n" % (n, n)


#: (seconds, microseconds, sub, letters) of each file: microseconds of
#: several widths in one second (arrival order is numeric, not textual),
#: flags, keywords (a, b: dovecot-keywords; P: $Forwarded), mail in new/.
FILES = [
    (1_700_000_000, 99_999, "cur", "S"),
    (1_700_000_000, 123_456, "cur", "FS"),
    (1_700_000_000, 5, "cur", "S"),
    (1_700_000_001, 0, "cur", "Sa"),
    (1_700_000_002, 7, "cur", ""),
    (1_699_999_999, 1, "cur", "RS"),
    (1_700_000_003, 1, "cur", "PS"),
    (1_700_000_004, 2, "cur", "bT"),
    (1_700_000_005, 3, "new", None),
    (1_700_000_006, 4, "cur", "DS"),
    (1_700_000_007, 8, "new", None),
]


def name_of(n: int, secs: int, usecs: int, letters: str | None) -> str:
    data = message(n)
    base = f"{secs}.M{usecs}P{n}.host,S={len(data)},W={len(data) + 4}"
    return base if letters is None else f"{base}:2,{letters}"


def fill(maildir: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "dovecot-keywords").write_text("0 $Important\n1 Work\n")
    for n, (secs, usecs, sub, letters) in enumerate(FILES, 1):
        (maildir / sub / name_of(n, secs, usecs, letters)).write_bytes(message(n))
    for sub in ("new", "cur"):
        os.utime(maildir / sub, (1000, 1000))


def inbox(maildir: Path) -> MaildirFolder:
    clock = Clock()
    clock.advance(1_750_000_000)
    folder = MaildirStore(clock, "host", fsync=False).open_user("u", str(maildir)).folder("INBOX")
    assert isinstance(folder, MaildirFolder)
    return folder


@pytest.fixture
def general(monkeypatch: pytest.MonkeyPatch) -> object:
    """Turns the column path off: every scan is the general one."""
    monkeypatch.setattr(folder_scan, "list_columns", lambda path: None)
    return None


def index_lines(maildir: Path) -> list[str]:
    """The index file's lines but its header (a new UIDVALIDITY each time)."""
    return (maildir / INDEX_NAME).read_text().splitlines()[1:]


def scanned(maildir: Path) -> MaildirFolder:
    folder = inbox(maildir)
    folder.changed_on_disk()
    folder.rescan()
    return folder


def test_the_first_scan_writes_the_lines_the_general_scan_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The column path numbers the files in arrival order and writes the
    same index lines, byte for byte, as the general scan (what a previous
    pymta writes and reads), and makes no record while doing so."""
    fill(tmp_path / "fast")
    shutil.copytree(tmp_path / "fast", tmp_path / "general")
    fast = scanned(tmp_path / "fast")
    assert fast._index.numbered is not None  # no record made yet
    monkeypatch.setattr(folder_scan, "list_columns", lambda path: None)
    slow = scanned(tmp_path / "general")
    assert slow._index.numbered is None
    assert index_lines(tmp_path / "fast") == index_lines(tmp_path / "general")
    # Arrival order: the seconds, then the microseconds as numbers.
    order = [line.split("\t")[3] for line in index_lines(tmp_path / "fast")[:4]]
    assert [re.sub(r"P.*", "", n[4:]) for n in order] == [
        "1699999999.M1",
        "1700000000.M5",
        "1700000000.M99999",
        "1700000000.M123456",
    ]
    assert fast.messages() == slow.messages()
    assert fast._index.by_base == slow._index.by_base
    assert (fast.uidnext, fast.highest_modseq) == (slow.uidnext, slow.highest_modseq)


def test_records_made_on_first_use_are_those_a_reader_of_the_index_gets(
    tmp_path: Path,
) -> None:
    """The records made from the columns equal those another process reads
    from the index file the scan wrote."""
    fill(tmp_path)
    folder = scanned(tmp_path)
    reader = UidIndex(str(tmp_path), fsync=False)
    with reader.locked():
        reader.sync()
    assert list(reader.records.values()) == folder.messages()
    assert folder._index.numbered is None
    assert reader.by_base == folder._index.by_base


def listed(summary: FolderSummary) -> FolderSummary:
    """The summary with its UIDs as lists (the columns give ranges)."""
    return replace(
        summary,
        uids=list(summary.uids),
        recent=list(summary.recent),
        undated=list(summary.undated),
    )


def test_the_summary_and_status_from_the_columns_are_those_of_the_records(
    tmp_path: Path,
) -> None:
    """SELECT's summary (EXISTS, \\Recent, first unseen, keywords, UIDNEXT,
    HIGHESTMODSEQ) and STATUS made from the columns are what the records
    give once made."""
    fill(tmp_path)
    folder = scanned(tmp_path)
    summary = folder.summary()
    status = folder.status()
    assert folder._index.numbered is not None  # neither made a record
    records = folder.messages()
    assert listed(summary) == FolderSummary.of(
        records, folder.uidnext, folder.uidvalidity, folder.highest_modseq
    )
    assert status == FolderStatus.of(
        records, folder.uidnext, folder.uidvalidity, folder.highest_modseq
    )
    assert list(summary.uids) == list(range(1, len(FILES) + 1))
    assert list(summary.recent) == [9, 11]
    # Arrival order: 1699999999 (RS), then M5 (S), M99999 (S), M123456 (FS),
    # 1700000001 (Sa), then 1700000002 with no \Seen: the sixth.
    assert summary.first_unseen == 6
    assert summary.keywords == {"$Important", "Work", "$Forwarded"}
    assert status.unseen == 4 and status.recent == 2
    assert folder.summary() == listed(summary)  # the same from the records


@pytest.mark.parametrize(
    "odd",
    [
        "1700000100.M1P1.host:2,S",  # no sizes in the name: measured
        "1700000100.M1P1.host,S=10,W=5:2,S",  # a CRLF size below the size
        "1700000000.M5P99.other,S=45,W=49:2,S",  # the same microsecond as another
        "1700000100.M1P1.hôte,S=45,W=49:2,S",  # not ASCII: not a message
        ".1700000100.M1P1.host,S=45,W=49:2,S",  # a dot file
        "1700000100.M1000000P1.host,S=45,W=49",  # a microsecond out of range
        "1700000100.M1P1.host,S=045,W=049:2,S",  # sizes with leading zeros
    ],
)
def test_names_the_columns_do_not_take_go_the_general_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, odd: str
) -> None:
    """A folder with one name the column path does not take (no sizes,
    impossible ones, two files of one microsecond, an odd name) is
    scanned the general way, with its answer."""
    fill(tmp_path / "fast")
    (tmp_path / "fast" / "cur" / odd).write_bytes(message(45)[:45])
    shutil.copytree(tmp_path / "fast", tmp_path / "general")
    assert freshscan.list_columns(str(tmp_path / "fast")) is None
    fast = scanned(tmp_path / "fast")
    monkeypatch.setattr(folder_scan, "list_columns", lambda path: None)
    slow = scanned(tmp_path / "general")
    assert fast.messages() == slow.messages()
    assert index_lines(tmp_path / "fast") == index_lines(tmp_path / "general")


def test_only_regular_files_are_listed(tmp_path: Path) -> None:
    """A directory or a symbolic link named as a message is not one: the
    columns leave them out, as the general scan does."""
    fill(tmp_path)
    (tmp_path / "cur" / "1700000200.M1P1.host,S=45,W=49:2,S").mkdir()
    os.symlink("/etc/passwd", tmp_path / "cur" / "1700000201.M1P1.host,S=45,W=49:2,S")
    listing = freshscan.list_columns(str(tmp_path))
    assert listing is not None and len(listing) == len(FILES)
    assert len(scanned(tmp_path).messages()) == len(FILES)


def test_an_index_not_empty_takes_the_general_way(tmp_path: Path) -> None:
    """Files found beside messages already indexed are numbered the
    general way (the columns are only for a folder's first scan)."""
    fill(tmp_path)
    folder = scanned(tmp_path)
    assert len(folder.messages()) == len(FILES)
    (tmp_path / "cur" / name_of(99, 1_800_000_000, 1, "S")).write_bytes(message(99))
    os.utime(tmp_path / "cur", (2000, 2000))
    folder.rescan()
    assert folder._index.numbered is None
    assert folder.messages()[-1].uid == len(FILES) + 1


def imap_transcript(root: Path) -> list[bytes]:
    """A session's answers after a first SELECT of the folder at root/alice."""
    world = World(root, store=MaildirStore(Clock(), "host", fsync=False))
    s = world.connect()
    s.login()
    out: list[bytes] = []
    for command in [
        "s SELECT INBOX",
        "f FETCH 1:* (UID FLAGS RFC822.SIZE)",
        "a SEARCH UNSEEN",
        "b SEARCH KEYWORD Work",
        "c UID SEARCH NOT SEEN LARGER 40",
        "d STORE 2:3 +FLAGS (\\Deleted)",
        "e EXPUNGE",
        "g FETCH 1:* (UID FLAGS)",
        "h UID FETCH 9 (FLAGS BODY[HEADER.FIELDS (SUBJECT)])",
        "i STATUS INBOX (MESSAGES UNSEEN RECENT UIDNEXT SIZE)",
    ]:
        out.extend(s.lines(command))
    return [re.sub(rb"UIDVALIDITY \d+|MAILBOXID \(\S+\)", b"V", line) for line in out]


def test_imap_answers_the_same_with_records_made_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a first SELECT that made no record, FETCH, SEARCH, STORE,
    EXPUNGE and STATUS answer as after the general scan's SELECT."""
    fill(tmp_path / "fast" / "alice")
    shutil.copytree(tmp_path / "fast", tmp_path / "general")
    taken: list[bool] = []
    real = folder_scan.list_columns

    def watched(path: str) -> freshscan.Listing | None:
        listing = real(path)
        taken.append(listing is not None)
        return listing

    monkeypatch.setattr(folder_scan, "list_columns", watched)
    fast = imap_transcript(tmp_path / "fast")
    assert taken and all(taken)
    monkeypatch.setattr(folder_scan, "list_columns", lambda path: None)
    slow = imap_transcript(tmp_path / "general")
    assert fast == slow
    assert b"* 11 EXISTS" in fast and b"* 2 RECENT" in fast
    assert b"* OK [UNSEEN 6] First unseen." in fast
    assert b"* SEARCH 6 8 9 11" in fast


def test_records_are_made_in_the_stores_threads_after_a_first_select(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SELECT of a folder never indexed answers from the columns; the
    records are then made in the store's threads, never in the reactor's
    call, and a FETCH pipelined behind the SELECT waits for them there."""
    fill(tmp_path / "alice")
    runner = QueuedRunner()
    made: list[bool] = []
    real = UidIndex.make_records

    def watched(index: UidIndex) -> None:
        if index.numbered is not None:
            made.append(runner.in_thread)
        real(index)

    monkeypatch.setattr(UidIndex, "make_records", watched)
    world = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner))
    s = world.connect()
    s.send("a LOGIN alice@example.org secret")
    runner.run_all()
    s.read()
    assert s.send(b"s SELECT INBOX\r\nf FETCH 1:* (UID FLAGS)\r\n") == b""
    runner.run_all()
    lines = s.read().split(b"\r\n")
    assert made == [True]
    assert b"s OK [READ-WRITE] Select completed." in lines
    assert lines[-2] == b"f OK Fetch completed."
    assert b"* 6 FETCH (UID 6 FLAGS ())" in lines
