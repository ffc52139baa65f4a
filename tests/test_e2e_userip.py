"""imapd_max_userip_connections / pop3d_max_userip_connections (Dovecot's
mail_max_userip_connections) against a real twistd pymta with imaplib and
poplib, two reactor processes counting in one table."""

from __future__ import annotations

import imaplib
import poplib
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer

SETTINGS = (
    "pymta_processes = 2\nimapd_max_userip_connections = 2\npop3d_max_userip_connections = 1\n"
    "imapd_plaintext_auth_networks = 127.0.0.0/8\npop3d_plaintext_auth_networks = 127.0.0.0/8\n"
)


def test_imap_and_pop3_user_ip_limits(tmp_path: Path) -> None:
    """With a limit of 2, a third IMAP login of alice from 127.0.0.1 gets
    NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded;
    bob still logs in; after one of alice's sessions logs out she may log
    in again. POP3 with a limit of 1: the second login of alice gets
    -ERR [SYS/TEMP] with the same text (before the mailbox lock is even
    tried)."""
    master = DEFAULT_MASTER_CF + IMAP_SERVICE + POP3_SERVICE
    with PymtaServer(tmp_path, SETTINGS, master_cf=master) as server:
        server.start()
        sessions = []
        for _ in range(2):
            client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
            client.login("alice@example.test", "alice-pw")
            sessions.append(client)
        third = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="user\\+IP exceeded"):
            third.login("alice@example.test", "alice-pw")
        other = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        assert other.login("bob@example.test", "bob-pw")[0] == "OK"
        other.logout()
        sessions.pop().logout()
        # The place is freed when the server sees the session end, which
        # it logs right after.
        server.wait_for_log(r"imap\(alice@example\.test\)<.*: Disconnected")
        again = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        assert again.login("alice@example.test", "alice-pw")[0] == "OK"
        again.logout()
        sessions[0].logout()

        first = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
        first.user("alice@example.test")
        first.pass_("alice-pw")
        second = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
        second.user("alice@example.test")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP\] Maximum number of connections"):
            second.pass_("alice-pw")
        second.quit()
        first.quit()
        server.stop()
