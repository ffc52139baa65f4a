"""queue_minfree: smtpd refuses MAIL FROM while the queue file system is
short of space (Postfix's smtpd_check_queue), from a cached statvfs reading
refreshed in a thread at most once a second. A fake statvfs and a
task.Clock make every case deterministic."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from pymta.config.config import Config
from pymta.config.validate import validate
from pymta.queue.space import QueueSpace, free_bytes
from pymta.smtpd.testing import LogCapture, SMTPHarness
from tests.harness import PymtaServer

MB = 1_000_000


@dataclass
class FakeVfs:
    """os.statvfs's two fields that count, for a file system of 4 kB blocks."""

    f_bavail: int
    f_frsize: int = 4096


class FakeStatvfs:
    """A statvfs whose free space the test sets; counts the calls."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls: list[str] = []
        self.error: OSError | None = None

    def __call__(self, path: str) -> FakeVfs:
        self.calls.append(path)
        if self.error is not None:
            raise self.error
        return FakeVfs(self.free // 4096)


class QueuedThreads:
    """A run_in_thread that keeps the work until the test runs it, as a
    thread pool would later; proves the reactor thread never calls statvfs."""

    def __init__(self) -> None:
        self.work: list[tuple[Callable[[], int], Deferred[int]]] = []

    def __call__(self, work: Callable[[], int]) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.work.append((work, d))
        return d

    def run_all(self) -> None:
        work, self.work = self.work, []
        for f, d in work:
            try:
                d.callback(f())
            except Exception as e:
                d.errback(e)


def _inline(work: Callable[[], int]) -> Deferred[int]:
    """A run_in_thread that runs at once, failing the Deferred as a pool would."""
    return maybeDeferred(work)


@pytest.fixture
def maillog_lines() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


def _harness(free: int, config: str = "", **kw: object) -> tuple[SMTPHarness, FakeStatvfs]:
    statvfs = FakeStatvfs(free)
    clock = Clock()
    space = QueueSpace("/queue", clock, _inline, statvfs=statvfs)
    space.read_now()
    h = SMTPHarness(config_text=config, clock=clock, queue_space=space, **kw)  # type: ignore[arg-type]
    h.send("EHLO client.example\n")
    return h, statvfs


def test_mail_from_refused_452_when_free_space_under_one_and_a_half_size_limits(
    maillog_lines: list[str],
) -> None:
    """With message_size_limit 10 MB and 14 MB free, MAIL FROM gets 452 4.3.1
    Insufficient system storage (before any content is sent), logged as
    Postfix's reject line and its 'not enough free space' warning."""
    h, _ = _harness(14 * MB, "message_size_limit = 10000000\n")
    assert h.send("MAIL FROM:<s@sender.example>\n") == ["452 4.3.1 Insufficient system storage"]
    assert any(
        "NOQUEUE: reject: MAIL from unknown[203.0.113.5]: 452 4.3.1 Insufficient system "
        "storage; from=<s@sender.example> proto=ESMTP helo=<client.example>" in line
        for line in maillog_lines
    )
    assert any("not enough free space in mail queue: 1399" in line for line in maillog_lines)
    # The session goes on: nothing was started, RCPT needs MAIL.
    assert h.send("RCPT TO:<user@example.com>\n") == ["503 5.5.1 Error: need MAIL command"]


def test_mail_from_accepted_with_enough_free_space() -> None:
    """16 MB free is over 1.5 x 10 MB: MAIL FROM is 250 and the message is queued."""
    h, _ = _harness(16 * MB, "message_size_limit = 10000000\n")
    assert h.codes("MAIL FROM:<s@sender.example>\nRCPT TO:<user@example.com>\nDATA\n") == [
        "250",
        "250",
        "354",
    ]
    assert h.codes("hello\n.\n") == ["250"]


def test_queue_minfree_refuses_at_or_under_its_value() -> None:
    """queue_minfree = 50 MB (over 1.5 x the limit): 50 MB free is refused,
    60 MB free is accepted."""
    config = "message_size_limit = 10000000\nqueue_minfree = 50000000\n"
    h, _ = _harness(50_000_000 // 4096 * 4096, config)
    assert h.codes("MAIL FROM:<s@sender.example>\n") == ["452"]
    h, _ = _harness(60 * MB, config)
    assert h.codes("MAIL FROM:<s@sender.example>\n") == ["250"]


def test_no_size_limit_and_no_minfree_refuses_only_a_full_file_system() -> None:
    """message_size_limit = 0 and queue_minfree = 0 (Postfix's default): only
    a file system with no free block at all is refused."""
    config = "message_size_limit = 0\n"
    h, _ = _harness(0, config)
    assert h.codes("MAIL FROM:<s@sender.example>\n") == ["452"]
    h, _ = _harness(8192, config)
    assert h.codes("MAIL FROM:<s@sender.example>\n") == ["250"]


def test_declared_size_larger_than_free_space_is_452_not_552() -> None:
    """A SIZE= that fits the fixed limit but not the free space above
    queue_minfree is a temporary 452 4.3.1 (RFC 1870 section 6.1); a SIZE=
    over message_size_limit stays the permanent 552 5.3.4."""
    config = "message_size_limit = 0\nqueue_minfree = 1000000\n"
    h, _ = _harness(5 * MB, config)
    assert h.send("MAIL FROM:<s@sender.example> SIZE=4500000\n") == [
        "452 4.3.1 Insufficient system storage"
    ]
    assert h.codes("MAIL FROM:<s@sender.example> SIZE=3000000\n") == ["250"]
    h, _ = _harness(100 * MB, "message_size_limit = 1000\n")
    assert h.codes("MAIL FROM:<s@sender.example> SIZE=2000\n") == ["552"]


def test_reading_is_refreshed_in_a_thread_every_second() -> None:
    """MAIL FROM reads the latest reading; statvfs runs only in the thread
    runner, once per second of the clock while started (never on the
    reactor thread, one question at a time), and the refusal follows the
    free space as the readings arrive."""
    statvfs = FakeStatvfs(100 * MB)
    clock = Clock()
    threads = QueuedThreads()
    space = QueueSpace("/queue", clock, threads, statvfs=statvfs)
    space.read_now()
    space.start()
    assert statvfs.calls == ["/queue"] and len(threads.work) == 1
    threads.run_all()
    h = SMTPHarness(config_text="message_size_limit = 10000000\n", clock=clock, queue_space=space)
    h.send("EHLO client.example\n")
    statvfs.free = 1 * MB  # the disk fills up
    clock.advance(0.5)
    assert threads.work == []  # nothing asked within the second
    assert h.codes("MAIL FROM:<a@sender.example>\nRSET\n") == ["250", "250"]
    clock.advance(0.5)
    assert len(threads.work) == 1
    # Until the thread answers, the previous reading answers.
    assert h.codes("MAIL FROM:<a@sender.example>\nRSET\n") == ["250", "250"]
    clock.advance(1)  # a slow statvfs is not asked twice
    assert len(threads.work) == 1 and len(statvfs.calls) == 2
    threads.run_all()
    assert h.codes("MAIL FROM:<a@sender.example>\n") == ["452"]
    statvfs.free = 100 * MB  # space freed
    clock.advance(1)
    threads.run_all()
    assert h.codes("MAIL FROM:<a@sender.example>\n") == ["250"]
    space.stop()
    clock.advance(5)
    assert threads.work == []


def test_failing_statvfs_keeps_the_last_reading() -> None:
    """When statvfs fails (queue directory on a dead NFS server), the last
    good reading still answers, and the next try is a second later."""
    statvfs = FakeStatvfs(1 * MB)
    clock = Clock()
    space = QueueSpace("/queue", clock, _inline, statvfs=statvfs)
    assert space.read_now() == 1 * MB // 4096 * 4096
    statvfs.error = OSError(116, "Stale file handle")
    space.start()
    assert space.available() == 1 * MB // 4096 * 4096
    assert len(statvfs.calls) == 2
    clock.advance(0.9)
    assert len(statvfs.calls) == 2
    clock.advance(0.1)
    assert len(statvfs.calls) == 3
    statvfs.error = None
    statvfs.free = 2 * MB
    clock.advance(1)
    assert space.available() == 2 * MB // 4096 * 4096
    space.stop()


def test_without_a_reading_nothing_is_refused() -> None:
    """Before any reading (the first statvfs failed), MAIL FROM is accepted:
    the check refuses on a known shortage only."""
    statvfs = FakeStatvfs(0)
    statvfs.error = OSError(5, "Input/output error")
    clock = Clock()
    space = QueueSpace("/queue", clock, _inline, statvfs=statvfs)
    assert space.read_now() is None
    h = SMTPHarness(clock=clock, queue_space=space)
    h.send("EHLO client.example\n")
    assert h.codes("MAIL FROM:<s@sender.example>\n") == ["250"]


def test_free_bytes_is_blocks_available_to_non_root_times_fragment_size(
    tmp_path: Path,
) -> None:
    """free_bytes is f_bavail x f_frsize (Postfix's fsspace), also on the
    real statvfs."""
    assert free_bytes("/q", lambda path: FakeVfs(f_bavail=3, f_frsize=4096)) == 12288
    assert isinstance(free_bytes(str(tmp_path)), int)


def test_queue_minfree_default_is_postfix_zero_and_small_values_warn() -> None:
    """queue_minfree defaults to 0 (Postfix's DEF_QUEUE_MINFREE); a value
    under 1.5 x message_size_limit gets Postfix smtpd's start-up warning."""
    config = Config.from_text("")
    assert config.get_int("queue_minfree") == 0
    assert not any("queue_minfree" in w for w in validate(config))
    config = Config.from_text("queue_minfree = 1000000\nmessage_size_limit = 10000000\n")
    assert "queue_minfree(1000000) should be at least 1.5*message_size_limit(10000000)" in (
        validate(config)
    )


def test_e2e_real_server_refuses_mail_from_when_queue_minfree_exceeds_free_space(
    tmp_path: Path,
) -> None:
    """A real twistd pymta whose queue_minfree is more than any disk holds
    answers smtplib's MAIL FROM with 452 4.3.1 (the statvfs reading is wired
    into every smtpd), and logs the reject."""
    with PymtaServer(tmp_path, main_cf_extra="queue_minfree = 1000000000000000000\n") as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            code, text = client.mail("sender@client.test")
            assert (code, text) == (452, b"4.3.1 Insufficient system storage")
        server.wait_for_log(r"NOQUEUE: reject: MAIL from .*: 452 4\.3\.1 Insufficient")
        server.stop()
