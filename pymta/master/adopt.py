"""adopt: a worker's listener on a socket the master bound and handed down.

pymta-only (Postfix's daemons inherit master's sockets the same way). The
worker finds each listening socket at the descriptor named by its
``--listen NAME=FD`` argument; :class:`AdoptedListener` gives it to
``reactor.adoptStreamPort`` with its address family (read from the socket),
so that the worker accepts connections on the very socket the master
accepts on. The reactor duplicates the descriptor; the inherited one is
closed.

Untrusted input: none. May write: nothing. Logs: the adopted address (not
"listening on", which is the master's line).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from zope.interface import implementer

from pymta.listeners import IListener, replace_port_factory

log = Logger(namespace="pymta.master")


def socket_family(fd: int) -> int:
    """The address family of the socket at fd (AF_INET or AF_INET6)."""
    sock = socket.socket(fileno=fd)
    try:
        return int(sock.family)
    finally:
        sock.detach()


@implementer(IListener)
class AdoptedListener(service.Service):
    """Accepts connections for ``factory`` on the inherited listening socket fd."""

    def __init__(self, fd: int, factory: Any, reactor: Any) -> None:
        self._fd = fd
        self._factory = factory
        self._reactor = reactor
        self._port: IListeningPort | None = None

    @property
    def inherited_fd(self) -> int:
        """The descriptor it was handed (closed once the reactor holds
        its duplicate)."""
        return self._fd

    def fileno(self) -> int:
        """The reactor's duplicate of the socket (after start)."""
        port: Any = self._port
        assert port is not None
        return int(port.fileno())

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._port = self._reactor.adoptStreamPort(self._fd, socket_family(self._fd), self._factory)
        os.close(self._fd)  # the reactor holds its own duplicate
        host = self._port.getHost()
        log.info(
            "{service} adopted the socket of {host}:{port}",
            service=(self.name or "").split("@")[0],
            host=getattr(host, "host", ""),
            port=getattr(host, "port", ""),
        )

    def startService(self) -> None:
        if self._port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is None:
            return None
        port, self._port = self._port, None
        stopped: Any = port.stopListening()
        return maybeDeferred(lambda: stopped)

    @property
    def session_factory(self) -> Any:
        """The factory new connections get now."""
        return self._factory

    def replace_factory(self, factory: Any) -> None:
        """New connections go to ``factory`` (a reload); open sessions keep theirs."""
        self._factory = factory
        if self._port is not None:
            replace_port_factory(self._port, factory)

    @property
    def port(self) -> int:
        """The port number of the adopted socket."""
        assert self._port is not None
        host: Any = self._port.getHost()
        return int(host.port)
