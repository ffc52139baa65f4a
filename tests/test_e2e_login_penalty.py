"""End to end: login penalties on a real ``twistd pymta`` with two reactor
processes, POP3 and IMAP, and short delays configured. Failures over POP3
make a later correct IMAP password wait the penalty before it is answered
(whichever process serves it: they share ``$data_directory/auth_penalty``),
so the answer time does not tell a right password from a wrong one."""

from __future__ import annotations

import imaplib
import poplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer

FAILURE_DELAY = 0.2
MAX_DELAY = 0.8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with PymtaServer(
        tmp_path,
        main_cf_extra=(
            "pymta_processes = 2\n"
            f"pymta_auth_failure_delay = {int(FAILURE_DELAY * 1000)}ms\n"
            f"pymta_auth_failure_max_delay = {int(MAX_DELAY * 1000)}ms\n"
        ),
        master_cf=DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE,
    ) as instance:
        instance.start()
        instance.wait_for_log(r"worker 1 running")
        yield instance
        instance.stop()


def _pop3_fails(server: PymtaServer) -> None:
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    client.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_("guess")
    client.quit()


def test_correct_password_after_failures_is_still_delayed(server: PymtaServer) -> None:
    """After six failed POP3 logins from 127.0.0.1, each of three correct IMAP
    logins on fresh connections is answered no sooner than
    pymta_auth_failure_max_delay; the failures themselves were answered after
    the failure delay. The server checks only after the penalty."""
    for _ in range(6):
        started = time.monotonic()
        _pop3_fails(server)
        assert time.monotonic() - started >= FAILURE_DELAY
    for _ in range(3):
        client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        started = time.monotonic()
        typ, _ = client.login("alice@example.test", "alice-pw")
        waited = time.monotonic() - started
        assert typ == "OK"
        assert waited >= MAX_DELAY
        client.logout()
    assert (server.root / "lib" / "auth_penalty").stat().st_size > 0  # the shared table
