"""Build the whole pymta service hierarchy from the configuration.

Mirrors Postfix's master(8): the one place that knows every part. It reads
main.cf and master.cf, creates the queue store, cleanup, the resolver, the
queue manager, the delivery agents, bounce, and one listener per master.cf
``inet`` service, and returns them as one ``MultiService`` that twistd runs
or that an existing Twisted application adds to its own hierarchy::

    from pymta.service import makeService
    makeService("/etc/pymta").setServiceParent(application)

Listening ports are bound in privilegedStartService (before twistd drops
privileges). With ``pymta_processes`` above 1 this process is the master: a
:class:`~pymta.master.workers.WorkerPool` started after everything else
spawns the other reactor processes on the same sockets (:mod:`pymta.master`);
each of them calls :func:`build` with ``worker_fds``. Writes: the queue,
data and mail directories named by main.cf.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application import internet, service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymta.config import Config, ConfigError
from pymta.config.master_cf import MasterService, check_master, load_master
from pymta.config.validate import validate
from pymta.mailauth.service import MailAuth
from pymta.maillog import MaillogObserver, log_to
from pymta.milter.config import MilterClients

log = Logger()

#: master.cf commands whose part pymta builds as a listener.
LISTENER_COMMANDS = {"smtpd", "pop3d", "imapd", "lmtpd", "managesieved", "postscreen"}

#: master.cf commands that may also listen on a UNIX socket (``unix`` lines).
UNIX_LISTENER_COMMANDS = {"lmtpd"}

#: master.cf commands whose part is built (``pymta check`` reads this too);
#: others are accepted with a warning at start.
BUILT_PARTS = {
    "smtpd",
    "pop3d",
    "imapd",
    "lmtpd",
    "managesieved",
    "qmgr",
    "cleanup",
    "trivial-rewrite",
    "bounce",
    "local",
    "virtual",
    "discard",
    "error",
    "smtp",
    "lmtp",
    "metrics",
    "pickup",
    "pipe",
    "postscreen",
}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def resolve_paths(config: Config) -> Config:
    """Make relative directory parameters absolute against the working directory.

    pymta convention (Postfix requires absolute paths): the embedded default
    keeps all state under ``./var/`` of the directory twistd runs in.
    """
    overrides: dict[str, str] = {}
    for name in (
        "queue_directory",
        "data_directory",
        "virtual_mailbox_base",
        "maillog_file",
        "smtpd_tls_cert_file",
        "smtpd_tls_key_file",
    ):
        value = config.get(name)
        if value and not os.path.isabs(value):
            overrides[name] = str(Path(value).resolve())
    if not overrides:
        return config
    return config.with_overrides(overrides, source="main.cf (relative path resolved)")


class _MaillogService(service.Service):
    """Writes Postfix-style mail event lines to ``maillog_file`` while running."""

    def __init__(self, path: str, hostname: str, syslog_name: str, reactor: Any) -> None:
        self._reactor = reactor
        self._path = path
        self._hostname = hostname
        self._syslog_name = syslog_name
        self._stream: Any = None  # pymta.master.appendlog.AppendLineStream
        self._observer: MaillogObserver | None = None
        self._undo: Callable[[], None] | None = None

    def startService(self) -> None:
        from pymta.master.appendlog import AppendLineStream

        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # One O_APPEND write of whole lines per flush: several reactor
        # processes (pymta_processes) share the file without torn lines.
        stream: Any = AppendLineStream(self._path)
        self._stream = stream
        self._observer = MaillogObserver(
            stream,
            self._hostname,
            self._syslog_name,
            flush_later=lambda flush: self._reactor.callLater(0, flush),
        )
        self._undo = log_to(self._observer)
        super().startService()

    def reopen(self) -> None:
        """Write on to a new file at the same path (a reload, after logrotate)."""
        if self._stream is not None:
            self._stream.reopen()

    def stopService(self) -> None:
        super().stopService()
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self._stream is not None:
            self._stream.close()


class _CallbackService(service.Service):
    """A service whose start and stop are two callables (for qmgr, sync...)."""

    def __init__(
        self, name: str, start: Callable[[], object], stop: Callable[[], object] | None = None
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop

    def startService(self) -> None:
        super().startService()
        self._start()

    def stopService(self) -> Deferred[object] | None:
        super().stopService()
        if self._stop is None:
            return None
        return maybeDeferred(self._stop)


#: Where Linux says how long a listen queue may be (net.core.somaxconn).
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"

#: The listen queue when somaxconn cannot be read (Linux's default since 5.4).
DEFAULT_BACKLOG = 4096
#: How long smtpd waits for one DNS answer (client name, DNSBL, domain
#: checks) before treating it as a temporary failure: the libc resolver's
#: default that Postfix lives with (RES_TIMEOUT 5 s, 2 tries).
SMTPD_DNS_DEADLINE = 10.0


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


class StartFailed(Exception):
    """A daemonised start failed; twistd reports the message to its caller."""


class ListenError(Exception):
    """A listener could not bind its address; the message names the master.cf line."""


class _Listener(internet.TCPServer):
    """A TCP listener that logs the address it bound (port 0 picks a free one).

    Twisted's port accepts in batches: up to ``numberAccepts`` connections
    per wakeup (100 at first; 20 more each time it takes them all, else as
    many as came), until accept() finds the queue empty."""

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


@dataclass
class SessionParts:
    """What the listeners' session factories are built from; a reload
    replaces cleanup and resolver for the sessions that follow it."""

    cleanup: Any
    resolver: Any  # the ResolverSwitch the queue manager shares
    queue_space: Any
    mailstore: Callable[[], Any]
    metrics: Any
    reactor: Any
    #: The DNS resolver of smtpd's restrictions (made on first use, shared).
    dns: Callable[[], Any]
    #: The mailbox writes' group-commit barrier (lmtpd delivers with the
    #: delivery agents' barrier, so its 250s share their syncs).
    delivery_sync: Any = None


class ResolverSwitch:
    """trivial-rewrite's resolver that a reload can replace under the queue
    manager and the sessions at once (every attribute is the current one's)."""

    def __init__(self, resolver: Any) -> None:
        self.current = resolver

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)


class MailSystem(service.MultiService):
    """The running parts of one pymta instance, reachable for embedding and tests."""

    def __init__(self, config: Config, master: list[MasterService]) -> None:
        super().__init__()
        self.config = config
        self.master = master
        #: The configuration the queue manager, delivery agents and bounce were
        #: built with: a copy of ``config`` whose reads a reload inspects (what
        #: it read cannot change without a restart).
        self.delivery_config = config
        self.sessions: SessionParts | None = None
        self.on_queued: Callable[[str, Any], None] | None = None
        #: {listener key: its master.cf line}, what a reload compares.
        self.listener_services: dict[str, MasterService] = {}
        self.workers: Any = None  # pymta.master.workers.WorkerPool with pymta_processes > 1
        #: Set by twistd (pymta.tap) and workers: install the SIGHUP (reload)
        #: and SIGQUIT (abort) handlers at start. An embedding application
        #: keeps its own signals.
        self.handle_signals = False
        #: Set by pymta.tap when twistd daemonises (no -n).
        self.daemonised = False
        #: Set by the abort signal: stop without waiting for deliveries in flight.
        self.aborting = False
        self._stop_waits: list[Deferred[None]] = []
        self.store: Any = None
        self.cleanup: Any = None
        self.resolver: Any = None
        self.qmgr: Any = None
        self.bounce: Any = None
        self.agents: dict[str, Any] = {}
        self.ports: dict[str, _Listener] = {}
        self.metrics: Any = None  # pymta.metrics.MetricsService, when master.cf has one
        #: twistd's pid file, when pymta.tap knows it: removed when binding a
        #: port fails, as twistd removes it after the other failed starts.
        self.pidfile: str | None = None

    def privilegedStartService(self) -> None:
        if self.handle_signals:
            # Before the first port is bound: once a client (or a test) sees
            # "listening on", SIGHUP already means reload, not death.
            from pymta.master.control import install_signal_handlers

            install_signal_handlers(self)
        try:
            super().privilegedStartService()
        except ListenError as e:
            if self.pidfile:
                with contextlib.suppress(OSError):
                    os.unlink(self.pidfile)
            if self.daemonised:
                # twistd's first process waits for a word from the daemon on
                # its status pipe, written only for an Exception (a
                # SystemExit leaves it waiting forever); it prints its start.
                log.critical("pymta: fatal: {e}", e=e)
                raise StartFailed(str(e)) from None
            # One line instead of twistd's traceback (SystemExit's message is printed).
            raise SystemExit(f"pymta: fatal: {e}") from None

    def stop_qmgr(self) -> object:
        """The queue manager's stop: waits for the deliveries in flight, unless
        aborting (``pymta abort``), when the queue keeps what they had not
        finished for the next start (delivered at least once, as Postfix)."""
        assert self.qmgr is not None
        waiting = maybeDeferred(self.qmgr.stop)
        if self.aborting:
            return None
        # An abort while the stop waits ends the wait (abort_stop_waits).
        done: Deferred[None] = Deferred()
        waiting.addBoth(lambda _: None if done.called else done.callback(None))
        self._stop_waits.append(done)
        return done

    def abort_stop_waits(self) -> None:
        """Stop waiting for the deliveries in flight (``pymta abort`` during
        a graceful stop)."""
        self.aborting = True
        for done in self._stop_waits:
            if not done.called:
                done.callback(None)

    def reopen_maillog(self) -> None:
        """Reopen ``maillog_file`` (after logrotate moved it away)."""
        for part in self:
            if isinstance(part, _MaillogService):
                part.reopen()


def _listen_interfaces(config: Config, host: str | None) -> list[str]:
    if host:
        return [host]
    interfaces = config.get_list("inet_interfaces")
    if not interfaces or "all" in interfaces:
        return [""]
    if "loopback-only" in interfaces:
        return ["127.0.0.1"]
    return interfaces


def build(
    config: Config,
    master: list[MasterService],
    reactor: Any = None,
    *,
    worker_fds: Mapping[str, int] | None = None,
    check: bool = False,
    users: Any = None,
) -> MailSystem:
    """Wire every part for this configuration (does not start anything).

    ``worker_fds`` ({listener key: inherited descriptor}) builds a worker
    of :mod:`pymta.master` instead: listeners adopt the master's sockets,
    the queue manager never scans the queue, no trigger FIFO reader.
    ``check=True`` is ``pymta check``: the same parts from the same code,
    so that whatever stops a start stops the check, but nothing is written
    (the queue is in memory, no queue directory is made) and there is no
    trigger reader or worker pool. ``users`` (an IUserDelivery, e.g. the
    root helper of pymta.privsep.client) becomes local recipients and
    pipe(8) users; by default a child process per delivery.
    """
    from pymta.bounce.bouncer import Bouncer
    from pymta.cleanup import Cleanup
    from pymta.delivery.registry import AgentContext, build_agents, process_limits
    from pymta.qmgr.manager import QueueManager
    from pymta.queue.store import FileQueueStore
    from pymta.rewrite import Resolver
    from pymta.sync import SyncBarrier

    reactor = reactor or _reactor()
    clock: IReactorTime = reactor
    system = MailSystem(config, master)

    maillog_file = config.get("maillog_file")
    if maillog_file:
        _MaillogService(
            maillog_file,
            config.get("myhostname"),
            config.get("syslog_name") or "postfix",
            reactor,
        ).setServiceParent(system)

    from pymta.master.workers import process_count

    processes = 1 if worker_fds is not None else process_count(config)
    if check:
        processes = 1  # counted (a bad value stops the check too), never spawned
    metrics_services = [s for s in master if s.type == "inet" and s.program == "metrics"]
    if metrics_services and not check:
        from pymta.metrics import MetricsService

        system.metrics = MetricsService(
            config,
            reactor,
            multiprocess=processes > 1 or worker_fds is not None,
            serving=worker_fds is None,
        )
        system.metrics.setServiceParent(system)

    queue_directory = config.get("queue_directory")
    if not check:
        Path(queue_directory).mkdir(parents=True, exist_ok=True)
    sync = SyncBarrier(
        queue_directory, config.get("pymta_sync_method") or "syncfs", reactor=reactor
    )
    store: Any
    if check:
        from pymta.queue.memory import MemoryQueueStore

        store = MemoryQueueStore(clock)
    else:
        store = FileQueueStore(queue_directory, sync, clock=clock)
    queue_space = None if check else _queue_space(queue_directory, reactor)
    # Mailbox writes get a group-commit thread of their own, so that a
    # client waiting for its 250 never queues behind a delivery's sync. A
    # recipient is marked done only after its mailbox write is durable (by
    # the writer's thread right after its rename, or by the queue manager
    # after the agent's Deferred fired), so the two reach the disk in order.
    delivery_sync = SyncBarrier(
        config.get("virtual_mailbox_base") or queue_directory,
        config.get("pymta_sync_method") or "syncfs",
        reactor=reactor,
        durable_delay=config.get_time("pymta_mailbox_sync_delay"),
    )
    if system.metrics is not None:
        system.metrics.watch_syncs({"queue": sync, "mailbox": delivery_sync})
    # The queue manager and the sessions share one resolver that a reload
    # replaces (pymta.master.reload): mail accepted under the new
    # configuration is routed by it too.
    resolver: Any = ResolverSwitch(Resolver(config))
    holder: dict[str, Any] = {}

    def on_queued(queue_id: str, envelope: Any) -> None:
        holder["qmgr"].notify_new(queue_id, envelope)

    claims = None
    if worker_fds is not None or processes > 1:
        from pymta.master.claims import QueueClaims

        claims = QueueClaims(store.path, sync)
    cleanup = Cleanup(
        config,
        store,
        resolver,
        clock=clock,
        on_queued=on_queued,
        mailauth=MailAuth.from_config(config, reactor),
        non_smtpd_milters=MilterClients.from_config(config, "non_smtpd_milters", reactor),
    )
    # The delivery side reads its own copy: what it read is what a reload
    # cannot change without a restart (pymta.master.reload).
    delivery_config = config.recording_copy()
    system.delivery_config = delivery_config
    bounce = Bouncer(delivery_config, cleanup, clock)
    agents = build_agents(
        master,
        AgentContext(
            config=delivery_config,
            sync=delivery_sync,
            cleanup=cleanup,
            clock=clock,
            reactor=reactor,
            users=users,
        ),
    )
    qmgr = QueueManager(
        delivery_config,
        store,
        resolver,
        agents,
        bounce,
        clock,
        process_limits(master, delivery_config),
        scan=worker_fds is None,
        claims=claims,
        # Queue files found on disk are read on the reactor's thread pool.
        read_runner=functools.partial(deferToThreadPool, reactor, reactor.getThreadPool()),
    )
    holder["qmgr"] = qmgr
    system.on_queued = on_queued
    system.store, system.cleanup, system.resolver = store, cleanup, resolver
    system.qmgr, system.bounce, system.agents = qmgr, bounce, agents

    # Added before qmgr, so stopped after it: the queue-file changes that the
    # stopping qmgr leaves pending (marks, moves, unlinks) still reach disk.
    _CallbackService("sync", lambda: None, sync.drain).setServiceParent(system)
    _CallbackService("delivery-sync", lambda: None, delivery_sync.drain).setServiceParent(system)
    _CallbackService("qmgr", qmgr.start, system.stop_qmgr).setServiceParent(system)
    if queue_space is not None:
        _CallbackService("queue-space", queue_space.start, queue_space.stop).setServiceParent(
            system
        )
    for name, agent in agents.items():
        close = getattr(agent, "close", None)
        if close is not None:  # e.g. smtp: QUIT on the cached idle connections
            _CallbackService(f"agent-{name}", lambda: None, close).setServiceParent(system)
    # postqueue -f / pymta flush write to $queue_directory/public/qmgr.
    from pymta.qmgr.trigger import TriggerService

    if worker_fds is None and not check:  # one reader of the FIFO: the master's
        TriggerService(queue_directory, qmgr, reactor).setServiceParent(system)

    # sendmail's maildrop files: one pickup (master.cf's pickup line), in the
    # master process only, as only one may take a file.
    pickup = next((svc for svc in master if svc.program == "pickup"), None)
    if pickup is not None and worker_fds is None:
        from pymta.pickup.service import PickupService

        PickupService(
            pickup.service_config(config), cleanup, reactor, wakeup=pickup.wakeup
        ).setServiceParent(system)

    mailstores: list[Any] = []  # one MaildirStore shared by pop3d and imapd

    def mailstore() -> Any:
        if not mailstores:
            from pymta.mailstore.maildir import MaildirStore

            mailstores.append(MaildirStore(reactor, config.get("myhostname")))
        return mailstores[0]

    smtpd_resolvers: list[Any] = []

    def smtpd_dns() -> Any:
        # One cache for every smtpd listener (DNSBL answers are shared);
        # a lookup never takes longer than the deadline (then: 450).
        if not smtpd_resolvers:
            from pymta.dns.cache import CachingResolver
            from pymta.dns.deadline import DeadlineResolver
            from pymta.dns.names import NamesResolver

            names = NamesResolver.from_config(config, reactor)
            smtpd_resolvers.append(
                CachingResolver(DeadlineResolver(names, clock, SMTPD_DNS_DEADLINE), clock)
            )
        return smtpd_resolvers[0]

    system.sessions = SessionParts(
        cleanup=cleanup,
        resolver=resolver,
        queue_space=queue_space,
        mailstore=mailstore,
        metrics=system.metrics,
        reactor=reactor,
        dns=smtpd_dns,
        delivery_sync=delivery_sync,
    )
    for svc in master:
        if svc.type == "unix" and svc.program in UNIX_LISTENER_COMMANDS:
            factory = session_factory(svc, config, system.sessions)
            path = unix_socket_path(svc, config)
            add_unix_listener(system, f"{svc.name}:unix:{path}", svc, path, factory, worker_fds)
            continue
        if svc.type != "inet" or svc.program not in LISTENER_COMMANDS:
            continue
        factory = session_factory(svc, config, system.sessions)
        for key, interface, port in listener_keys(svc, config):
            add_listener(system, key, svc, interface, port, factory, worker_fds, reactor)
    if system.metrics is not None and worker_fds is None:
        # Only the master listens; its workers record into shared files.
        from pymta.metrics import listen_interface

        for svc in metrics_services:
            interface, port = listen_interface(svc), svc.listen_address()[1]
            server = _Listener(port, system.metrics.site(), interface=interface)
            server.setName(f"{svc.name}@{interface or '*'}:{port}")
            server.setServiceParent(system)
    if processes > 1:
        from pymta.master.workers import WorkerPool

        ports = system.ports
        system.workers = WorkerPool(
            config.get("config_directory"),
            lambda: {key: listener.fileno() for key, listener in ports.items()},
            processes - 1,
            reactor,
            on_exit=qmgr.recover_orphans,
            throttle_time=config.get_time("service_throttle_time"),
        )
        system.workers.setServiceParent(system)
    return system


def session_factory(svc: MasterService, config: Config, parts: SessionParts) -> Any:
    """The protocol factory of one master.cf listener (smtpd, pop3d, imapd)
    under ``config`` with the service's ``-o`` overrides; TLS contexts are
    made here, from the certificate files as they are now."""
    from pymta.tls import implicit_tls, listener_tls

    if svc.program == "postscreen":
        # In front of the smtpd of its pass service (pymta.postscreen.factory),
        # whose sessions are the ones counted below.
        from pymta.postscreen import postscreen_factory

        return postscreen_factory(svc, config, parts, session_factory)
    svc_config = svc.service_config(config)
    factory: Any
    if svc.program == "smtpd":
        from pymta.smtpd import SMTPServerFactory

        tls = listener_tls(svc_config, "smtpd")
        factory = SMTPServerFactory(
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
    elif svc.program == "imapd":
        factory = _imap_factory(svc_config, svc, parts.reactor, parts.mailstore())
    elif svc.program == "managesieved":
        from pymta.managesieve.factory import make_managesieve_factory

        factory = make_managesieve_factory(svc_config, parts.reactor)
    elif svc.program == "lmtpd":
        from pymta.lmtpd.factory import make_lmtp_factory

        factory = make_lmtp_factory(svc_config, parts.reactor, parts.delivery_sync, parts.cleanup)
    else:
        factory = _pop3_factory(svc_config, svc, parts.reactor, parts.mailstore())
    if parts.metrics is not None:
        factory = parts.metrics.count_sessions(factory, svc.program)
    return factory


def listener_keys(svc: MasterService, config: Config) -> list[tuple[str, str, int]]:
    """(key, interface, port) of each socket a listener line opens; the key
    names it between the master and its workers and across reloads."""
    svc_config = svc.service_config(config)
    host, port = svc.listen_address()
    return [
        (f"{svc.name}:{interface}:{port}", interface, port)
        for interface in _listen_interfaces(svc_config, host)
    ]


def add_listener(
    system: MailSystem,
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
        from pymta.master.adopt import AdoptedListener

        if key not in worker_fds:
            raise ConfigError(f"master.cf service {key}: no socket from the master")
        server = AdoptedListener(worker_fds[key], factory, reactor)
    else:
        backlog = listen_backlog(svc.service_config(system.config))
        server = _Listener(port, factory, interface=interface, backlog=backlog)
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


def unix_socket_path(svc: MasterService, config: Config) -> str:
    """Where a ``unix`` listener's socket is: as Postfix names its sockets,
    ``$queue_directory/private/NAME`` (``public/`` when the private column
    says n); a name with a ``/`` is a path (relative: to queue_directory)."""
    queue_directory = config.get("queue_directory")
    if "/" in svc.name:
        return os.path.join(queue_directory, svc.name)  # an absolute name stays
    return os.path.join(queue_directory, "private" if svc.private else "public", svc.name)


class _UnixListener(internet.UNIXServer):
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


def add_unix_listener(
    system: MailSystem,
    key: str,
    svc: MasterService,
    path: str,
    factory: Any,
    worker_fds: Mapping[str, int] | None,
) -> Any:
    """Add the UNIX-socket listener ``key`` (a worker adopts the master's socket)."""
    server: Any
    if worker_fds is not None:
        from pymta.master.adopt import AdoptedListener

        if key not in worker_fds:
            raise ConfigError(f"master.cf service {key}: no socket from the master")
        server = AdoptedListener(worker_fds[key], factory, system.sessions.reactor)  # type: ignore[union-attr]
    else:
        text = svc.service_config(system.config).get("pymta_lmtpd_socket_mode").strip()
        try:
            mode = int(text, 8)
        except ValueError:
            raise ConfigError(
                f"bad value {text!r}: expected an octal mode such as 0660",
                parameter="pymta_lmtpd_socket_mode",
            ) from None
        server = _UnixListener(path, factory, mode)
        server.where = f"{svc.filename}, line {svc.lineno}: service {svc.name}"
    server.setName(f"{svc.name}@unix:{path}")
    server.setServiceParent(system)
    system.ports[key] = server
    system.listener_services[key] = svc
    return server


def _queue_space(queue_directory: str, reactor: Any) -> Any:
    """The queue file system's free space that every smtpd checks at MAIL
    FROM (queue_minfree), refreshed in the reactor's thread pool."""
    from twisted.internet.threads import deferToThreadPool

    from pymta.queue.space import QueueSpace

    space = QueueSpace(
        queue_directory,
        reactor,
        lambda work: deferToThreadPool(reactor, reactor.getThreadPool(), work),
    )
    space.read_now()  # start-up: the first MAIL FROM has a reading to go by
    return space


def _open_table(spec: str, config: Config) -> Any:
    from pymta.tables import open_table

    return open_table(spec, config)


def _pop3_factory(config: Config, svc: MasterService, reactor: Any, store: Any = None) -> Any:
    from pymta.pop3.service import make_pop3_factory

    return make_pop3_factory(config, reactor, store=store)


def _imap_factory(config: Config, svc: MasterService, reactor: Any, store: Any = None) -> Any:
    from pymta.imap.service import make_imap_factory

    return make_imap_factory(config, reactor, store=store)


def load(config_directory: str | os.PathLike[str]) -> tuple[Config, list[MasterService]]:
    """Read and check main.cf and master.cf; ConfigError stops the start."""
    config = resolve_paths(Config.load(config_directory))
    master = load_master(str(config_directory))
    for warning in validate(config, master):
        log.warn("{warning}", warning=warning)
    for warning in check_master(master, BUILT_PARTS):
        log.warn("{warning}", warning=warning)
    return config, master


def _start_warnings() -> tuple[list[str], Callable[[], None]]:
    """Collect the warnings logged from now on (through twisted.logger, the
    mail log included); returns them and the function that stops collecting."""
    from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
    from zope.interface import implementer

    warnings: list[str] = []

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            text = formatEvent(event)
            if text not in warnings:
                warnings.append(text)

    globalLogPublisher.addObserver(observe)
    return warnings, lambda: globalLogPublisher.removeObserver(observe)


def _with_checkable_certificates(config: Config, scratch: str) -> Config:
    """config with the certificates the start would make (embedded default,
    ``pymta_tls_create_self_signed = yes``) made in scratch instead, so that
    the check loads them as the start would, and writes nothing real."""
    from pymta.tls import ensure_self_signed

    if not config.get_bool("pymta_tls_create_self_signed"):
        return config
    overrides: dict[str, str] = {}
    for prefix in ("smtpd", "pop3d", "imapd"):
        cert = config.get(f"{prefix}_tls_cert_file").strip()
        key = config.get(f"{prefix}_tls_key_file").strip() or cert
        if not cert or (os.path.exists(cert) and os.path.exists(key)):
            continue
        made_cert = os.path.join(scratch, f"{prefix}-cert.pem")
        made_key = os.path.join(scratch, f"{prefix}-key.pem")
        ensure_self_signed(made_cert, made_key, config.get("myhostname"))
        overrides[f"{prefix}_tls_cert_file"] = made_cert
        overrides[f"{prefix}_tls_key_file"] = made_key
    if not overrides:
        return config
    return config.with_overrides(overrides, source="main.cf (certificate made at start)")


def check(config_directory: str | os.PathLike[str]) -> list[str]:
    """``pymta check``: the warnings a start would log, or the ConfigError that
    would stop it. Runs the start's own code (:func:`load`, then
    :func:`build` with ``check=True``), so the two cannot disagree: unknown
    parameters, master.cf services, restrictions (``reject_rbl_client``),
    certificates, the passdb, tables that cannot be opened (a ``hash:``
    table without its .db)."""
    warnings, stop = _start_warnings()
    try:
        load_checked(config_directory)
    finally:
        stop()
    return warnings


def load_checked(
    config_directory: str | os.PathLike[str],
) -> tuple[Config, list[MasterService]]:
    """:func:`load`, then every part built in check mode (what ``pymta
    check`` does): the ConfigError or OSError that would stop a start, else
    the configuration. A reload validates with this before it applies."""
    import tempfile

    config, master = load(config_directory)
    with tempfile.TemporaryDirectory(prefix="pymta-check-") as scratch:
        build(_with_checkable_certificates(config, scratch), master, check=True)
    return config, master


def makeService(
    config: Config | str | os.PathLike[str],
    reactor: IReactorCore | None = None,
    users: Any = None,
) -> service.IService:
    """The whole mail system as one IService.

    ``config`` is a configuration directory (main.cf + master.cf) or a Config
    whose ``config_directory`` names the directory that holds master.cf.
    """
    if isinstance(config, Config):
        directory = config.get("config_directory")
        master = load_master(directory)
        cfg = resolve_paths(config)
    else:
        cfg, master = load(config)
    try:
        return build(cfg, master, reactor, users=users)
    except ConfigError:
        raise
