"""anvil: client event rates, counted across every reactor process.

Mirrors Postfix's anvil(8) rate counters and the smtpd checks that use
them. Each limit counts one kind of event per client address and smtpd
service within ``anvil_rate_time_unit`` (60s): the window starts with the
first event and a new one starts with the first event after it ends, as
anvil's. An event past the limit is refused with Postfix's reply and
logged with Postfix's warning (``warning: Message delivery request rate
limit exceeded: 31 from unknown[192.0.2.1] for service smtp``; the
service is the master.cf service name, so smtp and submission count apart):

==========================================  ===============================================
``smtpd_client_connection_rate_limit``      at connect: ``421 4.7.0 HOST Error: too many
                                            connections from ADDR``, then the session ends
``smtpd_client_message_rate_limit``         MAIL: ``450 4.7.1 Error: too much mail from ADDR``
``smtpd_client_recipient_rate_limit``       RCPT: ``450 4.7.1 Error: too many recipients
                                            from ADDR``
``smtpd_client_new_tls_session_rate_limit`` STARTTLS: ``454 4.7.0 Error: too many new TLS
                                            sessions from ADDR``
``smtpd_client_auth_rate_limit``            AUTH: ``450 4.7.1 Error: too many AUTH commands
                                            from ADDR``
==========================================  ===============================================

0 turns a limit off (Postfix's default for all five); clients in
``smtpd_client_event_limit_exceptions`` (default ``$mynetworks``) are never
limited. An event refused still counts, as in Postfix (a client that keeps
hammering stays refused until it pauses for a time unit).

``smtpd_client_connection_count_limit`` (50) bounds the connections one
client has open at a time (``421 4.7.0 HOST Error: too many connections
from ADDR``, ``warning: Connection concurrency limit exceeded``);
:class:`pymta.anvil.ConnectionCounts` keeps that count.

The counters live in the anvil table (:mod:`pymta.anvil`): a file shared
by every reactor process when ``pymta_processes`` is not 1, so a client
spreading its connections over processes meets one count; in memory with
one process. A rate record's ``failures`` field holds the count and
``last_failure`` the start of its window. A counter costs a few
microseconds on the reactor thread (no disk I/O: the pages stay in the
page cache and are never synced).

Untrusted input: the client address (only hashed into a key). May
write: the table file. Logs: nothing itself (the protocol logs refusals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymta.anvil import ConnectionCounts, shared_table
from pymta.auth.penalty import IPenaltyTable
from pymta.config.config import Config
from pymta.netmatch import NetworkList

__all__ = ["LIMITS", "ClientRates", "Limit"]


@dataclass(frozen=True)
class Limit:
    """One rate limit: its parameter, Postfix's log text and reply."""

    parameter: str
    log: str
    reply: str  # str.format with host (myhostname) and addr


LIMITS = {
    "connect": Limit(
        "smtpd_client_connection_rate_limit",
        "Connection rate limit exceeded",
        "421 4.7.0 {host} Error: too many connections from {addr}",
    ),
    "mail": Limit(
        "smtpd_client_message_rate_limit",
        "Message delivery request rate limit exceeded",
        "450 4.7.1 Error: too much mail from {addr}",
    ),
    "rcpt": Limit(
        "smtpd_client_recipient_rate_limit",
        "Recipient address rate limit exceeded",
        "450 4.7.1 Error: too many recipients from {addr}",
    ),
    "newtls": Limit(
        "smtpd_client_new_tls_session_rate_limit",
        "New TLS session rate limit exceeded",
        "454 4.7.0 Error: too many new TLS sessions from {addr}",
    ),
    "auth": Limit(
        "smtpd_client_auth_rate_limit",
        "AUTH command rate limit exceeded",
        "450 4.7.1 Error: too many AUTH commands from {addr}",
    ),
}


class ClientRates:
    """The rate limits of one smtpd service (after its master.cf overrides)."""

    def __init__(
        self,
        config: Config,
        service: str,
        clock: Any,
        table: IPenaltyTable | None = None,
        exceptions: NetworkList | None = None,
    ) -> None:
        self.limits = {kind: config.get_int(limit.parameter) for kind, limit in LIMITS.items()}
        self.time_unit = config.get_time("anvil_rate_time_unit")
        self.service = service
        self._clock = clock
        self._exceptions = exceptions or NetworkList(
            config.get_list("smtpd_client_event_limit_exceptions"),
            "smtpd_client_event_limit_exceptions",
        )
        self._table = table
        if table is None and any(limit > 0 for limit in self.limits.values()):
            self._table = shared_table(config, clock)
        self.connection_limit = config.get_int("smtpd_client_connection_count_limit")
        #: Open connections per client; None when there is no limit.
        self.connections: ConnectionCounts | None = None
        if self.connection_limit > 0:
            self.connections = ConnectionCounts(
                table or shared_table(config, clock), service, clock
            )

    def exceeded(self, kind: str, address: str) -> int:
        """Count one ``kind`` event of ``address``; its count in the window
        when that is past the limit, else 0 (also for an unlimited kind or
        an excepted client, which are not counted)."""
        limit = self.limits[kind]
        if limit <= 0 or self._table is None or self._exceptions.contains(address):
            return 0
        key = f"{kind}:{self.service}:{address}"
        now = self._clock.seconds()
        table = self._table
        with table.locked():
            record = table.get(key)
            if record.failures == 0 or now - record.last_failure >= self.time_unit:
                record.failures = 0
                record.last_failure = now
            record.failures += 1
            table.put(key, record)
        return record.failures if record.failures > limit else 0
