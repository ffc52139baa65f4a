"""End to end: a real ``twistd pymta`` on loopback, driven by smtplib, swaks and raw sockets.

Each test starts its own server in a temporary directory (tests/harness.py)
and waits on its log lines, never on sleeps.
"""

from __future__ import annotations

import email
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PymtaServer

MESSAGE = (
    "From: Sender <sender@client.test>\r\n"
    "To: Alice <alice@example.test>\r\n"
    "Subject: {subject}\r\n"
    "\r\n"
    "Hello Alice.\r\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with PymtaServer(tmp_path) as instance:
        instance.start()
        yield instance
        instance.stop()


def _send(
    port: int, rcpt: list[str], subject: str = "hi", sender: str = "sender@client.test"
) -> str:
    """Send one message with smtplib; return the queue id from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail(sender)
        for address in rcpt:
            code, text = client.rcpt(address)
            assert code == 250, (address, code, text)
        code, text = client.data(MESSAGE.format(subject=subject).encode())
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


def _recv_reply(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read one (possibly multi-line) SMTP reply from a raw socket."""
    while True:
        end = buffer.find(b"\r\n")
        while end >= 0:
            line = bytes(buffer[: end + 2])
            if len(line) >= 4 and line[3:4] == b" ":
                reply = bytes(buffer[: end + 2])
                # return everything up to and including this final line
                del buffer[: end + 2]
                return reply
            end = buffer.find(b"\r\n", end + 2)
            if end < 0:
                break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer.extend(chunk)


def _replies(sock: socket.socket, count: int) -> list[bytes]:
    """Read `count` final reply lines (multi-line replies count once)."""
    buffer = bytearray()
    data = b""
    finals: list[bytes] = []
    while len(finals) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        finals = [line for line in data.split(b"\r\n") if len(line) >= 4 and line[3:4] == b" "]
    del buffer
    return finals


def test_smtplib_delivers_to_virtual_maildir(server: PymtaServer) -> None:
    """Mail sent with smtplib lands in the user's Maildir new/ with Return-Path,
    Delivered-To and a Received header naming the queue id."""
    queue_id = _send(server.smtp_port, ["alice@example.test"], subject="first")
    server.wait_for_log(rf"{queue_id}: removed")
    [raw] = server.messages("alice")
    message = email.message_from_bytes(raw)
    assert message["Return-Path"] == "<sender@client.test>"
    assert message["Delivered-To"] == "alice@example.test"
    assert queue_id in message["Received"]
    assert message["Subject"] == "first"
    assert message["Message-ID"]
    assert message.get_payload() == "Hello Alice.\n"
    assert list((server.maildir("alice") / "new").iterdir())


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
@pytest.mark.parametrize("options", [[], ["--pipeline"]])
def test_swaks_delivers(server: PymtaServer, options: list[str]) -> None:
    """Debian's swaks, a client nobody here wrote, gets its message delivered,
    also when it pipelines (which smtpd_forbid_unauth_pipelining allows)."""
    result = subprocess.run(
        [
            "swaks",
            *options,
            "--server",
            "127.0.0.1",
            "--port",
            str(server.smtp_port),
            "--from",
            "someone@client.test",
            "--to",
            "bob@example.test",
            "--header",
            "Subject: via swaks",
            "--body",
            "body from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    server.wait_for_log(r"to=<bob@example\.test>.*status=sent")
    [raw] = server.messages("bob")
    assert b"Subject: via swaks" in raw
    assert b"body from swaks" in raw


def test_unknown_user_refused_at_rcpt(server: PymtaServer) -> None:
    """A recipient the virtual mailbox table does not know gets a 550 at RCPT."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("sender@client.test")
        code, text = client.rcpt("nobody@example.test")
    assert code == 550
    assert b"5.1.1" in text


def test_virtual_alias_fans_out(server: PymtaServer) -> None:
    """A virtual alias with two targets delivers one copy to each."""
    queue_id = _send(server.smtp_port, ["info@example.test"])
    server.wait_for_log(rf"{queue_id}: removed")
    assert len(server.messages("alice")) == 1
    assert len(server.messages("bob")) == 1


def test_pipelined_transaction_gets_every_reply_in_order(server: PymtaServer) -> None:
    """A client that pipelines as RFC 2920 allows (the envelope in one write,
    the content after 354, QUIT behind the end of data) gets each reply, in order."""
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=30) as sock:
        sock.recv(4096)  # banner
        sock.sendall(b"EHLO client.test\r\n")
        _replies(sock, 1)
        sock.sendall(
            b"MAIL FROM:<sender@client.test>\r\n"
            b"RCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
        )
        finals = _replies(sock, 5)
        sock.sendall(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        finals += _replies(sock, 2)
    codes = [line[:3] for line in finals]
    assert codes == [b"250", b"250", b"550", b"250", b"354", b"250", b"221"], finals


def test_whole_session_in_one_write_is_refused(server: PymtaServer) -> None:
    """smtplib writes HELO + MAIL + RCPT + DATA + body at once, as a spam
    cannon does: smtpd_forbid_unauth_pipelining (Postfix's default) answers
    554 5.5.0 and closes; nothing is queued, and the violation is logged as
    Postfix logs it. A normal smtplib client is served on the next connection."""
    with smtplib.SMTP(timeout=30) as client:
        code, _ = client.connect("127.0.0.1", server.smtp_port)
        assert code == 220
        client.send(
            b"HELO cannon.test\r\nMAIL FROM:<spam@client.test>\r\n"
            b"RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: spam\r\n\r\nbuy\r\n.\r\n"
        )
        code, text = client.getreply()
        assert (code, text) == (554, b"5.5.0 Error: SMTP protocol synchronization")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.getreply()
    server.wait_for_log(r"improper command pipelining after HELO from .*\[127\.0\.0\.1\]: MAIL")
    queue_id = _send(server.smtp_port, ["alice@example.test"], subject="after")
    server.wait_for_log(rf"{queue_id}: removed")
    [raw] = server.messages("alice")
    assert b"Subject: after" in raw


def test_oversized_message_refused(tmp_path: Path) -> None:
    """A message over message_size_limit gets 552 5.3.4 at SIZE= and at end of data."""
    with PymtaServer(tmp_path, main_cf_extra="message_size_limit = 2000\n") as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.has_extn("size")
            code, _ = client.mail("sender@client.test", ["SIZE=5000"])
            assert code == 552
            client.rset()
            client.mail("sender@client.test")
            client.rcpt("alice@example.test")
            code, text = client.data(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
            assert code == 552, text
            assert b"5.3.4" in text
        assert server.messages("alice") == []
        server.stop()


def test_smuggling_attempt_is_one_message(server: PymtaServer) -> None:
    """A body hiding '<LF>.<LF>MAIL FROM...' (SMTP smuggling) stays one message:
    the end of data is only CRLF.CRLF."""
    smuggled = (
        b"Subject: outer\r\n\r\nouter body\n.\nMAIL FROM:<evil@client.test>\n"
        b"RCPT TO:<bob@example.test>\nDATA\nSubject: smuggled\n\nevil\n.\n"
        b"last line\r\n.\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=30) as sock:
        sock.recv(4096)
        sock.sendall(b"EHLO client.test\r\n")
        _replies(sock, 1)
        sock.sendall(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        _replies(sock, 3)
        sock.sendall(smuggled)
        [reply] = _replies(sock, 1)
        sock.sendall(b"QUIT\r\n")
    assert reply.startswith(b"250"), reply
    queue_id = reply.decode().rsplit(" ", 1)[-1]
    server.wait_for_log(rf"{queue_id}: removed")
    assert server.messages("bob") == []
    [raw] = server.messages("alice")
    assert b"smuggled" in raw  # it stayed inside the one message's body


@pytest.mark.parametrize(
    "recipient",
    [
        "victim@elsewhere.test",
        "victim%elsewhere.test@example.test",
        '"victim@elsewhere.test"@example.test',
        "@example.test:victim@elsewhere.test",
        "elsewhere.test!victim@example.test",
    ],
)
def test_no_open_relay(tmp_path: Path, recipient: str) -> None:
    """From an untrusted client, no address trick gets mail relayed elsewhere."""
    with PymtaServer(tmp_path, main_cf_extra="mynetworks = 192.0.2.0/24\n") as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("sender@client.test")
            code, text = client.rcpt(recipient)
        assert code in (550, 554, 553, 501), (code, text)
        server.stop()


def test_bounce_after_acceptance_reaches_sender(tmp_path: Path) -> None:
    """Mail accepted and then undeliverable produces an RFC 3464 DSN to the sender."""
    extra = "virtual_alias_domains = alias.test\n"
    virtual = (
        "info@example.test alice@example.test, bob@example.test\nlost@alias.test gone@alias.test\n"
    )
    with PymtaServer(tmp_path, main_cf_extra=extra, virtual=virtual) as server:
        server.start()
        queue_id = _send(server.smtp_port, ["lost@alias.test"], sender="alice@example.test")
        server.wait_for_log(rf"{queue_id}: .*status=bounced")
        server.wait_for_log(rf"{queue_id}: removed")
        server.wait_for_log(r"to=<alice@example\.test>.*status=sent")
        [raw] = server.messages("alice")
        dsn = email.message_from_bytes(raw)
        assert dsn.get_content_type() == "multipart/report"
        assert dsn["Return-Path"] == "<>"
        report = dsn.get_payload()[1]
        assert report.get_content_type() == "message/delivery-status"
        text = report.as_string()
        assert "gone@alias.test" in text or "lost@alias.test" in text
        assert "Status: 5." in text
        server.stop()


def test_starttls_discards_injected_command(tmp_path: Path) -> None:
    """A command sent in the clear after STARTTLS, before the handshake, is
    discarded (CVE-2011-0411), and the session starts over under TLS."""
    cert = tmp_path / "cert.pem"
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
        # With HELO required, a MAIL after the handshake shows whether the
        # session forgot the pre-TLS EHLO (RFC 3207 4.2): it must answer 503.
        "smtpd_helo_required = yes\n"
    )
    with PymtaServer(tmp_path, main_cf_extra=extra) as server:
        server.start()
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=30) as sock:
            sock.recv(4096)
            sock.sendall(b"EHLO client.test\r\n")
            _replies(sock, 1)
            # EHLO injected in the clear after STARTTLS, before the handshake.
            sock.sendall(b"STARTTLS\r\nEHLO injected.test\r\n")
            [ready] = _replies(sock, 1)
            assert ready.startswith(b"220"), ready
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(sock) as tls:
                tls.sendall(b"MAIL FROM:<a@client.test>\r\n")
                received = tls.recv(65536)
                tls.sendall(b"QUIT\r\n")
                while chunk := tls.recv(65536):
                    received += chunk
        # Had the injected EHLO run inside TLS we would see its 250- lines, and
        # MAIL would be accepted; the session started over, so MAIL gets 503.
        assert b"250-" not in received, received
        finals = [line for line in received.split(b"\r\n") if line]
        assert finals[0].startswith(b"503"), finals
        assert finals[1].startswith(b"221"), finals
        server.stop()


def test_kill_after_250_then_restart_delivers_exactly_once(tmp_path: Path) -> None:
    """kill -9 right after the 250 (delivery held back by defer_transports) loses
    nothing: the restarted server delivers the message, exactly once."""
    with PymtaServer(tmp_path, main_cf_extra="defer_transports = virtual\n") as server:
        server.start()
        queue_id = _send(server.smtp_port, ["alice@example.test"], subject="survivor")
        server.kill()
        assert server.messages("alice") == []
        main_cf = server.config_dir / "main.cf"
        main_cf.write_text(main_cf.read_text().replace("defer_transports = virtual\n", ""))
        server.start()
        # The kill may come after qmgr deferred the message for the held
        # transport (into deferred/, with a 300 s backoff): a flush
        # (postqueue -f) retries it now, as it would any deferred mail.
        flush(server.config_dir)
        server.wait_for_log(rf"{queue_id}: removed")
        server.stop()
        messages = server.messages("alice")
        assert len(messages) == 1
        assert b"Subject: survivor" in messages[0]


def test_200_messages_from_10_clients_delivered_exactly_once(server: PymtaServer) -> None:
    """10 concurrent clients send 20 messages each; all 200 arrive, once each."""
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(20):
                _send(server.smtp_port, ["bob@example.test"], subject=f"c{n}-m{i}")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    server.wait_for_log(r": removed", count=200, timeout=120)
    subjects = sorted(email.message_from_bytes(raw)["Subject"] for raw in server.messages("bob"))
    assert subjects == sorted(f"c{n}-m{i}" for n in range(10) for i in range(20))


def flush(config_dir: Path) -> None:
    """``pymta postqueue -f``: the running server retries deferred mail now."""
    subprocess.run(
        [sys.executable, "-m", "pymta.cli.main", "postqueue", "-c", str(config_dir), "-f"],
        check=True,
        timeout=60,
    )
