"""smtpd end to end on loopback: Python's smtplib and ssl against the real server."""

from __future__ import annotations

import io
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.logger import globalLogPublisher

from pymta.config.config import Config
from pymta.maillog import MaillogObserver
from pymta.smtpd.factory import SMTPServerFactory
from pymta.smtpd.testing import BASE_CONFIG, DictTable, FakeCleanup, FakeResolver, SMTPHarness
from pymta.tls import ServerTLS, ensure_self_signed


@pytest.fixture
def server_tls(tmp_path: Path) -> ServerTLS:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, "mx.example.com")
    return ServerTLS(str(cert), str(key))


def _listen(cleanup: FakeCleanup, tls: ServerTLS | None, extra: str = "") -> IListeningPort:
    config = Config.from_text(BASE_CONFIG + "mynetworks = 10.0.0.0/8\n" + extra)
    factory = SMTPServerFactory(
        config, cleanup, FakeResolver(), lambda spec: DictTable(spec, {}), tls, reactor
    )
    port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return port


def _number(port: IListeningPort) -> int:
    host = port.getHost()
    assert isinstance(host, IPv4Address)
    return host.port


@pytest.fixture
def ports() -> Iterator[list[IListeningPort]]:
    opened: list[IListeningPort] = []
    yield opened
    for port in opened:
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_smtplib_sends_a_message(ports: list[IListeningPort]) -> None:
    """smtplib delivers a message with a dot-leading line and 8-bit content;
    cleanup gets the LF form and the client's attributes; a relay attempt
    from loopback (not in mynetworks here) is refused."""
    cleanup = FakeCleanup()
    port = _listen(cleanup, None)
    ports.append(port)
    number = _number(port)

    def client() -> tuple[dict[str, tuple[int, bytes]], str]:
        with smtplib.SMTP("127.0.0.1", number, timeout=10) as smtp:
            smtp.ehlo("client.example")
            features = smtp.esmtp_features
            refused = smtp.sendmail(
                "sender@remote.example",
                ["user@example.com", "victim@elsewhere.example"],
                "Subject: t\r\n\r\n.dot line\r\nnaïve\r\n".encode(),
                mail_options=["BODY=8BITMIME"],
            )
            return refused, " ".join(sorted(features))

    refused, features = await threads.deferToThread(client)
    assert "pipelining" in features and "size" in features and "starttls" not in features
    assert refused == {
        "victim@elsewhere.example": (454, b"4.7.1 <victim@elsewhere.example>: Relay access denied")
    }
    [(envelope, content)] = cleanup.received
    assert [r.address for r in envelope.recipients] == ["user@example.com"]
    assert content == "Subject: t\n\n.dot line\nnaïve\n".encode()
    assert envelope.attributes["client_address"] == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_pipelined_session_in_one_write(ports: list[IListeningPort]) -> None:
    """A whole pipelined session sent at once over a socket gets every reply in order."""
    cleanup = FakeCleanup()
    port = _listen(cleanup, None)
    ports.append(port)
    number = _number(port)
    script = (
        b"EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<user@example.com>\r\n"
        b"DATA\r\nSubject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@remote.example>\r\n"
        b"RCPT TO:<user@example.com>\r\nDATA\r\nSubject: two\r\n\r\n.\r\nQUIT\r\n"
    )

    def client() -> list[str]:
        with socket.create_connection(("127.0.0.1", number), timeout=10) as sock:
            sock.recv(1024)
            sock.sendall(script)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return [line[:3] for line in data.decode().split("\r\n") if line and line[3] == " "]

    codes = await threads.deferToThread(client)
    assert codes == ["250", "250", "250", "354", "250", "250", "250", "354", "250", "221"]
    assert [c for _, c in cleanup.received] == [b"Subject: one\n\nbody\n", b"Subject: two\n\n"]


@pytest_twisted.ensureDeferred
async def test_starttls_with_injected_command(
    ports: list[IListeningPort], server_tls: ServerTLS
) -> None:
    """A command sent in the same packet as STARTTLS is not executed after the
    handshake (CVE-2011-0411); the session starts afresh under TLS, and the
    TLS version and cipher reach cleanup for the Received header."""
    cleanup = FakeCleanup()
    port = _listen(cleanup, server_tls)
    ports.append(port)
    number = _number(port)

    def client() -> list[str]:
        replies: list[str] = []
        with socket.create_connection(("127.0.0.1", number), timeout=10) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO c.example\r\n")
            while True:
                line = f.readline().decode()
                if line[3] == " ":
                    break
            raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
            replies.append(f.readline().decode().strip())
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with ctx.wrap_socket(raw, server_hostname="mx.example.com") as tls:
                g = tls.makefile("rb")
                tls.sendall(b"RCPT TO:<user@example.com>\r\n")
                replies.append(g.readline().decode().strip())
                tls.sendall(b"EHLO c.example\r\n")
                while True:
                    line = g.readline().decode().strip()
                    replies.append(line)
                    if line[3] == " ":
                        break
                tls.sendall(
                    b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<user@example.com>\r\n"
                    b"DATA\r\nSubject: tls\r\n\r\nsecret\r\n.\r\nQUIT\r\n"
                )
                for _ in range(5):
                    replies.append(g.readline().decode().strip())
        return replies

    replies = await threads.deferToThread(client)
    assert replies[0] == "220 2.0.0 Ready to start TLS"
    assert replies[1] == "503 5.5.1 Error: need MAIL command"
    assert "250-STARTTLS" not in replies
    assert replies[-5:] == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as QID1",
        "221 2.0.0 Bye",
    ]
    [(envelope, _)] = cleanup.received
    assert envelope.sender == "a@remote.example"
    assert envelope.attributes["protocol"] == "ESMTPS"
    assert envelope.attributes["tls"].startswith("TLSv1.3 with cipher ")


@pytest_twisted.ensureDeferred
async def test_smtplib_starttls(ports: list[IListeningPort], server_tls: ServerTLS) -> None:
    """smtplib's starttls() works against the self-signed certificate."""
    cleanup = FakeCleanup()
    port = _listen(cleanup, server_tls)
    ports.append(port)
    number = _number(port)

    def client() -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", number, timeout=10) as smtp:
            smtp.starttls(context=ctx)
            smtp.sendmail("a@remote.example", ["user@example.com"], b"Subject: x\r\n\r\nhi\r\n")

    await threads.deferToThread(client)
    assert cleanup.received[0][1] == b"Subject: x\n\nhi\n"


@pytest.mark.skipif(shutil.which("pflogsumm") is None, reason="pflogsumm not installed")
def test_pflogsumm_reads_smtpd_log_lines(tmp_path: Path) -> None:
    """pflogsumm (Debian's Postfix log analyser) counts smtpd's received and
    rejected messages from the lines smtpd logs."""
    stream = io.StringIO()
    observer = MaillogObserver(stream, "mx.example.com", now=lambda: 1_700_000_000.0, pid=42)
    globalLogPublisher.addObserver(observer)
    try:
        h = SMTPHarness(peer="198.51.100.7")
        h.send(
            "EHLO c.example\nMAIL FROM:<s@remote.example>\nRCPT TO:<x@elsewhere.example>\n"
            "RCPT TO:<nobody@example.com>\nRCPT TO:<user@example.com>\nDATA\nhi\n.\nQUIT\n"
        )
        h.protocol.connectionLost(None)
    finally:
        globalLogPublisher.removeObserver(observer)
    log = tmp_path / "mail.log"
    log.write_text(stream.getvalue())
    report = subprocess.run(
        ["pflogsumm", str(log)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^\s+1\s+received$", report, re.M)
    assert re.search(r"^\s+2\s+rejected", report, re.M)
    assert "Relay access denied" in report
