"""The shipped logrotate example (etc/logrotate.d/pymta) run by the real
logrotate against a running ``twistd pymta``: the mail log is rotated, and
the postrotate SIGHUP makes pymta write the next message's lines to the new
file."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from pathlib import Path

from tests.harness import REPO, PymtaServer, wait_for_file
from tests.test_e2e_reload import send

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"


def test_logrotate_example_rotates_and_pymta_follows(tmp_path: Path) -> None:
    """logrotate -f with etc/logrotate.d/pymta (paths pointed at a temporary
    instance) renames the mail log and signals pymta through its pid file;
    the next delivery is logged in the new maillog, the first one stays in
    maillog.1."""
    maillog = tmp_path / "maillog"
    pidfile = tmp_path / "pymta.pid"
    example = (REPO / "etc" / "logrotate.d" / "pymta").read_text()
    config = (
        example.replace("/var/log/pymta/maillog", str(maillog))
        .replace("/var/lib/pymta/pid/pymta.pid", str(pidfile))
        .replace("create 0644 pymta pymta", "create 0644")
    )
    assert config != example
    (tmp_path / "logrotate.conf").write_text(config)
    with PymtaServer(tmp_path, main_cf_extra=f"maillog_file = {maillog}\n") as server:
        server.start(twistd_options=["--pidfile", str(pidfile)])
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            send(client)
        wait_for_file(maillog, lambda: "to=<alice@example.test>" in maillog.read_text())

        result = subprocess.run(
            [LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        server.wait_for_log(r"reload: done")
        rotated = tmp_path / "maillog.1"
        assert "to=<alice@example.test>" in rotated.read_text()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            send(client, "bob@example.test")
        wait_for_file(maillog, lambda: "to=<bob@example.test>" in maillog.read_text())
        assert "to=<bob@example.test>" not in rotated.read_text()
        server.stop()
