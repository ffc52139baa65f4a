"""anvil: the counters of client events that every reactor process shares.

Mirrors the counting half of Postfix's anvil(8) server (and Dovecot's
anvil, for logged-in sessions per user and address). pymta has no anvil
process: the counts live in a table of the login penalty table's format
(:mod:`pymta.auth.penalty`). With ``pymta_processes`` other than 1 it is
the mapped file ``$data_directory/anvil``, locked with ``fcntl``, so a
client that spreads its connections over processes meets one count; with
one process a table in memory (one per reactor). Users:
:mod:`pymta.smtpd.anvil` (smtpd's rate and connection limits) and
pymta's pop3d/imapd ``*_max_userip_connections``.

:class:`ConnectionCounts` counts what is open now (connections, logged-in
sessions): each open and close renews a lease of
:data:`CONNECTION_LEASE`, after which a count nobody renewed lapses, so a
process that died cannot hold places for ever.

Untrusted input: the keys (client addresses, user names; only hashed into
the file). May write: the table file. Logs: a warning when the file cannot
be opened (the counts are then per process).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from pymta.auth.penalty import IPenaltyTable, MemoryPenaltyTable, SharedPenaltyTable
from pymta.config.config import Config

__all__ = ["ANVIL_FILE", "CONNECTION_LEASE", "ConnectionCounts", "shared_table"]

ANVIL_FILE = "anvil"

#: How long an open connection counts without news from its process: a
#: process that died cannot hold a client's places longer than this.
CONNECTION_LEASE = 3600.0

_files: dict[str, IPenaltyTable] = {}
# One table in memory per reactor (tests give each harness its own clock).
_memory: weakref.WeakKeyDictionary[Any, IPenaltyTable] = weakref.WeakKeyDictionary()


def shared_table(config: Config, clock: Any) -> IPenaltyTable:
    """This process's anvil table: the file ``$data_directory/anvil`` when
    several reactor processes share the clients (``pymta_processes`` other
    than 1), else one table in memory per reactor ``clock``; every factory
    (each service, each reload) of the process uses the same one."""
    if config.get_int("pymta_processes") == 1:
        table = _memory.get(clock)
        if table is None:
            table = _memory[clock] = MemoryPenaltyTable()
        return table
    path = os.path.join(config.get("data_directory"), ANVIL_FILE)
    table = _files.get(path)
    if table is None:
        table = _files[path] = SharedPenaltyTable(path)
    return table


class ConnectionCounts:
    """What one service has open per key (a client address, or user and
    address), in the anvil table: every process, and every factory a
    reload makes, counts in the same place. A record's ``in_progress`` is
    the count, valid until ``busy_until`` (renewed by each open and close,
    :data:`CONNECTION_LEASE`)."""

    def __init__(self, table: IPenaltyTable, service: str, clock: Any) -> None:
        self._table = table
        self._service = service
        self._clock = clock

    def _change(self, address: str, delta: int) -> int:
        key = f"conns:{self._service}:{address}"
        now = self._clock.seconds()
        with self._table.locked():
            record = self._table.get(key)
            if record.busy_until <= now:
                record.in_progress = 0
            record.in_progress = max(record.in_progress + delta, 0)
            record.busy_until = now + CONNECTION_LEASE if record.in_progress else 0.0
            self._table.put(key, record)
        return record.in_progress

    def opened(self, address: str) -> int:
        """One more connection of ``address``: the count with it."""
        return self._change(address, 1)

    def closed(self, address: str) -> None:
        self._change(address, -1)

    def count(self, address: str) -> int:
        return self._change(address, 0)
