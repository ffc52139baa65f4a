"""Policy delegation end to end: a real twistd pymta asks a real policy
server from Debian, postgrey, over a unix socket (check_policy_service
unix:PATH, SMTPD_POLICY_README's protocol), and a real client (smtplib)
sees greylisting: 450 4.7.1 (DEFER_IF_PERMIT) first, then 250 once
postgrey's delay has passed. A policy server that is not there gives
smtpd_policy_service_default_action (451 4.3.5), never a pass.
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PymtaServer, wait_for_file

POSTGREY = shutil.which("postgrey") or "/usr/sbin/postgrey"


@pytest.fixture
def postgrey(tmp_path: Path) -> Iterator[Path]:
    if not os.path.exists(POSTGREY):
        pytest.skip("postgrey not installed (tools/install-test-deps)")
    home = tmp_path / "postgrey"
    (home / "db").mkdir(parents=True)
    socket_path = home / "policy.sock"
    user = pwd.getpwuid(os.getuid()).pw_name
    process = subprocess.Popen(
        [POSTGREY, f"--unix={socket_path}", f"--dbdir={home / 'db'}", "--delay=1",
         f"--user={user}", f"--pidfile={home / 'pid'}", "--auto-whitelist-clients=0",
         "--whitelist-clients=/dev/null", "--whitelist-recipients=/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_file(socket_path, socket_path.exists)
        yield socket_path
    finally:
        process.terminate()
        process.wait(10)


def _rcpt(port: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("sender@remote.test")
        reply = client.rcpt("alice@example.test")
        client.rset()
        return reply


def test_postgrey_greylists_then_accepts_after_its_delay(tmp_path: Path, postgrey: Path) -> None:
    """First try: postgrey answers DEFER_IF_PERMIT and the client gets 450
    4.7.1 with postgrey's text; a retry after the 1 s delay is accepted."""
    with PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=f"smtpd_recipient_restrictions = check_policy_service unix:{postgrey}\n",
    ) as server:
        server.start()
        code, text = _rcpt(server.smtp_port)
        assert code == 450, text
        assert text.startswith(b"4.7.1 <alice@example.test>: Recipient address rejected: Greylist")
        # Postgrey's delay is 1 s: retry until it passes (no event to wait on).
        deadline = time.monotonic() + 20
        while code == 450 and time.monotonic() < deadline:
            time.sleep(0.25)
            code, text = _rcpt(server.smtp_port)
        assert code == 250, text


def test_missing_policy_server_gives_default_action(tmp_path: Path) -> None:
    """No server at the socket: after the tries, 451 4.3.5 Server configuration
    problem (smtpd_policy_service_default_action), never acceptance."""
    missing = tmp_path / "nobody.sock"
    with PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=f"smtpd_recipient_restrictions = check_policy_service unix:{missing}\n",
    ) as server:
        server.start()
        code, text = _rcpt(server.smtp_port)
        assert (code, text) == (
            451,
            b"4.3.5 <alice@example.test>: Recipient address rejected: Server configuration problem",
        )
