"""End to end: NOTIFY (RFC 5465) and CONTEXT=SEARCH (RFC 5267) with two
imaplib sessions over STARTTLS against a real ``twistd pymta`` on loopback:
one APPENDs, the other hears of it without asking."""

from __future__ import annotations

import imaplib
import ssl
import time
from pathlib import Path

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer

MESSAGE = b"Subject: %s\r\nFrom: a@client.test\r\n\r\n%s\r\n"


def connect(port: int) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    client.starttls(context)
    client.login("alice@example.test", "alice-pw")
    return client


def read_until(client: imaplib.IMAP4, wanted: list[bytes], deadline: float) -> list[bytes]:
    """Unsolicited lines, read off the socket (no command sent) until each
    of ``wanted`` was seen in some line; the socket's timeout bounds a wait."""
    seen: list[bytes] = []
    missing = list(wanted)
    while missing:
        assert time.monotonic() < deadline, (missing, seen)
        try:
            line = client.readline()
        except TimeoutError:
            raise AssertionError(f"no {missing!r} after {seen!r}") from None
        assert line, seen
        seen.append(line.rstrip(b"\r\n"))
        missing = [w for w in missing if w not in line]
    return seen


def test_second_session_hears_appends_without_asking(tmp_path: Path) -> None:
    """A session with NOTIFY on the selected mailbox and on the others, and
    an updating body SEARCH, hears another session's APPENDs with no command
    in progress: EXISTS, the FETCH of the attributes it asked for, the
    ESEARCH ADDTO of the search (its body key tested in the scan workers),
    a STATUS for the mailbox that is not selected, and a LIST for a folder
    another program made on disk."""
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )
    with PymtaServer(tmp_path, extra, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as server:
        server.start()
        writer = connect(server.imap_port)
        watcher = connect(server.imap_port)
        assert b"NOTIFY" in watcher.capabilities or "NOTIFY" in watcher.capabilities
        assert "CONTEXT=SEARCH" in watcher.capabilities
        writer.create("Other")
        writer.append("INBOX", "", None, MESSAGE % (b"first", b"nothing here"))
        watcher.select("INBOX")
        typ, _ = watcher.xatom(
            "NOTIFY",
            "SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (Subject)]) "
            "MessageExpunge FlagChange)) (mailboxes Other (MessageNew MessageExpunge))",
        )
        assert typ == "OK"
        typ, data = watcher.xatom("SEARCH", "RETURN (UPDATE) BODY needle")
        assert typ == "OK", data
        watcher.sock.settimeout(30)

        writer.append("INBOX", "", None, MESSAGE % (b"second", b"a needle inside"))
        lines = read_until(
            watcher,
            [b"* 2 EXISTS", b"Subject: second", b"ADDTO (1 2)"],
            time.monotonic() + 60,
        )
        addto = [line for line in lines if b"ESEARCH" in line]
        assert addto and addto[0].startswith(b"* ESEARCH (TAG ")

        writer.append("Other", "", None, MESSAGE % (b"elsewhere", b"x"))
        lines = read_until(watcher, [b'* STATUS "Other" (MESSAGES 1 '], time.monotonic() + 60)

        # Another program (a second pymta process, Dovecot) makes a folder
        # on disk: the mailbox root's inotify watch tells MailboxName.
        typ, _ = watcher.xatom("NOTIFY", "SET (personal (MailboxName))")
        assert typ == "OK"
        made = server.maildir("alice") / ".Outside"
        for sub in ("tmp", "new", "cur"):
            (made / sub).mkdir(parents=True)
        read_until(watcher, [b'* LIST () "/" "Outside"'], time.monotonic() + 60)

        typ, _ = watcher.xatom("NOTIFY", "NONE")
        assert typ == "OK"
        watcher.logout()
        writer.logout()
        server.stop()
