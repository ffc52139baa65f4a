"""listeners: the listening sockets of master.cf services.

Mirrors the socket half of Postfix's master(8): a TCP listener per
``inet`` line and interface, a UNIX-socket listener per ``unix`` line of a
program that takes one (lmtpd), each a Twisted service that binds in
``privilegedStartService`` (before twistd drops privileges) and logs
``SERVICE listening on HOST:PORT``. A bind that fails is a
:class:`ListenError` naming the master.cf line. A reload hands a listener
a new session factory (:func:`replace_port_factory`); sessions already
accepted keep theirs. What a listener's sessions are is not decided here
(:mod:`pymta.sessions`).

Untrusted input: none (addresses come from master.cf). May write: a UNIX
socket (and its directory). Logs: ``listening on`` lines.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from twisted.application import internet
from twisted.application.service import IService
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from zope.interface import Attribute, implementer

from pymta.config import Config
from pymta.config.master_cf import MasterService

log = Logger()

#: Where Linux says how long a listen queue may be (net.core.somaxconn).
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"

#: The listen queue when somaxconn cannot be read (Linux's default since 5.4).
DEFAULT_BACKLOG = 4096


def listen_backlog(config: Config, somaxconn_path: str = SOMAXCONN_PATH) -> int:
    """The listen queue of an inet service: ``pymta_listen_backlog``, or with
    0 (the default) the kernel's ``net.core.somaxconn``.

    Postfix's master listens with max(the service's process limit,
    ``default_process_limit``), 100 by default, because each of its smtpd
    processes accepts one client at a time; a pymta reactor accepts many per
    wakeup but may be busy for a moment, so connections wait in the kernel's
    queue meanwhile, and the queue must hold a burst (with Twisted's 50,
    0.7 % of a burst of clients were never accepted). The kernel caps any
    value at somaxconn."""
    backlog = config.get_int("pymta_listen_backlog")
    if backlog > 0:
        return backlog
    try:
        with open(somaxconn_path) as f:
            return max(1, int(f.read().strip()))
    except (OSError, ValueError):
        return DEFAULT_BACKLOG


class ListenError(Exception):
    """A listener could not bind its address; the message names the master.cf line."""


class IListener(IService):
    """One master.cf listener as the system keeps it (``MailSystem.ports``):
    a service that accepts sessions for a factory a reload may replace.
    :class:`TCPListener`, :class:`UnixListener` and a worker's
    :class:`pymta.master.adopt.AdoptedListener`."""

    session_factory = Attribute("The factory new connections get now.")

    def replace_factory(factory: Any) -> None:
        """New connections go to ``factory`` (a reload); open sessions keep theirs."""

    def fileno() -> int:
        """The listening socket's descriptor (after start), for the
        workers of pymta.master."""


@implementer(IListener)
class TCPListener(internet.TCPServer):
    """A TCP listener that logs the address it bound (port 0 picks a free one).

    Twisted's port accepts in batches: up to ``numberAccepts`` connections
    per wakeup (100 at first; 20 more each time it takes them all, else as
    many as came), until accept() finds the queue empty. On pymta's
    reactor (``twistd pymta``, the workers) the first connection after a
    quiet spell is taken alone (:class:`pymta.reactor.OneAcceptPort`)."""

    #: ``master.cf, line N: service NAME`` for the error when binding fails.
    where = ""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            cause = getattr(e.socketError, "strerror", None) or str(e.socketError)
            where = f"{self.where}: " if self.where else ""
            raise ListenError(
                f"{where}cannot listen on {e.interface or '*'}:{e.port}: {cause}"
            ) from None
        assert self._port is not None
        host = self._port.getHost()
        log.info(
            "{service} listening on {host}:{port}",
            service=(self.name or "").split("@")[0],
            host=host.host,
            port=host.port,
        )

    @property
    def port(self) -> int:
        """The bound port number (after start)."""
        assert self._port is not None
        return int(self._port.getHost().port)

    def fileno(self) -> int:
        """The listening socket's descriptor (after start), for pymta.master workers."""
        assert self._port is not None
        return int(self._port.fileno())

    @property
    def session_factory(self) -> Any:
        """The factory new connections get now."""
        return self.args[1]

    def replace_factory(self, factory: Any) -> None:
        """Give new connections to ``factory`` (a reload); sessions already
        accepted keep the protocol, and so the factory, they were built by."""
        self.args = (self.args[0], factory, *self.args[2:])
        if self._port is not None:
            replace_port_factory(self._port, factory)


def replace_port_factory(port: Any, factory: Any) -> None:
    """Make a listening port build its next connections with ``factory``.

    Twisted's port asks ``port.factory`` for each accepted connection and
    calls its doStop when the port closes; the new factory is started here
    as the port would have started it. pymta's factories own nothing that
    their sessions still need when they stop, but the old one is left
    running anyway: its sessions may outlive the reload by hours (IMAP IDLE).
    """
    factory.doStart()
    port.factory = factory


def unix_socket_path(svc: MasterService, config: Config) -> str:
    """Where a ``unix`` listener's socket is: as Postfix names its sockets,
    ``$queue_directory/private/NAME`` (``public/`` when the private column
    says n); a name with a ``/`` is a path (relative: to queue_directory)."""
    queue_directory = config.get("queue_directory")
    if "/" in svc.name:
        return os.path.join(queue_directory, svc.name)  # an absolute name stays
    return os.path.join(queue_directory, "private" if svc.private else "public", svc.name)


@implementer(IListener)
class UnixListener(internet.UNIXServer):
    """A UNIX-socket listener (lmtpd): makes its directory, replaces a
    socket a previous run left behind, sets the socket's mode."""

    where = ""

    def __init__(self, path: str, factory: Any, mode: int) -> None:
        super().__init__(path, factory, mode=mode, wantPID=False)
        self.path = path

    def privilegedStartService(self) -> None:
        import stat

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # a stale socket: nobody can listen on it
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            where = f"{self.where}: " if self.where else ""
            raise ListenError(f"{where}cannot listen on {self.path}: {e.socketError}") from None
        log.info(
            "{service} listening on unix socket {path}",
            service=(self.name or "").split("@")[0],
            path=self.path,
        )

    def fileno(self) -> int:
        assert self._port is not None
        return int(self._port.fileno())

    @property
    def session_factory(self) -> Any:
        return self.args[1]

    def replace_factory(self, factory: Any) -> None:
        self.args = (self.args[0], factory, *self.args[2:])
        if self._port is not None:
            replace_port_factory(self._port, factory)
