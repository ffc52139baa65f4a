"""userip: logged-in sessions per user and client address, for pop3d and imapd.

Mirrors Dovecot's ``mail_max_userip_connections`` (default 10, counted by
Dovecot's anvil per protocol): a user logged in from one address that many
times is refused one more login there until a session ends, so a mail
client gone wild (or a stolen password used from one place) cannot hold
every session. pymta's parameters are ``imapd_max_userip_connections`` and
``pop3d_max_userip_connections`` (0: no limit). The refused login gets
Dovecot's text, ``Maximum number of connections from user+IP exceeded
(imapd_max_userip_connections=10)``, after ``NO [UNAVAILABLE]`` (IMAP) or
``-ERR [SYS/TEMP]`` (POP3); the password was right, so it is not counted
as a failed login.

The count lives in the anvil table (:mod:`pymta.anvil`), shared by every
reactor process when ``pymta_processes`` is not 1. Untrusted input: the
user name (already authenticated) and the client address, only hashed
into a key. Writes: the anvil table. Logs nothing (the protocols log the
refused login).
"""

from __future__ import annotations

from typing import Any

from pymta.anvil import ConnectionCounts, shared_table
from pymta.config.config import Config

__all__ = ["UserIPLimit"]


class UserIPLimit:
    """The limit of one protocol (``imapd`` or ``pop3d``)."""

    def __init__(self, counts: ConnectionCounts, limit: int, parameter: str) -> None:
        self._counts = counts
        self.limit = limit
        self.refusal = (
            f"Maximum number of connections from user+IP exceeded ({parameter}={limit})"
        ).encode("ascii")

    @classmethod
    def from_config(cls, config: Config, prefix: str, clock: Any) -> UserIPLimit | None:
        """None when ``<prefix>_max_userip_connections`` is 0."""
        parameter = f"{prefix}_max_userip_connections"
        limit = config.get_int(parameter)
        if limit <= 0:
            return None
        counts = ConnectionCounts(shared_table(config, clock), f"{prefix}-userip", clock)
        return cls(counts, limit, parameter)

    def admit(self, user: str, address: str) -> str:
        """Count one more session of user from address: its key (for
        :meth:`release`), or "" (not counted) when that is one too many."""
        key = f"{user.lower()}|{address}"
        if self._counts.opened(key) > self.limit:
            self._counts.closed(key)
            return ""
        return key

    def release(self, key: str) -> None:
        self._counts.closed(key)
