"""End to end: a real pymta asks milters over loopback sockets.

The milters are tests/milterserver.py's scripted milter (written from the
protocol description) and, in test_e2e_opendkim.py, Debian's OpenDKIM.
Mail is sent with smtplib and read from the delivered Maildir.
"""

from __future__ import annotations

import os
import smtplib
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pymta.milter import wire
from tests.harness import REPO, PymtaServer, wait_for_file
from tests.milterserver import ScriptedMilter, cstrings, reply
from tests.test_e2e_sendmail import MASTER_CF as SENDMAIL_MASTER_CF

MESSAGE = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\nbody text\r\n"


def start(tmp_path: Path, milters: str, extra: str = "") -> PymtaServer:
    return PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=f"smtpd_milters = {milters}\nmilter_command_timeout = 2s\n"
        f"milter_content_timeout = 2s\n{extra}",
    ).start()


def delivered(server: PymtaServer, user: str, count: int) -> list[bytes]:
    wait_for_file(server.maildir(user) / "new", lambda: len(server.messages(user)) >= count)
    return server.messages(user)


def test_every_end_of_message_action_reaches_the_queue(tmp_path: Path) -> None:
    """Headers added, inserted, changed and deleted, the body replaced, a
    recipient added and one deleted, the sender changed: the delivered
    message and envelope are what the milter made of them."""
    eom = [
        reply(wire.SMFIR_ADDHEADER, cstrings("X-Milter", "seen")),
        reply(wire.SMFIR_INSHEADER, struct.pack("!I", 0) + cstrings("X-First", "top")),
        reply(wire.SMFIR_CHGHEADER, struct.pack("!I", 1) + cstrings("Subject", "[tagged] hello")),
        reply(wire.SMFIR_CHGHEADER, struct.pack("!I", 1) + cstrings("To", "")),
        reply(wire.SMFIR_REPLBODY, b"replaced body\r\n"),
        reply(wire.SMFIR_ADDRCPT, cstrings("<bob@example.test>")),
        reply(wire.SMFIR_DELRCPT, cstrings("<alice@example.test>")),
        reply(wire.SMFIR_CHGFROM, cstrings("<bounces@example.test>")),
    ]
    with ScriptedMilter(eom=eom) as milter, start(tmp_path, f"inet:127.0.0.1:{milter.port}") as s:
        with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
            client.sendmail("sender@example.org", ["alice@example.test"], MESSAGE)
        [stored] = delivered(s, "bob", 1)
        assert s.messages("alice") == []
        s.wait_for_log(r"message-id=")
        macros = milter.data_of(wire.SMFIC_MACRO)
        headers = milter.data_of(wire.SMFIC_HEADER)
    head, _, body = stored.partition(b"\n\n")
    assert body == b"replaced body\n"
    assert b"\nX-First: top\n" in b"\n" + head
    assert head.index(b"X-First: top") < head.index(b"Received:")
    assert b"Subject: [tagged] hello" in head
    assert b"\nTo:" not in head
    assert head.rstrip().endswith(b"X-Milter: seen")
    assert b"Return-Path: <bounces@example.test>" in head
    # What Postfix sends: j and {daemon_name} at connect, the queue id at
    # the end of the message, the headers pymta queues (its Received first).
    assert any(m.startswith(b"Cj\0mx.example.test\0") for m in macros)
    assert any(m.startswith(b"E") and b"i\0" in m for m in macros)
    assert headers[0].startswith(b"Received\0")
    assert b"Subject\0hello\0" in headers


def test_reject_at_rcpt_and_replycode_at_end_of_message(tmp_path: Path) -> None:
    """A milter's REJECT refuses one recipient (550 5.7.1); its REPLYCODE
    at the end of the message is the DATA reply and nothing is queued."""
    milter_args = {
        "rcpt_replies": {"alice@example.test": reply(wire.SMFIR_REJECT)},
        "replies": {wire.SMFIC_BODYEOB: reply(wire.SMFIR_REPLYCODE, b"554 5.7.0 spam, go away\0")},
    }
    with (
        ScriptedMilter(**milter_args) as milter,  # type: ignore[arg-type]
        start(tmp_path, f"inet:127.0.0.1:{milter.port}") as s,
    ):
        with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("sender@example.org")
            code, text = client.rcpt("alice@example.test")
            assert (code, text) == (550, b"5.7.1 Command rejected")
            assert client.rcpt("bob@example.test")[0] == 250
            code, text = client.data(MESSAGE)
            assert (code, text) == (554, b"5.7.0 spam, go away")
        s.wait_for_log(r"milter-reject: END-OF-MESSAGE from .*: 5\.7\.0 spam, go away")
        assert s.messages("bob") == []


def test_discard_and_quarantine(tmp_path: Path) -> None:
    """DISCARD accepts and drops the message; QUARANTINE queues it on hold."""
    with (
        ScriptedMilter(replies={wire.SMFIC_BODYEOB: reply(wire.SMFIR_DISCARD)}) as dropper,
        ScriptedMilter(eom=[reply(wire.SMFIR_QUARANTINE, b"suspicious\0")]) as holder,
    ):
        with start(tmp_path / "a", f"inet:127.0.0.1:{dropper.port}") as s:
            with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
                client.sendmail("sender@example.org", ["bob@example.test"], MESSAGE)
            s.wait_for_log(r"milter-discard: END-OF-MESSAGE from .*milter triggers DISCARD")
        with start(tmp_path / "b", f"inet:127.0.0.1:{holder.port}") as s:
            with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
                client.sendmail("sender@example.org", ["bob@example.test"], MESSAGE)
            s.wait_for_log(r"milter-hold: END-OF-MESSAGE from .*milter triggers HOLD")
            held = list((s.root / "spool" / "hold").rglob("*"))
            assert [p for p in held if p.is_file()]
            assert s.messages("bob") == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("action", "mail_reply"),
    [("tempfail", 451), ("reject", 550), ("accept", 250)],
)
def test_milter_down_follows_milter_default_action(
    tmp_path: Path, action: str, mail_reply: int
) -> None:
    """No milter listening: tempfail answers 451 4.7.1, reject 550 5.7.1,
    accept lets mail through unfiltered."""
    port = _free_port()
    with start(tmp_path, f"inet:127.0.0.1:{port}", f"milter_default_action = {action}\n") as s:
        with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            code, _ = client.mail("sender@example.org")
            assert code == mail_reply
            if code == 250:
                client.rcpt("bob@example.test")
                assert client.data(MESSAGE)[0] == 250
        s.wait_for_log(rf"warning: milter inet:127.0.0.1:{port}: .*default_action={action}")
        if action == "accept":
            delivered(s, "bob", 1)


def test_slow_and_garbage_milters_are_not_trusted(tmp_path: Path) -> None:
    """A milter that never answers MAIL, or answers garbage at the end of
    the message, gets the default action (tempfail): 451, nothing queued."""
    with (
        ScriptedMilter(mode="silent") as silent,
        ScriptedMilter(mode="garbage") as garbage,
        start(tmp_path / "a", f"inet:127.0.0.1:{silent.port}") as s,
    ):
        with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            code, text = client.mail("sender@example.org")
            assert (code, text) == (451, b"4.7.1 Service unavailable - try again later")
        s.wait_for_log(r"milter .*: timeout; default_action=tempfail")
        with start(tmp_path / "b", f"inet:127.0.0.1:{garbage.port}") as s2:
            with smtplib.SMTP("127.0.0.1", s2.smtp_port, timeout=30) as client:
                client.ehlo("client.test")
                client.mail("sender@example.org")
                client.rcpt("bob@example.test")
                code, _ = client.data(MESSAGE)
                assert code == 451
            s2.wait_for_log(r"protocol error: unknown reply code")
            assert s2.messages("bob") == []


def test_non_smtpd_milters_see_local_submissions(tmp_path: Path) -> None:
    """Mail from the sendmail command goes to non_smtpd_milters: connect as
    localhost, MAIL, RCPT, DATA, the content; mail from smtpd (even from a
    loopback client) does not."""
    with ScriptedMilter(eom=[reply(wire.SMFIR_ADDHEADER, cstrings("X-Local", "yes"))]) as milter:
        server = PymtaServer(
            tmp_path / "pymta",
            master_cf=SENDMAIL_MASTER_CF,
            main_cf_extra=f"non_smtpd_milters = inet:127.0.0.1:{milter.port}\n",
        )
        with server.start() as s:
            maildrop = s.root / "spool" / "maildrop"
            wait_for_file(maildrop, maildrop.is_dir)
            subprocess.run(
                [sys.executable, "-m", "pymta.sendmail", "-C", str(s.config_dir),
                 "-f", "alice@example.test", "bob@example.test"],
                input=b"Subject: local\n\nhi\n",
                check=True,
                timeout=60,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            [stored] = delivered(s, "bob", 1)
            with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as client:
                client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
            by_smtp = [m for m in delivered(s, "bob", 2) if m != stored]
        commands = milter.commands()
    assert b"X-Local: yes" in stored
    assert b"X-Local" not in by_smtp[0]
    assert commands.count(wire.SMFIC_BODYEOB) == 1
    assert commands[:2] == [wire.SMFIC_OPTNEG, wire.SMFIC_MACRO]
    assert wire.SMFIC_CONNECT in commands and wire.SMFIC_BODYEOB in commands
