"""End to end: SIGHUP reloads a real ``twistd pymta`` (pymta.master.reload).

A listener added to master.cf starts listening, a removed one stops
accepting while its open session goes on, a changed ``smtpd_banner`` greets
the next sessions while an open one completes its message, a broken
main.cf is refused in one log line and the running configuration kept, a
delivery held by a slow relay across the reload is not lost, and with
``pymta_processes = 2`` the worker applies the change too. Clients are
smtplib and aiosmtpd on loopback; every wait is on a log line or a reply.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import signal
import smtplib
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509

from pymta.tls import ensure_self_signed
from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer, wait_for_file
from tests.test_e2e_relay import free_port

SECOND = "[127.0.0.1]:0 inet n - n - - smtpd\n"
MESSAGE = b"From: <bob@example.test>\r\nSubject: reload\r\n\r\nbody\r\n"


def reload(server: PymtaServer, count: int = 1) -> None:
    """SIGHUP the server and wait for its ``count``-th ``reload: done``."""
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    server.wait_for_log(r"reload: done", count=count)


def connect(port: int) -> tuple[smtplib.SMTP, str]:
    """An SMTP session and the text of its greeting."""
    client = smtplib.SMTP(timeout=30)
    code, text = client.connect("127.0.0.1", port)
    assert code == 220, text
    return client, text.decode()


def banner(port: int) -> str:
    client, text = connect(port)
    client.quit()
    return text


def send(client: smtplib.SMTP, rcpt: str = "alice@example.test") -> None:
    client.ehlo("client.test")
    client.mail("bob@example.test")
    code, text = client.rcpt(rcpt)
    assert code == 250, text
    code, text = client.data(MESSAGE)
    assert code == 250, text


def test_added_listener_listens_and_removed_one_closes(tmp_path: Path) -> None:
    """A master.cf line added before SIGHUP is listening after it; once the
    line is removed again the port refuses connections, while a session
    opened on it before the second reload still delivers its message."""
    with PymtaServer(tmp_path) as server:
        server.start()
        master_cf = server.config_dir / "master.cf"
        master_cf.write_text(DEFAULT_MASTER_CF + SECOND)
        reload(server)
        server.wait_for_log(r"\[127\.0\.0\.1\]:0 listening on")
        port = server.ports["[127.0.0.1]:0"]
        assert banner(port).startswith("mx.example.test ESMTP")

        open_session, _ = connect(port)
        master_cf.write_text(DEFAULT_MASTER_CF)
        reload(server, count=2)
        server.wait_for_log(r"reload: \[127\.0\.0\.1\]:0@127\.0\.0\.1:0 closed")
        with pytest.raises(ConnectionRefusedError):
            smtplib.SMTP("127.0.0.1", port, timeout=30)
        send(open_session)
        open_session.quit()
        server.wait_for_log(r"to=<alice@example\.test>.*status=sent")
        assert banner(server.smtp_port).startswith("mx.example.test ESMTP")
        server.stop()


def test_changed_banner_reaches_new_sessions_only(tmp_path: Path) -> None:
    """A changed smtpd_banner greets the sessions after SIGHUP; a session
    opened before it keeps going and its message is delivered. A changed
    parameter the running queue manager uses, and a changed queue_directory,
    are logged as needing a restart, and the queue stays where it was."""
    with PymtaServer(tmp_path) as server:
        server.start()
        before, greeting = connect(server.smtp_port)
        assert greeting.startswith("mx.example.test ESMTP")
        main_cf = server.config_dir / "main.cf"
        main_cf.write_text(
            main_cf.read_text()
            + "smtpd_banner = $myhostname ESMTP reloaded\nmaximal_backoff_time = 1234s\n"
            + f"queue_directory = {tmp_path}/elsewhere\n"
        )
        reload(server)
        assert banner(server.smtp_port) == "mx.example.test ESMTP reloaded"
        server.wait_for_log(r"reload: maximal_backoff_time changed: needs a restart for delivery")
        server.wait_for_log(r"reload: queue_directory changed: needs a restart \(running with")
        send(before)
        before.quit()
        server.wait_for_log(r"to=<alice@example\.test>.*status=sent")
        assert len(server.messages("alice")) == 1
        assert not (tmp_path / "elsewhere").exists()  # the queue stayed where it was
        # Still not applied at the next reload: said again; undone: said no more.
        reload(server, count=2)
        server.wait_for_log(r"maximal_backoff_time changed: needs a restart", count=2)
        main_cf.write_text(main_cf.read_text().replace("maximal_backoff_time = 1234s\n", ""))
        reload(server, count=3)
        assert len(server.wait_for_log(r"maximal_backoff_time changed")) == 2


def test_broken_main_cf_keeps_running_configuration(tmp_path: Path) -> None:
    """A main.cf that would not start is refused at SIGHUP with one log line
    naming the cause; the server keeps its listeners and old banner and
    still accepts and delivers mail."""
    with PymtaServer(tmp_path) as server:
        server.start()
        main_cf = server.config_dir / "main.cf"
        good = main_cf.read_text()
        main_cf.write_text(
            good + "smtpd_banner = broken\nsmtpd_relay_restrictions = no_such_restriction\n"
        )
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        lines = server.wait_for_log(r"reload: configuration error")
        assert len(lines) == 1 and "no_such_restriction" in lines[0]
        assert "keeping the running configuration" in lines[0]
        assert banner(server.smtp_port).startswith("mx.example.test ESMTP")
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            send(client)
        server.wait_for_log(r"to=<alice@example\.test>.*status=sent")
        assert "reload: done" not in server.log()

        main_cf.write_text(good + "smtpd_banner = $myhostname ESMTP fixed\n")
        reload(server)
        assert banner(server.smtp_port) == "mx.example.test ESMTP fixed"


class _SlowRelay:
    """aiosmtpd handler that holds DATA until released."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        self.messages.append(envelope.content)
        return "250 2.0.0 Ok: queued as SLOW1"


def test_delivery_in_flight_survives_reload(tmp_path: Path) -> None:
    """A message whose delivery is held by a slow relay while SIGHUP reloads
    is delivered once the relay answers: the reload loses no message in
    flight (and a second message after the reload is relayed too)."""
    handler = _SlowRelay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with PymtaServer(
            tmp_path,
            main_cf_extra=f"relayhost = [127.0.0.1]:{port}\nsmtp_helo_name = mx.example.test\n",
            master_cf=DEFAULT_MASTER_CF + "smtp unix - - n - - smtp\nrelay unix - - n - - smtp\n",
        ) as server:
            server.start()
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
                send(client, "someone@remote.test")
            assert handler.arrived.wait(30)
            reload(server)
            handler.release.set()
            server.wait_for_log(r"to=<someone@remote\.test>.*status=sent")
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
                send(client, "other@remote.test")
            server.wait_for_log(r"to=<other@remote\.test>.*status=sent")
            assert len(handler.messages) == 2
            server.stop()
    finally:
        handler.release.set()
        controller.stop()


def test_two_processes_both_reload(tmp_path: Path) -> None:
    """With pymta_processes = 2 the worker reloads too: both processes log
    ``reload: done``, every new session (spread by the kernel over both)
    sees the new banner, a listener added by the reload is adopted by
    the worker from the master's socket, and a SIGHUP sent to the worker
    itself is ignored."""
    with PymtaServer(
        tmp_path,
        main_cf_extra="pymta_processes = 2\n",
    ) as server:
        server.start()
        server.wait_for_log(r"worker 1 running")
        main_cf = server.config_dir / "main.cf"
        main_cf.write_text(main_cf.read_text() + "smtpd_banner = $myhostname ESMTP both\n")
        (server.config_dir / "master.cf").write_text(DEFAULT_MASTER_CF + SECOND)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"reload: done", count=2)
        assert server.wait_for_log(r"worker\[\d+\]: .*reload: done")
        server.wait_for_log(r"worker\[\d+\]: .*\[127\.0\.0\.1\]:0 adopted the socket")
        for _ in range(20):
            assert banner(server.smtp_port) == "mx.example.test ESMTP both"
            assert banner(server.ports["[127.0.0.1]:0"]) == "mx.example.test ESMTP both"
        # A hangup reaching the worker itself (a terminal's, `systemctl kill`)
        # is ignored: the worker reloads when the master says so.
        worker_pid = int(server.wait_for_log(r"worker 1 started, pid (\d+)")[0].split()[-1])
        os.kill(worker_pid, signal.SIGHUP)
        reload(server, count=4)
        os.kill(worker_pid, 0)  # still there
        assert "killed by signal" not in server.log()
        server.stop()


def test_reload_reopens_maillog_even_when_refused(tmp_path: Path) -> None:
    """After logrotate renames maillog_file, SIGHUP makes pymta write to a new
    file at the same path (logrotate's postrotate), even when the reload
    itself is refused for a broken main.cf: the rotated file keeps the old
    lines, the new one gets the next message's."""
    maillog = tmp_path / "maillog"
    with PymtaServer(tmp_path, main_cf_extra=f"maillog_file = {maillog}\n") as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            send(client)
        wait_for_file(maillog, lambda: "status=sent" in maillog.read_text())
        rotated = tmp_path / "maillog.1"
        maillog.rename(rotated)
        main_cf = server.config_dir / "main.cf"
        main_cf.write_text(main_cf.read_text() + "smtpd_relay_restrictions = no_such\n")
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"reload: configuration error")
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            send(client, "bob@example.test")
        wait_for_file(
            maillog, lambda: maillog.exists() and "to=<bob@example.test>" in maillog.read_text()
        )
        assert "to=<bob@example.test>" not in rotated.read_text()
        assert "to=<alice@example.test>" in rotated.read_text()
        server.stop()


def test_listener_renamed_on_the_same_address_is_rebound(tmp_path: Path) -> None:
    """A master.cf line rewritten to another name for the same address
    (127.0.0.1:PORT -> localhost:PORT) is closed and opened again by the
    reload: the old port is released before the new one binds, so the
    address keeps serving (no "Address already in use")."""
    port = free_port()
    old_line = f"127.0.0.1:{port} inet n - n - - smtpd\n"
    with PymtaServer(tmp_path, master_cf=DEFAULT_MASTER_CF + old_line) as server:
        server.start()
        (server.config_dir / "master.cf").write_text(
            DEFAULT_MASTER_CF + f"localhost:{port} inet n - n - - smtpd\n"
        )
        reload(server)
        server.wait_for_log(rf"localhost:{port} listening on 127\.0\.0\.1:{port}")
        assert "needs a restart" not in server.log()
        assert banner(port).startswith("mx.example.test ESMTP")
        server.stop()


def _starttls(port: int) -> tuple[smtplib.SMTP, bytes]:
    """An SMTP session after STARTTLS and the certificate the server showed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("client.test")
    code, text = client.starttls(context=context)
    assert code == 220, text
    sock: Any = client.sock
    return client, sock.getpeercert(binary_form=True)


def test_reload_serves_new_certificate_to_new_sessions(tmp_path: Path) -> None:
    """After the certificate and key files are replaced and SIGHUP is sent,
    a new STARTTLS session gets the new certificate, while a TLS session
    opened before keeps its own and completes a message."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, "old.example.test")
    new_cert, new_key = tmp_path / "new-cert.pem", tmp_path / "new-key.pem"
    ensure_self_signed(new_cert, new_key, "new.example.test")
    with PymtaServer(
        tmp_path,
        main_cf_extra=(
            "smtpd_tls_security_level = may\n"
            f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
            "pymta_tls_create_self_signed = no\n"
        ),
    ) as server:
        server.start()
        before, old_der = _starttls(server.smtp_port)
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(new_key.read_bytes())
        reload(server)
        after, new_der = _starttls(server.smtp_port)
        after.quit()
        assert new_der != old_der
        assert (
            x509.load_der_x509_certificate(new_der)
            .subject.rfc4514_string()
            .endswith("new.example.test")
        )
        send(before)
        before.quit()
        server.wait_for_log(r"to=<alice@example\.test>.*status=sent")
        server.stop()


def test_connections_before_login_still_count_after_reload(tmp_path: Path) -> None:
    """IMAP connections held open before login across a reload still count
    against imapd_max_login_ip_connections, under the new value: with the
    limit raised from 2 to 3 by the reload, one more is greeted and the
    next is refused (a reload is no way around the limit)."""
    with PymtaServer(
        tmp_path,
        main_cf_extra="imapd_max_login_ip_connections = 2\n",
        master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE,
    ) as server:
        server.start()
        held = [socket.create_connection(("127.0.0.1", server.imap_port)) for _ in range(2)]
        for sock in held:
            assert sock.recv(4096).startswith(b"* OK")
        main_cf = server.config_dir / "main.cf"
        main_cf.write_text(main_cf.read_text() + "imapd_max_login_ip_connections = 3\n")
        reload(server)
        third = socket.create_connection(("127.0.0.1", server.imap_port))
        assert third.recv(4096).startswith(b"* OK")
        held.append(third)
        with pytest.raises(imaplib.IMAP4.error, match="Too many connections"):
            imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        for sock in held:
            sock.close()
        server.stop()


def test_smtp_connection_count_survives_reload(tmp_path: Path) -> None:
    """SMTP sessions open across a reload still count against
    smtpd_client_connection_count_limit: with the limit 2 and two sessions
    held from before the reload, the next one after it gets 421."""
    with PymtaServer(
        tmp_path,
        main_cf_extra=(
            "smtpd_client_connection_count_limit = 2\nsmtpd_client_event_limit_exceptions =\n"
        ),
    ) as server:
        server.start()
        held = [connect(server.smtp_port)[0] for _ in range(2)]
        reload(server)
        refused = smtplib.SMTP(timeout=30)
        code, text = refused.connect("127.0.0.1", server.smtp_port)
        assert code == 421, text
        refused.close()
        for client in held:
            client.quit()
        server.stop()
