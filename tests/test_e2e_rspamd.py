"""End to end: Debian's rspamd, its milter proxy, as pymta's milter.

Each test starts ``rspamd -f`` with a configuration of its own (no Redis,
no modules beyond rspamd's core; DNS pointed at a loopback port nobody
serves, so nothing leaves the machine): one ``rspamd_proxy`` worker with
``milter = yes`` and ``self_scan = yes`` on a loopback port. rspamd's GTUBE
pattern triggers its reject action, refused at the end of DATA with
rspamd's reply; a rule of the test's own (a Lua file: Subject "spammy"
scores 10) its add-header action, delivered with ``X-Spam: Yes``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PymtaServer, wait_for_file

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
GTUBE_REJECT = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

#: One rule of the test's own: a Subject with "spammy" scores 10, between
#: add_header (6) and reject (15).
RULES = """\
rspamd_config.PYMTA_TEST_SPAMMY = {
  callback = function(task)
    local subject = task:get_subject() or ''
    return subject:find('spammy', 1, true) ~= nil
  end,
  score = 10.0,
  description = 'pymta test rule',
}
"""

pytestmark = pytest.mark.skipif(
    not Path(RSPAMD).exists(), reason="rspamd is not installed (apt-get install rspamd)"
)

CONFIG = """\
options {{
    pidfile = "{root}/rspamd.pid";
    dbdir = "{root}/db";
    gtube_patterns = "all";
    dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }}
}}
lua = "{root}/rules.lua";
logging {{ type = "file"; filename = "{root}/rspamd.log"; level = "info"; }}
actions {{ reject = 15; add_header = 6; greylist = 4; }}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def rspamd(tmp_path: Path) -> Iterator[int]:
    """rspamd's milter proxy on a loopback port (the port is yielded)."""
    root = tmp_path / "rspamd"
    (root / "db").mkdir(parents=True)
    port = _free_port()
    (root / "rspamd.conf").write_text(CONFIG.format(root=root, port=port))
    (root / "rules.lua").write_text(RULES)
    user = pwd.getpwuid(os.getuid()).pw_name
    process = subprocess.Popen(
        [RSPAMD, "-f", "-i", "-c", str(root / "rspamd.conf"), "-u", user, "-g", user],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # rspamd signals readiness to nobody: poll its port with a deadline.
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log = (root / "rspamd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rspamd exited: {log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def message(subject: str, text: bytes) -> bytes:
    return (
        b"From: Joe <joe@outside.test>\r\nTo: bob@example.test\r\nSubject: "
        + subject.encode()
        + b"\r\nDate: Mon, 7 Dec 2026 12:00:00 +0000\r\nMessage-ID: <"
        + subject.encode()
        + b"@outside.test>\r\n\r\n"
        + text
        + b"\r\n"
    )


def test_rspamd_rejects_and_marks_spam(tmp_path: Path, rspamd: int) -> None:
    """rspamd's reject action refuses the message at the end of DATA with
    its own reply (554 5.7.1 Gtube pattern; nothing queued); its add-header
    action (the test's rule) delivers the message with X-Spam: Yes; a clean
    message passes unmarked."""
    server = PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=f"smtpd_milters = inet:127.0.0.1:{rspamd}\n",
    )
    with server.start() as s:
        with smtplib.SMTP(
            "127.0.0.1", s.smtp_port, timeout=60, source_address=("127.0.0.2", 0)
        ) as client:
            client.ehlo("mail.outside.test")
            client.mail("joe@outside.test")
            client.rcpt("bob@example.test")
            code, text = client.data(message("rejected", GTUBE_REJECT))
            assert code // 100 == 5, (code, text)
            assert text == b"5.7.1 Gtube pattern"
            client.sendmail(
                "joe@outside.test", ["bob@example.test"], message("spammy", b"Buy now.")
            )
            client.sendmail(
                "joe@outside.test", ["bob@example.test"], message("clean", b"Hello Bob.")
            )
        s.wait_for_log(r"milter-reject: END-OF-MESSAGE from .*: 5\.7\.1 Gtube pattern")
        box = s.maildir("bob") / "new"
        wait_for_file(box, lambda: len(s.messages("bob")) >= 2)
        stored = {m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0]: m for m in s.messages("bob")}
    assert set(stored) == {b"spammy", b"clean"}
    assert b"\nX-Spam: Yes" in stored[b"spammy"]
    assert b"X-Spam: Yes" not in stored[b"clean"]
