"""The imapd listener's factory: one IMAPServer per connection.

Mirrors Dovecot's imap-login + imap pair (here one protocol object). Built
by :func:`pymta.imap.service.make_imap_factory` for each master.cf
``imapd`` service. Parameters are read once (pymta.imap.settings); one
:class:`~pymta.imap.scan.ScanGate` and scan thread pool bound the body
scans (pymta.imap.scan). Untrusted input: none. Logs:
nothing itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from pymta.imap import log as imaplog
from pymta.imap.notify import NotifyHub
from pymta.imap.protocol import IMAPServer
from pymta.imap.scan import ScanGate, scan_runner
from pymta.imap.settings import IMAPSettings
from pymta.mailstore.prefetch import ThreadRunner, reactor_thread_runner
from pymta.netmatch import NetworkList
from pymta.preauth import IPreauthCounted, PreauthConnections
from pymta.userip import UserIPLimit


@implementer(IPreauthCounted)
class IMAPServerFactory(ServerFactory):
    """Makes IMAPServer protocols sharing one portal, TLS context and clock."""

    def __init__(
        self,
        settings: IMAPSettings,
        portal: Portal,
        tls: Any | None,
        clock: IReactorTime,
        trusted_networks: NetworkList | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        pid: int | None = None,
        logger: Logger | None = None,
        run_in_thread: ThreadRunner | None = None,
        scan_in_thread: ThreadRunner | None = None,
        scan_gate: ScanGate | None = None,
    ) -> None:
        self.settings = settings
        self.portal = portal
        self.tls = tls
        self.clock = clock
        self.trusted_networks = trusted_networks
        self.preauth = PreauthConnections(settings.max_login_ip_connections)
        #: imapd_max_userip_connections (set by make_imap_factory), or None.
        self.userip: UserIPLimit | None = None
        self.random_bytes = random_bytes
        self.pid = os.getpid() if pid is None else pid
        self.logger = logger if logger is not None else imaplog.log
        self.run_in_thread = (
            run_in_thread if run_in_thread is not None else reactor_thread_runner(clock)
        )
        self.scan_in_thread = scan_in_thread if scan_in_thread is not None else scan_runner(clock)
        #: Body scans per user, shared by the sessions (pymta.imap.scan).
        self.scan_gate = scan_gate if scan_gate is not None else ScanGate()
        #: QUOTA (RFC 9208): a pymta.imap.quota_commands.IMAPQuota, or None.
        self.quota: Any = None
        #: NOTIFY (RFC 5465): sessions of a user hear of mailbox list changes.
        self.notify_hub = NotifyHub()

    def _trusted(self, ip: str) -> bool:
        return self.trusted_networks is not None and self.trusted_networks.contains(ip)

    def buildProtocol(self, addr: IAddress | None) -> IMAPServer:
        protocol = IMAPServer(
            self.settings,
            self.portal,
            self.clock,
            tls=self.tls,
            trusted=self._trusted,
            random_bytes=self.random_bytes,
            pid=self.pid,
            logger=self.logger,
            run_in_thread=self.run_in_thread,
            scan_in_thread=self.scan_in_thread,
            scan_gate=self.scan_gate,
            preauth=self.preauth,
        )
        protocol.factory = self
        protocol.userip = self.userip
        protocol.quota = self.quota
        protocol.notify_hub = self.notify_hub
        return protocol
