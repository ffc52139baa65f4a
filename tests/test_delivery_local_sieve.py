"""Sieve for local(8) users: the local agent delivers a Unix user's mailbox
through the user's active script (``~/.dovecot.sieve``), run by the
delivery child's ``sieve`` action (here the in-process
RecordingUserDelivery, which runs the same child function as the test's
own user); redirects and vacation replies come back to the agent, which
submits them through cleanup. The real child as a real user is in
test_e2e_local_sieve.py."""

from __future__ import annotations

import os
from pathlib import Path

from pymta.delivery.local import LocalAgent
from pymta.privsep.interface import UnixUser
from pymta.privsep.memory import Call
from pymta.sieve import storage, tracking
from tests.test_delivery_local import NOBODY, ROOT, FakeCleanup, make_agent, request, run

MESSAGE = (
    b"From: Alice <alice@example.org>\nTo: bob@mx.example.org\n"
    b"Subject: weekly report\nMessage-ID: <r1@example.org>\n\nnumbers\n"
)


def users(home: Path) -> dict[str, UnixUser]:
    return {
        "bob": UnixUser("bob", 1001, 1001, str(home), "/bin/bash"),
        "root": ROOT,
        "nobody": NOBODY,
    }


def script(home: Path, text: str, name: str = "main") -> None:
    """Install an active script as ManageSieve lays it out."""
    (home / storage.SCRIPT_DIR).mkdir(exist_ok=True)
    (home / storage.SCRIPT_DIR / f"{name}.sieve").write_text(text)
    link = home / storage.ACTIVE_LINK
    if link.is_symlink():
        link.unlink()
    link.symlink_to(f"sieve/{name}.sieve")


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def maildir_agent(home: Path, extra: str = "") -> tuple[LocalAgent, FakeCleanup]:
    return make_agent({}, "home_mailbox = Maildir/\n" + extra, users=users(home))


def test_fileinto_creates_the_folder_with_flags(tmp_path: Path) -> None:
    """fileinto :create with imap4flags files the message into
    ~/Maildir/.Folder/cur with the flags as Maildir letters (keywords in
    dovecot-keywords); nothing goes to INBOX."""
    script(
        tmp_path,
        'require ["fileinto", "mailbox", "imap4flags"];\n'
        'if header :contains "subject" "report" {\n'
        '  fileinto :create :flags ["\\\\Seen", "$Report"] "Reports/Weekly"; stop;\n}\n',
    )
    agent, _ = maildir_agent(tmp_path)
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert (status.status, status.reason) == ("2.0.0", "delivered by Sieve: Reports/Weekly")
    folder = tmp_path / "Maildir" / ".Reports.Weekly"
    [name] = files(folder / "cur")
    assert name.endswith(":2,Sa")
    assert (folder / "dovecot-keywords").read_text() == "0 $Report\n"
    assert (folder / "cur" / name).read_bytes().endswith(MESSAGE)
    assert b"Delivered-To: bob@mx.example.org\n" in (folder / "cur" / name).read_bytes()
    assert files(tmp_path / "Maildir" / "new") == []
    assert agent.recorder.calls == [Call("maildir", "bob", f"{tmp_path}/Maildir/")]


def test_fileinto_missing_folder_keeps_in_inbox(tmp_path: Path) -> None:
    """fileinto a folder that does not exist (no :create) keeps the
    message in INBOX, as Pigeonhole does: never lost."""
    script(tmp_path, 'require "fileinto";\nfileinto "Nowhere";\n')
    agent, _ = maildir_agent(tmp_path)
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert (status.status, status.reason) == ("2.0.0", "delivered by Sieve: INBOX")
    assert len(files(tmp_path / "Maildir" / "new")) == 1


def test_discard_writes_nothing(tmp_path: Path) -> None:
    """discard: the delivery succeeds and no file is written."""
    script(tmp_path, "discard;\n")
    agent, _ = maildir_agent(tmp_path)
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert (status.status, status.reason) == ("2.0.0", "discarded by Sieve")
    assert files(tmp_path / "Maildir" / "new") == []


def test_syntax_error_keeps_the_message(tmp_path: Path) -> None:
    """A script that does not compile never loses mail: kept in INBOX."""
    script(tmp_path, 'if header :bogus "x" { discard; \n')
    agent, _ = maildir_agent(tmp_path)
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert status.status == "2.0.0"
    assert status.reason.endswith("(Sieve script error)")
    assert len(files(tmp_path / "Maildir" / "new")) == 1


def test_reject_bounces_and_writes_nothing(tmp_path: Path) -> None:
    """reject: 5.7.1 with the script's reason (the queue manager bounces);
    no copy is kept."""
    script(tmp_path, 'require "reject";\nreject "not here";\n')
    agent, _ = maildir_agent(tmp_path)
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert (status.status, status.reason) == ("5.7.1", "rejected by Sieve: not here")
    assert files(tmp_path / "Maildir" / "new") == []


def test_redirect_resubmits_through_cleanup(tmp_path: Path) -> None:
    """redirect: the agent resubmits the message through cleanup with the
    original sender and a Delivered-To naming the user (loop stop)."""
    script(tmp_path, 'redirect "carol@example.net";\n')
    agent, cleanup = maildir_agent(tmp_path)
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert (status.status, status.reason) == (
        "2.0.0",
        "delivered by Sieve: redirected to carol@example.net",
    )
    [(envelope, content)] = cleanup.submitted
    assert envelope.sender == "alice@example.org"
    assert [r.address for r in envelope.recipients] == ["carol@example.net"]
    assert content == b"Delivered-To: bob@mx.example.org\n" + MESSAGE
    assert files(tmp_path / "Maildir" / "new") == []


def test_vacation_replies_once(tmp_path: Path) -> None:
    """vacation: a reply with the null sender goes through cleanup, the
    message is kept, and the tracking file in the user's home stops a
    second reply to the same sender."""
    script(tmp_path, 'require "vacation";\nvacation :days 7 :subject "Away" "Back on Monday.";\n')
    agent, cleanup = maildir_agent(tmp_path)
    for _ in range(2):
        status = run(agent, request("bob@mx.example.org", MESSAGE))
        assert (status.status, status.reason) == ("2.0.0", "delivered by Sieve: INBOX")
    [(envelope, reply)] = cleanup.submitted
    assert envelope.sender == ""
    assert [r.address for r in envelope.recipients] == ["alice@example.org"]
    assert b"Subject: Away\n" in reply and b"In-Reply-To: <r1@example.org>\n" in reply
    assert b"Back on Monday." in reply
    assert (tmp_path / tracking.TRACKING_FILE).exists()
    assert len(files(tmp_path / "Maildir" / "new")) == 2


def test_mbox_spool_keep_and_fileinto(tmp_path: Path) -> None:
    """With an mbox mailbox (mail_spool_directory), keep appends to it and
    fileinto another folder keeps the message there too (an mbox user has
    no folders): one record, never lost."""
    (tmp_path / "spool").mkdir()
    script(tmp_path, 'require "fileinto";\nfileinto "Lists";\nkeep;\n')
    agent, _ = make_agent({}, f"mail_spool_directory = {tmp_path}/spool\n", users=users(tmp_path))
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert (status.status, status.reason) == ("2.0.0", "delivered by Sieve: INBOX")
    data = (tmp_path / "spool" / "bob").read_bytes()
    assert data.count(b"\nFrom ") + data.startswith(b"From ") == 1
    assert b"Subject: weekly report\n" in data


def test_sieve_off_is_the_plain_write(tmp_path: Path) -> None:
    """pymta_sieve_enable = no: the script is not run."""
    script(tmp_path, "discard;\n")
    agent, _ = maildir_agent(tmp_path, "pymta_sieve_enable = no\n")
    status = run(agent, request("bob@mx.example.org", MESSAGE))
    assert status.status == "2.0.0"
    assert len(files(tmp_path / "Maildir" / "new")) == 1


def test_root_is_not_filtered(tmp_path: Path) -> None:
    """root's mailbox is written as root, so root's script is not run (it
    would run as root on untrusted mail): the plain write."""
    script(tmp_path, "discard;\n")
    root = UnixUser("root", 0, 0, str(tmp_path), "/bin/sh")
    agent, _ = make_agent({}, "home_mailbox = Maildir/\n", users={"root": root, "nobody": NOBODY})
    status = run(agent, request("root@mx.example.org", MESSAGE))
    assert status.status == "2.0.0"
    assert len(files(tmp_path / "Maildir" / "new")) == 1
