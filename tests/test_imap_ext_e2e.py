"""End to end: SORT, THREAD and MULTIAPPEND with imapclient over STARTTLS
against a real ``twistd pymta`` on loopback."""

from __future__ import annotations

import ssl
from pathlib import Path

from imapclient import IMAPClient

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer


def message(msg_id: str, subject: str, minute: int, refs: str = "") -> bytes:
    header = (
        f"From: Sender <s{minute}@client.test>\r\nSubject: {subject}\r\n"
        f"Date: Tue, 14 Nov 2023 10:{minute:02d}:00 +0000\r\nMessage-ID: <{msg_id}>\r\n"
    )
    if refs:
        header += f"References: {refs}\r\n"
    return (header + "\r\nbody\r\n").encode()


def test_imapclient_multiappends_sorts_and_threads(tmp_path: Path) -> None:
    """imapclient's multiappend stores three messages in one command (one
    APPENDUID set), its sort() orders them by subject and reverse date (and
    after a body search, which runs in the scan workers), and its thread()
    returns the reply under its original."""
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )
    with PymtaServer(tmp_path, extra, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as server:
        server.start()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30)
        client.starttls(context)
        client.login("alice@example.test", "alice-pw")
        caps = client.capabilities()
        for cap in (b"SORT", b"THREAD=REFERENCES", b"MULTIAPPEND", b"ESORT"):
            assert cap in caps
        result = client.multiappend(
            "INBOX",
            [
                message("a@x", "lunch", 5),
                message("b@x", "budget", 1),
                message("c@x", "Re: lunch", 9, "<a@x>"),
            ],
        )
        typ, [text] = result  # type: ignore[misc]
        assert typ == "OK" and b"1:3] Append completed." in text
        client.select_folder("INBOX")
        assert client.sort(["SUBJECT", "REVERSE DATE"]) == [2, 3, 1]
        assert client.sort("FROM") == [2, 1, 3]
        # A body key: the search runs in the scan worker processes first.
        assert client.sort("REVERSE DATE", ["BODY", "body", "NOT", "SUBJECT", "budget"]) == [
            3,
            1,
        ]
        threads = client.thread("REFERENCES")
        assert sorted(threads) == sorted([(1, 3), (2,)])
        assert client.thread("ORDEREDSUBJECT") == ((2,), (1, 3))
        client.logout()
        server.stop()
    assert len(server.messages("alice")) == 3
