"""End to end: DSN, transport_maps routes and ``pymta postqueue -f`` through a
real ``twistd pymta`` on loopback, driven by Python's smtplib.

The server routes ``dead.test`` to ``error:5.1.2 Host dead`` and
``void.test`` to ``discard:`` through a texthash transport_maps file;
bounces and success notices come back to the senders' own virtual
mailboxes. Waiting is on log lines and Maildir files, never on sleeps.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PymtaServer, wait_for_file

VMAILBOX = "".join(
    f"{user}@example.test example.test/{user}/\n"
    for user in ("alice", "bob", "carol", "dave", "erin")
)
TRANSPORT = "dead.test error:5.1.2 Host dead\nvoid.test discard:\n"
MESSAGE = b"From: {sender}\r\nTo: someone\r\nSubject: {subject}\r\n\r\nThe body text.\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PymtaServer]:
    root = tmp_path_factory.mktemp("dsn")
    with PymtaServer(
        root,
        main_cf_extra="transport_maps = texthash:$config_directory/transport\n",
        vmailbox=VMAILBOX,
    ) as instance:
        (instance.config_dir / "transport").write_text(TRANSPORT)
        instance.start()
        yield instance
        instance.stop()


def _send(
    port: int,
    sender: str,
    rcpts: list[tuple[str, list[str]]],
    subject: str,
    mail_options: list[str] | None = None,
) -> str:
    """Send one message with smtplib and DSN options; return its queue id."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        code, text = client.mail(sender, mail_options or [])
        assert code == 250, text
        for address, options in rcpts:
            code, text = client.rcpt(address, options)
            assert code == 250, (address, code, text)
        message = MESSAGE.replace(b"{sender}", sender.encode())
        code, text = client.data(message.replace(b"{subject}", subject.encode()))
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


def _parsed(server: PymtaServer, user: str) -> list[email.message.Message]:
    return [
        email.message_from_bytes(raw, policy=email.policy.compat32) for raw in server.messages(user)
    ]


def _wait_for_mail(server: PymtaServer, user: str, count: int) -> list[email.message.Message]:
    new = server.maildir(user) / "new"
    new.mkdir(parents=True, exist_ok=True)
    wait_for_file(new, lambda: len(list(new.iterdir())) >= count)
    return _parsed(server, user)


def test_notify_never_suppresses_the_bounce(server: PymtaServer) -> None:
    """A recipient routed to ``error:`` bounces (status=bounced with the
    table's text); with NOTIFY=NEVER no DSN is sent, without it one is."""
    quiet = _send(
        server.smtp_port, "alice@example.test", [("x@dead.test", ["NOTIFY=NEVER"])], "quiet"
    )
    server.wait_for_log(rf"{quiet}: removed")
    bounced = server.wait_for_log(rf"{quiet}: to=<x@dead.test>.*status=bounced")
    assert "relay=none" in bounced[0] or "relay=error" in bounced[0]
    assert "(Host dead)" in bounced[0]
    loud = _send(server.smtp_port, "alice@example.test", [("y@dead.test", [])], "loud")
    server.wait_for_log(rf"{loud}: sender non-delivery notification")
    (dsn,) = _wait_for_mail(server, "alice", 1)
    server.wait_for_log(rf"{loud}: removed")
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    text = dsn.as_string()
    assert f"X-Postfix-Queue-ID: {loud}" in text
    assert quiet not in text
    assert len(server.messages("alice")) == 1


def test_notify_success_gives_a_delivered_dsn(server: PymtaServer) -> None:
    """NOTIFY=SUCCESS on final delivery brings back a "delivered" DSN with
    the ENVID and ORCPT the client gave; a recipient without NOTIFY adds
    nothing to it."""
    qid = _send(
        server.smtp_port,
        "bob@example.test",
        [
            ("carol@example.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;Carol+2Bx@example.test"]),
            ("dave@example.test", []),
        ],
        "track me",
        ["RET=HDRS", "ENVID=track+2B42"],
    )
    (dsn,) = _wait_for_mail(server, "bob", 1)
    assert len(server.messages("carol")) == 1 and len(server.messages("dave")) == 1
    assert dsn["Subject"] == "Successful Mail Delivery Report"
    assert dsn["From"].startswith("MAILER-DAEMON@mx.example.test")
    text = dsn.as_string()
    assert "Original-Envelope-Id: track+42" in text
    assert "Original-Recipient: rfc822;Carol+x@example.test" in text
    assert "Action: delivered" in text
    assert "Final-Recipient: rfc822; dave@example.test" not in text
    assert "Subject: track me" in text and "The body text." not in text
    server.wait_for_log(rf"{qid}: sender delivery status notification")


def test_discard_route(server: PymtaServer) -> None:
    """A recipient routed to ``discard:`` is reported sent by the discard
    agent and the message leaves the queue."""
    qid = _send(server.smtp_port, "erin@example.test", [("z@void.test", [])], "void")
    line = server.wait_for_log(rf"{qid}: to=<z@void.test>.*status=sent")[0]
    assert "relay=none" in line or "discard" in line
    server.wait_for_log(rf"{qid}: removed")


def test_postqueue_f_delivers_deferred_mail_now(tmp_path: Path) -> None:
    """A message deferred because its Maildir cannot be made waits for its
    backoff (300 s); once the obstacle is gone, ``pymta postqueue -f``
    makes the running server deliver it at once."""
    with PymtaServer(tmp_path, vmailbox=VMAILBOX) as server:
        server.start()
        blocker = server.maildir("carol")
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a directory")
        qid = _send(server.smtp_port, "bob@example.test", [("carol@example.test", [])], "later")
        server.wait_for_log(rf"{qid}: to=<carol@example.test>.*status=deferred")
        blocker.unlink()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pymta.cli.main",
                "postqueue",
                "-c",
                str(server.config_dir),
                "-f",
            ],
            check=True,
            timeout=60,
        )
        server.wait_for_log(rf"{qid}: to=<carol@example.test>.*status=sent")
        server.wait_for_log(rf"{qid}: removed")
        assert len(server.messages("carol")) == 1
        server.stop()
