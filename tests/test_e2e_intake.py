"""The queue's intake log end to end: a real pymta killed with kill -9,
its unsynced queue files lost as in a power loss, restarted (issue 17).

The checkpoint time is an hour here, so that every record is still live
at the kill: what the replay does is then what a crash within the
default second would see.
"""

from __future__ import annotations

import email
import os
import smtplib
from pathlib import Path

from tests.harness import PymtaServer

HELD = "defer_transports = virtual\n"
LIVE = "pymta_queue_intake_checkpoint_time = 1h\n"
QUEUES = ("incoming", "active", "deferred", "hold")


def _send(port: int, subject: str) -> str:
    """One message to bob; the queue id from its 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("sender@client.test")
        client.rcpt("bob@example.test")
        body = f"From: sender@client.test\r\nSubject: {subject}\r\n\r\n{'x' * 900}\r\n"
        code, text = client.data(body.encode())
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


def _subjects(server: PymtaServer) -> list[str]:
    return sorted(str(email.message_from_bytes(raw)["Subject"]) for raw in server.messages("bob"))


def _queue_files(spool: Path) -> list[Path]:
    return [path for queue in QUEUES for path in (spool / queue).iterdir()]


def test_acknowledged_mail_survives_losing_its_unsynced_queue_files(tmp_path: Path) -> None:
    """Messages acknowledged with 250 whose queue files are then lost or
    torn (what a power loss does to files not yet synced: the log made
    them durable, not their own sync) are written again from the intake
    log at the next start and delivered, each exactly once."""
    with PymtaServer(tmp_path, main_cf_extra=HELD + LIVE) as server:
        server.start()
        subjects = [f"power-{n}" for n in range(6)]
        queue_ids = [_send(server.smtp_port, subject) for subject in subjects]
        server.kill()
        spool = tmp_path / "spool"
        files = _queue_files(spool)
        assert sorted(path.name for path in files) == sorted(queue_ids)
        for n, path in enumerate(files):
            if n % 2:
                path.unlink()
            else:
                os.truncate(path, 40)
        main_cf = server.config_dir / "main.cf"
        main_cf.write_text(main_cf.read_text().replace(HELD, ""))
        server.start()
        for queue_id in queue_ids:
            server.wait_for_log(rf"{queue_id}: recovered from the intake log into incoming")
            server.wait_for_log(rf"{queue_id}: removed")
        server.stop()
        assert _subjects(server) == sorted(subjects)


def test_kill_after_deliveries_delivers_nothing_twice(tmp_path: Path) -> None:
    """kill -9 after messages were delivered and their queue files removed,
    while their records are still live: the restart writes none of them
    again (their retired records), so nothing is delivered twice."""
    with PymtaServer(tmp_path, main_cf_extra=LIVE) as server:
        server.start()
        subjects = [f"done-{n}" for n in range(6)]
        queue_ids = [_send(server.smtp_port, subject) for subject in subjects]
        for queue_id in queue_ids:
            server.wait_for_log(rf"{queue_id}: removed")
        server.kill()
        server.start()
        # The replay ran before the server listened; a message sent now is
        # delivered after anything it could have written.
        last = _send(server.smtp_port, "after")
        server.wait_for_log(rf"{last}: removed")
        server.stop()
        assert "recovered from the intake log" not in server.log()
        assert _subjects(server) == sorted([*subjects, "after"])
