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

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from twisted.application import internet, service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymta.config import Config, ConfigError
from pymta.config.master_cf import MasterService, check_master, load_master
from pymta.config.validate import validate
from pymta.maillog import MaillogObserver, log_to

log = Logger()

#: master.cf commands whose part pymta builds as a listener.
LISTENER_COMMANDS = {"smtpd", "pop3d", "imapd"}

#: master.cf commands whose part is built (``pymta check`` reads this too);
#: others are accepted with a warning at start.
BUILT_PARTS = {
    "smtpd",
    "pop3d",
    "imapd",
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
        self._stream: IO[str] | None = None
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


class _Listener(internet.TCPServer):
    """A TCP listener that logs the address it bound (port 0 picks a free one)."""

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
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


class MailSystem(service.MultiService):
    """The running parts of one pymta instance, reachable for embedding and tests."""

    def __init__(self, config: Config, master: list[MasterService]) -> None:
        super().__init__()
        self.config = config
        self.master = master
        self.store: Any = None
        self.cleanup: Any = None
        self.resolver: Any = None
        self.qmgr: Any = None
        self.bounce: Any = None
        self.agents: dict[str, Any] = {}
        self.ports: dict[str, _Listener] = {}


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
) -> MailSystem:
    """Wire every part for this configuration (does not start anything).

    ``worker_fds`` ({listener key: inherited descriptor}) builds a worker
    of :mod:`pymta.master` instead: listeners adopt the master's sockets,
    the queue manager never scans the queue, no trigger FIFO reader.
    """
    from pymta.bounce.bouncer import Bouncer
    from pymta.cleanup import Cleanup
    from pymta.delivery.registry import AgentContext, build_agents, process_limits
    from pymta.qmgr.manager import QueueManager
    from pymta.queue.store import FileQueueStore
    from pymta.queue.sync import SyncBarrier
    from pymta.rewrite import Resolver
    from pymta.tls import listener_tls

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

    queue_directory = config.get("queue_directory")
    Path(queue_directory).mkdir(parents=True, exist_ok=True)
    sync = SyncBarrier(
        queue_directory, config.get("pymta_sync_method") or "syncfs", reactor=reactor
    )
    store = FileQueueStore(queue_directory, sync, clock=clock)
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
    resolver = Resolver(config)
    holder: dict[str, Any] = {}

    def on_queued(queue_id: str, envelope: Any) -> None:
        holder["qmgr"].notify_new(queue_id, envelope)

    from pymta.master.workers import process_count

    processes = 1 if worker_fds is not None else process_count(config)
    claims = None
    if worker_fds is not None or processes > 1:
        from pymta.master.claims import QueueClaims

        claims = QueueClaims(store.path, sync)
    cleanup = Cleanup(config, store, resolver, clock=clock, on_queued=on_queued)
    bounce = Bouncer(config, cleanup, clock)
    agents = build_agents(
        master,
        AgentContext(
            config=config, sync=delivery_sync, cleanup=cleanup, clock=clock, reactor=reactor
        ),
    )
    qmgr = QueueManager(
        config,
        store,
        resolver,
        agents,
        bounce,
        clock,
        process_limits(master, config),
        scan=worker_fds is None,
        claims=claims,
        # Queue files found on disk are read on the reactor's thread pool.
        read_runner=functools.partial(deferToThreadPool, reactor, reactor.getThreadPool()),
    )
    holder["qmgr"] = qmgr
    system.store, system.cleanup, system.resolver = store, cleanup, resolver
    system.qmgr, system.bounce, system.agents = qmgr, bounce, agents

    # Added before qmgr, so stopped after it: the queue-file changes that the
    # stopping qmgr leaves pending (marks, moves, unlinks) still reach disk.
    _CallbackService("sync", lambda: None, sync.drain).setServiceParent(system)
    _CallbackService("delivery-sync", lambda: None, delivery_sync.drain).setServiceParent(system)
    _CallbackService("qmgr", qmgr.start, qmgr.stop).setServiceParent(system)
    for name, agent in agents.items():
        close = getattr(agent, "close", None)
        if close is not None:  # e.g. smtp: QUIT on the cached idle connections
            _CallbackService(f"agent-{name}", lambda: None, close).setServiceParent(system)
    # postqueue -f / pymta flush write to $queue_directory/public/qmgr.
    from pymta.qmgr.trigger import TriggerService

    if worker_fds is None:  # one reader of the FIFO: the master's
        TriggerService(queue_directory, qmgr, reactor).setServiceParent(system)

    mailstores: list[Any] = []  # one MaildirStore shared by pop3d and imapd

    def mailstore() -> Any:
        if not mailstores:
            from pymta.mailstore.maildir import MaildirStore

            mailstores.append(MaildirStore(reactor, config.get("myhostname")))
        return mailstores[0]

    for svc in master:
        if svc.type != "inet" or svc.program not in LISTENER_COMMANDS:
            continue
        svc_config = svc.service_config(config)
        host, port = svc.listen_address()
        if svc.program == "smtpd":
            from pymta.smtpd import SMTPServerFactory

            tls = listener_tls(svc_config, "smtpd")
            factory: Any = SMTPServerFactory(
                svc_config,
                cleanup,
                resolver,
                functools.partial(_open_table, config=svc_config),
                tls,
                clock,
                service_name=svc.program,
            )
        elif svc.program == "imapd":
            factory = _imap_factory(svc_config, svc, reactor, mailstore())
        else:
            factory = _pop3_factory(svc_config, svc, reactor, mailstore())
        for interface in _listen_interfaces(svc_config, host):
            key = f"{svc.name}:{interface}:{port}"
            server: Any
            if worker_fds is not None:
                from pymta.master.adopt import AdoptedListener

                if key not in worker_fds:
                    raise ConfigError(f"master.cf service {key}: no socket from the master")
                server = AdoptedListener(worker_fds[key], factory, reactor)
            else:
                server = _Listener(port, factory, interface=interface)
            server.setName(f"{svc.name}@{interface or '*'}:{port}")
            server.setServiceParent(system)
            system.ports[key] = server
    if processes > 1:
        from pymta.master.workers import WorkerPool

        ports = system.ports
        WorkerPool(
            config.get("config_directory"),
            lambda: {key: listener.fileno() for key, listener in ports.items()},
            processes - 1,
            reactor,
            on_exit=qmgr.recover_orphans,
            throttle_time=config.get_time("service_throttle_time"),
        ).setServiceParent(system)
    return system


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


def makeService(
    config: Config | str | os.PathLike[str], reactor: IReactorCore | None = None
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
        return build(cfg, master, reactor)
    except ConfigError:
        raise
