"""INTERNALDATE on demand: a Maildir folder's first scan takes sizes and
flags from the file names and stats no file whose name carries both
sizes; the dates are read (one stat each, in the store's threads) when a
command first shows or compares them, and kept in the folder's date
file (the index, version 2, says ``-`` for a date not read yet; version
1 is read as before, rewritten as 2 before its first change; an index of
a version this code does not know is renumbered, as an older pymta
treats a version 2 file)."""

from __future__ import annotations

import math
import os
import struct
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.imap import scan
from pymta.mailstore import datefile, folder_read
from pymta.mailstore.index import INDEX_NAME
from pymta.mailstore.interface import FlagMode
from pymta.mailstore.maildir import MaildirFolder, MaildirStore
from pymta.mailstore.names import arrival_key, filename_sizes, sized_name_match, split_filename
from tests.test_imap_harness import World
from tests.test_imap_prefetch import QueuedRunner

#: 2023-11-14 22:13:20 UTC, and one day per message after it.
DAY0 = 1_700_000_000


def message(n: int) -> bytes:
    return b"From: a@example.org\nSubject: message %d\n\nbody %d\n" % (n, n)


def sized_name(n: int, letters: str = "S") -> str:
    data = message(n)
    return f"{1_600_000_000 + n}.M{n}P1.host,S={len(data)},W={len(data) + 4}:2,{letters}"


def fill(maildir: Path, count: int) -> list[str]:
    """``count`` messages in cur/, as another program writes them (Dovecot's
    names), message n dated DAY0 + n days (its mtime), the directories
    quiet long enough to be trusted; the names, in arrival order."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for n in range(1, count + 1):
        path = maildir / "cur" / sized_name(n)
        path.write_bytes(message(n))
        os.utime(path, (DAY0 + n * 86400, DAY0 + n * 86400))
        names.append(path.name)
    for sub in ("new", "cur"):
        os.utime(maildir / sub, (1000, 1000))
    return names


def store(runner: QueuedRunner | None = None) -> MaildirStore:
    clock = Clock()
    clock.advance(1_750_000_000)
    return MaildirStore(clock, "host", fsync=False, run_in_thread=runner)


def inbox(maildir: Path) -> MaildirFolder:
    folder = store().open_user("u", str(maildir)).folder("INBOX")
    assert isinstance(folder, MaildirFolder)
    return folder


@pytest.fixture
def message_stats(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every os.stat of a message file (a name with ``,S=``), by name."""
    seen: list[str] = []
    real = os.stat

    def counted(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if ",S=" in str(path):
            seen.append(os.path.basename(str(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    yield seen


def test_first_scan_stats_no_file_whose_name_has_its_sizes(
    tmp_path: Path, message_stats: list[str]
) -> None:
    """A folder's first scan numbers files named with ``,S=`` and ``,W=``
    without one stat of them: sizes and flags from the names, arrival
    order from the names' time stamps, dates unknown in the records and
    the index (``-``)."""
    names = fill(tmp_path / "m", 5)
    folder = inbox(tmp_path / "m")
    records = folder.messages()
    assert message_stats == []
    assert [m.filename for m in records] == [f"cur/{n}" for n in names]
    assert [m.internal_date for m in records] == [None] * 5
    assert records[0].size == len(message(1)) and records[0].rfc822_size == len(message(1)) + 4
    assert all(m.flags == {"\\Seen"} for m in records)
    lines = (tmp_path / "m" / INDEX_NAME).read_text().splitlines()
    assert lines[0].startswith("pymta-uidlist 2\t")
    assert [line.split("\t")[6] for line in lines if line.startswith("A")] == ["-"] * 5


def test_fill_dates_reads_each_file_once_and_keeps_the_date(
    tmp_path: Path, message_stats: list[str]
) -> None:
    """fill_dates stats the files whose date is unknown (only those asked
    for), gives their mtimes, and keeps them in the date file: another
    process's fill has them without a stat, and asking again stats
    nothing."""
    names = fill(tmp_path / "m", 4)
    folder = inbox(tmp_path / "m")
    folder.fill_dates([2, 3])
    assert sorted(message_stats) == sorted(names[1:3])
    assert [m.internal_date for m in folder.messages()] == [
        None,
        DAY0 + 2 * 86400,
        DAY0 + 3 * 86400,
        None,
    ]
    del message_stats[:]
    folder.fill_dates([2, 3])
    again = inbox(tmp_path / "m")
    again.fill_dates([2, 3])
    assert [m.internal_date for m in again.messages()][1:3] == [DAY0 + 2 * 86400, DAY0 + 3 * 86400]
    assert message_stats == []
    # Flags, modseqs and UIDs stay as they were.
    assert [(m.uid, m.modseq, m.flags) for m in again.messages()] == [
        (m.uid, m.modseq, m.flags) for m in folder.messages()
    ]


def test_dates_read_go_to_the_date_file_not_the_index(
    tmp_path: Path, message_stats: list[str]
) -> None:
    """Dates for most of a folder (a first SORT by arrival) leave the
    index as the scan wrote it (no line rewritten or added) and are kept
    in ``pymta-dates``; a later fill of more messages stats only the new
    ones and keeps both."""
    fill(tmp_path / "m", 4)
    folder = inbox(tmp_path / "m")
    folder.messages()
    index_before = (tmp_path / "m" / INDEX_NAME).read_bytes()
    folder.fill_dates([1, 2, 3])
    assert (tmp_path / "m" / INDEX_NAME).read_bytes() == index_before
    uidvalidity = folder.uidvalidity
    assert datefile.load(str(tmp_path / "m"), uidvalidity) == {
        n: DAY0 + n * 86400 for n in (1, 2, 3)
    }
    del message_stats[:]
    inbox(tmp_path / "m").fill_dates([1, 2, 3, 4])
    assert message_stats == [sized_name(4)]
    assert datefile.load(str(tmp_path / "m"), uidvalidity) == {
        n: DAY0 + n * 86400 for n in (1, 2, 3, 4)
    }


@pytest.mark.parametrize(
    "damage",
    [
        "other uidvalidity",
        "truncated",
        "garbage",
        "count too big",
        "hostile dates",
        "empty",
    ],
)
def test_a_stale_or_damaged_date_file_is_not_used(
    tmp_path: Path, message_stats: list[str], damage: str
) -> None:
    """A date file of another UIDVALIDITY (the folder numbered afresh), cut
    short, of another format, whose count does not match its size, or
    whose dates are not dates (NaN, infinite, beyond the year 2500) gives
    no date: the files are stat'ed again, the right dates answered, and
    the file written anew."""
    fill(tmp_path / "m", 3)
    folder = inbox(tmp_path / "m")
    folder.fill_dates([1, 2, 3])
    path = tmp_path / "m" / datefile.DATE_FILE
    data = path.read_bytes()
    uidvalidity = folder.uidvalidity
    if damage == "other uidvalidity":
        datefile.save(str(tmp_path / "m"), uidvalidity + 1, {1: 5.0, 2: 6.0, 3: 7.0}, {1, 2, 3})
    elif damage == "truncated":
        path.write_bytes(data[:-5])
    elif damage == "garbage":
        path.write_bytes(b"A\t1\t2\n" * 20)
    elif damage == "count too big":
        head = len(datefile.MAGIC)
        path.write_bytes(data[:head] + struct.pack("=II", uidvalidity, 4) + data[head + 8 :])
    elif damage == "hostile dates":
        bad = array("d", [math.nan, math.inf, 2.0**40]).tobytes()
        path.write_bytes(data[: -len(bad)] + bad)
    else:
        path.write_bytes(b"")
    del message_stats[:]
    again = inbox(tmp_path / "m")
    again.fill_dates([1, 2, 3])
    assert sorted(message_stats) == sorted(sized_name(n) for n in (1, 2, 3))
    assert [m.internal_date for m in again.messages()] == [DAY0 + n * 86400 for n in (1, 2, 3)]
    assert datefile.load(str(tmp_path / "m"), uidvalidity) == {
        n: DAY0 + n * 86400 for n in (1, 2, 3)
    }


def test_the_date_file_drops_expunged_messages(tmp_path: Path) -> None:
    """A message expunged leaves the date file when it is next written (its
    UID is never used again; the file does not grow with the folder's
    history)."""
    fill(tmp_path / "m", 4)
    folder = inbox(tmp_path / "m")
    folder.fill_dates([1, 2])
    folder.expunge([1])
    folder.fill_dates([3])
    assert datefile.load(str(tmp_path / "m"), folder.uidvalidity) == {
        2: DAY0 + 2 * 86400,
        3: DAY0 + 3 * 86400,
    }


def test_fill_dates_follows_a_file_renamed_by_another_program(tmp_path: Path) -> None:
    """A file renamed since the index was read (another program changed
    its flags) is found again by a rescan and its date read."""
    names = fill(tmp_path / "m", 2)
    folder = inbox(tmp_path / "m")
    folder.messages()
    cur = tmp_path / "m" / "cur"
    os.rename(cur / names[0], cur / names[0].replace(":2,S", ":2,FS"))
    folder.fill_dates([1])
    info = folder.get(1)
    assert info.internal_date == DAY0 + 86400
    assert info.flags == {"\\Seen", "\\Flagged"}


def test_copy_carries_the_date_a_scan_did_not_read(tmp_path: Path) -> None:
    """COPY of a message whose date is not read yet gives the copy the
    source file's mtime as its INTERNALDATE."""
    fill(tmp_path / "m", 2)
    mailbox = store().open_user("u", str(tmp_path / "m"))
    source = mailbox.folder("INBOX")
    mailbox.create_folder("Kept")
    target = mailbox.folder("Kept")
    [(_, new)] = source.copy([2], target)
    assert target.get(new).internal_date == DAY0 + 2 * 86400


def test_an_index_of_version_1_is_read_and_rewritten_before_a_change(tmp_path: Path) -> None:
    """An index written by the version before this one (every date known,
    header ``pymta-uidlist 1``) keeps its UIDs, UIDVALIDITY and dates; the
    first change rewrites it as version 2 (so its lines never follow a
    header whose readers would take ``-`` for damage)."""
    names = fill(tmp_path / "m", 2)
    dates = [DAY0 + 86400.0, DAY0 + 2 * 86400.0]
    lines = ["pymta-uidlist 1\tV77\tN12\tM20\tE0"]
    for uid, name, date in zip((10, 11), names, dates, strict=True):
        size = len(message(uid - 9))
        lines.append(f"A\t{uid}\t{uid + 5}\tcur/{name}\t{size}\t{size + 4}\t{date!r}\tS\t")
    lines.append("S\t1000000000000\t1000000000000")
    (tmp_path / "m" / INDEX_NAME).write_text("\n".join(lines) + "\n")
    folder = inbox(tmp_path / "m")
    assert folder.uidvalidity == 77
    assert [(m.uid, m.internal_date) for m in folder.messages()] == list(
        zip((10, 11), dates, strict=True)
    )
    folder.set_flags(10, ["\\Flagged"], FlagMode.ADD)
    text = (tmp_path / "m" / INDEX_NAME).read_text()
    assert text.startswith("pymta-uidlist 2\tV77\t")
    reopened = inbox(tmp_path / "m")
    assert reopened.uidvalidity == 77
    assert [(m.uid, m.internal_date) for m in reopened.messages()] == list(
        zip((10, 11), dates, strict=True)
    )
    assert reopened.get(10).flags == {"\\Seen", "\\Flagged"}


def test_an_index_of_an_unknown_version_is_rebuilt_not_misread(tmp_path: Path) -> None:
    """An index whose header names a version this code does not know (as a
    version 2 file is to the pymta before this one) is set aside and the
    folder numbered afresh under a new UIDVALIDITY: rebuilt, never
    misread."""
    names = fill(tmp_path / "m", 1)
    (tmp_path / "m" / INDEX_NAME).write_text(
        f"pymta-uidlist 3\tV77\tN2\tM2\tE0\nA\t1\t2\tcur/{names[0]}\t1\t1\t?\tS\t\n"
    )
    folder = inbox(tmp_path / "m")
    assert folder.uidvalidity != 77
    [info] = folder.messages()
    assert info.size == len(message(1))
    assert (tmp_path / "m" / (INDEX_NAME + ".corrupt")).exists()


def dated_world(tmp_path: Path, runner: QueuedRunner | None = None) -> World:
    """alice's INBOX of 6 messages (message n of DAY0 + n days), never
    indexed; the store's thread work held in ``runner``."""
    fill(tmp_path / "alice", 6)
    return World(tmp_path, store=store(runner))


def selected_watching_date_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, QueuedRunner, World, list[tuple[bool, int]]]:
    """alice's never indexed INBOX selected (the store's thread work held
    in the runner, run after each step), with each reading of dates noted
    as (in the store's thread, files stat'ed); the session, the runner,
    the world and the notes."""
    runner = QueuedRunner()
    world = dated_world(tmp_path, runner)
    reads: list[tuple[bool, int]] = []
    real = folder_read.mtimes

    def watched(path: str, files: Any) -> Any:
        files = list(files)
        reads.append((runner.in_thread, len(files)))
        return real(path, files)

    monkeypatch.setattr(folder_read, "mtimes", watched)
    s = world.connect()
    s.send("a LOGIN alice@example.org secret")
    runner.run_all()
    s.read()
    s.send("s SELECT INBOX")
    runner.run_all()
    assert s.read().endswith(b"s OK [READ-WRITE] Select completed.\r\n")
    return s, runner, world, reads


def test_fetch_internaldate_reads_unknown_dates_in_the_stores_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a first SELECT (no date read), FETCH INTERNALDATE answers each
    file's mtime: the dates are read in the store's threads, never in the
    reactor's call, and FETCH FLAGS reads none."""
    s, runner, _, reads = selected_watching_date_reads(tmp_path, monkeypatch)
    answer = s.send("f FETCH 1:* FLAGS")
    runner.run_all()
    assert (answer + s.read()).endswith(b"f OK Fetch completed.\r\n")
    assert reads == []
    assert s.send("f FETCH 2:3 INTERNALDATE") == b""
    runner.run_all()
    assert reads == [(True, 2)]
    assert s.read().split(b"\r\n")[:3] == [
        b'* 2 FETCH (INTERNALDATE "16-Nov-2023 22:13:20 +0000")',
        b'* 3 FETCH (INTERNALDATE "17-Nov-2023 22:13:20 +0000")',
        b"f OK Fetch completed.",
    ]
    # Known now: answered without the store's threads.
    assert s.send("g FETCH 2 INTERNALDATE").endswith(b"g OK Fetch completed.\r\n")
    assert reads == [(True, 2)]


def test_a_big_select_has_the_dates_read_after_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SELECT of a big folder answers without reading a date, then has
    the store read them all in its threads (asked with the answer, not a
    turn later, so a command sent at once finds the read ahead of it): a
    FETCH INTERNALDATE after it needs no more of the store's thread
    work."""
    monkeypatch.setattr(scan, "PRESTART_MESSAGES", 5)
    # (The helper runs the store's thread work after the SELECT's answer.)
    s, _, _, reads = selected_watching_date_reads(tmp_path, monkeypatch)
    assert reads == [(True, 6)]
    answer = s.send("f FETCH 6 INTERNALDATE")
    assert answer.endswith(b"f OK Fetch completed.\r\n")
    assert b'INTERNALDATE "20-Nov-2023 22:13:20 +0000"' in answer
    assert reads == [(True, 6)]


def day(n: int) -> str:
    """The IMAP date of message n's day."""
    return time.strftime("%d-%b-%Y", time.gmtime(DAY0 + n * 86400)).lstrip("0")


def test_search_by_date_on_a_folder_whose_dates_are_unknown(tmp_path: Path) -> None:
    """SEARCH SINCE / BEFORE / ON right after a first SELECT (no date read
    yet) finds by the files' mtimes, as with dates known; so does a
    search that mixes a date with a body key."""
    world = dated_world(tmp_path)
    s = world.connect()
    s.login()
    s.select()
    assert s.lines(f"a SEARCH SINCE {day(4)}")[0] == b"* SEARCH 4 5 6"
    assert s.lines(f"b SEARCH BEFORE {day(3)}")[0] == b"* SEARCH 1 2"
    assert s.lines(f"c SEARCH ON {day(5)}")[0] == b"* SEARCH 5"
    assert s.lines(f"d SEARCH SINCE {day(2)} BODY 3")[0] == b"* SEARCH 3"


def test_sort_arrival_on_a_folder_whose_dates_are_unknown(tmp_path: Path) -> None:
    """SORT (ARRIVAL) right after a first SELECT orders by the files'
    mtimes (INTERNALDATE), not by the order of their names."""
    world = dated_world(tmp_path)
    newest = tmp_path / "alice" / "cur" / sized_name(1)
    os.utime(newest, (DAY0 + 30 * 86400, DAY0 + 30 * 86400))
    s = world.connect()
    s.login()
    s.select()
    assert s.lines("a SORT (ARRIVAL) UTF-8 ALL")[0] == b"* SORT 2 3 4 5 6 1"


@pytest.mark.parametrize(
    "name",
    [
        "1.M2P3.h,S=5,W=6",
        "1.M2P3.h,S=5,W=6:2,S",
        "1.M2P3.h,S=5,W=6:2,",
        "1.M2P3.h,S=5,W=6:2,a:b",
        "1.M2P3.h,S=5,W=6:x",
        "1.M2P3.h,S=5,W=6,S=7,W=8:2,FS",
        "1700000000.M999999P1Q2.host\\057a,S=1234,W=1260:2,DFRST",
    ],
)
def test_one_match_of_a_sized_name_gives_what_the_three_parsers_give(name: str) -> None:
    """The scan's one match of a Dovecot-style name gives the arrival key,
    the sizes and the ``:2,`` letters that arrival_key, filename_sizes and
    split_filename give."""
    match = sized_name_match(name)
    assert match is not None
    secs, usecs, size, rfc822, letters = match.groups()
    base, expected_letters = split_filename(name)
    assert (int(secs), int(usecs), name) == arrival_key(name)
    assert (int(size), int(rfc822)) == filename_sizes(base)
    assert (letters or "") == expected_letters


@pytest.mark.parametrize(
    "name", ["1.M2P3.h,S=5,W=6x", "1.M2P3.h,W=6,S=5", "1.V2I3.h,S=5,W=6", "1.M2P3.h,S=5,W=6,T=1"]
)
def test_other_names_are_left_to_the_three_parsers(name: str) -> None:
    """A name not in that form does not match (the scan parses it the
    long way, and measures it when its sizes are not both there)."""
    assert sized_name_match(name) is None


class _DateDigest:
    """A header digest that is the INTERNALDATE it is given (not kept)."""

    name = ""

    def __call__(self, header: bytes, internal_date: float) -> int:
        return int(internal_date)


def test_header_digests_of_cached_headers_get_the_files_dates(tmp_path: Path) -> None:
    """A header digest of messages whose header blocks are cached (read
    before any date was, as a first SORT by SUBJECT caches them) is given
    each file's mtime, not a date not read yet: the background fill of
    every sort key keeps what it computes."""
    fill(tmp_path / "alice", 6)
    folder = store().asynchronous().open_user("u", str(tmp_path / "alice"))
    inbox = _fired(_fired(folder).folder("INBOX"))
    _fired(inbox.prefetch_headers(range(1, 7)))
    got = _fired(inbox.header_digests(range(1, 7), _DateDigest()))
    assert got == {n: DAY0 + n * 86400 for n in range(1, 7)}


def _fired(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and not isinstance(out[0], Exception), out
    return out[0]


class _FailingWorkers(QueuedRunner):
    """Worker processes that answer the ping (``os.getpid``) but fail every
    chunk given them (``ping_too``: the ping as well: a broken pool)."""

    def __init__(self, ping_too: bool) -> None:
        super().__init__()
        self.ping_too = ping_too

    def __call__(self, work: Any) -> Any:
        if work is os.getpid and not self.ping_too:
            return super().__call__(work)

        def broken() -> None:
            raise RuntimeError("worker process gone")

        return super().__call__(broken)


def _run_until_idle(*runners: QueuedRunner) -> None:
    while any(r.jobs for r in runners):
        for r in runners:
            r.run_all()


@pytest.mark.parametrize("workers_fail", ["no", "chunks", "ping"])
def test_a_sort_meeting_the_dates_being_read_on_workers_answers_the_files_dates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    message_stats: list[str],
    workers_fail: str,
) -> None:
    """After the SELECT of a big folder the dates are read in the scan
    workers and the store's threads together, a few files a chunk; a
    SORT (ARRIVAL) sent while that read is half done waits for it (no
    answer before) and then orders by the files' mtimes, each file
    stat'ed once. Workers that fail (each chunk, or even the first
    answer) leave their chunks to the store's thread: the same answer."""
    from pymta.mailstore import asyncstore, datefill

    monkeypatch.setattr(scan, "PRESTART_MESSAGES", 5)
    monkeypatch.setattr(asyncstore, "DATES_ON_WORKERS", 1)
    monkeypatch.setattr(datefill, "CHUNK", 2)
    runner = QueuedRunner()
    world = dated_world(tmp_path, runner)
    newest = tmp_path / "alice" / "cur" / sized_name(1)
    os.utime(newest, (DAY0 + 30 * 86400, DAY0 + 30 * 86400))
    workers = QueuedRunner() if workers_fail == "no" else _FailingWorkers(workers_fail == "ping")
    s = world.connect()
    s.proto.scan_in_thread = workers  # type: ignore[assignment]
    s.send("a LOGIN alice@example.org secret")
    runner.run_all()
    s.read()
    s.send("s SELECT INBOX")
    while b"s OK" not in s.transport.value():
        runner.run_one()
    assert s.read().endswith(b"s OK [READ-WRITE] Select completed.\r\n")
    del message_stats[:]
    world.clock.advance(0)  # the worker processes start two turns after the answer
    world.clock.advance(0)
    world.clock.advance(0)
    runner.run_one()  # the records the first scan did not make
    runner.run_one()  # the read asked with the answer: what to read
    workers.run_one()  # the workers answer (and take chunks)
    workers.run_one()
    runner.run_one()  # the thread's first chunk: a third of the files
    assert len(message_stats) == 2
    assert s.send("b SORT (ARRIVAL) UTF-8 ALL") == b""
    _run_until_idle(runner, workers)
    world.clock.advance(0)
    _run_until_idle(runner, workers)
    assert s.read().split(b"\r\n")[:2] == [b"* SORT 2 3 4 5 6 1", b"b OK Sort completed."]
    assert sorted(message_stats) == sorted(sized_name(n) for n in range(1, 7))
