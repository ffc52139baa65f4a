"""kill -9 under load, then count repeated deliveries (issue 11's crash case).

One run: a real pymta (tests/harness.py) takes bursts of messages from
several smtplib clients, each burst on one connection; once the log shows
``kill_after`` ``status=sent`` lines the server is killed with SIGKILL while
the clients keep sending, then restarted until every acknowledged message
is removed from the queue. Every message has its own Subject, so the
Maildir tells how often each arrived.

The rule it checks (DESIGN.md invariant 1): nothing acknowledged is lost,
and a delivery whose ``status=sent`` line was logged before the kill is
never repeated (its done mark reached the queue file first). Other
repeats (deliveries in flight at the kill) are counted, not forbidden.

Shared by tests/test_crash_repeats.py (a few runs) and
bench/attacks/crash_repeats.py (many).
"""

from __future__ import annotations

import email
import re
import smtplib
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import PymtaServer

_SENT = re.compile(r"([0-9A-F]{12,}): to=<[^>]*>.* status=sent ")


@dataclass
class CrashRun:
    """What one run saw."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # queue id -> subject
    sent_before_kill: set[str] = field(default_factory=set)  # queue ids
    copies: Counter[str] = field(default_factory=Counter)  # subject -> copies delivered

    @property
    def lost(self) -> list[str]:
        """Acknowledged messages that never arrived."""
        return [s for s in self.acknowledged.values() if self.copies[s] == 0]

    @property
    def repeated_after_sent(self) -> list[str]:
        """Deliveries logged as sent before the kill that arrived again."""
        return [
            self.acknowledged[q]
            for q in self.sent_before_kill
            if q in self.acknowledged and self.copies[self.acknowledged[q]] > 1
        ]

    @property
    def extra_copies(self) -> int:
        """Every copy beyond the first, of any message."""
        return sum(n - 1 for n in self.copies.values() if n > 1)


def _client(port: int, tag: str, bursts: int, burst: int, acked: dict[str, str]) -> None:
    """Send ``bursts`` bursts of ``burst`` messages, each burst on one
    connection; record each 250's queue id. A killed server ends it."""
    try:
        for b in range(bursts):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("load.test")
                for i in range(burst):
                    subject = f"{tag}-{b}-{i}"
                    body = (
                        f"From: load@client.test\r\nTo: bob@example.test\r\n"
                        f"Subject: {subject}\r\n\r\n{'x' * 2000}\r\n"
                    )
                    client.mail("load@client.test")
                    client.rcpt("bob@example.test")
                    code, text = client.data(body.encode())
                    if code == 250:
                        acked[text.decode().rsplit(" ", 1)[-1]] = subject
    except (OSError, smtplib.SMTPException):
        return  # the kill


def crash_run(
    root: Path, kill_after: int, clients: int = 3, bursts: int = 3, burst: int = 20
) -> CrashRun:
    """One kill -9 under load and a restart (see module doc)."""
    run = CrashRun()
    with PymtaServer(root) as server:
        server.start()
        threads = [
            threading.Thread(
                target=_client,
                args=(server.smtp_port, f"c{n}", bursts, burst, run.acknowledged),
                daemon=True,
            )
            for n in range(clients)
        ]
        for t in threads:
            t.start()
        server.wait_for_log(r"status=sent ", count=kill_after, timeout=60)
        server.kill()
        before = server.log()
        for t in threads:
            t.join(60)
        run.sent_before_kill = set(_SENT.findall(before))
        server.start()
        for queue_id in run.acknowledged:
            if f"{queue_id}: removed" not in before:
                server.wait_for_log(rf"{queue_id}: removed", timeout=60)
        server.stop()
        for raw in server.messages("bob"):
            run.copies[str(email.message_from_bytes(raw)["Subject"])] += 1
    return run
