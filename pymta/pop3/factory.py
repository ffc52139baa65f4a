"""The pop3d listener's factory: one POP3Server per connection.

Mirrors Dovecot's pop3-login + pop3 pair (here one protocol object). Built
by pymta.service for each master.cf ``pop3d`` service::

    checker = pymta.auth.passdb.checker_from_config(config, reactor)
    portal = pymta.auth.passdb.portal_from_config(config, store, reactor, lookup, checker)
    tls = ServerTLS.from_config(config, "pop3d")
    trusted = NetworkList(config.get_list("pop3d_plaintext_auth_networks"))
    factory = POP3ServerFactory(config, portal, tls, reactor, trusted)

Parameters are read once here (pymta.pop3.settings). The sessions reach
the mail store through its asynchronous API, which runs the slow calls
where the store decides (pymta.mailstore.asyncstore). Untrusted input:
none (connections are handled by the protocol). Logs: nothing itself.
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

from pymta.config.config import Config
from pymta.netmatch import NetworkList
from pymta.pop3 import log as pop3log
from pymta.pop3.protocol import POP3Server
from pymta.pop3.settings import POP3Settings
from pymta.preauth import IPreauthCounted, PreauthConnections
from pymta.userip import UserIPLimit


@implementer(IPreauthCounted)
class POP3ServerFactory(ServerFactory):
    """Makes POP3Server protocols sharing one portal, TLS context and clock."""

    def __init__(
        self,
        config: Config,
        portal: Portal,
        tls: Any | None,
        clock: IReactorTime,
        trusted_networks: NetworkList | None = None,
        *,
        settings: POP3Settings | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        pid: int | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.config = config
        self.portal = portal
        self.tls = tls
        self.clock = clock
        if trusted_networks is None:
            trusted_networks = NetworkList(
                config.get_list("pop3d_plaintext_auth_networks"),
                "pop3d_plaintext_auth_networks",
            )
        self.trusted_networks = trusted_networks
        self.settings = settings if settings is not None else POP3Settings.from_config(config)
        self.random_bytes = random_bytes
        self.pid = os.getpid() if pid is None else pid
        self.logger = logger if logger is not None else pop3log.log
        self.preauth = PreauthConnections(self.settings.max_login_ip_connections)
        self.userip = UserIPLimit.from_config(config, "pop3d", clock)

    def buildProtocol(self, addr: IAddress | None) -> POP3Server:
        protocol = POP3Server(
            self.settings,
            self.portal,
            self.clock,
            tls=self.tls,
            trusted=self.trusted_networks.contains,
            random_bytes=self.random_bytes,
            pid=self.pid,
            logger=self.logger,
            preauth=self.preauth,
        )
        protocol.factory = self
        protocol.userip = self.userip
        return protocol
