"""Stale files in Maildir tmp/: removed after 36 hours (maildir(5)), at most
once per 8 hours per folder (Dovecot's scan interval, remembered in tmp/'s
access time), in a worker thread, for folders that delivery writes to and
sessions open. Time is injected: the clock runs ahead of the real file
times, which are what the kernel gave the files."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pymta.mailstore.deliver import MaildirDelivery
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.tmpclean import TMP_MAX_AGE, TmpCleaner, clean_tmp
from pymta.queue.reference import BytesContent
from pymta.smtpd.testing import LogCapture
from pymta.sync import ImmediateSyncBarrier

HOUR = 3600.0
MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


class QueuedRunner:
    """A run_in_thread that keeps the work until the test runs it, as a
    thread pool would later: proves the caller never scans tmp/ itself."""

    def __init__(self) -> None:
        self.work: list[tuple[Callable[[], list[str]], Deferred[list[str]]]] = []

    def __call__(self, work: Callable[[], list[str]]) -> Deferred[list[str]]:
        d: Deferred[list[str]] = Deferred()
        self.work.append((work, d))
        return d

    def run_all(self) -> None:
        work, self.work = self.work, []
        for f, d in work:
            d.callback(f())


class WrittenAt:
    """os.lstat with the ctime of some files set by the test (the kernel
    gives every file "now", and nothing can set a ctime back)."""

    def __init__(self, ctimes: dict[str, float]) -> None:
        self.ctimes = ctimes

    def __call__(self, path: str) -> os.stat_result:
        st = os.lstat(path)
        ctime = self.ctimes.get(os.path.basename(path))
        if ctime is None:
            return st
        return os.stat_result((*st[:9], int(ctime), st.st_atime, st.st_mtime, ctime))


@pytest.fixture
def maillog_lines() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


def _maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _clock_at(seconds: float) -> Clock:
    clock = Clock()
    clock.advance(seconds)
    return clock


def test_files_older_than_36_hours_go_younger_stay(tmp_path: Path) -> None:
    """A file written 37 hours ago goes, one written 35 hours ago stays, as
    does a directory in tmp/."""
    root = _maildir(tmp_path / "m")
    for name in ("old.host", "young.host"):
        (root / "tmp" / name).write_bytes(MSG)
    (root / "tmp" / "subdir").mkdir()
    now = time.time() + 40 * HOUR
    lstat = WrittenAt({"old.host": now - 37 * HOUR, "young.host": now - 35 * HOUR})
    assert clean_tmp(str(root), now, lstat=lstat) == [str(root / "tmp" / "old.host")]
    assert sorted(os.listdir(root / "tmp")) == ["subdir", "young.host"]


def test_an_old_mtime_does_not_make_a_file_stale(tmp_path: Path) -> None:
    """A file whose mtime is years old but that was written just now (an
    APPEND stages its file with the message's internal date as mtime) is
    kept: the age is the status change time, which no writer can set back."""
    root = _maildir(tmp_path / "m")
    staged = root / "tmp" / "staged.host"
    staged.write_bytes(MSG)
    os.utime(staged, (1_000_000_000, 1_000_000_000))
    assert clean_tmp(str(root), time.time() + HOUR) == []
    assert staged.exists()


def test_scan_time_is_remembered_in_tmp_access_time(tmp_path: Path) -> None:
    """A scan sets tmp/'s access time; another scan (any process) within 8
    hours does not list tmp/ at all, one after 8 hours does."""
    root = _maildir(tmp_path / "m")
    start = time.time() + 40 * HOUR
    assert clean_tmp(str(root), start) == []
    assert os.stat(root / "tmp").st_atime == pytest.approx(start, abs=1)
    (root / "tmp" / "dead.host").write_bytes(MSG)
    later = time.time() + TMP_MAX_AGE + HOUR  # the new file is stale by then
    assert later < start + 8 * HOUR
    assert clean_tmp(str(root), later) == []
    assert clean_tmp(str(root), start + 8 * HOUR + 1) == [str(root / "tmp" / "dead.host")]


def test_cleaner_scans_in_its_thread_runner_once_per_interval(
    tmp_path: Path, maillog_lines: list[str]
) -> None:
    """TmpCleaner hands the scan to its thread runner (never scans on the
    caller's thread), logs each removed file, and does not look at the same
    folder again within 8 hours."""
    root = _maildir(tmp_path / "m")
    (root / "tmp" / "dead.host").write_bytes(MSG)
    clock = _clock_at(time.time() + 37 * HOUR)
    runner = QueuedRunner()
    cleaner = TmpCleaner(clock, runner)
    cleaner.touched(str(root))
    assert (root / "tmp" / "dead.host").exists() and len(runner.work) == 1
    runner.run_all()
    assert not (root / "tmp" / "dead.host").exists()
    assert f"mailstore: removed stale {root}/tmp/dead.host" in maillog_lines
    clock.advance(7 * HOUR)
    cleaner.touched(str(root))
    assert runner.work == []
    clock.advance(1 * HOUR)
    cleaner.touched(str(root))
    assert len(runner.work) == 1


def test_opening_a_folder_cleans_its_tmp(tmp_path: Path, maillog_lines: list[str]) -> None:
    """A session's use of a folder (INBOX or another) removes what dead
    writers left in its tmp/ over 36 hours ago, in the store's thread
    runner; a file written an hour ago (a delivery in progress) stays."""
    now = time.time() + 10 * 24 * HOUR
    clock = _clock_at(now)
    runner = QueuedRunner()
    lstat = WrittenAt({"dead.host": now - 37 * HOUR, "writing.host": now - HOUR})
    cleaner = TmpCleaner(clock, runner, lstat=lstat)
    store = MaildirStore(clock, hostname="test", fsync=False, tmp_cleaner=cleaner)
    root = tmp_path / "m"
    mailbox = store.open_user("u", str(root))
    archive_tmp = root / ".Archive" / "tmp"
    for tmp in (root / "tmp", archive_tmp.parent / "tmp"):
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp.parent / "cur").mkdir(exist_ok=True)
        (tmp.parent / "new").mkdir(exist_ok=True)
        (tmp / "dead.host").write_bytes(MSG)
        (tmp / "writing.host").write_bytes(MSG)
    mailbox.folder("INBOX").messages()
    mailbox.folder("Archive").status()
    assert len(runner.work) == 2
    assert (root / "tmp" / "dead.host").exists()  # not on the caller's thread
    runner.run_all()
    assert os.listdir(root / "tmp") == ["writing.host"]
    assert os.listdir(archive_tmp) == ["writing.host"]
    assert f"mailstore: removed stale {archive_tmp}/dead.host" in maillog_lines


def test_delivery_cleans_the_tmp_of_the_maildir_it_writes_to(tmp_path: Path) -> None:
    """A Maildir delivery removes the files killed deliveries left in that
    Maildir's tmp/ over 36 hours ago (in the thread runner, not in the
    delivery's own sync batch), and delivers its message."""
    root = _maildir(tmp_path / "m")
    (root / "tmp" / "killed.host").write_bytes(MSG)
    clock = _clock_at(time.time() + 37 * HOUR)
    runner = QueuedRunner()
    writer = MaildirDelivery(
        ImmediateSyncBarrier(),  # type: ignore[arg-type]
        clock,
        "host",
        tmp_cleaner=TmpCleaner(clock, runner),
    )
    done: list[str] = []
    writer.deliver(str(root), b"", BytesContent(MSG)).addCallback(done.append)
    assert len(done) == 1 and os.listdir(root / "new") == [os.path.basename(done[0])]
    assert len(runner.work) == 1
    runner.run_all()
    assert os.listdir(root / "tmp") == []
