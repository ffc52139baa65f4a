"""End to end: header_checks through a real ``twistd pymta`` on loopback,
driven by Python's smtplib.

A regexp: header_checks file REJECTs one Subject and HOLDs another: the
client gets Postfix's ``550 5.7.1`` at the end of DATA for the first, and
the second is acknowledged, lands in hold/ and is listed by ``pymta mailq``
with Postfix's ``!`` mark while a plain message is delivered. Waiting is on
log lines and Maildir files, never on sleeps.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.harness import REPO, PymtaServer, wait_for_file

HEADER_CHECKS = (
    "# main.cf: header_checks = regexp:$config_directory/header_checks\n"
    "/^Subject:.*cheap pills/ REJECT spam is not welcome here\n"
    "/^Subject: hold me/ HOLD for review\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PymtaServer]:
    root = tmp_path_factory.mktemp("hchecks")
    with PymtaServer(
        root, main_cf_extra="header_checks = regexp:$config_directory/header_checks\n"
    ) as instance:
        (instance.config_dir / "header_checks").write_text(HEADER_CHECKS)
        instance.start()
        yield instance
        instance.stop()


def _message(subject: str) -> bytes:
    return (
        f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nHi.\r\n"
    ).encode()


def _send(port: int, subject: str) -> tuple[int, bytes]:
    """(code, text) of the reply to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("alice@example.test")[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        return client.data(_message(subject))


def test_rejected_subject_gets_550_at_end_of_data(server: PymtaServer) -> None:
    """A REJECT rule answers the client 550 5.7.1 with the rule's text, and
    cleanup logs Postfix's reject line."""
    code, text = _send(server.smtp_port, "Buy cheap pills now")
    assert (code, text) == (550, b"5.7.1 spam is not welcome here")
    lines = server.wait_for_log(r": reject: header Subject: Buy cheap pills now from ")
    assert (
        lines[0]
        .rstrip()
        .endswith(
            "from=<alice@example.test> to=<bob@example.test> proto=ESMTP helo=<client.test>:"
            " 5.7.1 spam is not welcome here"
        )
    )


def test_held_message_lands_in_hold_and_mailq_shows_it(server: PymtaServer) -> None:
    """A HOLD rule: the client gets 250, the queue file is in hold/ (not
    delivered while a later plain message is), and mailq marks it '!'."""
    code, text = _send(server.smtp_port, "hold me please")
    assert code == 250, text
    qid = text.decode().rsplit(" ", 1)[1]
    server.wait_for_log(rf"{qid}: hold: header Subject: hold me please from .*: for review")
    assert (server.root / "spool" / "hold" / qid).is_file()

    code, text = _send(server.smtp_port, "plain")
    assert code == 250, text
    maildir_new = server.maildir("bob") / "new"
    wait_for_file(maildir_new, lambda: len(list(maildir_new.iterdir())) == 1)
    assert (server.root / "spool" / "hold" / qid).is_file()

    listing = subprocess.run(
        [sys.executable, "-m", "pymta.cli.main", "mailq", "-c", str(server.config_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,  # this checkout's pymta, not an installed one
    ).stdout
    assert f"{qid}!" in listing, listing
