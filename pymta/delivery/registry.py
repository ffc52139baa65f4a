"""registry: the delivery agents by master.cf command name, and their construction.

Mirrors the delivery-agent lines of Postfix's master.cf: a service
(``virtual unix - n n - - virtual``) names a command; :data:`AGENTS` maps
the command to a factory, and :func:`build_agents` builds one agent per
service — the service name is the transport name qmgr schedules by (so
``relay`` or a custom ``slow-virtual`` works as in Postfix), and each agent
sees the main.cf Config with that service's ``-o`` overrides. As in
Postfix, the ``error`` command runs in retry mode when its service is
called ``retry``. Services whose command is not a delivery agent are
skipped (smtpd, qmgr, cleanup... are built elsewhere); :func:`process_limits`
gives qmgr each transport's maxproc.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorProcess, IReactorTime

from pymta.cleanup.interface import ICleanup
from pymta.config import Config, ConfigError
from pymta.config.master_cf import MasterService
from pymta.delivery.discard import DiscardAgent
from pymta.delivery.error import ErrorAgent
from pymta.delivery.interface import IDeliveryAgent
from pymta.delivery.local import LocalAgent
from pymta.delivery.lookup import OpenMaps, default_open_maps
from pymta.delivery.virtual import VirtualAgent
from pymta.privsep.interface import IUserDelivery
from pymta.sync import ISyncBarrier

if TYPE_CHECKING:
    from pymta.dns.interface import IDNSResolver
    from pymta.mtasts.client import MTASTS


@dataclass
class AgentContext:
    """What agents are built from; ``config`` is main.cf (overrides are added here)."""

    config: Config
    sync: ISyncBarrier
    cleanup: ICleanup
    clock: IReactorTime
    reactor: IReactorProcess | Any
    open_maps: OpenMaps = default_open_maps
    #: The agents built so far, by transport name (local(8)'s
    #: mailbox_transport and fallback_transport hand recipients to them).
    agents: dict[str, IDeliveryAgent] = field(default_factory=dict)
    #: Who becomes local recipients and pipe(8) users: the root helper when
    #: twistd switched users (pymta.privsep.client), else a child per delivery.
    users: IUserDelivery | None = None

    def user_delivery(self) -> IUserDelivery:
        if self.users is None:
            from pymta.privsep.spawn import SpawningUserDelivery

            self.users = SpawningUserDelivery(self.reactor, self.clock)
        return self.users


AgentFactory = Callable[[AgentContext, MasterService, Config], IDeliveryAgent]


def _virtual(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    from pymta.quota.policy import QuotaPolicy
    from pymta.sieve.filter import sieve_filter, thread_runner

    sieve = sieve_filter(config, context.reactor, context.cleanup, context.clock.seconds)
    quota = QuotaPolicy.from_config(config)
    return VirtualAgent(
        config,
        context.sync,
        context.clock,
        open_maps=context.open_maps,
        sieve=sieve,
        userdb=passwd_userdb(config, context.clock),
        quota=quota,
        run_in_thread=thread_runner(context.reactor),
        cleanup=context.cleanup,
    )


def passwd_userdb(
    config: Config, clock: IReactorTime
) -> Callable[[str], tuple[str, str | None] | None]:
    """address -> (home, quota rule) of its ``pymta_passdb`` passwd-file
    line (re-read when the file changes), or None; a file that cannot be
    read is no line."""
    from pymta.auth.passdb import passwd_path
    from pymta.auth.passwdfile import CHECK_INTERVAL, PasswdFile, PasswdFileError
    from pymta.quota.policy import user_rule

    try:
        passwd = PasswdFile(passwd_path(config), clock)
    except (OSError, ConfigError):
        return lambda address: None

    # Whether the file exists, checked at most once a CHECK_INTERVAL as
    # PasswdFile checks its changes: a stat per delivery on the reactor was
    # 3% of its busy time under load (issue 17's profile).
    seen: list[float | bool] = [-CHECK_INTERVAL, False]

    def present() -> bool:
        now = clock.seconds()
        if now - float(seen[0]) >= CHECK_INTERVAL:
            seen[:] = [now, os.path.exists(passwd.path)]
        return bool(seen[1])

    def lookup(address: str) -> tuple[str, str | None] | None:
        # A site without a passwd-file (plain virtual mailboxes) is no
        # error: only an existing file that cannot be read is logged.
        if not present():
            return None
        try:
            entry = passwd.lookup(address)
        except PasswdFileError:
            return None
        if entry is None:
            return None
        return entry.home, user_rule(entry.extra)

    return lookup


def _local(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    return LocalAgent(
        config,
        context.cleanup,
        context.clock,
        context.reactor,
        open_maps=context.open_maps,
        users=context.user_delivery(),
        transports=context.agents.get,
    )


def _smtp(
    context: AgentContext, service: MasterService, config: Config, protocol: str = "smtp"
) -> IDeliveryAgent:
    from pymta.delivery.smtp import SMTPAgent, tcp_connector
    from pymta.delivery.smtp_tls import dane_usable
    from pymta.dns.cache import CachingResolver
    from pymta.dns.names import NamesResolver

    # smtp_dns_support_level = dnssec: the AD bit of a loopback resolver is
    # believed (DANE); any other resolver stops the start.
    dnssec = protocol == "smtp" and dane_usable(config)
    names = NamesResolver.from_config(config, context.reactor, dnssec=dnssec)
    dns = CachingResolver(names, context.clock)
    return SMTPAgent(
        config,
        context.clock,
        dns,
        tcp_connector(context.reactor, context.clock, config, protocol),
        open_maps=context.open_maps,
        name=service.name,
        protocol=protocol,
        mta_sts=_mta_sts(context, service, config, dns) if protocol == "smtp" else None,
    )


def _mta_sts(
    context: AgentContext, service: MasterService, config: Config, dns: IDNSResolver
) -> MTASTS | None:
    """The smtp service's MTA-STS when ``pymta_mta_sts = yes`` (RFC 8461)."""
    if not config.get_bool("pymta_mta_sts"):
        return None
    from pymta.delivery.smtp_tls import load_trust
    from pymta.mtasts import from_config

    cafile = config.get("smtp_tls_CAfile").strip()
    return from_config(
        config,
        context.reactor,
        context.clock,
        dns,
        trust=load_trust(cafile) if cafile else None,
        service=service.name,
    )


def _lmtp(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    return _smtp(context, service, config, protocol="lmtp")


def _discard(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    return DiscardAgent()


def _error(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    return ErrorAgent(retry=service.name == "retry")


def _retry(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    return ErrorAgent(retry=True)


def _pipe(context: AgentContext, service: MasterService, config: Config) -> IDeliveryAgent:
    from pymta.config.pipe_args import parse_pipe
    from pymta.delivery.pipe import PipeAgent

    spec = parse_pipe(service.args, (service.filename, service.lineno))
    return PipeAgent(service.name, spec, config, context.clock, context.user_delivery())


AGENTS: dict[str, AgentFactory] = {
    "virtual": _virtual,
    "local": _local,
    "discard": _discard,
    "error": _error,
    "retry": _retry,
    "smtp": _smtp,
    "lmtp": _lmtp,
    "pipe": _pipe,
}


def build_agents(
    services: Iterable[MasterService], context: AgentContext
) -> dict[str, IDeliveryAgent]:
    """One agent per master.cf service whose command is a delivery agent,
    keyed by service (transport) name."""
    agents = context.agents
    for service in services:
        factory = AGENTS.get(service.program)
        if factory is None:
            continue
        config = service.service_config(context.config)
        agents[service.name] = factory(context, service, config)
    return agents


def process_limits(services: Iterable[MasterService], config: Config) -> dict[str, int]:
    """maxproc of every delivery service (``-``: default_process_limit; 0: unlimited)."""
    return {s.name: s.process_limit(config) for s in services if s.program in AGENTS}
