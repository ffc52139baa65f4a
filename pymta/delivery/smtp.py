"""smtp: the SMTP (and relay) delivery agent — mail to other servers.

Mirrors Postfix's smtp(8). A request's next hop is ``domain`` (MX lookup),
``domain:port``, ``[host]`` or ``[host]:port`` (no MX lookup), as in
``transport_maps`` / ``relayhost``. The agent:

1. reuses an idle connection to the same destination when the cache has
   one (RSET first; see :mod:`~pymta.delivery.smtp_cache`);
2. else finds the hosts (:func:`pymta.dns.find_hosts`: MX by preference,
   A/AAAA fallback, null MX, NXDOMAIN -> bounce, SERVFAIL -> defer, and
   "mail for X loops back to myself" when an MX is this host), keeps the
   first ``smtp_mx_address_limit``, and tries them in order: a failed
   connection, a 4xx (or, with ``smtp_skip_5xx_greeting``, 5xx) greeting,
   a failed HELO/STARTTLS/AUTH or a timeout moves on to the next host, up
   to ``smtp_mx_session_limit`` sessions; a failed TLS handshake under
   ``may`` is retried with the same host in plain text;
3. runs one transaction (:func:`~pymta.delivery.smtp_proto.transaction`),
   the body read from the queue file block by block as the socket drains
   (SIZE= and BODY= come from one read of it first, in a worker thread for
   large messages), and returns one status per recipient — sent, deferred (4xx) or
   bounced (5xx, with the remote reply as the diagnostic) — with
   ``relay=mx.example[192.0.2.1]:25``;
4. keeps the connection for the next message, or says QUIT.

Time limits are Postfix's ``smtp_*_timeout``; the TLS policy
:mod:`~pymta.delivery.smtp_tls`; AUTH :mod:`~pymta.delivery.smtp_sasl`;
MTA-STS (``pymta_mta_sts``, :mod:`pymta.mtasts.client`) chooses the MX
hosts and the TLS policy of domains that publish one.
Results are values: the returned Deferred errbacks only on a bug.
Each status carries ``timings`` (connection setup, transmission) for the
log's delays=c/d. Untrusted input: DNS answers and the peer's replies.
Writes nothing but the network. Logs, like Postfix, each host that failed
(``connect to X: Connection refused``, ``QID: conversation with X timed
out while ...``) and the TLS line of each session.
"""

from __future__ import annotations

import functools
import random as random_module
import socket
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from pymta.config import Config
from pymta.config.errors import ConfigError
from pymta.delivery.dane import DANE_LEVELS, host_policy
from pymta.delivery.interface import DeliveryRequest, IDeliveryAgent, RecipientStatus
from pymta.delivery.lookup import Lookup, OpenMaps, default_open_maps
from pymta.delivery.smtp_cache import ConnectionCache
from pymta.delivery.smtp_chat import SessionError, SMTPChat
from pymta.delivery.smtp_content import survey
from pymta.delivery.smtp_proto import Session, SessionSettings, handshake, quit, reset, transaction
from pymta.delivery.smtp_sasl import credentials_for
from pymta.delivery.smtp_tls import (
    PKIX,
    ClientCertificate,
    PolicyHook,
    TLSPolicy,
    check_main_cf,
    client_grades,
    dane_usable,
    fingerprint_digest,
    grades_of,
    load_trust,
    main_cf_policy,
    reference_names,
    table_policy,
)
from pymta.dns import HostList, IDNSResolver, find_hosts
from pymta.dns.mx import Host
from pymta.maillog import maillog
from pymta.queue.reference import blocks
from pymta.tables.interface import TableError

if TYPE_CHECKING:
    from pymta.mtasts.client import MTASTS

#: Content up to this size is surveyed in the reactor (a few preads).
SURVEY_INLINE = 256 * 1024

#: connect(address, port, timeout, relay) -> a connected SMTPChat (errback: ConnectError)
Connector = Callable[[str, int, float, str], Deferred[SMTPChat]]

_TIMEOUTS = {
    "connect": "connect_timeout",
    "helo": "helo_timeout",
    "starttls": "starttls_timeout",
    "mail": "mail_timeout",
    "rcpt": "rcpt_timeout",
    "data_init": "data_init_timeout",
    "data_xfer": "data_xfer_timeout",
    "data_done": "data_done_timeout",
    "rset": "rset_timeout",
    "quit": "quit_timeout",
}

#: lmtp_* parameters whose names differ from their smtp_* twins
_LMTP_NAMES = {"helo_timeout": "lhlo_timeout", "helo_name": "lhlo_name"}


def param_name(protocol: str, name: str) -> str:
    """``smtp_<name>`` or Postfix's lmtp twin (``lmtp_lhlo_timeout``...)."""
    if protocol == "lmtp":
        return "lmtp_" + _LMTP_NAMES.get(name, name)
    return "smtp_" + name


def parse_nexthop(nexthop: str, default_port: int) -> tuple[str, int, bool]:
    """``[host]:port`` / ``host:port`` / ``[host]`` / ``domain`` -> (host, port, use_mx).

    LMTP forms: ``inet:host:port`` is ``host:port``; ``unix:/path`` gives
    (``/path``, 0, False)."""
    text = nexthop.strip()
    if text.startswith("unix:"):
        return text[5:], 0, False
    if text.startswith("inet:"):
        text = text[5:]
    use_mx = True
    port_text = ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        use_mx = False
        if rest.startswith(":"):
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    if host.lower().startswith("ipv6:"):
        host = host[5:]
    return host.rstrip(".").lower(), service_port(port_text) if port_text else default_port, use_mx


def service_port(text: str) -> int:
    """``25`` or a service name (``smtp``, ``submission``) -> port number."""
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        return {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}.get(text, 25)


def own_addresses(config: Config) -> set[str]:
    """The addresses mail to which is mail to ourselves (Postfix's inet_addr_local)."""
    found = {"127.0.0.1", "::1"}
    for name in ("inet_interfaces", "proxy_interfaces"):
        for item in config.get_list(name):
            if item not in ("all", "loopback-only"):
                found.add(item.strip("[]"))
    return found


class _ChatFactory(Factory):
    """Builds the one SMTPChat of a connection (quietly: one per delivery)."""

    noisy = False

    def __init__(self, clock: IReactorTime, relay: str) -> None:
        self.clock = clock
        self.relay = relay

    def buildProtocol(self, addr: Any) -> SMTPChat:
        return SMTPChat(self.clock, self.relay)


def tcp_connector(
    reactor: Any, clock: IReactorTime, config: Config, protocol: str = "smtp"
) -> Connector:
    """Real connections: TCP (with smtp_bind_address / smtp_bind_address6),
    or a UNIX-domain socket for an address that is a path (LMTP)."""
    bind4 = config.get(param_name(protocol, "bind_address")).strip()
    bind6 = config.get(param_name(protocol, "bind_address6")).strip()

    def connect(address: str, port: int, timeout: float, relay: str) -> Deferred[SMTPChat]:
        endpoint: Any
        if address.startswith("/"):
            endpoint = UNIXClientEndpoint(reactor, address, timeout=timeout or 30)
        elif ":" in address:
            bind = (bind6, 0) if bind6 else None
            endpoint = TCP6ClientEndpoint(reactor, address, port, timeout=timeout, bindAddress=bind)
        else:
            bind = (bind4, 0) if bind4 else None
            endpoint = TCP4ClientEndpoint(reactor, address, port, timeout=timeout, bindAddress=bind)
        d: Deferred[SMTPChat] = endpoint.connect(_ChatFactory(clock, relay))
        return d

    return connect


def _connect_error(error: BaseException) -> str:
    if isinstance(error, net_error.ConnectionRefusedError):
        return "Connection refused"
    if isinstance(error, (net_error.TimeoutError, net_error.TCPTimedOutError)):
        return "Connection timed out"
    if isinstance(error, net_error.NoRouteError):
        return "No route to host"
    return str(error) or error.__class__.__name__


@implementer(IDeliveryAgent)
class SMTPAgent:
    """Postfix's smtp(8) on one reactor (see module doc)."""

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        dns: IDNSResolver,
        connect: Connector,
        open_maps: OpenMaps = default_open_maps,
        random: random_module.Random | None = None,
        own: Collection[str] | None = None,
        name: str = "smtp",
        protocol: str = "smtp",
        policy_hooks: Sequence[PolicyHook] = (),
        mta_sts: MTASTS | None = None,
    ) -> None:
        self.name = name
        #: sources of TLS policy after smtp_tls_policy_maps (MTA-STS), in order
        self.policy_hooks = list(policy_hooks)
        #: RFC 8461 (pymta_mta_sts): its policy hook, MX filter and testing checks
        self.mta_sts = mta_sts
        if mta_sts is not None:
            self.policy_hooks.append(mta_sts.tls_policy)
        self.protocol = protocol
        p = functools.partial(param_name, protocol)
        self._config = config
        self._clock = clock
        self._dns = dns
        self._connect = connect
        self._random = random or random_module.Random()
        self._own = set(own) if own is not None else own_addresses(config)
        self._own_names = {config.get("myhostname").lower()}
        self._p = p
        self._default_port = service_port(config.get(p("tcp_port")).strip() or protocol)
        self._timeouts = {k: config.get_time(p(v)) for k, v in _TIMEOUTS.items()}
        if protocol == "lmtp" and self._timeouts["connect"] <= 0:
            self._timeouts["connect"] = 30.0  # lmtp_connect_timeout 0: the system's limit
        self._mx_address_limit = config.get_int(p("mx_address_limit"))
        self._mx_session_limit = config.get_int(p("mx_session_limit"))
        self._helo = config.get(p("helo_name"))
        protocols = {p.lower() for p in config.get_list("inet_protocols")}
        self._ipv6 = not protocols or bool(protocols & {"all", "ipv6"})
        self._policy_table = self._maps(open_maps, p("tls_policy_maps"))
        self._sasl_table = (
            self._maps(open_maps, p("sasl_password_maps"))
            if config.get_bool(p("sasl_auth_enable"))
            else None
        )
        check_main_cf(config, protocol)  # a level pymta cannot honour stops the start
        self._fingerprint_digest = fingerprint_digest(config, protocol)
        self._certificate = ClientCertificate(config, protocol)
        cafile = config.get(p("tls_CAfile")).strip()
        self._trust: Any = load_trust(cafile) if cafile else None
        self._tls_grades = client_grades(config, protocol)
        reuse = config.get_bool(p("connection_cache_on_demand")) or bool(
            config.get_list(p("connection_cache_destinations"))
        )
        self._cache_destinations = {
            d.lower() for d in config.get_list(p("connection_cache_destinations"))
        }
        self._cache_on_demand = config.get_bool(p("connection_cache_on_demand"))
        self.cache = ConnectionCache(
            clock,
            self._close,
            config.get_time(p("connection_cache_time_limit")) if reuse else 0.0,
            config.get_int(p("connection_reuse_count_limit")),
            config.get_time(p("connection_reuse_time_limit")),
        )

    def _maps(self, open_maps: OpenMaps, name: str) -> Lookup | None:
        specs = self._config.get_list(name)
        return open_maps(specs, self._config) if specs else None

    async def _destination_policy(self, nexthop: str, domain: str) -> TLSPolicy:
        """smtp_tls_policy_maps first (the administrator's word), then each
        hook (MTA-STS), then the main.cf level. Errors as table_policy."""
        found = table_policy(nexthop, domain, self._policy_table, self._p("tls_policy_maps"))
        if found is not None:
            if found.level in DANE_LEVELS and not dane_usable(self._config):
                raise ValueError(f"level {found.level} needs smtp_dns_support_level = dnssec")
            return found
        for hook in self.policy_hooks:
            hooked = await hook(nexthop, domain)
            if hooked is not None:
                return hooked
        return main_cf_policy(self._config, self.protocol)

    def _settings(
        self, nexthop: str, domain: str, host: Host | None, policy: TLSPolicy
    ) -> SessionSettings:
        if self.mta_sts is not None:
            # After DANE's per-host policy: MTA-STS for hosts without usable TLSA.
            policy = self.mta_sts.host_policy(policy)
        sasl = None
        if self._sasl_table is not None:
            sasl = credentials_for(self._sasl_table, nexthop, host.name if host else domain)
        return SessionSettings(
            helo_name=self._helo,
            timeouts=self._timeouts,
            tls=policy,
            trust=self._trust,
            tls_grades=grades_of(policy, self._config, self.protocol) or self._tls_grades,
            sasl=sasl,
            sasl_options=self._config.get_list(self._p("sasl_security_options")),
            sasl_tls_options=self._config.get_list(self._p("sasl_tls_security_options")),
            sasl_cleartext=self._config.get_bool("pymta_smtp_sasl_cleartext"),
            never_ehlo=self.protocol == "smtp" and self._config.get_bool("smtp_never_send_ehlo"),
            skip_5xx_greeting=self._config.get_bool(self._p("skip_5xx_greeting")),
            lmtp=self.protocol == "lmtp",
            service=self.name,
            myhostname=self._config.get("myhostname"),
            fingerprint_digest=self._fingerprint_digest,
            identity=self._certificate.current(),
        )

    def _cacheable(self, nexthop: str, domain: str) -> bool:
        if self._cache_on_demand:
            return True
        return nexthop.lower() in self._cache_destinations or domain in self._cache_destinations

    # IDeliveryAgent --------------------------------------------------------

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        return Deferred.fromCoroutine(self._deliver(request))

    async def _deliver(self, request: DeliveryRequest) -> list[RecipientStatus]:
        started = self._clock.seconds()
        nexthop = request.nexthop
        domain, port, use_mx = parse_nexthop(nexthop, self._default_port)
        key: Hashable = (nexthop.lower(), port)
        # The wire size (SIZE=) and 8-bitness (BODY=) come before the body is
        # sent: one read of the content, in a worker thread when it is large.
        content = request.message
        if content.size <= SURVEY_INLINE:
            facts = survey(blocks(content))
        else:
            facts = await deferToThread(lambda: survey(blocks(content)))

        def every(
            status: str, reason: str, relay: str = "none", diag: str = ""
        ) -> list[RecipientStatus]:
            timings = (self._clock.seconds() - started, 0.0)
            return [
                RecipientStatus(r.index, status, reason, relay, diag, timings=timings)
                for r in request.recipients
            ]

        try:
            policy = await self._destination_policy(nexthop, domain)
            grades_of(policy, self._config, self.protocol)  # a bad ciphers= defers here
        except TableError as e:
            return every("4.3.0", f"TLS policy table lookup failure: {e}")
        except (ConfigError, ValueError) as e:
            # Postfix defers on a bad policy; pymta never falls back to less.
            return every("4.7.5", f"TLS policy for {nexthop}: {e}")
        session = self.cache.take(key)
        if session is not None:
            settings = self._settings(nexthop, domain, None, policy)
            if await reset(session, settings):
                return await self._send(session, settings, key, request, facts, started, domain)
            self._close(session)
        lmtp = self.protocol == "lmtp"
        hosts: HostList
        if domain.startswith("/"):  # LMTP over a UNIX-domain socket
            hosts = HostList([Host(self._config.get("myhostname"), domain)])
        else:
            # LMTP never looks up MX records, nor checks for loops (Postfix's lmtp).
            hosts = await find_hosts(
                self._dns,
                domain,
                use_mx=use_mx and not lmtp,
                random=self._random,
                own_addresses=() if lmtp else self._own,
                own_names=() if lmtp else self._own_names,
                ipv6=self._ipv6,
            )
        if not hosts.ok:
            return every(hosts.status, hosts.reason)
        candidates = hosts.hosts
        if self.mta_sts is not None:
            # RFC 8461 4.1: under enforce only the policy's MX hosts are used.
            candidates = self.mta_sts.hosts(policy, domain, candidates, request.queue_id)
            if not candidates:
                return every(
                    "4.7.5", f"MTA-STS policy of {domain}: no MX host is permitted by the policy"
                )
        last = SessionError("4.4.1", f"delivery to {domain} failed: no host")
        sessions = 0
        attempts: list[tuple[Host, bool]] = [
            (h, False) for h in candidates[: max(self._mx_address_limit, 1)]
        ]
        while attempts:
            host, plaintext = attempts.pop(0)
            if sessions >= max(self._mx_session_limit, 1) and not plaintext:
                break
            relay = f"{host.name}[{host.address}]" + (f":{port}" if port else "")
            host_tls = policy
            if policy.level in DANE_LEVELS and not plaintext:
                # RFC 7672: the TLSA records of this MX host, before connecting.
                try:
                    host_tls = await host_policy(self._dns, policy, host, port, domain)
                except SessionError as e:
                    last = e
                    maillog(self.name, f"{request.queue_id}: {e.reason}")
                    continue
            try:
                chat = await self._connect(host.address, port, self._timeouts["connect"], relay)
            except Exception as e:  # a failed connection: the next host
                last = SessionError("4.4.1", f"connect to {relay}: {_connect_error(e)}")
                maillog(self.name, last.reason)
                continue
            sessions += 1
            if host_tls.level in PKIX:
                names = reference_names(host_tls, host.name, domain)
                host_tls = replace(host_tls, match=names)
            settings = self._settings(nexthop, domain, host, host_tls)
            if plaintext:
                settings.tls = TLSPolicy("none")
            tls_name = domain if settings.tls.level == "secure" else host.name
            try:
                session = await handshake(chat, settings, tls_name)
            except SessionError as e:
                chat.abort() if chat.failed else quit(Session(chat, relay), settings)
                maillog(self.name, f"{request.queue_id}: {e.reason}")
                if e.dsn == "4.7.5" and settings.tls.level == "may":
                    # Opportunistic TLS that fails its handshake is retried
                    # in plain text at once, as Postfix's smtp does.
                    attempts.insert(0, (host, True))
                    last = e
                    continue
                if e.next_host:
                    last = e
                    continue
                return every(e.dsn, e.reason, relay, e.diagnostic)
            except BaseException:
                chat.abort()  # a bug: do not leave the connection open
                raise
            session.opened = started
            if self.mta_sts is not None:
                self.mta_sts.check_session(
                    policy, domain, chat.transport, session.tls, host, relay, request.queue_id
                )
            return await self._send(session, settings, key, request, facts, started, domain)
        return every("4" + last.dsn[1:], last.reason, "none", last.diagnostic)

    async def _send(
        self,
        session: Session,
        settings: SessionSettings,
        key: Hashable,
        request: DeliveryRequest,
        facts: tuple[int, bool],
        started: float,
        domain: str,
    ) -> list[RecipientStatus]:
        ready = self._clock.seconds()
        statuses = await transaction(
            session, settings, request.envelope, request.message, facts, request.recipients
        )
        done = self._clock.seconds()
        timings = (ready - started, done - ready)
        if self._cacheable(request.nexthop, domain) and not session.chat.failed:
            self.cache.put(key, session)
        else:
            self._close(session)
        return [
            RecipientStatus(s.index, s.status, s.reason, s.relay, s.diagnostic, timings=timings)
            for s in statuses
        ]

    def _close(self, session: Session) -> None:
        quit(session, SessionSettings(self._helo, self._timeouts))

    def close(self) -> None:
        """Say QUIT on every cached connection (at shutdown)."""
        self.cache.close_all()
