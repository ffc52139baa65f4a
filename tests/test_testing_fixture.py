"""pymta.testing, the packaged fixture: MailServer in a subprocess, the
embedded form in the test's reactor, the pytest fixture and its marker, and
mail log lines as values."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pymta.testing import EmbeddedMailServer, MailServer
from pymta.testing.events import parse_event, parse_twistd_line


def test_pymta_server_fixture_delivers_and_serves_pop3(pymta_server: MailServer) -> None:
    """The fixture is started with alice and bob: mail sent with send() is
    delivered, read back from the Maildir and over POP3, and the mail log
    tells the delivery as an event with its fields."""
    queue_id = pymta_server.send(
        "app@client.test", "alice@example.test", "Subject: welcome\r\n\r\nhi alice\r\n"
    )
    (message,) = pymta_server.wait_for_delivery("alice@example.test")
    assert message["Subject"] == "welcome"
    event = pymta_server.wait_for_event(rf"{queue_id}: to=<alice@example\.test>.*status=sent")
    assert event.service == "virtual" and event.fields["relay"] == "virtual"
    assert event.reason == "delivered to maildir"
    pop = poplib.POP3(pymta_server.host, pymta_server.pop3_port, timeout=30)
    pop.user("alice@example.test")
    pop.pass_("alice-pw")
    assert pop.stat()[0] == 1
    pop.quit()
    assert [e.service for e in pymta_server.events("smtpd")][:1] == ["smtpd"]


@pytest.mark.pymta(
    users={"me@corp.test": "me-pw"},
    aliases={"team@corp.test": ["me@corp.test"]},
    main_cf="message_size_limit = 2000\n",
)
def test_marker_configures_users_aliases_and_main_cf(pymta_server: MailServer) -> None:
    """@pytest.mark.pymta sets the users, aliases and main.cf lines: the
    alias delivers to its target, the size limit refuses a big message,
    and an unknown user is refused at RCPT."""
    pymta_server.send("a@client.test", "team@corp.test", "Subject: to the team\r\n\r\nx\r\n")
    (message,) = pymta_server.wait_for_delivery("me@corp.test")
    assert message["Subject"] == "to the team"
    with pytest.raises(smtplib.SMTPDataError):
        pymta_server.send("a@client.test", "me@corp.test", "Subject: big\r\n\r\n" + "x" * 3000)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        pymta_server.send("a@client.test", "nobody@corp.test", "Subject: x\r\n\r\nx\r\n")
    imap = imaplib.IMAP4(pymta_server.host, pymta_server.imap_port, timeout=30)
    imap.login("me@corp.test", "me-pw")
    assert imap.select("INBOX") == ("OK", [b"1"])
    imap.logout()


def test_mail_server_as_a_context_manager_cleans_up() -> None:
    """Without a directory the server makes a temporary one and removes it."""
    with MailServer(users={"x@y.test": "pw"}) as server:
        root = server.root
        server.send("a@b.test", "x@y.test", b"Subject: s\r\n\r\nbody\r\n")
        assert len(server.wait_for_delivery("x@y.test")) == 1
    assert not root.exists()


def test_users_cannot_change_after_start(tmp_path: Path) -> None:
    """add_user after start() would not reach the running server: an error."""
    server = MailServer(tmp_path)
    server.add_user("late@example.test", "pw")
    with server:
        with pytest.raises(RuntimeError):
            server.add_user("later@example.test", "pw")


@pytest_twisted.inlineCallbacks
def test_embedded_mail_server_in_the_tests_reactor(tmp_path: Path) -> Any:
    """EmbeddedMailServer runs in this reactor: twisted.mail's client sends,
    wait_for_delivery fires with the message, events() saw the delivery."""
    server = EmbeddedMailServer(tmp_path, users={"carol@example.test": "pw"})
    server.start()
    try:
        yield server.send(
            "app@client.test", ["carol@example.test"], b"Subject: inside\r\n\r\nx\r\n"
        )
        messages = yield server.wait_for_delivery("carol@example.test")
        assert [m["Subject"] for m in messages] == ["inside"]
        assert any(e.status == "sent" for e in server.events("virtual"))
    finally:
        yield server.stop()


def test_events_parse_postfix_lines() -> None:
    """Queue id, fields with angle brackets removed, NOQUEUE rejects, and
    only pymta.maillog lines of twistd's log become events."""
    event = parse_event(
        "smtpd",
        "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <x@y>: Recipient address "
        "rejected: User unknown; from=<a@b> to=<x@y> proto=ESMTP helo=<c>",
    )
    assert event.queue_id == "NOQUEUE"
    assert event.fields["from"] == "a@b" and event.fields["helo"] == "c"
    line = (
        "2026-12-07T12:00:00+0000 [pymta.maillog#info] qmgr: 6620A2301A181002ED7: "
        "from=<a@b>, size=10, nrcpt=1 (queue active)"
    )
    parsed = parse_twistd_line(line)
    assert parsed is not None and parsed.queue_id == "6620A2301A181002ED7"
    assert parsed.fields["size"] == "10"
    assert parse_twistd_line("2026-12-07T12:00:00+0000 [-] something else") is None
