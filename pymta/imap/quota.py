"""quota: what imapd knows of its users' quotas (RFC 9208).

The policy (:mod:`pymta.quota.policy`) and each user's rule, shared by the
sessions of one imapd listener: the QUOTA commands (pymta.imap.
quota_commands) answer with it, and a write (APPEND, COPY, MULTIAPPEND,
CATENATE) runs its ``guard`` in the worker thread before storing.

Untrusted input: none (user names from login). Writes: nothing. Logs:
nothing.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from pymta.quota.policy import QuotaPolicy
from pymta.quota.rules import QuotaLimit


class IMAPQuota:
    """What imapd needs to answer for quotas: the policy and the users' rules."""

    def __init__(self, policy: QuotaPolicy, rule_for: Callable[[str], str | None]) -> None:
        self.policy = policy
        self.rule_for = rule_for

    def limit(self, user: str) -> QuotaLimit:
        return self.policy.limit(self.rule_for(user))

    def guard(self, user: str, maildir: str, size: int) -> Callable[[], None] | None:
        """A check to run in the APPEND's worker thread: raises
        OSError(EDQUOT) when ``size`` more bytes would not fit (the session
        answers that with ``NO [OVERQUOTA]``); None without limits."""
        limit = self.limit(user)
        if limit.unlimited:
            return None
        policy = self.policy

        def check() -> None:
            if not policy.usage(maildir, limit).fits(size):
                raise OSError(errno.EDQUOT, "Quota exceeded (mailbox for user is full)")

        return check
