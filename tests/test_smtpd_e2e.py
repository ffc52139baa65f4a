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


def _converse(number: int, writes: list[bytes], pregreet: bool = False) -> list[str]:
    """Each write goes out once the replies to the one before it arrived (a
    conforming pipelining client: one reply per line of a MAIL/RSET group,
    one for anything else); returns the final reply codes up to EOF."""
    with socket.create_connection(("127.0.0.1", number), timeout=10) as sock:
        f = sock.makefile("rb")
        if not pregreet:
            f.readline()
        codes: list[str] = []
        for data in writes:
            sock.sendall(data)
            expected = data.count(b"\r\n") if data.startswith((b"MAIL", b"RSET")) else 1
            while expected:
                line = f.readline().decode()
                if not line:
                    return codes
                if line[3] == " ":
                    codes.append(line[:3])
                    expected -= 1
        for line in f:
            codes.append(line[:3].decode())
        return codes


@pytest_twisted.ensureDeferred
async def test_conforming_pipelined_session(ports: list[IListeningPort]) -> None:
    """A client that pipelines as RFC 2920 allows (MAIL, RCPT, DATA in one
    write; the content, its end and the next commands in another) gets every
    reply in order with the default smtpd_forbid_unauth_pipelining = yes."""
    cleanup = FakeCleanup()
    port = _listen(cleanup, None)
    ports.append(port)
    writes = [
        b"EHLO c.example\r\n",
        b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n",
        b"Subject: one\r\n\r\nbody\r\n.\r\n",
        b"MAIL FROM:<b@remote.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n",
        b"Subject: two\r\n\r\n.\r\nQUIT\r\n",
    ]
    codes = await threads.deferToThread(_converse, _number(port), writes)
    assert codes == ["250", "250", "250", "354", "250", "250", "250", "354", "250", "221"]
    assert [c for _, c in cleanup.received] == [b"Subject: one\n\nbody\n", b"Subject: two\n\n"]


@pytest_twisted.ensureDeferred
async def test_session_in_one_write_is_refused(ports: list[IListeningPort]) -> None:
    """EHLO + a whole transaction in one write over a socket: 554 5.5.0 and the
    connection closes; with smtpd_forbid_unauth_pipelining = no every reply
    comes, in order."""
    script = (
        b"EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<user@example.com>\r\n"
        b"DATA\r\nSubject: one\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    strict = FakeCleanup()
    port = _listen(strict, None)
    ports.append(port)
    codes = await threads.deferToThread(_converse, _number(port), [script])
    assert codes == ["554"]
    assert strict.received == []
    tolerant = FakeCleanup()
    port = _listen(tolerant, None, "smtpd_forbid_unauth_pipelining = no\n")
    ports.append(port)
    codes = await threads.deferToThread(_converse, _number(port), [script])
    assert codes == ["250", "250", "250", "354", "250", "221"]
    assert [c for _, c in tolerant.received] == [b"Subject: one\n\nbody\n"]


@pytest_twisted.ensureDeferred
async def test_talking_before_the_greeting_over_a_socket(ports: list[IListeningPort]) -> None:
    """A client that writes before the server accepted its connection (the
    input waits in the socket when the session starts) gets 554 5.5.0 and no
    banner: the real socket is peeked without consuming it."""
    cleanup = FakeCleanup()
    port = _listen(cleanup, None)
    ports.append(port)
    # Connect and write before the reactor (this thread) can accept: the
    # input is in the socket when connectionMade runs.
    sock = socket.create_connection(("127.0.0.1", _number(port)), timeout=10)
    sock.sendall(b"EHLO early.example\r\n")

    def read_all() -> bytes:
        with sock:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

    assert await threads.deferToThread(read_all) == (
        b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    )


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
                    b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n"
                )
                for _ in range(3):
                    replies.append(g.readline().decode().strip())
                tls.sendall(b"Subject: tls\r\n\r\nsecret\r\n.\r\nQUIT\r\n")
                for _ in range(2):
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
