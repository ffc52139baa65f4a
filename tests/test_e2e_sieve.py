"""Sieve end to end: a real twistd pymta; scripts in the users' homes as
Pigeonhole lays them out; mail through SMTP (the virtual agent) and LMTP;
the result read over IMAP and from the mail log."""

from __future__ import annotations

import imaplib
import os
import smtplib
from pathlib import Path

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer

LMTP_SERVICE = "127.0.0.2:0 inet n - n - - lmtpd\n"


def passwd(root: Path) -> str:
    return (
        f"alice@example.test:{{PLAIN}}alice-pw::::{root}/mail/example.test/alice::\n"
        f"bob@example.test:{{PLAIN}}bob-pw::::{root}/mail/example.test/bob::\n"
    )


def install_script(home: Path, text: str, name: str = "main") -> None:
    (home / "sieve").mkdir(parents=True, exist_ok=True)
    (home / "sieve" / f"{name}.sieve").write_text(text)
    link = home / ".dovecot.sieve"
    if link.is_symlink():
        link.unlink()
    os.symlink(f"sieve/{name}.sieve", link)


def folder_uids(port: int, user: str, password: str, folder: str) -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", port) as imap:
        imap.login(user, password)
        typ, _ = imap.select(folder)
        if typ != "OK":
            return []
        _, data = imap.uid("SEARCH", "ALL")  # type: ignore[arg-type]
        return data[0].split()  # type: ignore[union-attr]


def test_sieve_on_smtp_delivery_files_flags_and_answers(tmp_path: Path) -> None:
    """Mail over SMTP to bob, whose script files list mail into an existing
    folder with \\Seen and sends a vacation reply for the rest: the list
    message is in Lists (seen over IMAP), the other in INBOX, and alice
    (the sender) receives the vacation reply with Auto-Submitted, once."""
    bob = tmp_path / "mail" / "example.test" / "bob"
    with PymtaServer(
        tmp_path, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE, passwd=passwd(tmp_path)
    ) as server:
        server.start()
        for sub in ("cur", "new", "tmp"):
            (bob / ".Lists" / sub).mkdir(parents=True)
        install_script(
            bob,
            'require ["fileinto", "imap4flags", "vacation"];\n'
            'if header :contains "list-id" "dev" { fileinto :flags "\\\\Seen" "Lists"; stop; }\n'
            'vacation :days 1 :subject "Away" "I am away this week.";\n',
        )
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail(
                "alice@example.test",
                ["bob@example.test"],
                b"From: alice@example.test\r\nTo: bob@example.test\r\n"
                b"List-Id: <dev.example.test>\r\nSubject: list\r\n\r\nlist mail\r\n",
            )
            for n in range(2):
                smtp.sendmail(
                    "alice@example.test",
                    ["bob@example.test"],
                    b"From: alice@example.test\r\nTo: bob@example.test\r\n"
                    + f"Subject: personal {n}\r\nMessage-ID: <p{n}@x>\r\n\r\nhi\r\n".encode(),
                )
        server.wait_for_log(r"to=<bob@example.test>.*status=sent", count=3)
        server.wait_for_log(r"sieve: bob@example.test: vacation reply to <alice@example.test>")
        server.wait_for_log(r"to=<alice@example.test>.*status=sent")
        assert len(folder_uids(server.imap_port, "bob@example.test", "bob-pw", "Lists")) == 1
        assert len(folder_uids(server.imap_port, "bob@example.test", "bob-pw", "INBOX")) == 2
        with imaplib.IMAP4("127.0.0.1", server.imap_port) as imap:
            imap.login("bob@example.test", "bob-pw")
            imap.select("Lists")
            _, flags = imap.fetch("1", "(FLAGS)")
            assert b"\\Seen" in flags[0]  # type: ignore[operator]
        (reply,) = server.messages("alice")
        assert b"Auto-Submitted: auto-replied" in reply
        assert b"Subject: Away" in reply and b"In-Reply-To: <p0@x>" in reply
        assert b"Return-Path: <>" in reply


def test_sieve_on_lmtp_reject_and_broken_script(tmp_path: Path) -> None:
    """Over LMTP: bob's script rejects (550 5.7.1 to the LMTP client, for
    bob only); alice's broken script keeps her mail in INBOX and logs the
    error with its line."""
    root = tmp_path
    with PymtaServer(
        root,
        master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE + LMTP_SERVICE,
        passwd=passwd(root),
    ) as server:
        server.start()
        install_script(
            root / "mail" / "example.test" / "bob", 'require "reject"; reject "No thanks.";'
        )
        install_script(root / "mail" / "example.test" / "alice", "if true {\n keep;\n")
        lmtp = smtplib.LMTP("127.0.0.2", server.ports["127.0.0.2:0"])
        with lmtp:
            lmtp.ehlo()
            lmtp.mail("sender@example.org")
            lmtp.rcpt("alice@example.test")
            lmtp.rcpt("bob@example.test")
            code, text = lmtp.data(b"Subject: x\r\n\r\nbody\r\n")
            assert code == 250, text
            code, text = lmtp.getreply()
            assert (code, text[:9]) == (550, b"5.7.1 <bo")
            assert b"No thanks." in text
        server.wait_for_log(r"sieve: warning: alice@example.test: script main.sieve: line \d+:")
        assert len(folder_uids(server.imap_port, "alice@example.test", "alice-pw", "INBOX")) == 1
        assert server.messages("bob") == []
