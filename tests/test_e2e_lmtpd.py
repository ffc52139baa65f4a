"""lmtpd end to end: a real twistd pymta, Python's smtplib.LMTP on TCP and
on the UNIX socket, and the real Debian Postfix delivering through it with
``virtual_transport = lmtp:...``; the mail is then read over IMAP."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import tempfile
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer, wait_for_file
from tests.postfix_instance import PostfixInstance, postfix_missing

LMTP_SERVICE = "127.0.0.1:0 inet n - n - - lmtpd\n"
MASTER = DEFAULT_MASTER_CF.replace("127.0.0.1:0 inet n - n - - smtpd\n", "") + IMAP_SERVICE


def lmtp_server(root: Path, extra_master: str = "", main_cf_extra: str = "") -> PymtaServer:
    return PymtaServer(
        root, master_cf=MASTER + LMTP_SERVICE + extra_master, main_cf_extra=main_cf_extra
    )


def imap_messages(server: PymtaServer, user: str, password: str) -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", server.imap_port) as imap:
        imap.login(user, password)
        imap.select("INBOX")
        _, data = imap.search(None, "ALL")
        found = []
        for num in data[0].split():
            _, parts = imap.fetch(num, "(RFC822)")
            found.append(parts[0][1])  # type: ignore[index]
        return found


def test_smtplib_lmtp_one_answer_per_recipient_and_imap_reads_it(tmp_path: Path) -> None:
    """smtplib.LMTP's sendmail gets 250 for the known users and the unknown
    one in its refused dict; the message is at once (no queue) visible over
    IMAP with the user's login, with Delivered-To naming each."""
    with lmtp_server(tmp_path) as server:
        server.start()
        lmtp = smtplib.LMTP("127.0.0.1", server.ports["127.0.0.1:0"])
        with lmtp:
            refused = lmtp.sendmail(
                "sender@example.org",
                ["alice@example.test", "bob@example.test", "nobody@example.test"],
                b"Subject: over lmtp\r\n\r\nhello\r\n.dot\r\n",
            )
            # smtplib reads the first recipient's answer after DATA (alice's);
            # LMTP sends one more for each further accepted recipient.
            code, text = lmtp.getreply()
            assert (code, text[:25]) == (250, b"2.0.0 <bob@example.test> ")
        assert list(refused) == ["nobody@example.test"]
        assert refused["nobody@example.test"][0] == 550
        (alice,) = imap_messages(server, "alice@example.test", "alice-pw")
        assert b"Delivered-To: alice@example.test" in alice
        assert alice.endswith(b"Subject: over lmtp\r\n\r\nhello\r\n.dot\r\n")
        (bob,) = imap_messages(server, "bob@example.test", "bob-pw")
        assert b"Delivered-To: bob@example.test" in bob
        server.wait_for_log(
            r"lmtpd: [0-9A-F]+: to=<alice@example.test>, relay=lmtpd, .*status=sent"
        )


def test_unix_socket_listener(tmp_path: Path) -> None:
    """A master.cf ``unix`` lmtpd line listens on $queue_directory/private/NAME;
    smtplib.LMTP delivers through it."""
    with lmtp_server(tmp_path, "lmtp unix - - n - - lmtpd\n") as server:
        server.start()
        server.wait_for_log(r"listening on unix socket")
        path = tmp_path / "spool" / "private" / "lmtp"
        lmtp = smtplib.LMTP(str(path))
        with lmtp:
            lmtp.ehlo()
            assert lmtp.sendmail("", ["alice@example.test"], b"Subject: unix\r\n\r\nx\r\n") == {}
            assert lmtp.noop()[0] == 250
        assert len(server.messages("alice")) == 1


@pytest.mark.skipif(postfix_missing() is not None, reason=str(postfix_missing()))
@pytest.mark.parametrize("transport", ["inet", "unix"])
def test_postfix_delivers_through_lmtpd(tmp_path: Path, transport: str) -> None:
    """The real Postfix with ``virtual_transport = lmtp:inet:127.0.0.1:PORT``
    (or ``lmtp:unix:PATH``) delivers to pymta's mailboxes: Postfix logs
    status=sent with pymta's 250 per recipient, and bounces the unknown
    user with pymta's 550 5.1.1 from RCPT."""
    sockets = Path(tempfile.mkdtemp(prefix="pymta-lmtp-", dir="/tmp"))
    try:
        sockets.chmod(0o711)  # Postfix's lmtp client runs as user postfix
        socket_path = sockets / "lmtp"
        extra = f"{socket_path} unix - - n - - lmtpd\n" if transport == "unix" else ""
        with lmtp_server(tmp_path, extra) as server:
            server.start()
            if transport == "unix":
                server.wait_for_log(r"listening on unix socket")
                nexthop = f"lmtp:unix:{socket_path}"
            else:
                nexthop = f"lmtp:inet:127.0.0.1:{server.ports['127.0.0.1:0']}"
            with PostfixInstance(f"virtual_transport = {nexthop}\n") as postfix:
                postfix.start()
                with smtplib.SMTP("127.0.0.1", postfix.port) as smtp:
                    smtp.sendmail(
                        "sender@example.org",
                        ["alice@example.test", "bob@example.test", "ghost@example.test"],
                        b"Subject: via postfix\r\nMessage-ID: <pf@x>\r\n\r\nthrough LMTP\r\n",
                    )
                wait_for_file(
                    postfix.log,
                    lambda: len(re.findall(r"status=(sent|bounced)", postfix.maillog())) >= 3,
                    timeout=60,
                )
                log = postfix.maillog()
            for user in ("alice", "bob"):
                assert re.search(
                    rf"to=<{user}@example.test>, relay=.*status=sent \(250 2.0.0 <{user}@", log
                ), log
            assert re.search(r"to=<ghost@example.test>.*status=bounced .*550 5.1.1", log), log
            (alice,) = imap_messages(server, "alice@example.test", "alice-pw")
            assert b"Subject: via postfix" in alice and b"through LMTP" in alice
            assert b"with LMTP id" in alice
            # The mail log names the client: Postfix's lmtp at 127.0.0.1 or the socket.
            server.wait_for_log(r"lmtpd: connect from (unknown\[127\.0\.0\.1\]|local)")
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def test_second_start_replaces_the_stale_socket(tmp_path: Path) -> None:
    """A socket left behind by a killed pymta does not stop the next start."""
    with lmtp_server(tmp_path, "lmtp unix - - n - - lmtpd\n") as server:
        server.start()
        server.wait_for_log(r"listening on unix socket")
        server.kill()
        assert os.path.exists(tmp_path / "spool" / "private" / "lmtp")
        server.start()
        server.wait_for_log(r"listening on unix socket")
        lmtp = smtplib.LMTP(str(tmp_path / "spool" / "private" / "lmtp"))
        with lmtp:
            lmtp.ehlo()
            assert lmtp.noop()[0] == 250
