"""sessions: what each master.cf listener line serves, and its sockets.

The session half of Postfix's master(8): one table, :data:`SESSION_FACTORIES`,
maps a master.cf command (smtpd, pop3d, imapd, lmtpd, managesieved) to the
function that makes the protocol factory of its sessions from the
configuration with the line's ``-o`` overrides and the shared
:class:`SessionParts` (cleanup, the resolver, the mail store...). A new
kind of listener is one function and one entry there. :func:`add_listeners`
opens every listener line of master.cf on a system: a TCP listener per
``inet`` line and interface, a UNIX socket for a ``unix`` line of a command
in :data:`UNIX_LISTENER_COMMANDS`; a worker process of :mod:`pymta.master`
adopts the master's sockets instead. A reload (:mod:`pymta.master.reload`)
makes new factories with :func:`session_factory` and gives them to the
listeners it keeps.

Untrusted input: none (the administrator's files). May write: what a
factory writes at start (a self-signed certificate when so configured).
Logs: the listeners' ``listening on`` lines (:mod:`pymta.listeners`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pymta.cleanup.interface import ICleanup
from pymta.config import Config, ConfigError
from pymta.config.master_cf import MasterService
from pymta.listeners import (
    IListener,
    TCPListener,
    UnixListener,
    listen_backlog,
    unix_socket_path,
)
from pymta.rewrite.switch import ResolverSwitch
from pymta.sync import ISyncBarrier

if TYPE_CHECKING:
    # Made only when a listener needs them (imported then).
    from pymta.dns.interface import IDNSResolver
    from pymta.mailstore.interface import IMailStore
    from pymta.metrics import MetricsService
    from pymta.queue.space import QueueSpace

#: How long smtpd waits for one DNS answer (client name, DNSBL, domain
#: checks) before treating it as a temporary failure: the libc resolver's
#: default that Postfix lives with (RES_TIMEOUT 5 s, 2 tries).
SMTPD_DNS_DEADLINE = 10.0


@dataclass
class SessionParts:
    """What the listeners' session factories are built from; a reload
    replaces cleanup and resolver for the sessions that follow it."""

    cleanup: ICleanup
    resolver: ResolverSwitch  # the one the queue manager shares
    queue_space: QueueSpace | None  # None in check mode
    mailstore: Callable[[], IMailStore]
    metrics: MetricsService | None
    reactor: Any
    #: The DNS resolver of smtpd's restrictions (made on first use, shared).
    dns: Callable[[], IDNSResolver]
    #: The mailbox writes' group-commit barrier (lmtpd delivers with the
    #: delivery agents' barrier, so its 250s share their syncs).
    delivery_sync: ISyncBarrier


class ListenerHost(Protocol):
    """What :func:`add_listener` needs of the system it adds a listener to
    (:class:`pymta.assemble.MailSystem`, a Twisted MultiService)."""

    config: Config
    sessions: SessionParts | None
    #: {listener key: its listening service}
    ports: dict[str, IListener]
    #: {listener key: its master.cf line}, what a reload compares.
    listener_services: dict[str, MasterService]
    services: list[Any]
    namedServices: dict[str, Any]


#: A function making the protocol factory of one listener line's sessions
#: from the line, the configuration with its ``-o`` overrides, and the
#: shared parts.
SessionFactoryMaker = Callable[[MasterService, Config, SessionParts], Any]


def _smtpd(svc: MasterService, svc_config: Config, parts: SessionParts) -> Any:
    from pymta.smtpd import SMTPServerFactory
    from pymta.tls import implicit_tls, listener_tls

    tls = listener_tls(svc_config, "smtpd")
    factory: Any = SMTPServerFactory(
        svc_config,
        parts.cleanup,
        parts.resolver,
        functools.partial(_open_table, config=svc_config),
        tls,
        parts.reactor,
        service_name=svc.program,
        master_service=svc.name,
        queue_space=parts.queue_space,
        dns=parts.dns(),
        reactor=parts.reactor,
    )
    if svc_config.get_bool("smtpd_tls_wrappermode"):
        factory = implicit_tls(factory, tls, "smtpd")
    return factory


def _imapd(svc: MasterService, svc_config: Config, parts: SessionParts) -> Any:
    from pymta.imap.service import make_imap_factory

    return make_imap_factory(svc_config, parts.reactor, store=parts.mailstore())


def _pop3d(svc: MasterService, svc_config: Config, parts: SessionParts) -> Any:
    from pymta.pop3.service import make_pop3_factory

    return make_pop3_factory(svc_config, parts.reactor, store=parts.mailstore())


def _managesieved(svc: MasterService, svc_config: Config, parts: SessionParts) -> Any:
    from pymta.managesieve.factory import make_managesieve_factory

    return make_managesieve_factory(svc_config, parts.reactor)


def _lmtpd(svc: MasterService, svc_config: Config, parts: SessionParts) -> Any:
    from pymta.lmtpd.factory import make_lmtp_factory

    return make_lmtp_factory(svc_config, parts.reactor, parts.delivery_sync, parts.cleanup)


#: master.cf command -> the maker of its sessions' factory.
SESSION_FACTORIES: dict[str, SessionFactoryMaker] = {
    "smtpd": _smtpd,
    "pop3d": _pop3d,
    "imapd": _imapd,
    "lmtpd": _lmtpd,
    "managesieved": _managesieved,
}

#: master.cf commands whose part pymta builds as a listener.
LISTENER_COMMANDS = frozenset(SESSION_FACTORIES) | {"postscreen"}

#: master.cf commands that may also listen on a UNIX socket (``unix`` lines).
UNIX_LISTENER_COMMANDS = frozenset({"lmtpd"})


def session_factory(svc: MasterService, config: Config, parts: SessionParts) -> Any:
    """The protocol factory of one master.cf listener under ``config`` with
    the service's ``-o`` overrides; TLS contexts are made here, from the
    certificate files as they are now."""
    if svc.program == "postscreen":
        # In front of the smtpd of its pass service (pymta.postscreen.factory),
        # whose sessions are the ones counted below.
        from pymta.postscreen import postscreen_factory

        return postscreen_factory(svc, config, parts, session_factory)
    factory = SESSION_FACTORIES[svc.program](svc, svc.service_config(config), parts)
    if parts.metrics is not None:
        factory = parts.metrics.count_sessions(factory, svc.program)
    return factory


def _listen_interfaces(config: Config, host: str | None) -> list[str]:
    if host:
        return [host]
    interfaces = config.get_list("inet_interfaces")
    if not interfaces or "all" in interfaces:
        return [""]
    if "loopback-only" in interfaces:
        return ["127.0.0.1"]
    return interfaces


def listener_keys(svc: MasterService, config: Config) -> list[tuple[str, str, int]]:
    """(key, interface, port) of each socket a listener line opens; the key
    names it between the master and its workers and across reloads."""
    svc_config = svc.service_config(config)
    host, port = svc.listen_address()
    return [
        (f"{svc.name}:{interface}:{port}", interface, port)
        for interface in _listen_interfaces(svc_config, host)
    ]


def add_listeners(
    system: ListenerHost,
    master: list[MasterService],
    config: Config,
    parts: SessionParts,
    worker_fds: Mapping[str, int] | None,
) -> None:
    """Open every listener line of ``master`` on ``system`` (not started yet)."""
    for svc in master:
        if svc.type == "unix" and svc.program in UNIX_LISTENER_COMMANDS:
            factory = session_factory(svc, config, parts)
            path = unix_socket_path(svc, config)
            add_unix_listener(system, f"{svc.name}:unix:{path}", svc, path, factory, worker_fds)
            continue
        if svc.type != "inet" or svc.program not in LISTENER_COMMANDS:
            continue
        factory = session_factory(svc, config, parts)
        for key, interface, port in listener_keys(svc, config):
            add_listener(system, key, svc, interface, port, factory, worker_fds, parts.reactor)


def _adopted(key: str, worker_fds: Mapping[str, int], factory: Any, reactor: Any) -> Any:
    from pymta.master.adopt import AdoptedListener

    if key not in worker_fds:
        raise ConfigError(f"master.cf service {key}: no socket from the master")
    return AdoptedListener(worker_fds[key], factory, reactor)


def add_listener(
    system: ListenerHost,
    key: str,
    svc: MasterService,
    interface: str,
    port: int,
    factory: Any,
    worker_fds: Mapping[str, int] | None,
    reactor: Any,
) -> Any:
    """Add the listener ``key`` to the system (started at once when the
    system runs: a reload); a worker adopts the master's socket instead."""
    server: Any
    if worker_fds is not None:
        server = _adopted(key, worker_fds, factory, reactor)
    else:
        backlog = listen_backlog(svc.service_config(system.config))
        server = TCPListener(port, factory, interface=interface, backlog=backlog)
        server.where = f"{svc.filename}, line {svc.lineno}: service {svc.name}"
    server.setName(f"{svc.name}@{interface or '*'}:{port}")
    try:
        server.setServiceParent(system)  # started at once when the system runs
    except Exception:
        if server in system.services:  # bound nothing: leave no trace
            system.services.remove(server)
            system.namedServices.pop(server.name, None)
        raise
    system.ports[key] = server
    system.listener_services[key] = svc
    return server


def add_unix_listener(
    system: ListenerHost,
    key: str,
    svc: MasterService,
    path: str,
    factory: Any,
    worker_fds: Mapping[str, int] | None,
) -> Any:
    """Add the UNIX-socket listener ``key`` (a worker adopts the master's socket)."""
    server: Any
    if worker_fds is not None:
        assert system.sessions is not None
        server = _adopted(key, worker_fds, factory, system.sessions.reactor)
    else:
        text = svc.service_config(system.config).get("pymta_lmtpd_socket_mode").strip()
        try:
            mode = int(text, 8)
        except ValueError:
            raise ConfigError(
                f"bad value {text!r}: expected an octal mode such as 0660",
                parameter="pymta_lmtpd_socket_mode",
            ) from None
        server = UnixListener(path, factory, mode)
        server.where = f"{svc.filename}, line {svc.lineno}: service {svc.name}"
    server.setName(f"{svc.name}@unix:{path}")
    server.setServiceParent(system)
    system.ports[key] = server
    system.listener_services[key] = svc
    return server


def _open_table(spec: str, config: Config) -> Any:
    from pymta.tables import open_table

    return open_table(spec, config)
