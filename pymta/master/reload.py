"""reload: apply a changed main.cf and master.cf to a running pymta.

Mirrors ``postfix reload`` (master(8) on SIGHUP): the configuration is read
again and new sessions get it, while every session in progress and every
message in flight carries on as it was. Steps, in the reactor thread:

1. Validate with the code ``pymta check`` runs (:func:`pymta.assemble.
   load_checked`). A configuration that would not start is not applied:
   one line ``reload: configuration error, keeping the running
   configuration: CAUSE`` and nothing changes.
2. The process-level parameters (:data:`RESTART_PARAMETERS`:
   queue_directory, pymta_processes, ...) keep their running value, each
   logged ``reload: NAME changed: needs a restart``. The queue manager,
   delivery agents and bounce were built once and keep their configuration:
   a changed parameter they use (what their own Config copy has read, and
   their transports' ``NAME_...`` families) is logged ``reload: NAME
   changed: needs a restart for delivery``; the sessions use its new value.
   A changed master.cf line of a non-listener service (qmgr, smtp, local,
   metrics, ...) is logged as needing a restart.
3. The session side is rebuilt from the new configuration: trivial-rewrite's
   resolver (shared with the queue manager, so mail accepted under the new
   domains is routed the same way), cleanup, and the factory of every
   smtpd/pop3d/imapd/postscreen listener with fresh TLS contexts read from
   the certificate files (postscreen's with its ``smtpd pass`` line as it
   is now: that line needs no restart either). An unchanged listener gives
   its next connections to the new factory; sessions already open keep the
   protocol they had. The
   per-client counts (pop3d/imapd connections before login, smtpd's
   connection count) carry over: the old factory's sessions still count
   against the new limits.
4. Listeners whose master.cf lines are new are opened (``... listening
   on``), those whose lines are gone stop accepting (their open sessions
   continue to their end). A port below 1024 cannot be bound after twistd
   dropped root: that is logged and left for a restart.
5. Before all of that, refused or not: ``maillog_file`` is reopened
   (logrotate's ``postrotate``).

Lookup tables (pymta.tables.watch) and the passwd-file passdb
(pymta.auth.passwdfile) need nothing: they re-read their files within a
second of a change, reload or not.

Untrusted input: none (the administrator's files). May write: what a start
writes for a listener (a self-signed certificate when so configured). Logs:
one ``reload:`` line per decision, and ``reload: done`` at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger

from pymta.config import Config, ConfigError
from pymta.config.master_cf import MasterService
from pymta.preauth import IPreauthCounted

log = Logger(namespace="pymta.master")

#: Parameters whose change needs a restart whatever reads them: the process
#: model, where the queue and the state live, what the log is named.
RESTART_PARAMETERS = frozenset(
    {
        "config_directory",
        "queue_directory",
        "data_directory",
        "virtual_mailbox_base",
        "mail_owner",
        "pymta_processes",
        "pymta_sync_method",
        "pymta_mailbox_sync_delay",
        "pymta_queue_intake_log_size",
        "pymta_queue_intake_checkpoint_time",
        "pymta_listen_backlog",
        "service_throttle_time",
        "maillog_file",
        "syslog_name",
    }
)


def _value(config: Config, name: str) -> str | None:
    try:
        return config.get(name)
    except ConfigError:
        return None


def _line(svc: MasterService) -> tuple[object, ...]:
    """What a master.cf line means (not where in the file it is written)."""
    return (svc.fields, svc.command, tuple(svc.args), tuple(sorted(svc.overrides.items())))


#: master.cf commands of delivery agents: their transport's parameters
#: (``NAME_...``) are read by the running agents and queue manager.
DELIVERY_COMMANDS = frozenset({"smtp", "lmtp", "local", "virtual", "error", "discard", "pipe"})

#: Parameter families the queue manager reads when it first needs them.
DELIVERY_PREFIXES = ("default_destination_", "initial_destination_", "qmgr_", "bounce_")


def changed(running: Config, new: Config, names: set[str]) -> dict[str, str]:
    """{name: running raw value} of the names whose value differs in ``new``."""
    found: dict[str, str] = {}
    for name in sorted(names):
        old = _value(running, name)
        if old is not None and old != _value(new, name):
            found[name] = running.raw(name) or ""
    return found


def delivery_names(delivery: Config, master: list[MasterService], new: Config) -> set[str]:
    """The parameters the running queue manager and delivery agents use:
    those they have read, and their transports' families, which they read
    at a transport's first delivery."""
    prefixes = DELIVERY_PREFIXES + tuple(
        f"{svc.name}_" for svc in master if svc.type == "unix" and svc.program in DELIVERY_COMMANDS
    )
    return delivery.names_read() | {name for name in new if name.startswith(prefixes)}


def innermost(factory: Any) -> Any:
    """The protocol factory under the TLS and metrics wrappers."""
    seen = 0
    while seen < 10:  # wrappers are a few deep; never loop on a cycle
        inner = getattr(factory, "wrapped_factory", None) or getattr(
            factory, "wrappedFactory", None
        )
        if inner is None:
            return factory
        factory, seen = inner, seen + 1
    return factory


def carry_counters(old: Any, new: Any) -> None:
    """Give the new factory of a listener the old one's per-client counts:
    pop3d/imapd's connections before login (``*_max_login_ip_connections``,
    under the new limit). The sessions the old factory admitted still
    count, and release their place in the same table when they log in or
    end: a reload is no way around a limit. smtpd's open connections
    (``smtpd_client_connection_count_limit``) need nothing here: they are
    counted in the anvil table, which every factory of the process shares
    (:mod:`pymta.smtpd.anvil`)."""
    old_inner, new_inner = innermost(old), innermost(new)
    if not (IPreauthCounted.providedBy(old_inner) and IPreauthCounted.providedBy(new_inner)):
        return  # smtpd's, lmtpd's... (or a service that changed program)
    counts, fresh = IPreauthCounted(old_inner).preauth, IPreauthCounted(new_inner).preauth
    counts.limit = fresh.limit
    IPreauthCounted(new_inner).preauth = counts


def applied_by_reload(svc: MasterService) -> bool:
    """master.cf lines a reload applies: the listeners, and the ``smtpd
    pass`` services whose smtpd postscreen hands clients to (the postscreen
    factory a reload builds reads its pass line anew)."""
    from pymta.sessions import LISTENER_COMMANDS

    if svc.type == "pass":
        return svc.program == "smtpd"
    return svc.type == "inet" and svc.program in LISTENER_COMMANDS


def reload(system: Any, worker_fds: Mapping[str, int] | None = None) -> Deferred[bool]:
    """Reload ``system`` (a running :class:`pymta.assemble.MailSystem`) from its
    configuration directory; fires with False when the configuration was
    refused, True once the new listeners listen.

    ``worker_fds`` is a worker's: {listener key: descriptor} of the sockets
    the master opened for new listeners (a worker cannot bind them itself).
    """
    from pymta.assemble import load_checked
    from pymta.cleanup import Cleanup
    from pymta.listeners import ListenError
    from pymta.mailauth.service import MailAuth
    from pymta.milter.config import MilterClients
    from pymta.rewrite import Resolver
    from pymta.sessions import (
        LISTENER_COMMANDS,
        SessionParts,
        add_listener,
        listener_keys,
        session_factory,
    )

    # First, and whatever the configuration says: logrotate's postrotate
    # reload must move the mail log to the new file even when a half-edited
    # main.cf is refused below.
    system.reopen_maillog()
    directory = system.config.get("config_directory")
    try:
        new_config, new_master = load_checked(directory)
    except ConfigError as e:
        log.error("reload: configuration error, keeping the running configuration: {e}", e=e)
        return succeed(False)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        log.error(
            "reload: configuration error, keeping the running configuration: {where}{cause}",
            where=where,
            cause=e.strerror or e,
        )
        return succeed(False)

    kept = changed(system.config, new_config, set(RESTART_PARAMETERS))
    for name in kept:
        log.warn(
            "reload: {name} changed: needs a restart (running with {name} = {value})",
            name=name,
            value=kept[name],
        )
    # Compared with what the delivery side runs with (not with the last
    # reload's configuration): a change is reported until a restart applies
    # it, and a change undone is not reported.
    delivery = delivery_names(system.delivery_config, system.master, new_config)
    for name, value in changed(system.delivery_config, new_config, delivery - set(kept)).items():
        log.warn(
            "reload: {name} changed: needs a restart for delivery (the queue manager "
            "and delivery agents keep {name} = {value})",
            name=name,
            value=value,
        )
    config = new_config.with_overrides(kept, source="running configuration") if kept else new_config

    old_others = {(s.name, s.type): s for s in system.master if not applied_by_reload(s)}
    for svc in new_master:
        if applied_by_reload(svc):
            continue
        before = old_others.pop((svc.name, svc.type), None)
        if before is None or _line(before) != _line(svc):
            log.warn(
                "reload: master.cf service {name}/{type} changed: needs a restart",
                name=svc.name,
                type=svc.type,
            )
    for name, kind in old_others:
        log.warn(
            "reload: master.cf service {name}/{type} removed: needs a restart",
            name=name,
            type=kind,
        )

    try:
        old_parts: SessionParts = system.sessions
        resolver = old_parts.resolver  # the switch the queue manager shares
        new_resolver = Resolver(config)
        cleanup = Cleanup(
            config,
            system.store,
            resolver,
            clock=old_parts.reactor,
            trigger=system.queue_trigger,
            mailauth=MailAuth.from_config(config, old_parts.reactor),
            non_smtpd_milters=MilterClients.from_config(
                config, "non_smtpd_milters", old_parts.reactor
            ),
        )
        parts = SessionParts(
            cleanup=cleanup,
            resolver=resolver,
            queue_space=old_parts.queue_space,
            mailstore=old_parts.mailstore,
            metrics=old_parts.metrics,
            reactor=old_parts.reactor,
            dns=old_parts.dns,
            delivery_sync=old_parts.delivery_sync,
        )
        wanted: dict[str, tuple[MasterService, str, int, Any]] = {}
        for svc in new_master:
            if svc.type != "inet" or svc.program not in LISTENER_COMMANDS:
                continue
            factory = session_factory(svc, config, parts)
            for key, interface, port in listener_keys(svc, config):
                wanted[key] = (svc, interface, port, factory)
    except (ConfigError, OSError) as e:
        # load_checked built the same parts: only a file changed in between gets here.
        log.error("reload: configuration error, keeping the running configuration: {e}", e=e)
        return succeed(False)

    resolver.current = new_resolver
    system.sessions = parts
    system.cleanup = cleanup
    system.config = config
    # The listeners' lines as now, the other services' as they run.
    system.master = [svc for svc in new_master if applied_by_reload(svc)] + [
        svc for svc in system.master if not applied_by_reload(svc)
    ]
    closing: list[Deferred[object]] = []
    for key in [k for k in system.ports if k not in wanted]:
        server = system.ports.pop(key)
        system.listener_services.pop(key, None)
        # Stops accepting; open sessions continue.
        closing.append(maybeDeferred(server.disownServiceParent))
        log.info("reload: {service} closed (sessions on it continue)", service=server.name)
    for key, (svc, _interface, _port, factory) in wanted.items():
        server = system.ports.get(key)
        if server is not None:
            carry_counters(server.session_factory, factory)
            server.replace_factory(factory)
            system.listener_services[key] = svc

    def open_new(_: object) -> bool:
        # After the closed ports released their addresses: a listener that
        # moved from one interface to all of them binds the same port.
        for key, (svc, interface, port, factory) in wanted.items():
            if key in system.ports:
                continue
            try:
                add_listener(system, key, svc, interface, port, factory, worker_fds, parts.reactor)
            except (ListenError, ConfigError) as e:
                log.error("reload: {e}: needs a restart", e=e)
        log.info("reload: done")
        return True

    return DeferredList(closing).addCallback(open_new)
