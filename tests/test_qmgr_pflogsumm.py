"""qmgr's log lines, written as syslog by MaillogObserver, are summarised by
Debian's pflogsumm exactly as Postfix's own would be."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from pymta.maillog import MaillogObserver, maillog
from pymta.qmgr.log import format_delay
from tests.test_qmgr_manager import FakeAgent, Rig


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0"),
        (0.004, "0"),
        (0.012, "0.01"),
        (0.12, "0.12"),
        (0.999, "1"),
        (1.25, "1.2"),
        (5.12, "5.1"),
        (9.6, "10"),
        (12.3, "12"),
        (3005.4, "3005"),
    ],
)
def test_delay_format_is_postfix_s(seconds: float, text: str) -> None:
    """Delays have two significant digits, 10 ms resolution, whole seconds from 10 s up."""
    assert format_delay(seconds) == text


def _grand_total(report: str, label: str) -> int:
    match = re.search(rf"^\s*(\d+)\s+{label}\b", report, re.MULTILINE)
    assert match, f"no {label!r} in pflogsumm output"
    return int(match.group(1))


@pytest.mark.skipif(shutil.which("pflogsumm") is None, reason="pflogsumm not installed")
def test_pflogsumm_counts_sent_deferred_bounced(tmp_path: Path) -> None:
    """One message each delivered, bounced and deferred (plus the smtpd and
    cleanup lines that precede them) count as 3 received, 1 delivered,
    1 deferred and 1 bounced in pflogsumm's grand totals."""
    stream = io.StringIO()
    observer: Any = MaillogObserver(stream, "mx.example.org", now=lambda: 1_800_000_000.0, pid=42)
    rig = Rig(
        agents={
            "virtual": FakeAgent("virtual"),
            "error": FakeAgent("error", "5.1.1"),
            "local": FakeAgent("local", "4.2.0"),
        }
    )
    globalLogPublisher.addObserver(observer)
    try:
        rig.qmgr.start()
        for rcpt in ("bob@virt.example", "nobody@unknown.example", "x@local.example"):
            qid, envelope = rig.enqueue(rcpt)
            maillog("smtpd", f"{qid}: client=client.example[192.0.2.7]")
            maillog("cleanup", f"{qid}: message-id=<{qid}@example.org>")
            rig.qmgr.notify_new(qid, envelope)
    finally:
        globalLogPublisher.removeObserver(observer)
    log = tmp_path / "maillog"
    log.write_text(stream.getvalue())
    report = subprocess.run(
        ["pflogsumm", str(log)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert _grand_total(report, "received") == 3
    assert _grand_total(report, "delivered") == 1
    assert _grand_total(report, "deferred") == 1
    assert _grand_total(report, "bounced") == 1
    assert _grand_total(report, "senders") == 1
