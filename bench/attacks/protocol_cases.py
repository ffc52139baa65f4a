#!/usr/bin/env python3
"""protocol_cases - the short hostile-load attacks, replayed on one server.

SYNOPSIS
    python bench/attacks/protocol_cases.py

DESCRIPTION
    On loopback only: starts one pymta (tests/harness.py, twistd -n) with
    SMTP (STARTTLS), POP3 and IMAP listeners and replays, one after the
    other, the attacks that need no special set-up:

    session_end_tls   IMAP STARTTLS + LOGOUT and POP3 STLS + QUIT: the
                      server closes (EOF) at once. Before: no EOF ever
                      (mbsync hung after "OK Logout completed").
    search_nesting    SEARCH NOT NOT ... x10000 and OR x5000: a BAD answer,
                      the session lives on. Before: RecursionError, logged
                      as critical, NO [SERVERBUG].
    smtp_pipelining   HELO, MAIL, RCPT, DATA and the body in one write: 554
                      5.5.0 and the connection closed. Before: accepted.
    smtp_junk         NOOPs one by one: the session ends with 421 within
                      the junk and hard error limits. Before: never.
    header_size       one 300 KB header line: it is cut to
                      header_size_limit. Before: kept whole.
    connect_burst     2,000 connections opened as fast as possible and held:
                      every one is greeted, and the kernel's ListenOverflows
                      counter does not grow. Before: backlog 50, 0.7 % of
                      clients were never accepted.

    Prints one line per case: the case, HELD or NOT HELD, and its figure.
    Exits 1 when a case is not held. Bounded: each case has a deadline.
"""

from __future__ import annotations

import imaplib
import poplib
import resource
import smtplib
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import (  # noqa: E402
    DEFAULT_MASTER_CF,
    IMAP_SERVICE,
    POP3_SERVICE,
    PymtaServer,
)

Result = tuple[bool, str]


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _eof_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection, None if it did not."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass  # a reset, or TLS ended without close_notify: closed all the same
    return time.monotonic() - started


def session_end_tls(server: PymtaServer) -> Result:
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    imap.starttls(_context())
    imap.login("alice@example.test", "alice-pw")
    imap.send(b"z LOGOUT\r\n")
    imap_eof = _eof_within(imap.sock, 5.0)
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    pop.stls(_context())
    pop.user("alice@example.test")
    pop.pass_("alice-pw")
    pop.sock.sendall(b"QUIT\r\n")
    pop_eof = _eof_within(pop.sock, 5.0)
    held = imap_eof is not None and pop_eof is not None
    shown = [
        f"{name} EOF after {t * 1000:.0f} ms" if t is not None else f"{name} no EOF in 5 s"
        for name, t in (("IMAP LOGOUT", imap_eof), ("POP3 QUIT", pop_eof))
    ]
    return held, ", ".join(shown)


def search_nesting(server: PymtaServer) -> Result:
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    imap.login("alice@example.test", "alice-pw")
    imap.select("INBOX")
    answers = []
    for criteria in ("NOT " * 10000 + "ALL", "OR ALL " * 5000 + "ALL"):
        try:
            typ, data = imap.search(None, criteria)
            answers.append(f"{typ} {data!r}"[:60])
        except imaplib.IMAP4.error as e:
            answers.append(f"BAD {e}"[:60])
    alive = imap.noop()[0] == "OK"
    imap.logout()
    held = alive and all(a.startswith("BAD") for a in answers)
    return held, f"answers: {answers[0]!r} / {answers[1][:20]!r}..., session alive: {alive}"


def smtp_pipelining(server: PymtaServer) -> Result:
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as sock:
        sock.recv(4096)  # the banner
        sock.sendall(
            b"HELO bot.example\r\nMAIL FROM:<a@bot.example>\r\nRCPT TO:<alice@example.test>\r\n"
            b"DATA\r\nSubject: spam\r\n\r\nspam\r\n.\r\nQUIT\r\n"
        )
        received = b""
        sock.settimeout(10)
        while chunk := sock.recv(4096):
            received += chunk
    held = b"554 5.5.0" in received and b"queued as" not in received
    return held, received.decode(errors="replace").strip().replace("\r\n", " | ")[:100]


def smtp_junk(server: PymtaServer) -> Result:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.ehlo("junk.example")
        for n in range(1, 1001):
            try:
                code, _ = client.noop()
            except smtplib.SMTPServerDisconnected:
                return True, f"closed after {n - 1} NOOPs answered"
            if code == 421:
                return True, f"421 at NOOP {n}"
    return False, "1,000 NOOPs answered, still open"


def header_size(server: PymtaServer) -> Result:
    value = "x" * (300 * 1024)
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail(
            "a@client.example",
            ["bob@example.test"],
            f"X-Long: {value}\r\nSubject: long\r\n\r\nbody\r\n".encode(),
        )
    server.wait_for_log(r"to=<bob@example\.test>.*status=sent")
    (message,) = server.messages("bob")
    long_header = next(line for line in message.split(b"\n") if line.startswith(b"X-Long:"))
    held = len(long_header) <= 102400
    return held, f"X-Long kept {len(long_header):,} of {len(value) + 8:,} bytes"


def _listen_overflows() -> int:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def connect_burst(server: PymtaServer, count: int = 2000) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    before = _listen_overflows()
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", server.smtp_port))
        socks.append(sock)
    greeted = 0
    deadline = time.monotonic() + 60
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if sock.recv(4)[:3] in (b"220", b"421"):
                greeted += 1
        except OSError:
            pass
        sock.close()
    overflows = _listen_overflows() - before
    return greeted == count and overflows == 0, (
        f"{greeted} of {count} answered, ListenOverflows +{overflows}"
    )


CASES: list[tuple[str, Callable[[PymtaServer], Result]]] = [
    ("session_end_tls", session_end_tls),
    ("search_nesting", search_nesting),
    ("smtp_pipelining", smtp_pipelining),
    ("smtp_junk", smtp_junk),
    ("header_size", header_size),
    ("connect_burst", connect_burst),
]


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory(prefix="protocol_cases.") as tmp:
        root = Path(tmp)
        settings = (
            f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {root / 'cert.pem'}\n"
            f"smtpd_tls_key_file = {root / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
            "smtpd_client_connection_count_limit = 0\n"
        )
        server = PymtaServer(
            root, settings, master_cf=DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE
        )
        with server:
            server.start()
            for name, case in CASES:
                try:
                    held, figure = case(server)
                except Exception as e:  # a case that breaks is not held
                    held, figure = False, f"{type(e).__name__}: {e}"
                failed += not held
                print(f"{name:<18} {'HELD' if held else 'NOT HELD':<9} {figure}", flush=True)
            server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
