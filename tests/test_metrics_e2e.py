"""End to end: a real ``twistd pymta`` with the master.cf ``metrics`` service,
driven by smtplib (with STARTTLS) and poplib, scraped with urllib; with
``pymta_processes = 2`` the figures of both reactor processes add up; with
no metrics line nothing listens and nothing is recorded."""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import signal
import smtplib
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (
    DEFAULT_MASTER_CF,
    IMAP_SERVICE,
    POP3_SERVICE,
    PymtaServer,
    wait_for_file,
)

#: A spelling of a loopback address no other harness service uses, so the
#: harness can tell the metrics port from the others by its service name.
METRICS_SERVICE = "[localhost]:0 inet n - n - - metrics\n"

#: IMAP over implicit TLS (port 993's kind), under another unique name.
IMAPS_SERVICE = "127.0.0.3:0 inet n - n - - imapd -o imapd_tls_wrappermode=yes\n"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: PymtaServer) -> Samples:
    """GET /metrics; every sample by (name, labels)."""
    url = f"http://127.0.0.1:{server.ports['[localhost]:0']}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def message(n: int) -> bytes:
    return f"Subject: metrics {n}\r\n\r\nbody {n}\r\n".encode()


def test_metrics_count_a_real_session_delivery_rejection_and_logins(tmp_path: Path) -> None:
    """One message over STARTTLS is received, delivered and timed; a RCPT for
    an unknown user is a rejection; a POP3 session with a wrong then a right
    password is one auth failure (counted when the failing session ends)
    and one login; IMAP logins after STARTTLS and on an implicit-TLS port
    are two encrypted imap sessions;
    the open-session gauge sees a connected client and the queue gauges
    show the emptied queue."""
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )
    with PymtaServer(
        tmp_path,
        main_cf_extra=extra,
        master_cf=DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE + IMAPS_SERVICE + METRICS_SERVICE,
    ) as server:
        server.start()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.sendmail("sender@client.test", ["alice@example.test"], message(1))
            before = scrape(server)  # while this session is open
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("sender@client.test", ["nobody@example.test"], message(2))
        server.wait_for_log(r"status=sent")
        server.wait_for_log(r"removed")
        server.wait_for_log(r"disconnect from", count=2)

        failing = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
        failing.user("alice@example.test")
        with pytest.raises(poplib.error_proto):
            failing.pass_("wrong")
        failing.quit()
        pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
        pop.user("alice@example.test")
        pop.pass_("alice-pw")
        pop.quit()
        server.wait_for_log(r"pop3-login: Disconnected \(auth failed")
        server.wait_for_log(r"pop3\(alice@example\.test\).*Disconnected")
        with imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30) as imap:
            imap.starttls(context)
            imap.login("alice@example.test", "alice-pw")
            imap.logout()
        with imaplib.IMAP4_SSL(
            "127.0.0.3", server.ports["127.0.0.3:0"], ssl_context=context, timeout=30
        ) as imaps:
            imaps.login("alice@example.test", "alice-pw")
            imaps.logout()
        server.wait_for_log(r"imap\(alice@example\.test\).*Disconnected", count=2)

        after = scrape(server)
        server.stop()

    assert value(before, "pymta_sessions_open", protocol="smtp") == 1.0
    assert value(after, "pymta_sessions_open", protocol="smtp") == 0.0
    assert value(after, "pymta_sessions_total", protocol="smtp") == 2.0
    assert value(after, "pymta_tls_sessions_total", protocol="smtp") == 1.0
    assert value(after, "pymta_sessions_total", protocol="pop3") == 2.0
    assert value(after, "pymta_tls_sessions_total", protocol="pop3") is None
    assert value(after, "pymta_sessions_open", protocol="imap") == 0.0
    assert value(after, "pymta_sessions_total", protocol="imap") == 2.0
    assert value(after, "pymta_tls_sessions_total", protocol="imap") == 2.0
    assert value(after, "pymta_logins_total", protocol="imap") == 2.0
    assert value(after, "pymta_messages_received_total", origin="smtp") == 1.0
    assert value(after, "pymta_messages_delivered_total", transport="virtual") == 1.0
    assert value(after, "pymta_messages_rejected_total", stage="rcpt", reason="address") == 1.0
    assert value(after, "pymta_delivery_delay_seconds_count", status="sent") == 1.0
    assert value(after, "pymta_delivery_delay_seconds_bucket", status="sent", le="+Inf") == 1.0
    assert value(after, "pymta_logins_total", protocol="pop3") == 1.0
    assert value(after, "pymta_auth_failures_total", protocol="pop3") == 1.0
    for queue in ("incoming", "active", "deferred", "hold", "corrupt"):
        assert value(after, "pymta_queue_messages", queue=queue) == 0.0, queue
    assert (value(after, "pymta_syncs_total", barrier="queue") or 0) >= 1
    assert (value(after, "pymta_syncs_total", barrier="mailbox") or 0) >= 1
    assert value(after, "pymta_reactor_processes") == 1.0
    assert (value(after, "process_cpu_seconds_total") or 0) > 0
    assert (value(after, "pymta_resident_memory_bytes") or 0) > 0


def test_no_metrics_line_no_endpoint(tmp_path: Path) -> None:
    """Off by default: without a metrics line in master.cf pymta opens no
    metrics port (only its SMTP listener logs a "listening on" line) and
    records nothing in data_directory."""
    with PymtaServer(tmp_path) as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
            smtp.noop()
        log = server.log()
        server.stop()
    assert re.findall(r"(\S+) listening on", log) == ["127.0.0.1:0"]
    assert "metrics" not in log.lower()
    assert not (tmp_path / "lib" / "metrics").exists()


_CONNECT = re.compile(r"postfix/smtpd\[(\d+)\]: connect from")


def test_two_reactor_processes_add_up(tmp_path: Path) -> None:
    """With pymta_processes = 2, SMTP sessions held open on both processes
    (told apart by the pid of their maillog lines) all show in the one
    scrape the master answers, and so do the messages each process received
    and delivered; both processes count in pymta_reactor_processes, and a
    killed worker's replacement does not make a third."""
    maillog = tmp_path / "maillog"
    with PymtaServer(
        tmp_path,
        main_cf_extra=f"pymta_processes = 2\nmaillog_file = {maillog}\n",
        master_cf=DEFAULT_MASTER_CF + METRICS_SERVICE,
    ) as server:
        server.start()
        server.wait_for_log(r"worker 1 running")

        def connects() -> list[str]:
            return _CONNECT.findall(maillog.read_text()) if maillog.exists() else []

        def connected(count: int) -> Callable[[], bool]:
            return lambda: len(connects()) >= count

        sessions: list[smtplib.SMTP] = []
        try:
            # Connect until the kernel has given sessions to both processes.
            while len(set(connects())) < 2:
                assert len(sessions) < 40, "every session went to one process"
                sessions.append(smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30))
                wait_for_file(maillog, connected(len(sessions)))
            held = scrape(server)
            for n, smtp in enumerate(sessions):
                smtp.sendmail("sender@client.test", ["alice@example.test"], message(n))
        finally:
            for smtp in sessions:
                smtp.quit()
        count = len(sessions)

        def log_count(pattern: str) -> int:
            return len(re.findall(pattern, maillog.read_text()))

        wait_for_file(maillog, lambda: log_count(r"status=sent") >= count, timeout=60)
        wait_for_file(maillog, lambda: log_count(r"disconnect from") >= count, timeout=60)
        done = scrape(server)

        # A worker killed: its counters stay in the sum, its live gauges go
        # (else its replacement would make three reactor processes).
        worker = re.search(r"worker 1 started, pid (\d+)", server.log())
        assert worker is not None
        os.kill(int(worker.group(1)), signal.SIGKILL)
        warning = f"process pymta/worker pid {worker.group(1)} killed by signal 9"
        wait_for_file(maillog, lambda: warning in maillog.read_text())
        server.wait_for_log(r"worker 1 running", count=2)
        restarted = scrape(server)
        server.stop()

    assert value(held, "pymta_reactor_processes") == 2.0
    assert value(held, "pymta_sessions_open", protocol="smtp") == float(count)
    assert value(done, "pymta_sessions_open", protocol="smtp") == 0.0
    assert value(done, "pymta_sessions_total", protocol="smtp") == float(count)
    assert value(done, "pymta_messages_received_total", origin="smtp") == float(count)
    assert value(done, "pymta_messages_delivered_total", transport="virtual") == float(count)
    assert value(done, "pymta_delivery_delay_seconds_count", status="sent") == float(count)
    assert value(restarted, "pymta_reactor_processes") == 2.0
    assert value(restarted, "pymta_messages_received_total", origin="smtp") == float(count)
