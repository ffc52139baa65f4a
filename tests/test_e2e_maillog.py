"""End to end: a real server's maillog_file is read by Debian's pflogsumm,
a log analyser made for Postfix, which counts exactly what happened."""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.harness import PymtaServer, wait_for_file


@pytest.mark.skipif(shutil.which("pflogsumm") is None, reason="pflogsumm not installed")
def test_pflogsumm_summarises_the_mail_log(tmp_path: Path) -> None:
    """Three messages received and delivered (one to two recipients), one
    recipient rejected: pflogsumm reports 3 received, 4 delivered, 1 rejected."""
    maillog = tmp_path / "maillog"
    with PymtaServer(tmp_path, main_cf_extra=f"maillog_file = {maillog}\n") as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            client.sendmail("a@client.test", ["alice@example.test"], b"Subject: 1\r\n\r\n1\r\n")
            client.sendmail("b@client.test", ["bob@example.test"], b"Subject: 2\r\n\r\n2\r\n")
            client.sendmail(
                "a@client.test",
                ["alice@example.test", "bob@example.test"],
                b"Subject: 3\r\n\r\n3\r\n",
            )
            client.mail("c@client.test")
            code, _ = client.rcpt("nobody@example.test")
            assert code == 550
            client.rset()
        wait_for_file(maillog, lambda: maillog.read_text().count(": removed") == 3)
        server.stop()  # flushes and closes the log
    report = subprocess.run(
        ["pflogsumm", "--problems-first", str(maillog)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout

    def count(label: str) -> int:
        match = re.search(rf"^\s*(\d+)\s+{label}\b", report, re.M)
        assert match, f"no {label!r} line in:\n{report}"
        return int(match.group(1))

    assert count("received") == 3
    assert count("delivered") == 4
    assert count("rejected") == 1
    assert count("senders") == 2
