"""Unauthenticated connections per client, for the pre-login caps of pop3d and imapd.

pymta-only, after Dovecot's per-IP connection limits (its
``mail_max_userip_connections`` counts logged-in sessions; this counts the
ones that have not logged in yet, where a slowloris client sits). One
:class:`PreauthConnections` per listener factory counts the connections of
each client network (an IPv4 address, an IPv6 /64, as
:func:`pymta.auth.throttle.client_network` makes them) from the greeting
until the session logs in or ends. A connection beyond the limit
(``imapd_max_login_ip_connections``, ``pop3d_max_login_ip_connections``)
gets ``* BYE`` / ``-ERR [SYS/TEMP]`` instead of a greeting and is closed;
logged-in sessions do not count, so a user's mail client with several
sessions is never refused once they are in.

The count is per reactor process: with ``pymta_processes`` N a client
could hold up to N times the limit (the kernel spreads its connections).

Untrusted input: the client address (only a key). Writes nothing. Logs
nothing (the protocol logs the refused connection).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from pymta.auth.throttle import client_network


class IPreauthCounted(Interface):
    """A listener's factory that counts its sessions before login (pop3d's,
    imapd's): a reload hands the new factory the old one's counts
    (:func:`pymta.master.reload.carry_counters`)."""

    preauth = Attribute("Its PreauthConnections.")


class PreauthConnections:
    """How many connections each client network has open before login."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)  # 0: no limit
        self._counts: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count one more connection of address; False (not counted) when
        the client already has ``limit`` of them."""
        key = client_network(address)
        count = self._counts.get(key, 0)
        if self.limit and count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, address: str) -> None:
        """One connection of address logged in or ended."""
        key = client_network(address)
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, address: str) -> int:
        return self._counts.get(client_network(address), 0)
