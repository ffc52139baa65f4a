"""End to end: a real ``twistd pymta`` started as root with ``-u nobody``
applies a Unix user's active Sieve script (``~/.dovecot.sieve``, in a
0700 home) at local delivery to ``home_mailbox = Maildir/``: the root
helper's child runs it as the user. fileinto a new folder, discard,
vacation (one reply per sender) and a syntax error (kept in INBOX), with
every file the user's.

Waiting is on files (inotify) and log lines, with deadlines."""

from __future__ import annotations

import os
import pwd
import smtplib
from pathlib import Path

import pytest

from tests.harness import PymtaServer, wait_for_file
from tests.system_python import system_python
from tests.test_e2e_local_users import pytestmark, root, server_for, user  # noqa: F401

SCRIPT = """require ["fileinto", "mailbox", "vacation"];
if header :contains "subject" "spam" { discard; stop; }
if header :contains "subject" "list" { fileinto :create "Lists"; stop; }
vacation :days 1 :subject "Away" "I am away this week.";
"""


def send(server: PymtaServer, sender: str, recipient: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail(
            sender,
            [recipient],
            f"From: {sender}\nTo: {recipient}\nSubject: {subject}\n\nhello\n".encode(),
        )


def install(home: Path, owner: pwd.struct_passwd, text: str) -> None:
    """The active script, owned by the user, as ManageSieve lays it out."""
    directory = home / "sieve"
    directory.mkdir(exist_ok=True)
    (directory / "main.sieve").write_text(text)
    link = home / ".dovecot.sieve"
    if not link.is_symlink():
        link.symlink_to("sieve/main.sieve")
    for path in (directory, directory / "main.sieve", link):
        os.lchown(path, owner.pw_uid, owner.pw_gid)


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_sieve_runs_as_the_local_user(root: Path, user: pwd.struct_passwd) -> None:  # noqa: F811
    """Through the root helper, as the user: fileinto :create files into
    ~/Maildir/.Lists/ (the folder and file owned by the user), discard
    stores nothing, vacation replies once to a sender (tracking file in the
    home, the user's), and a script that does not compile keeps the
    message in INBOX with a warning in the log."""
    python = system_python()
    if python is None:
        pytest.skip("no venv of /usr/bin/python3 with pymta's requirements")
    home = Path(user.pw_dir)
    home.chmod(0o700)  # Debian's adduser default: nobody cannot read it
    install(home, user, SCRIPT)
    rcpt = f"{user.pw_name}@localhost"
    pidfile = root / "run" / "pymta.pid"
    with server_for(root, "home_mailbox = Maildir/\n") as server:
        for path in server.config_dir.iterdir():
            path.chmod(0o644)
        server.start(
            twistd_options=["-u", "nobody", "-g", "nogroup", "--pidfile", str(pidfile)],
            python=python,
        )
        server.wait_for_log(r"set uid/gid")
        maildir = home / "Maildir"

        send(server, "alice@example.test", rcpt, "list digest")
        lists = maildir / ".Lists" / "new"
        wait_for_file(home, lambda: bool(files(lists)))
        [filed] = files(lists)
        assert b"Subject: list digest" in filed.read_bytes()
        for path in (maildir, maildir / ".Lists", filed):
            assert path.stat().st_uid == user.pw_uid, path
        server.wait_for_log(rf"to=<{rcpt}>.*status=sent \(delivered by Sieve: Lists\)")

        send(server, "alice@example.test", rcpt, "spam offer")
        server.wait_for_log(rf"to=<{rcpt}>.*status=sent \(discarded by Sieve\)")

        for n in (1, 2):
            send(server, "alice@example.test", rcpt, f"question {n}")
        server.wait_for_log(rf"to=<{rcpt}>.*status=sent \(delivered by Sieve: INBOX\)", count=2)
        server.wait_for_log(r"vacation reply to <alice@example\.test> queued as", count=1)
        wait_for_file(
            server.maildir("alice") / "new",
            lambda: any(b"Subject: Away" in m for m in server.messages("alice")),
        )
        inbox = files(maildir / "new")
        assert len(inbox) == 2
        assert all(p.stat().st_uid == user.pw_uid for p in inbox)
        tracking = home / ".pymta-sieve-tracking"
        assert tracking.stat().st_uid == user.pw_uid

        install(home, user, 'if header :bogus "x" { discard;\n')
        send(server, "alice@example.test", rcpt, "broken")
        server.wait_for_log(rf"to=<{rcpt}>.*status=sent .*Sieve script error")
        wait_for_file(maildir / "new", lambda: len(files(maildir / "new")) == 3)
        assert "warning: " + user.pw_name + ": script main.sieve" in server.log()
        replies = [m for m in server.messages("alice") if b"Subject: Away" in m]
        assert len(replies) == 1
        assert b"I am away this week." in replies[0]
        assert b"\nspam offer" not in b"".join(p.read_bytes() for p in files(maildir / "new"))
        server.stop()
    assert "Traceback" not in server.log()
