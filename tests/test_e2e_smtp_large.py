"""End to end: large messages are spooled as they arrive (pymta.queue.spool)
and still reach the mailbox byte for byte, survive kill -9 after their 250,
and leave nothing behind when their client goes away mid-DATA.

A real ``twistd pymta`` on loopback (tests/harness.py), real smtplib
clients over STARTTLS; the tests wait on log lines, never on sleeps.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import PymtaServer

# Lines that start with a dot test the dot-stuffing on the way through.
BODY = b"".join(b".%06d %s\r\n" % (n, b"y" * 70) for n in range(40000))  # about 3 MiB
MESSAGE = b"From: s@client.test\r\nTo: alice@example.test\r\nSubject: large\r\n\r\n" + BODY


def _tls_extra(tmp_path: Path) -> str:
    return (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )


def _send_tls(port: int, message: bytes) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.test")
        client.starttls(context=context)
        client.ehlo("client.test")
        client.mail("s@client.test")
        client.rcpt("alice@example.test")
        code, text = client.data(message)
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


def _incoming(server: PymtaServer) -> list[str]:
    return sorted(p.name for p in (server.root / "spool" / "incoming").iterdir())


def test_large_message_over_tls_arrives_intact(tmp_path: Path) -> None:
    """A 3 MiB message over STARTTLS is queued and delivered with its body
    unchanged (dot-unstuffed, LF line ends), and no spool stays behind."""
    with PymtaServer(tmp_path, main_cf_extra=_tls_extra(tmp_path)) as server:
        server.start()
        queue_id = _send_tls(server.smtp_port, MESSAGE)
        server.wait_for_log(rf"{queue_id}: removed")
        [delivered] = server.messages("alice")
        assert delivered.endswith(BODY.replace(b"\r\n", b"\n"))
        assert b"Subject: large\n" in delivered
        assert not [name for name in _incoming(server) if name.endswith(".spool")]
        server.stop()


def test_kill_after_250_of_a_spooled_message_delivers_it_once(tmp_path: Path) -> None:
    """kill -9 right after the 250 of a spooled message loses nothing: the
    restarted server delivers it whole, exactly once."""
    extra = _tls_extra(tmp_path) + "defer_transports = virtual\n"
    with PymtaServer(tmp_path, main_cf_extra=extra) as server:
        server.start()
        queue_id = _send_tls(server.smtp_port, MESSAGE)
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
        [delivered] = server.messages("alice")
        assert delivered.endswith(BODY.replace(b"\r\n", b"\n"))


def test_client_gone_mid_data_leaves_no_spool(tmp_path: Path) -> None:
    """A client that sends 2 MiB of a message and disconnects: the server
    logs the lost connection and deletes the message's spool."""
    with PymtaServer(tmp_path) as server:
        server.start()
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=30) as sock:
            sock.recv(4096)
            sock.sendall(b"HELO client.test\r\n")
            sock.recv(4096)
            for command in (b"MAIL FROM:<s@client.test>\r\n", b"RCPT TO:<alice@example.test>\r\n"):
                sock.sendall(command)
                sock.recv(4096)
            sock.sendall(b"DATA\r\n")
            assert sock.recv(4096).startswith(b"354")
            sock.sendall(MESSAGE[: 2 * 1024 * 1024])
        server.wait_for_log(r"lost connection after DATA")
        # The spool is deleted on the queue's writer thread, which logs
        # nothing: poll the directory with a deadline.
        deadline = time.monotonic() + 10
        while _incoming(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _incoming(server) == []
        server.stop()


def flush(config_dir: Path) -> None:
    """``pymta postqueue -f``: the running server retries deferred mail now."""
    subprocess.run(
        [sys.executable, "-m", "pymta.cli.main", "postqueue", "-c", str(config_dir), "-f"],
        check=True,
        timeout=60,
    )
