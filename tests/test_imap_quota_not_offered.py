"""QUOTA commands on an imapd without a quota policy (QUOTA not offered)."""

from __future__ import annotations

from pathlib import Path

from tests.test_imap_harness import World


def test_quota_commands_without_a_policy_answer_no_quota_root(tmp_path: Path) -> None:
    """Without a quota policy the session has no quota: GETQUOTAROOT lists
    no root and GETQUOTA "" is NO, as for a user without limits (they
    answered NO [SERVERBUG] before: the handler used the missing policy)."""
    session = World(tmp_path).connect()
    session.login()
    assert b"QUOTA" not in session.send("c CAPABILITY")
    reply = session.send("a GETQUOTAROOT INBOX")
    assert reply == b'* QUOTAROOT "INBOX"\r\na OK Getquotaroot completed.\r\n', reply
    reply = session.send('b GETQUOTA ""')
    assert reply.startswith(b"b NO Quota root does not exist."), reply
