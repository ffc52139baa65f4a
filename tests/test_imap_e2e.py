"""End to end: a real ``twistd pymta`` on loopback, mail sent with smtplib, read and
changed with imaplib and imapclient (clients nobody here wrote), checked against the
Maildir on disk."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    master = DEFAULT_MASTER_CF + IMAP_SERVICE + POP3_SERVICE
    with PymtaServer(tmp_path, master_cf=master) as instance:
        instance.start()
        yield instance
        instance.stop()


def deliver(server: PymtaServer, body: bytes, to: str = "alice@example.test") -> None:
    """Send one message with smtplib and wait until it is delivered."""
    before = server.log().count("status=sent")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail("sender@client.test", [to], body)
    server.wait_for_log(r"status=sent", count=before + 1)


def flat(data: Sequence[object]) -> bytes:
    """imaplib's FETCH answer (strings and (line, literal) pairs) as one byte string."""
    out = b""
    for part in data:
        if isinstance(part, tuple):
            out += part[0] + part[1]
        elif isinstance(part, bytes):
            out += part
    return out


def imaplib_login(server: PymtaServer) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    client.login("alice@example.test", "alice-pw")
    return client


def test_imaplib_reads_delivered_mail_byte_for_byte(server: PymtaServer) -> None:
    """A message sent over SMTP is in INBOX; BODY[] is the Maildir file with CRLF, and
    reading it sets \\Seen in the file name (Maildir's ':2,S')."""
    deliver(server, b"Subject: imap me\r\nFrom: x@client.test\r\n\r\nline one\r\nline two\r\n")
    [stored] = server.messages("alice")
    client = imaplib_login(server)
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, peek = client.fetch("1", "(FLAGS BODY.PEEK[])")
    assert typ == "OK"
    assert flat(peek) == b"1 (FLAGS (\\Recent) BODY[] {%d}%s)" % (
        len(stored) + stored.count(b"\n"),
        stored.replace(b"\n", b"\r\n"),
    )
    typ, read = client.fetch("1", "(RFC822)")
    assert typ == "OK" and flat(read).endswith(b" FLAGS (\\Recent \\Seen))")
    client.logout()
    files = list((server.maildir("alice") / "cur").iterdir())
    assert len(files) == 1 and files[0].name.endswith(":2,S")
    server.wait_for_log(r"imap\(alice@example.test\)<\d+><[^>]+>: Disconnected: Logged out in=")
    assert (
        "imap-login: Login: user=<alice@example.test>, method=PLAIN, rip=127.0.0.1" in server.log()
    )


def test_imaplib_search_store_and_expunge(server: PymtaServer) -> None:
    """SEARCH finds by header and flag; STORE changes flags; EXPUNGE removes the file."""
    deliver(server, b"Subject: apples\r\n\r\nred\r\n")
    deliver(server, b"Subject: pears\r\n\r\ngreen\r\n")
    client = imaplib_login(server)
    client.select("INBOX")
    assert client.search(None, "SUBJECT", "PEARS") == ("OK", [b"2"])
    assert client.search(None, "UNSEEN") == ("OK", [b"1 2"])
    typ, _ = client.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "OK"
    assert client.search(None, "DELETED") == ("OK", [b"1"])
    typ, data = client.expunge()
    assert typ == "OK" and data == [b"1"]
    assert client.search(None, "ALL") == ("OK", [b"1"])
    client.logout()
    [left] = server.messages("alice")
    assert b"Subject: pears" in left


def test_imapclient_folders_append_copy_move(server: PymtaServer) -> None:
    """imapclient sees the special-use folders, appends with flags (APPENDUID), copies
    and moves (COPYUID), and the Maildir folders on disk hold the results."""
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30) as client:
        client.login("alice@example.test", "alice-pw")
        folders = {name: flags for flags, _, name in client.list_folders()}
        assert b"\\Sent" in folders["Sent"] and b"\\Trash" in folders["Trash"]
        client.create_folder("Projects/Alpha")
        result = client.append("INBOX", b"Subject: appended\r\n\r\nbody\r\n", flags=[b"\\Flagged"])
        assert b"[APPENDUID " in result
        client.select_folder("INBOX")
        [uid] = client.search(["FLAGGED"])
        # \Recent too: appended mail is new to the first session that selects
        assert set(client.get_flags([uid])[uid]) == {b"\\Flagged", b"\\Recent"}
        client.copy([uid], "Archive")
        client.move([uid], "Projects/Alpha")
        assert client.search(["ALL"]) == []
        client.select_folder("Projects/Alpha")
        msg = client.fetch([1], ["ENVELOPE", "BODY.PEEK[TEXT]"])
        [data] = msg.values()
        assert data[b"ENVELOPE"].subject == b"appended"
        assert data[b"BODY[TEXT]"] == b"body\r\n"
        status = client.folder_status("Archive", ["MESSAGES", "UIDNEXT"])
        assert status[b"MESSAGES"] == 1 and status[b"UIDNEXT"] == 2
    root = server.maildir("alice")
    # copied and moved mail is \\Recent (new/) until a session selects it (cur/)
    for folder in (".Projects.Alpha", ".Archive"):
        assert sum(len(list((root / folder / sub).iterdir())) for sub in ("new", "cur")) == 1


def test_imapclient_idle_is_woken_by_smtp_delivery(server: PymtaServer) -> None:
    """A client in IDLE hears EXISTS as soon as mail arrives over SMTP (no polling)."""
    deliver(server, b"Subject: first\r\n\r\n1\r\n")
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30) as client:
        client.login("alice@example.test", "alice-pw")
        client.select_folder("INBOX")
        client.idle()
        deliver(server, b"Subject: second\r\n\r\n2\r\n")
        responses = client.idle_check(timeout=30)
        client.idle_done()
        assert (2, b"EXISTS") in responses


def test_two_clients_see_each_others_changes(server: PymtaServer) -> None:
    """One client's flag change and expunge reach another client's NOOP in order."""
    deliver(server, b"Subject: one\r\n\r\n1\r\n")
    deliver(server, b"Subject: two\r\n\r\n2\r\n")
    a = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30)
    b = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30)
    for c in (a, b):
        c.login("alice@example.test", "alice-pw")
        c.select_folder("INBOX")
    b.add_flags([2], [b"\\Flagged"])
    b.set_flags([1], [b"\\Deleted"])
    b.expunge()
    _, responses = a.noop()
    assert (1, b"EXPUNGE") in responses
    assert any(r[1] == b"FETCH" and b"\\Flagged" in r[2][3] for r in responses if len(r) > 2)
    assert a.search(["ALL"]) == [2]
    a.logout()
    b.logout()


def test_starttls_with_imaplib(tmp_path: Path) -> None:
    """STARTTLS upgrades the session with the self-signed certificate; login follows."""
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )
    with PymtaServer(tmp_path, extra, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as server:
        server.start()
        client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        assert "STARTTLS" in client.capabilities
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        typ, _ = client.starttls(context)
        assert typ == "OK"
        assert "STARTTLS" not in client.capabilities
        client.login("alice@example.test", "alice-pw")
        assert client.select("INBOX")[0] == "OK"
        client.logout()
        server.wait_for_log(r"imap-login: Login: user=<alice@example.test>.*, TLS, session=")
        server.stop()


def test_imaps_wrapper_mode_with_imaplib(tmp_path: Path) -> None:
    """imapd_tls_wrappermode = yes (IMAPS): TLS from the first byte, no STARTTLS offered."""
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )
    master = DEFAULT_MASTER_CF + IMAP_SERVICE + "  -o imapd_tls_wrappermode=yes\n"
    with PymtaServer(tmp_path, extra, master_cf=master) as server:
        server.start()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client = imaplib.IMAP4_SSL("127.0.0.1", server.imap_port, ssl_context=context, timeout=30)
        assert "STARTTLS" not in client.capabilities
        client.login("alice@example.test", "alice-pw")
        assert client.select("INBOX")[0] == "OK"
        client.logout()
        server.wait_for_log(r"imap-login: Login: user=<alice@example.test>.*, TLS, session=")
        server.stop()


def test_body_search_runs_in_the_scan_workers(server: PymtaServer) -> None:
    """SEARCH BODY and TEXT over imaplib are answered by the scan worker
    processes (pymta.imap.scan) with what RFC 3501 asks: case-insensitive
    substrings of the body (BODY) or of the whole message (TEXT); a second
    session's SEARCH of the same user waits its turn and gets the same
    answer; \\Seen set by FETCH meanwhile (the file renamed) loses nothing."""
    deliver(server, b"Subject: one\r\n\r\nThe Needle is here.\r\n")
    deliver(server, b"Subject: needle in the header only\r\n\r\nnothing\r\n")
    deliver(server, b"Subject: three\r\n\r\nno match\r\n")
    deliver(server, b"Subject: four\r\n\r\nanother NEEDLE.\r\n")
    first, second = imaplib_login(server), imaplib_login(server)
    for client in (first, second):
        client.select("INBOX")
    assert first.search(None, "BODY", "needle") == ("OK", [b"1 4"])
    assert first.search(None, "TEXT", "needle") == ("OK", [b"1 2 4"])
    first.fetch("1", "(BODY[])")  # sets \Seen: the file is renamed
    assert second.search(None, "BODY", "NEEDLE", "UNSEEN") == ("OK", [b"4"])
    assert second.uid("SEARCH", "BODY", "needle") == ("OK", [b"1 4"])
    for client in (first, second):
        client.logout()
