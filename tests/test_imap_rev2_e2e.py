"""End to end: IMAP4rev2 on a real ``twistd pymta`` over loopback, driven by Python's
imaplib (raw commands through its ``_simple_command``): ENABLE, UTF-8 folder names,
no RECENT, ESEARCH and BINARY of a message delivered over SMTP."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer

MESSAGE = (
    b"From: b@client.test\r\nTo: alice@example.test\r\nSubject: pears\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--XX--\r\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with PymtaServer(tmp_path, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as instance:
        instance.start()
        yield instance
        instance.stop()


def test_imaplib_with_imap4rev2(server: PymtaServer) -> None:
    """After ENABLE IMAP4rev2 imaplib creates and lists a UTF-8 folder, SELECT has no
    RECENT, UID SEARCH RETURN gives ESEARCH, and BINARY decodes base64 to raw bytes."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        smtp.sendmail("b@client.test", ["alice@example.test"], MESSAGE)
    server.wait_for_log(r"status=sent", count=1)
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    try:
        assert "IMAP4REV2" in client.capabilities and "BINARY" in client.capabilities
        client.login("alice@example.test", "alice-pw")
        assert client.enable("IMAP4rev2")[0] == "OK"
        assert client.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
        client._mode_utf8()  # imaplib's switch to send UTF-8 command text
        assert client.create('"Blåbær"')[0] == "OK"
        typ, names = client.list('""', '"Bl*"')
        assert typ == "OK" and names == ['(\\HasNoChildren) "/" "Blåbær"'.encode()]
        typ, data = client.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        assert "RECENT" not in client.untagged_responses
        typ, data = client._simple_command(
            "UID", "SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "SUBJECT", "pears"
        )
        assert typ == "OK"
        _, found = client._untagged_response(typ, data, "ESEARCH")
        assert found[0].endswith(b"UID MIN 1 MAX 1 COUNT 1 ALL 1")
        typ, parts = client.fetch("1", "(BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[1])")
        assert typ == "OK"
        assert parts[0] == (b"1 (BINARY.SIZE[2] 5 BINARY[2] ~{5}", b"\x00\x01\x02\x03\x04")
        assert parts[1] == (b" BINARY[1] {5}", "café".encode())
    finally:
        client.logout()
