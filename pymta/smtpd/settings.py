"""What every session of one smtpd listener shares: its settings and counters.

Mirrors the per-service start-up of Postfix's smtpd: parameters (after the
service's ``-o`` overrides) are read and checked once, the restriction
lists are parsed once (DNS-based ones need the ``dns`` resolver), and every connection gets an
:class:`~pymta.smtpd.protocol.SMTPServerProtocol` sharing them. A bad value
is a ConfigError at start. Nothing here writes; connections log.

The session (pymta.smtpd.protocol) reads these; pymta.smtpd.factory adds
the one thing that needs the session class, building it, so that the
session and the factory do not import each other.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ServerFactory

from pymta.cleanup.interface import ICleanup
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.dns.interface import IDNSResolver
from pymta.milter.config import MilterClients
from pymta.netmatch import NetworkList
from pymta.queue.space import QueueSpace
from pymta.smtpd.anvil import ClientRates
from pymta.smtpd.peername import HostsFile, PeerName, PeerNames
from pymta.smtpd.resolver import SmtpdResolver
from pymta.smtpd.restrictions import OpenTable, Restrictions
from pymta.smtpd.sasl import SaslSettings
from pymta.tls import ServerTLS

__all__ = ["SMTPServerSettings"]

_BARE_NEWLINE = ("no", "normalize", "reject")


class SMTPServerSettings(ServerFactory):
    """The settings of one listener; see the module docstring."""

    def __init__(
        self,
        config: Config,
        cleanup: ICleanup,
        resolver: SmtpdResolver,
        open_table: OpenTable,
        tls: ServerTLS | None,
        clock: IReactorTime,
        service_name: str = "smtpd",
        checker: ICredentialsChecker | None = None,
        queue_space: QueueSpace | None = None,
        dns: IDNSResolver | None = None,
        hosts: HostsFile | None = None,
        reactor: Any = None,
        master_service: str | None = None,
    ) -> None:
        self.config = config
        self.cleanup = cleanup
        self.resolver = resolver
        self.tls = tls
        self.clock = clock
        self.service_name = service_name
        #: The master.cf service name (``smtp``, ``submission``,
        #: ``127.0.0.1:2525``): anvil counts each service apart and names
        #: it in its warnings, as Postfix does.
        self.master_service = master_service or service_name
        self.myhostname = config.get("myhostname")
        self.message_size_limit = config.get_int("message_size_limit")
        #: The queue file system's free space, checked at MAIL FROM against
        #: queue_minfree (Postfix's smtpd_check_queue); None checks nothing.
        self.queue_space = queue_space
        self.queue_minfree = config.get_int("queue_minfree")
        self.line_length_limit = max(config.get_int("line_length_limit"), 512)
        self.recipient_limit = config.get_int("smtpd_recipient_limit")
        self.hard_error_limit = config.get_int("smtpd_hard_error_limit")
        self.junk_command_limit = config.get_int("smtpd_junk_command_limit")
        self.timeout = config.get_time("smtpd_timeout")
        self.helo_required = config.get_bool("smtpd_helo_required")
        self.disable_vrfy = config.get_bool("disable_vrfy_command")
        self.smtputf8_enable = config.get_bool("smtputf8_enable")
        self.forbid_unauth_pipelining = config.get_bool("smtpd_forbid_unauth_pipelining")
        self.strict_envelopes = config.get_bool("strict_rfc821_envelopes")
        self.soft_error_limit = config.get_int("smtpd_soft_error_limit")
        self.error_sleep_time = config.get_time("smtpd_error_sleep_time")
        self.connection_count_limit = config.get_int("smtpd_client_connection_count_limit")
        self.event_limit_exceptions = NetworkList(
            config.get_list("smtpd_client_event_limit_exceptions"),
            "smtpd_client_event_limit_exceptions",
        )
        forbidden = (
            config.get_list("smtpd_forbidden_commands")
            if config.is_known("smtpd_forbidden_commands")
            else ["CONNECT", "GET", "POST"]
        )
        self.forbidden_commands = frozenset(c.lower() for c in forbidden if ":" not in c)
        #: Postfix's anvil rate limits, counted across processes.
        self.rates = ClientRates(
            config, self.master_service, clock, exceptions=self.event_limit_exceptions
        )
        self.bare_newline = config.get("smtpd_forbid_bare_newline").strip().lower()
        if self.bare_newline not in _BARE_NEWLINE:
            raise ConfigError(
                f"bad value {self.bare_newline!r}: expected no, normalize or reject",
                parameter="smtpd_forbid_bare_newline",
            )
        mynetworks = NetworkList(config.get_list("mynetworks"))
        exclusions = config.get_list("smtpd_forbid_bare_newline_exclusions")
        self.bare_newline_exclusions = (
            mynetworks
            if exclusions == config.get_list("mynetworks")
            else NetworkList(exclusions, "smtpd_forbid_bare_newline_exclusions")
        )
        #: DNS for the client name and the DNS-based restrictions (pymta's
        #: service passes twisted.names behind a deadline and a cache; None
        #: in tests and embeddings without DNS: no name lookups then).
        self.dns = dns
        self.peernames: PeerNames | None = None
        if dns is not None and config.get_bool("smtpd_peername_lookup"):
            self.peernames = PeerNames(dns, hosts if hosts is not None else HostsFile.read())
        #: smtpd_milters (pymta.milter), asked at each stage; None without.
        self.milters = MilterClients.from_config(
            config, "smtpd_milters", reactor if reactor is not None else clock
        )
        self.restrictions = Restrictions(
            config, resolver, open_table, mynetworks, dns, reactor=reactor
        )
        self.banner = f"220 {config.get('smtpd_banner')}\r\n".encode()
        self.helo_reply = f"250 {self.myhostname}\r\n".encode()
        # Like Postfix, a discarded DSN keyword also turns the parameters off.
        self.dsn_enable = "dsn" not in {
            k.lower() for k in config.get_list("smtpd_discard_ehlo_keywords")
        }
        self.sasl = SaslSettings.from_config(config)
        self.sasl_exceptions = NetworkList(
            config.get_list("smtpd_sasl_exceptions_networks"), "smtpd_sasl_exceptions_networks"
        )
        #: The twisted.cred checker of AUTH (the one POP3 and IMAP share).
        self.checker: ICredentialsChecker | None = checker
        if self.sasl.enabled and checker is None:
            if config.get("smtpd_sasl_type").strip().lower() == "dovecot":
                from pymta.auth.dovecot import DovecotAuthChecker, auth_endpoint

                connector = reactor if reactor is not None else clock
                self.checker = DovecotAuthChecker(auth_endpoint(config, connector), clock)
            else:
                from pymta.auth.passdb import shared_checker

                self.checker = shared_checker(config, clock)
        self._ehlo_replies: dict[tuple[bool, tuple[str, ...]], bytes] = {}
        self.ehlo_reply = self.ehlo(starttls=False)
        self.ehlo_reply_tls = self.ehlo(starttls=True)
        commands = "EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
        if tls is not None:
            commands += " STARTTLS"
        if self.sasl.enabled:
            commands += " AUTH"
        self.help_reply = f"214 2.0.0 Commands: {commands}\r\n".encode()

    def ehlo(self, starttls: bool, mechanisms: tuple[str, ...] = ()) -> bytes:
        """The EHLO reply offering STARTTLS or not and these AUTH mechanisms
        (made once per combination)."""
        key = (starttls, mechanisms)
        reply = self._ehlo_replies.get(key)
        if reply is None:
            reply = self._ehlo_replies[key] = self._ehlo(starttls, mechanisms)
        return reply

    def _ehlo(self, starttls: bool, mechanisms: tuple[str, ...]) -> bytes:
        lines = [self.myhostname, "PIPELINING"]
        lines.append(f"SIZE {self.message_size_limit}" if self.message_size_limit else "SIZE")
        if not self.disable_vrfy:
            lines.append("VRFY")
        if starttls:
            lines.append("STARTTLS")
        if mechanisms:
            lines.append("AUTH " + " ".join(mechanisms))
            if self.sasl.broken_clients:
                lines.append("AUTH=" + " ".join(mechanisms))
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.smtputf8_enable:
            lines.append("SMTPUTF8")
        # smtpd_discard_ehlo_keywords hides keywords (Postfix: not the feature).
        discard = {k.lower() for k in self.config.get_list("smtpd_discard_ehlo_keywords")}
        lines = [lines[0]] + [
            k for k in lines[1:] if k.split()[0].partition("=")[0].lower() not in discard
        ]
        text = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
        return text.encode()

    def queue_space_check(self, declared_size: int) -> str | None:
        """Why the queue file system is too full to take a message (the text
        of the warning to log), or None when it is not.

        Postfix's smtpd_check_queue(): too full is free space at most
        queue_minfree, or at most 1.5 x message_size_limit when that limit is
        set (room for a few messages in flight). A SIZE= that does not fit
        above queue_minfree is refused the same way, as RFC 1870 section
        6.1 asks (452: storage that is short now, not a fixed limit).
        """
        if self.queue_space is None:
            return None
        free = self.queue_space.available()
        if free is None:
            return None
        minfree = self.queue_minfree
        limit = self.message_size_limit
        if free <= minfree or (limit and free <= 1.5 * limit):
            # Postfix's words, so that log watchers keep matching.
            return (
                f"not enough free space in mail queue: {free} bytes < "
                f"1.5*message size limit (queue_minfree {minfree})"
            )
        if declared_size and free - declared_size < minfree:
            return (
                f"not enough free space in mail queue: {free} bytes < "
                f"SIZE {declared_size} + queue_minfree {minfree}"
            )
        return None

    def lookup_client(self, address: str) -> PeerName | Deferred[PeerName] | None:
        """The client's forward-confirmed name (smtpd_peername_lookup): the
        name itself when no DNS query is needed (the hosts file), a
        Deferred when one is, or None when this smtpd does no lookups: the
        client is then ``unknown[address]``, as in Postfix with the lookup
        off."""
        if self.peernames is None:
            return None
        known = self.peernames.known(address)
        if known is not None:
            return known
        return self.peernames.lookup(address)
