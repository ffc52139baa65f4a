"""assemble: one pymta instance built from its parts.

Mirrors Postfix's master(8) as the one place that knows every part.
:func:`build` reads nothing (``load`` did) and starts nothing; it makes a
:class:`MailSystem`, a Twisted ``MultiService`` whose children are the
parts, in the order they start (and, backwards, stop):

1. ``maillog`` — Postfix-style mail event lines to ``maillog_file``;
2. ``metrics`` — when master.cf has a metrics line;
3. :class:`QueuePart` ``queue`` — the queue store, its group-commit
   barrier, the queue file system's free space, and the trigger channel
   (:mod:`pymta.queue.trigger`) on which cleanup tells the queue manager
   the queue id of each new queue file;
4. :class:`DeliveryPart` ``delivery`` — bounce, the delivery agents, their
   group-commit barrier for mailbox writes, the queue manager (listening on
   the trigger channel while it runs) and the ``public/qmgr`` FIFO reader;
5. ``pickup`` — sendmail's maildrop, in the master process only;
6. the listeners (:func:`pymta.sessions.add_listeners`), each a child of
   its own named ``SERVICE@HOST:PORT``, so that a reload adds and removes
   them one by one;
7. ``workers`` — the other reactor processes, with ``pymta_processes``
   above 1 (:mod:`pymta.master`).

cleanup and trivial-rewrite's resolver are shared by the queue side and the
sessions; they are not services. Stopping in reverse order matters: the
listeners stop accepting first, the queue manager waits for the deliveries
in flight, and only then do the barriers drain the queue-file changes it
left pending. :mod:`pymta.service` (the twistd plugin's entry) and the
worker processes (:mod:`pymta.master.worker`) both call :func:`build`.

Untrusted input: none (the administrator's files). Writes: the queue, data
and mail directories named by main.cf (none in check mode). Logs: the
configuration's warnings at load.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymta.bounce.bouncer import Bouncer
from pymta.cleanup import Cleanup
from pymta.cleanup.interface import ICleanup
from pymta.config import Config
from pymta.config.master_cf import MasterService, check_master, load_master
from pymta.config.validate import validate
from pymta.delivery.interface import IDeliveryAgent
from pymta.delivery.registry import AgentContext, build_agents, process_limits
from pymta.listeners import IListener, ListenError, TCPListener
from pymta.mailauth.service import MailAuth
from pymta.maillog import FLUSH_SECONDS, MaillogObserver, log_to
from pymta.milter.config import MilterClients
from pymta.privsep.interface import IUserDelivery
from pymta.qmgr.manager import QueueManager
from pymta.queue.interface import IQueueStore
from pymta.queue.trigger import IQueueTrigger, TriggerChannel
from pymta.rewrite import Resolver
from pymta.rewrite.switch import ResolverSwitch
from pymta.sessions import SMTPD_DNS_DEADLINE, SessionParts, add_listeners
from pymta.sync import SyncBarrier, syncfs_directory

if TYPE_CHECKING:
    # Made only when configured (imported then, in build()).
    from pymta.dns.interface import IDNSResolver
    from pymta.mailstore.interface import IMailStore
    from pymta.master.workers import WorkerPool
    from pymta.metrics import MetricsService
    from pymta.queue.space import QueueSpace

log = Logger()

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


class MaillogService(service.Service):
    """Writes Postfix-style mail event lines to ``maillog_file`` while running."""

    name = "maillog"

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
        # The lines of FLUSH_SECONDS in one write (pymta.maillog's doc).
        self._observer = MaillogObserver(
            stream,
            self._hostname,
            self._syslog_name,
            flush_later=functools.partial(self._reactor.callLater, FLUSH_SECONDS),
        )
        self._undo = log_to(self._observer)
        super().startService()

    def reopen(self) -> None:
        """Write on to a new file at the same path (a reload, after logrotate)."""
        if self._observer is not None:
            self._observer.flush()  # the waiting lines to the old file first
        if self._stream is not None:
            self._stream.reopen()

    def stopService(self) -> None:
        super().stopService()
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self._observer is not None:
            self._observer.flush()
        if self._stream is not None:
            self._stream.close()


class CallbackService(service.Service):
    """A service whose start and stop are two callables (a barrier's drain...)."""

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


def _nothing() -> None:
    return None


class QueuePart(service.MultiService):
    """The queue (Postfix's queue directories and the trigger to qmgr).

    ``check`` keeps the queue in memory and makes no directory (``pymta
    check``); ``shared`` (several reactor processes) adds the claims by
    which only one process takes a queue file."""

    name = "queue"

    def __init__(
        self, config: Config, reactor: Any, *, check: bool, shared: bool, worker: bool = False
    ) -> None:
        super().__init__()
        from pymta.queue.store import FileQueueStore

        self.directory = config.get("queue_directory")
        if not check:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
        self.sync = SyncBarrier(
            self.directory, config.get("pymta_sync_method") or "syncfs", reactor=reactor
        )
        #: The intake log (pymta.queue.intake): one process alone on the queue.
        self.intake: Any = None
        if not check and not worker:
            self.intake = _open_intake(config, self.directory, keep=not shared)
            self.sync.intake = self.intake
        self.store: IQueueStore
        self.claims: Any = None  # pymta.master.claims.QueueClaims when shared
        if check:
            from pymta.queue.memory import MemoryQueueStore

            self.store = MemoryQueueStore(reactor)
        else:
            files = FileQueueStore(self.directory, self.sync, clock=reactor, intake=self.intake)
            self.store = files
            if shared:
                from pymta.master.claims import QueueClaims

                self.claims = QueueClaims(files.path, self.sync)
                # A message is owned from its write on (pymta.master.claims).
                files.claim_new = self.claims.adopt
                files.unclaim = self.claims.release
        #: The queue file system's free space every smtpd checks at MAIL
        #: FROM (queue_minfree); None in check mode.
        self.space: Any = None if check else _queue_space(self.directory, reactor)
        self.trigger = TriggerChannel()
        # Stopped after the delivery part (added later): the queue-file
        # changes that the stopping queue manager leaves pending (marks,
        # moves, unlinks) still reach the disk.
        CallbackService("sync", _nothing, self._stop_sync).setServiceParent(self)
        if self.space is not None:
            CallbackService("queue-space", self.space.start, self.space.stop).setServiceParent(self)

    def _stop_sync(self) -> Deferred[None]:
        """Drain the barrier; with an intake log, then free its records (a
        clean stop leaves nothing to replay)."""
        drained = self.sync.drain()
        if self.intake is None:
            return drained
        return drained.addCallback(lambda _: self.sync.checkpoint()).addCallback(
            lambda _: self.sync.drain()
        )


def _open_intake(config: Config, directory: str, *, keep: bool) -> Any:
    """Replay the queue's intake log at start (before the queue manager's
    first scan) and return it, or None: off (its size 0), or several
    processes share the queue (``keep`` false), when a log an earlier run
    left is replayed and removed."""
    from pymta.queue.intake import LOG_NAME, IntakeLog, recover

    wanted = config.get_int("pymta_queue_intake_log_size") if keep else 0
    path = os.path.join(directory, LOG_NAME)
    size = wanted
    if wanted <= 0:
        if not os.path.exists(path):
            return None
        size = os.path.getsize(path)  # replayed as it is, then removed
    log = IntakeLog(
        path,
        size,
        functools.partial(syncfs_directory, directory),
        checkpoint_time=config.get_time("pymta_queue_intake_checkpoint_time"),
    )
    log.open()
    recover(log, directory)
    if wanted > 0:
        return log
    log.close()
    os.unlink(path)
    return None


class DeliveryPart(service.MultiService):
    """Bounce, the delivery agents and the queue manager that drives them.

    The queue manager listens on the queue's trigger channel while it runs.
    ``scan=False`` (a worker process) delivers only the mail its own cleanup
    queued and reads no FIFO; ``fifo=False`` (check mode, workers) opens no
    ``public/qmgr``."""

    name = "delivery"

    def __init__(
        self,
        config: Config,
        master: list[MasterService],
        queue: QueuePart,
        resolver: ResolverSwitch,
        cleanup: ICleanup,
        reactor: Any,
        *,
        scan: bool,
        fifo: bool,
        users: IUserDelivery | None = None,
    ) -> None:
        super().__init__()
        self.trigger = queue.trigger
        # The delivery side reads its own copy: what it read is what a reload
        # cannot change without a restart (pymta.master.reload).
        self.config = config.recording_copy()
        # Mailbox writes get a group-commit thread of their own, so that a
        # client waiting for its 250 never queues behind a delivery's sync. A
        # recipient is marked done only after its mailbox write is durable (by
        # the writer's thread right after its rename, or by the queue manager
        # after the agent's Deferred fired), so the two reach the disk in order.
        self.sync = SyncBarrier(
            config.get("virtual_mailbox_base") or queue.directory,
            config.get("pymta_sync_method") or "syncfs",
            reactor=reactor,
            durable_delay=config.get_time("pymta_mailbox_sync_delay"),
        )
        self.bounce = Bouncer(self.config, cleanup, reactor)
        self.agents: dict[str, IDeliveryAgent] = build_agents(
            master,
            AgentContext(
                config=self.config,
                sync=self.sync,
                cleanup=cleanup,
                clock=reactor,
                reactor=reactor,
                users=users,
            ),
        )
        self.qmgr = QueueManager(
            self.config,
            queue.store,
            resolver,
            self.agents,
            self.bounce,
            reactor,
            process_limits(master, self.config),
            scan=scan,
            claims=queue.claims,
            # Queue files found on disk are read on the reactor's thread pool.
            read_runner=functools.partial(deferToThreadPool, reactor, reactor.getThreadPool()),
        )
        #: Set by an abort (``pymta abort``): stop without waiting for the
        #: deliveries in flight.
        self.aborting = False
        self._stop_waits: list[Deferred[None]] = []
        # Added before the queue manager, so drained after it stopped.
        CallbackService("delivery-sync", _nothing, self.sync.drain).setServiceParent(self)
        CallbackService("qmgr", self._start_qmgr, self._stop_qmgr).setServiceParent(self)
        for name, agent in self.agents.items():
            # Stopped before the queue manager's stop is called (reverse
            # order), as before: smtp's QUIT to its idle connections.
            CallbackService(f"agent-{name}", _nothing, agent.close).setServiceParent(self)
        if fifo:
            # postqueue -f / pymta flush write to $queue_directory/public/qmgr.
            from pymta.qmgr.trigger import TriggerService

            TriggerService(queue.directory, self.qmgr, reactor).setServiceParent(self)

    def _start_qmgr(self) -> None:
        self.qmgr.start()
        self.trigger.listen(self.qmgr)

    def _stop_qmgr(self) -> object:
        """The queue manager's stop: waits for the deliveries in flight, unless
        aborting (``pymta abort``), when the queue keeps what they had not
        finished for the next start (delivered at least once, as Postfix)."""
        self.trigger.close()
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


class StartFailed(Exception):
    """A daemonised start failed; twistd reports the message to its caller."""


class MailSystem(service.MultiService):
    """The running parts of one pymta instance, reachable for embedding and
    tests (see module doc). :func:`build` makes it."""

    #: The queue part and the delivery part (see module doc).
    queue: QueuePart
    delivery: DeliveryPart
    #: The parts' main objects, as :func:`build` made them (a reload
    #: replaces cleanup).
    store: IQueueStore
    cleanup: ICleanup
    resolver: ResolverSwitch
    qmgr: QueueManager
    bounce: Bouncer
    agents: Mapping[str, IDeliveryAgent]
    #: What cleanup tells of each new queue file (the queue manager hears it).
    queue_trigger: IQueueTrigger

    def __init__(self, config: Config, master: list[MasterService]) -> None:
        super().__init__()
        self.config = config
        self.master = master
        #: The configuration the queue manager, delivery agents and bounce were
        #: built with: a copy of ``config`` whose reads a reload inspects (what
        #: it read cannot change without a restart).
        self.delivery_config = config
        self.sessions: SessionParts | None = None
        #: {listener key: its listening service}
        self.ports: dict[str, IListener] = {}
        #: {listener key: its master.cf line}, what a reload compares.
        self.listener_services: dict[str, MasterService] = {}
        #: The worker processes, with pymta_processes above 1.
        self.workers: WorkerPool | None = None
        #: Set by twistd (pymta.tap) and workers: install the SIGHUP (reload)
        #: and SIGQUIT (abort) handlers at start with ``signal_handlers``
        #: (pymta.service.makeService gives pymta.master.control's). An
        #: embedding application keeps its own signals.
        self.handle_signals = False
        self.signal_handlers: Callable[[MailSystem], None] | None = None
        #: The reload under way or last done (pymta.master.control: one at a time).
        self.reload_chain: Deferred[Any] | None = None
        #: Set by pymta.tap when twistd daemonises (no -n).
        self.daemonised = False
        #: The metrics endpoint's service, when master.cf has one.
        self.metrics: MetricsService | None = None
        #: twistd's pid file, when pymta.tap knows it: removed when binding a
        #: port fails, as twistd removes it after the other failed starts.
        self.pidfile: str | None = None

    @property
    def aborting(self) -> bool:
        """Whether an abort (``pymta abort``) is stopping the system."""
        return self.delivery.aborting

    def privilegedStartService(self) -> None:
        if self.handle_signals and self.signal_handlers is not None:
            # Before the first port is bound: once a client (or a test) sees
            # "listening on", SIGHUP already means reload, not death.
            self.signal_handlers(self)
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

    def abort_stop_waits(self) -> None:
        """Stop waiting for the deliveries in flight (``pymta abort`` during
        a graceful stop)."""
        self.delivery.abort_stop_waits()

    def reopen_maillog(self) -> None:
        """Reopen ``maillog_file`` (after logrotate moved it away)."""
        for part in self:
            if isinstance(part, MaillogService):
                part.reopen()


def build(
    config: Config,
    master: list[MasterService],
    reactor: Any = None,
    *,
    worker_fds: Mapping[str, int] | None = None,
    check: bool = False,
    users: IUserDelivery | None = None,
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
    from pymta.master.workers import process_count

    reactor = reactor or _reactor()
    worker = worker_fds is not None
    system = MailSystem(config, master)
    processes = 1 if worker else process_count(config)
    if check:
        processes = 1  # counted (a bad value stops the check too), never spawned

    maillog_file = config.get("maillog_file")
    if maillog_file:
        MaillogService(
            maillog_file,
            config.get("myhostname"),
            config.get("syslog_name") or "postfix",
            reactor,
        ).setServiceParent(system)
    metrics_services = [s for s in master if s.type == "inet" and s.program == "metrics"]
    if metrics_services and not check:
        from pymta.metrics import MetricsService

        system.metrics = MetricsService(
            config, reactor, multiprocess=processes > 1 or worker, serving=not worker
        )
        system.metrics.setServiceParent(system)

    queue = QueuePart(config, reactor, check=check, shared=worker or processes > 1, worker=worker)
    queue.setServiceParent(system)
    # The queue manager and the sessions share one resolver that a reload
    # replaces (pymta.master.reload): mail accepted under the new
    # configuration is routed by it too.
    resolver = ResolverSwitch(Resolver(config))
    cleanup = Cleanup(
        config,
        queue.store,
        resolver,
        clock=reactor,
        trigger=queue.trigger,
        mailauth=MailAuth.from_config(config, reactor),
        non_smtpd_milters=MilterClients.from_config(config, "non_smtpd_milters", reactor),
    )
    delivery = DeliveryPart(
        config,
        master,
        queue,
        resolver,
        cleanup,
        reactor,
        scan=not worker,
        fifo=not worker and not check,
        users=users,
    )
    delivery.setServiceParent(system)
    if system.metrics is not None:
        system.metrics.watch_syncs({"queue": queue.sync, "mailbox": delivery.sync})
    system.queue, system.delivery = queue, delivery
    system.store, system.cleanup, system.resolver = queue.store, cleanup, resolver
    system.qmgr, system.bounce, system.agents = delivery.qmgr, delivery.bounce, delivery.agents
    system.queue_trigger = queue.trigger
    system.delivery_config = delivery.config

    # sendmail's maildrop files: one pickup (master.cf's pickup line), in the
    # master process only, as only one may take a file.
    pickup = next((svc for svc in master if svc.program == "pickup"), None)
    if pickup is not None and not worker:
        from pymta.pickup.service import PickupService

        PickupService(
            pickup.service_config(config), cleanup, reactor, wakeup=pickup.wakeup
        ).setServiceParent(system)

    system.sessions = SessionParts(
        cleanup=cleanup,
        resolver=resolver,
        queue_space=queue.space,
        mailstore=_shared_mailstore(config, reactor),
        metrics=system.metrics,
        reactor=reactor,
        dns=_shared_smtpd_dns(config, reactor),
        delivery_sync=delivery.sync,
    )
    add_listeners(system, master, config, system.sessions, worker_fds)
    if system.metrics is not None and not worker:
        # Only the master listens; its workers record into shared files.
        from pymta.metrics import listen_interface

        for svc in metrics_services:
            interface, port = listen_interface(svc), svc.listen_address()[1]
            server = TCPListener(port, system.metrics.site(), interface=interface)
            server.setName(f"{svc.name}@{interface or '*'}:{port}")
            server.setServiceParent(system)
    if processes > 1:
        from pymta.master.workers import WorkerPool
        from pymta.privsep.interface import IHelperConnections

        connections = IHelperConnections(users, None)
        ports = system.ports
        system.workers = WorkerPool(
            config.get("config_directory"),
            lambda: {key: listener.fileno() for key, listener in ports.items()},
            processes - 1,
            reactor,
            on_exit=delivery.qmgr.recover_orphans,
            throttle_time=config.get_time("service_throttle_time"),
            # Each worker gets its own connection to the root helper.
            helper=connections.connection if connections is not None else None,
        )
        system.workers.setServiceParent(system)
    return system


def _shared_mailstore(config: Config, reactor: Any) -> Callable[[], IMailStore]:
    """The Maildir store pop3d and imapd share, made when the first asks."""
    made: list[IMailStore] = []

    def mailstore() -> IMailStore:
        if not made:
            from pymta.mailstore.maildir import MaildirStore

            made.append(MaildirStore(reactor, config.get("myhostname")))
        return made[0]

    return mailstore


def _shared_smtpd_dns(config: Config, reactor: Any) -> Callable[[], IDNSResolver]:
    """smtpd's DNS resolver, made when the first listener asks: one cache for
    every smtpd listener (DNSBL answers are shared), and a lookup never
    takes longer than SMTPD_DNS_DEADLINE (then: 450)."""
    made: list[IDNSResolver] = []

    def smtpd_dns() -> IDNSResolver:
        if not made:
            from pymta.dns.cache import CachingResolver
            from pymta.dns.deadline import DeadlineResolver
            from pymta.dns.names import NamesResolver

            names = NamesResolver.from_config(config, reactor)
            made.append(
                CachingResolver(DeadlineResolver(names, reactor, SMTPD_DNS_DEADLINE), reactor)
            )
        return made[0]

    return smtpd_dns


def _queue_space(queue_directory: str, reactor: Any) -> QueueSpace:
    """The queue file system's free space that every smtpd checks at MAIL
    FROM (queue_minfree), refreshed in the reactor's thread pool."""
    from pymta.queue.space import QueueSpace

    space = QueueSpace(
        queue_directory,
        reactor,
        lambda work: deferToThreadPool(reactor, reactor.getThreadPool(), work),
    )
    space.read_now()  # start-up: the first MAIL FROM has a reading to go by
    return space


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
