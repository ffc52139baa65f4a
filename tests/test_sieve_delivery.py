"""Sieve at final delivery: FinalDelivery with a SieveFilter on real
Maildirs under tmp_path (scripts laid out as Pigeonhole does), cleanup
replaced by a recorder, the thread pool by a direct call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher

from pymta.delivery.final import FinalDelivery, Mailbox, Outcome
from pymta.mailstore.deliver import MaildirDelivery
from pymta.queue.model import Envelope
from pymta.queue.reference import BytesContent
from pymta.sieve.filter import SieveFilter, SieveSettings
from pymta.sync import ImmediateSyncBarrier

MESSAGE = (
    b"From: Alice <alice@example.org>\nTo: bob@example.test\nSubject: hello there\n"
    b"Message-ID: <m1@example.org>\n\nbody text\n"
)
PREFIX = b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.test\n"


class RecordingCleanup:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        self.submitted.append((envelope, content))
        return succeed(f"QUEUED{len(self.submitted)}")


class Setup:
    def __init__(self, tmp_path: Path, script: str | None, **settings: Any) -> None:
        self.home = tmp_path / "home"
        self.maildir = tmp_path / "home" / "Maildir"
        (self.home / "sieve").mkdir(parents=True)
        if script is not None:
            (self.home / "sieve" / "main.sieve").write_text(script)
            os.symlink("sieve/main.sieve", self.home / ".dovecot.sieve")
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.cleanup = RecordingCleanup()
        self.sieve = SieveFilter(
            SieveSettings(**settings),
            lambda work: maybeDeferred(work),
            self.clock.seconds,
            self.cleanup,
        )
        writer = MaildirDelivery(ImmediateSyncBarrier(), self.clock, "mx", pid=1)  # type: ignore[arg-type]
        self.final = FinalDelivery(writer, self.sieve)
        self.mailbox = Mailbox("bob@example.test", str(self.maildir), str(self.home), None)
        self.marked: list[int] = []

    def deliver(self, message: bytes = MESSAGE, sender: str = "alice@example.org") -> Outcome:
        results: list[Outcome] = []
        self.final.deliver(
            self.mailbox,
            PREFIX,
            BytesContent(message),
            sender=sender,
            recipient="bob@example.test",
            mark=lambda: self.marked.append(1),
        ).addBoth(results.append)
        (result,) = results
        assert isinstance(result, Outcome), result
        return result

    def folder_files(self, folder: str = "") -> list[Path]:
        base = self.maildir / folder if folder else self.maildir
        return sorted(
            p for sub in ("new", "cur") if (base / sub).is_dir() for p in (base / sub).iterdir()
        )


def test_no_script_is_inbox(tmp_path: Path) -> None:
    """A user without ~/.dovecot.sieve gets the message in INBOX."""
    s = Setup(tmp_path, None)
    assert s.deliver() == Outcome("2.0.0", "saved mail to INBOX")
    assert len(s.folder_files()) == 1 and s.marked == [1]


def test_fileinto_keep_flags_and_create(tmp_path: Path) -> None:
    """fileinto an existing folder, :create a new one (Maildir++ with its
    maildirfolder file), keep with \\Seen: the copy lands in cur/ with :2,S;
    the done mark runs once everything is stored."""
    s = Setup(
        tmp_path,
        'require ["fileinto", "mailbox", "imap4flags"];\n'
        'fileinto "Existing"; fileinto :create "New/Sub"; keep :flags "\\\\Seen";',
    )
    for sub in ("cur", "new", "tmp"):
        (s.maildir / ".Existing" / sub).mkdir(parents=True)
    outcome = s.deliver()
    assert outcome.status == "2.0.0", outcome.reason
    assert "Existing" in outcome.reason and "New/Sub" in outcome.reason
    assert len(s.folder_files(".Existing")) == 1
    assert len(s.folder_files(".New.Sub")) == 1
    assert (s.maildir / ".New.Sub" / "maildirfolder").exists()
    (inbox,) = s.folder_files()
    assert inbox.parent.name == "cur" and inbox.name.endswith(":2,S")
    assert inbox.read_bytes().startswith(PREFIX)
    assert s.marked == [1]


def test_fileinto_missing_folder_keeps_in_inbox(tmp_path: Path) -> None:
    """fileinto a folder that does not exist (no :create) is kept in INBOX,
    with a warning, as Pigeonhole does."""
    s = Setup(tmp_path, 'require "fileinto"; fileinto "Nowhere";')
    warnings: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            warnings.append(str(event.get("text", "")))

    globalLogPublisher.addObserver(observe)
    try:
        outcome = s.deliver()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert outcome.status == "2.0.0"
    assert len(s.folder_files()) == 1
    assert any("no such folder" in w for w in warnings)


@pytest.mark.parametrize(
    "script",
    ["if header :is { keep; }", 'require "fileinto"; fileinto "a"; fileinto "b"; redirect "x";'],
)
def test_script_errors_never_lose_mail(tmp_path: Path, script: str) -> None:
    """A script that does not compile, or fails when run (an invalid
    redirect address), leaves the message in INBOX with 2.0.0."""
    s = Setup(tmp_path, script)
    outcome = s.deliver()
    assert outcome == Outcome("2.0.0", "saved mail to INBOX (Sieve script error)")
    assert len(s.folder_files()) == 1


def test_reject_is_a_permanent_failure_and_stores_nothing(tmp_path: Path) -> None:
    """reject: 5.7.1 with the reason (LMTP's 550, the virtual agent's
    bounce), nothing stored."""
    s = Setup(tmp_path, 'require "reject"; reject "I do not want\nthis";')
    assert s.deliver() == Outcome("5.7.1", "rejected by Sieve: I do not want this")
    assert s.folder_files() == []


def test_discard(tmp_path: Path) -> None:
    s = Setup(tmp_path, "discard;")
    assert s.deliver() == Outcome("2.0.0", "discarded by Sieve")
    assert s.folder_files() == [] and s.marked == [1]


def test_redirect_goes_through_cleanup_with_the_original_sender(tmp_path: Path) -> None:
    """redirect submits the message (with its Delivered-To) to cleanup, the
    envelope sender unchanged; :copy also keeps it."""
    s = Setup(tmp_path, 'require "copy"; redirect :copy "carol@example.net";')
    outcome = s.deliver()
    assert outcome.status == "2.0.0" and "redirected to carol@example.net" in outcome.reason
    ((envelope, content),) = s.cleanup.submitted
    assert envelope.sender == "alice@example.org"
    assert [r.address for r in envelope.recipients] == ["carol@example.net"]
    assert content == PREFIX + MESSAGE
    assert len(s.folder_files()) == 1


def test_vacation_reply_once_then_tracked(tmp_path: Path) -> None:
    """vacation queues an auto-reply with the null sender, Auto-Submitted,
    In-Reply-To and the :subject; the second message from the same sender
    within :days gets none (the tracking file in the home)."""
    s = Setup(
        tmp_path, 'require "vacation"; vacation :days 1 :subject "Out of office" "Back on Monday.";'
    )
    assert s.deliver().status == "2.0.0"
    ((envelope, reply),) = s.cleanup.submitted
    assert envelope.sender == "" and envelope.recipients[0].address == "alice@example.org"
    assert b"Auto-Submitted: auto-replied" in reply
    assert b"In-Reply-To: <m1@example.org>" in reply
    assert b"Subject: Out of office" in reply
    assert reply.endswith(b"\n\nBack on Monday.\n")
    assert (s.home / ".pymta-sieve-tracking").exists()
    s.deliver()
    assert len(s.cleanup.submitted) == 1
    assert len(s.folder_files()) == 2
    # After :days, the sender gets a reply again.
    s.clock.advance(86401)
    s.deliver()
    assert len(s.cleanup.submitted) == 2


def test_duplicate_files_the_second_copy(tmp_path: Path) -> None:
    """The same Message-ID twice: the second copy is discarded by the
    duplicate test (RFC 7352)."""
    s = Setup(tmp_path, 'require "duplicate"; if duplicate { discard; }')
    s.deliver()
    assert s.deliver() == Outcome("2.0.0", "discarded by Sieve")
    assert len(s.folder_files()) == 1


def test_body_test_and_include(tmp_path: Path) -> None:
    """A personal include (~/sieve/NAME.sieve) with a body test."""
    s = Setup(tmp_path, 'require "include"; include "filters";')
    (s.home / "sieve" / "filters.sieve").write_text(
        'require ["body", "fileinto", "mailbox"]; if body :contains "body text" '
        '{ fileinto :create "Body"; }'
    )
    assert s.deliver().status == "2.0.0"
    assert len(s.folder_files(".Body")) == 1 and s.folder_files() == []


def test_disabled_sieve_is_inbox(tmp_path: Path) -> None:
    """pymta_sieve_enable = no: the script is not run."""
    s = Setup(tmp_path, "discard;", enabled=False)
    assert s.deliver().reason == "saved mail to INBOX"
    assert len(s.folder_files()) == 1


def test_vacation_once_for_deliveries_at_the_same_time(tmp_path: Path) -> None:
    """Two messages from one sender whose scripts run before either is
    stored: one vacation reply (the decision and its record are one step)."""
    s = Setup(tmp_path, 'require "vacation"; vacation "Away.";')
    queued: list[Any] = []

    def later(work: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        queued.append((work, d))
        return d

    s.sieve._run = later
    results: list[object] = []
    for n in range(2):
        message = MESSAGE.replace(b"<m1@", f"<m{n + 2}@".encode())
        s.final.deliver(
            s.mailbox,
            PREFIX,
            BytesContent(message),
            sender="alice@example.org",
            recipient="bob@example.test",
        ).addBoth(results.append)
    while queued:
        work, d = queued.pop(0)
        d.callback(work())
    assert [r.status for r in results] == ["2.0.0", "2.0.0"]  # type: ignore[attr-defined]
    assert len(s.cleanup.submitted) == 1


def test_imap4flags_keywords_are_stored(tmp_path: Path) -> None:
    """imap4flags keywords reach the mailbox with the system flags: the file
    carries a keyword letter from dovecot-keywords, as IMAP clients read it."""
    s = Setup(
        tmp_path,
        'require "imap4flags";\nkeep :flags ["\\\\Flagged", "$Label1"];',
    )
    outcome = s.deliver()
    assert outcome.status == "2.0.0", outcome.reason
    (inbox,) = s.folder_files()
    assert inbox.parent.name == "cur" and inbox.name.endswith(":2,Fa")
    assert "$Label1" in (s.maildir / "dovecot-keywords").read_text()
