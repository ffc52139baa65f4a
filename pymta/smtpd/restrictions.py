"""SMTP access restrictions: relay control, access maps, address checks.

Mirrors Postfix's smtpd_check.c. Restriction lists come from
``smtpd_client_restrictions``, ``smtpd_helo_restrictions``,
``smtpd_sender_restrictions``, ``smtpd_relay_restrictions``,
``smtpd_recipient_restrictions`` and ``smtpd_data_restrictions``; they are
parsed once (an unknown name is a ConfigError naming the parameter) and
evaluated per check. Each restriction answers PERMIT (this list accepts),
DUNNO (go on) or a :class:`Reject`. With ``smtpd_delay_reject = yes`` the
client, helo and sender lists run at RCPT time, as Postfix does; then the
relay list, then the recipient list, then (``smtpd_reject_unlisted_recipient``)
the unlisted-recipient check. A table lookup that fails is a
``451 4.3.0 ... Temporary lookup failure``, never a 5xx.

Input: the session (client, HELO name, sender, recipient: untrusted but
syntax-checked). Output: a reply value; nothing here writes or logs —
smtpd logs the reject line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import Deferred, gatherResults

from pymta.address import split_address
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.dns.interface import SERVFAIL, DNSAnswer, IDNSResolver
from pymta.netmatch import NetworkList
from pymta.smtpd import dnsbl
from pymta.smtpd.peername import OK as NAME_OK
from pymta.smtpd.peername import TEMP as NAME_TEMP
from pymta.smtpd.peername import reverse_labels, valid_hostname
from pymta.smtpd.policy import PolicyService
from pymta.smtpd.relay import Destination, resolve_destination
from pymta.smtpd.resolver import OURS, SmtpdResolver
from pymta.smtpd.session import Session
from pymta.tables.addrmaps import lookup_address, split_result
from pymta.tables.interface import ILookupTable, TableError

__all__ = ["DUNNO", "PERMIT", "Check", "Reject", "Restrictions"]

OpenTable = Callable[[str], ILookupTable]


@dataclass(frozen=True)
class Reject:
    """A refusal: the SMTP reply ``code status text``."""

    code: int
    status: str
    text: str

    def line(self) -> str:
        return f"{self.code} {self.status} {self.text}"


PERMIT: Final = "permit"
DUNNO: Final = "dunno"
Result = Reject | str
#: What a restriction or a list answers: now, or later when it needs DNS.
MaybeResult = Result | Deferred[Result]
#: What a check answers: a refusal, None (go on), or that answer later.
Outcome = Reject | None | Deferred[Reject | None]

_UNLISTED_TABLE = {
    "local": "local recipient table",
    "virtual_alias": "virtual alias table",
    "virtual_mailbox": "virtual mailbox table",
    "relay": "relay recipient table",
}
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}\Z")
_MAX_NESTING = 4


@dataclass
class Check:
    """One evaluation: the session, and the address being checked, if any."""

    session: Session
    recipient: str | None = None
    sender: str | None = None
    reply_class: str = "Recipient address"
    _destinations: dict[str, Destination] = field(default_factory=dict)
    #: The SMTP command being checked (the policy protocol's protocol_state).
    stage: str = "RCPT"
    #: DEFER_IF_PERMIT / DEFER_IF_REJECT replies waiting for the end of the
    #: check (keys "permit", "reject"), shared by every list of one check.
    deferrals: dict[str, Reject] = field(default_factory=dict)

    @property
    def reply_name(self) -> str:
        if self.reply_class == "Recipient address":
            return self.recipient or ""
        if self.reply_class == "Sender address":
            return self.sender or ""
        if self.reply_class == "Client host":
            return self.session.client
        if self.reply_class == "Helo command":
            return self.session.helo_name
        if self.reply_class == "End-of-data":
            return "END-OF-MESSAGE"
        return "DATA"


Restriction = Callable[[Check], MaybeResult]


def first_result(items: list[Restriction], check: Check, start: int = 0) -> MaybeResult:
    """The first answer other than DUNNO in items (DUNNO when none). Runs
    synchronously until a restriction needs DNS; the rest of the list then
    runs when that answer comes, in order."""
    for i in range(start, len(items)):
        result = items[i](check)
        if result is DUNNO:
            continue
        # Plain classes first: isinstance on Deferred (an ABC) is slow.
        if isinstance(result, (Reject, str)):
            return result
        return result.addCallback(_after, items, check, i + 1)
    return DUNNO


def _after(result: Result, items: list[Restriction], check: Check, following: int) -> MaybeResult:
    return first_result(items, check, following) if result is DUNNO else result


def _verdict(result: Result) -> Reject | None:
    return result if isinstance(result, Reject) else None


def settle(outcome: Outcome, deferrals: dict[str, Reject]) -> Outcome:
    """Postfix's DEFER_IF_PERMIT / DEFER_IF_REJECT: at the end of a check, a
    request that would pass (or be refused with a 5xx) is deferred instead."""
    if outcome is None:
        return deferrals.get("permit") if deferrals else None
    if isinstance(outcome, Reject):
        return _settled(outcome, deferrals) if deferrals else outcome
    return outcome.addCallback(_settled, deferrals)


def _settled(outcome: Reject | None, deferrals: dict[str, Reject]) -> Reject | None:
    if outcome is None:
        return deferrals.get("permit")
    if outcome.code >= 500 and "reject" in deferrals:
        return deferrals["reject"]
    return outcome


class Restrictions:
    """The restriction lists of one smtpd service, built once per factory."""

    def __init__(
        self,
        config: Config,
        resolver: SmtpdResolver,
        open_table: OpenTable,
        mynetworks: NetworkList | None = None,
        dns: IDNSResolver | None = None,
        reactor: Any = None,
    ) -> None:
        self._config = config
        #: Connects to policy services (and times them, IReactorTime).
        self._reactor = reactor
        self._policy_services: dict[str, PolicyService] = {}
        self._resolver = resolver
        #: DNS for the DNS-based restrictions; None: they cannot be used.
        self._dns = dns
        self._rbl_code = self._code(config, "maps_rbl_reject_code")
        self._rbl_reply = config.raw("default_rbl_reply") or dnsbl.DEFAULT_RBL_REPLY
        self._rbl_reply_maps = [open_table(spec) for spec in config.get_list("rbl_reply_maps")]
        self._unknown_client_code = self._code(config, "unknown_client_reject_code")
        self._unknown_hostname_code = self._code(config, "unknown_hostname_reject_code")
        self._unknown_address_code = self._code(config, "unknown_address_reject_code")
        self._invalid_hostname_code = self._code(config, "invalid_hostname_reject_code")
        self._open_table = open_table
        self.mynetworks = mynetworks or NetworkList(config.get_list("mynetworks"))
        self._myorigin = config.get("myorigin")
        self.delay_reject = config.get_bool("smtpd_delay_reject")
        self.reject_unlisted = config.get_bool("smtpd_reject_unlisted_recipient")
        self.reject_unlisted_sender = config.get_bool("smtpd_reject_unlisted_sender")
        self._percent_hack = config.get_bool("allow_percent_hack")
        self._swap_bangpath = config.get_bool("swap_bangpath")
        self._dequoted = config.get_bool("resolve_dequoted_address")
        self._null_key = config.get("smtpd_null_access_lookup_key") or "<>"
        self._unknown_codes = {
            "local": self._code(config, "unknown_local_recipient_reject_code"),
            "virtual_alias": self._code(config, "unknown_virtual_alias_reject_code"),
            "virtual_mailbox": self._code(config, "unknown_virtual_mailbox_reject_code"),
            "relay": self._code(config, "unknown_relay_recipient_reject_code"),
        }
        # smtpd_restriction_classes: named lists usable as restrictions.
        self._classes = {c.lower(): c for c in config.get_list("smtpd_restriction_classes")}
        self._class_lists: dict[str, list[Restriction]] = {k: [] for k in self._classes}
        for key, name in self._classes.items():
            self._class_lists[key][:] = self._build(config.get_list(name), name, 1)
        self._clientcert_tables = [
            open_table(spec) for spec in config.get_list("relay_clientcerts")
        ]
        self._login_tables = [
            open_table(spec) for spec in config.get_list("smtpd_sender_login_maps")
        ]
        self.client = self._parse("smtpd_client_restrictions")
        self.helo = self._parse("smtpd_helo_restrictions")
        self.sender = self._parse("smtpd_sender_restrictions")
        self.relay = self._parse("smtpd_relay_restrictions")
        self.recipient = self._parse("smtpd_recipient_restrictions")
        self.data = self._parse("smtpd_data_restrictions")
        self.end_of_data = self._parse("smtpd_end_of_data_restrictions")
        self._check_relay_control()
        #: The steps of check_recipient that can say something here.
        self._recipient_plan = [
            step
            for step, active in enumerate(
                (
                    self.delay_reject and bool(self.client),
                    self.delay_reject and bool(self.helo),
                    self.delay_reject and bool(self.sender),
                    True,
                    True,
                    self.reject_unlisted,
                    self.reject_unlisted_sender,
                )
            )
            if active
        ]

    # -- building -----------------------------------------------------------

    @staticmethod
    def _code(config: Config, name: str) -> int:
        if not config.is_known(name) and name not in config.explicit():
            return 550
        code = config.get_int(name)
        if code < 400 or code > 599:
            raise ConfigError(f"bad value {code}: expected a 4xx or 5xx code", parameter=name)
        return code

    def _error(self, parameter: str, message: str) -> ConfigError:
        src = self._config.source(parameter)
        if src is not None:
            return ConfigError(message, src.filename, src.lineno or None, parameter)
        return ConfigError(message, parameter=parameter)

    def _parse(self, parameter: str) -> list[Restriction]:
        self._names_seen: dict[str, list[str]] = getattr(self, "_names_seen", {})
        names = self._config.get_list(parameter)
        self._names_seen[parameter] = [n.lower() for n in names]
        return self._build(names, parameter, 0)

    def _build(self, names: list[str], parameter: str, depth: int) -> list[Restriction]:
        out: list[Restriction] = []
        i = 0
        while i < len(names):
            name = names[i].lower()
            i += 1
            if name in _ACCESS:
                if i >= len(names):
                    raise self._error(parameter, f"{name} needs a type:table argument")
                spec = names[i]
                i += 1
                out.append(self._access(name, spec, depth))
                continue
            if name == "check_policy_service":
                if i >= len(names):
                    raise self._error(parameter, f"{name} needs inet:host:port or unix:/path")
                try:
                    out.append(self._policy(names[i]))
                except ConfigError as e:
                    raise self._error(parameter, str(e)) from None
                i += 1
                continue
            if name in _DNSBL:
                if i >= len(names):
                    raise self._error(parameter, f"{name} needs a domain[=d.d.d.d] argument")
                try:
                    site = dnsbl.parse_site(names[i])
                except ConfigError as e:
                    raise self._error(parameter, str(e)) from None
                i += 1
                self._need_dns(parameter, name)
                out.append(self._dnsbl(name, site))
                continue
            if name in self._classes:
                out.append(self._class_restriction(name))
                continue
            simple = _SIMPLE.get(name)
            if simple is not None and "login_mismatch" in name and not self._login_tables:
                raise self._error(parameter, f"{name} needs smtpd_sender_login_maps")
            if simple is None:
                raise self._error(
                    parameter,
                    f"unknown restriction {names[i - 1]!r} (known: "
                    f"{', '.join(sorted([*_SIMPLE, *_ACCESS, *_DNSBL]))})",
                )
            if name in _NEEDS_DNS:
                self._need_dns(parameter, name)
            out.append(getattr(self, simple))
        return out

    def _policy(self, spec: str) -> Restriction:
        """check_policy_service: ask the server, apply its action."""
        if self._reactor is None:
            raise ConfigError("check_policy_service needs a reactor, and this smtpd has none")
        service = self._policy_services.get(spec)
        if service is None:
            config = self._config
            service = self._policy_services[spec] = PolicyService(
                spec,
                self._reactor,
                self._reactor,
                config.get_time("smtpd_policy_service_timeout"),
                config.get_int("smtpd_policy_service_try_limit"),
                config.get("smtpd_policy_service_default_action"),
            )

        def restriction(check: Check) -> Deferred[Result]:
            def act(answer: tuple[str, str]) -> MaybeResult:
                action, _why = answer
                return self._access_result(action, check, spec, 0)

            return service.query(_policy_request(check)).addCallback(act)

        return restriction

    def _need_dns(self, parameter: str, name: str) -> None:
        if self._dns is None:
            raise self._error(parameter, f"{name} needs DNS, and this smtpd has no resolver")

    def _class_restriction(self, name: str) -> Restriction:
        def restriction(check: Check) -> MaybeResult:
            # Resolved at call time: classes may refer to each other.
            return first_result(self._class_lists[name], check)

        return restriction

    def _check_relay_control(self) -> None:
        """Postfix refuses to start as an open relay (smtpd_check.c)."""
        stoppers = {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"}
        relay = set(self._names_seen["smtpd_relay_restrictions"])
        recipient = set(self._names_seen["smtpd_recipient_restrictions"])
        if not (relay & stoppers or recipient & stoppers):
            raise self._error(
                "smtpd_relay_restrictions",
                "in smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at "
                "least one of reject_unauth_destination, defer_unauth_destination, "
                "reject or defer (else this server is an open relay)",
            )

    # -- evaluation -----------------------------------------------------------

    @staticmethod
    def evaluate(restrictions: list[Restriction], check: Check) -> Outcome:
        """Run one list: a Reject stops everything, PERMIT ends the list.
        A Deferred when a restriction had to ask DNS."""
        result = first_result(restrictions, check)
        if isinstance(result, str):
            return None
        if isinstance(result, Reject):
            return result
        return result.addCallback(_verdict)

    def _check(self, restrictions: list[Restriction], check: Check) -> Outcome:
        return settle(self.evaluate(restrictions, check), check.deferrals)

    def check_client(self, session: Session) -> Outcome:
        return self._check(self.client, Check(session, reply_class="Client host", stage="CONNECT"))

    def check_helo(self, session: Session) -> Outcome:
        return self._check(self.helo, Check(session, reply_class="Helo command", stage="HELO"))

    def check_sender(self, session: Session, sender: str) -> Outcome:
        return self._check(
            self.sender,
            Check(session, sender=sender, reply_class="Sender address", stage="MAIL"),
        )

    def check_recipient(self, session: Session, recipient: str) -> Outcome:
        """Everything that runs at RCPT TO, in Postfix's order: with
        smtpd_delay_reject the client, helo and sender lists, then the
        relay list, the recipient list and the unlisted checks."""
        deferrals: dict[str, Reject] = {}
        check = Check(session, recipient, session.sender or "", deferrals=deferrals)
        return settle(self._recipient_steps(check, 0), deferrals)

    def _recipient_steps(self, check: Check, step: int) -> Outcome:
        # A loop over the step numbers that apply, not closures: RCPT is
        # the hot path.
        plan = self._recipient_plan
        while step < len(plan):
            outcome = self._recipient_step(check, plan[step])
            step += 1
            if outcome is None:
                continue
            if isinstance(outcome, Reject):
                return outcome
            return outcome.addCallback(self._recipient_next, check, step)
        return None

    def _recipient_next(self, outcome: Reject | None, check: Check, step: int) -> Outcome:
        return outcome if outcome is not None else self._recipient_steps(check, step)

    def _recipient_step(self, check: Check, step: int) -> Outcome:
        if step < 3:
            restrictions, reply_class = (
                (self.client, "Client host"),
                (self.helo, "Helo command"),
                (self.sender, "Sender address"),
            )[step]
            if not restrictions:
                return None
            early = Check(
                check.session,
                check.recipient,
                check.sender,
                reply_class,
                check._destinations,
                deferrals=check.deferrals,
            )
            return self.evaluate(restrictions, early)
        if step == 3:
            return self.evaluate(self.relay, check)
        if step == 4:
            return self.evaluate(self.recipient, check)
        if step == 5:
            return _verdict(self.reject_unlisted_recipient(check)) if self.reject_unlisted else None
        if self.reject_unlisted_sender and check.sender:
            return _verdict(self.reject_unlisted_sender_check(check))
        return None

    def check_data(self, session: Session) -> Outcome:
        check = Check(session, sender=session.sender, reply_class="Data command", stage="DATA")
        return self._check(self.data, check)

    def check_end_of_data(self, session: Session) -> Outcome:
        """smtpd_end_of_data_restrictions, after the content, before queueing."""
        check = Check(
            session, sender=session.sender, reply_class="End-of-data", stage="END-OF-MESSAGE"
        )
        return self._check(self.end_of_data, check)

    def check_vrfy(self, session: Session, address: str) -> Reject | None:
        """VRFY answers "unknown" for unlisted users, as Postfix does."""
        result = self.reject_unlisted_recipient(Check(session, address))
        return result if isinstance(result, Reject) else None

    # -- helpers ----------------------------------------------------------------

    def destination(self, check: Check, address: str) -> Destination:
        dest = check._destinations.get(address)
        if dest is None:
            dest = resolve_destination(
                address,
                self._resolver.address_class,
                myorigin=self._myorigin,
                allow_percent_hack=self._percent_hack,
                swap_bangpath=self._swap_bangpath,
                resolve_dequoted_address=self._dequoted,
            )
            check._destinations[address] = dest
        return dest

    def _reject(self, check: Check, code: int, status: str, why: str) -> Reject:
        return Reject(code, status, f"<{check.reply_name}>: {check.reply_class} rejected: {why}")

    @staticmethod
    def _lookup_failure(name: str) -> Reject:
        return Reject(451, "4.3.0", f"<{name}>: Temporary lookup failure")

    # -- the restrictions ---------------------------------------------------------

    def r_permit(self, check: Check) -> Result:
        return PERMIT

    def r_reject(self, check: Check) -> Result:
        return self._reject(check, 554, "5.7.1", "Access denied")

    def r_defer(self, check: Check) -> Result:
        return self._reject(check, 450, "4.7.1", "Try again later")

    def r_permit_mynetworks(self, check: Check) -> Result:
        return PERMIT if self.mynetworks.contains(check.session.client_address) else DUNNO

    def r_permit_sasl_authenticated(self, check: Check) -> Result:
        return PERMIT if check.session.sasl_username else DUNNO

    def r_permit_tls_clientcerts(self, check: Check) -> Result:
        """Postfix: the client certificate's fingerprint, or its public key's,
        is listed in relay_clientcerts (trusted or not: the fingerprint is
        the credential)."""
        cert = check.session.ccert
        if cert is None:
            return DUNNO
        for table in self._clientcert_tables:
            for key in (cert.fingerprint, cert.pubkey_fingerprint):
                try:
                    found = table.lookup(key)
                except TableError:
                    return self._lookup_failure(key)
                if found is not None:
                    return PERMIT
        return DUNNO

    def r_permit_tls_all_clientcerts(self, check: Check) -> Result:
        """Postfix: any client certificate that verified against smtpd_tls_CAfile."""
        cert = check.session.ccert
        return PERMIT if cert is not None and cert.trusted else DUNNO

    # -- sender login mismatch (smtpd_sender_login_maps) ---------------------------

    def _sender_owners(self, sender: str) -> list[str] | None:
        """The logins that own sender in smtpd_sender_login_maps, in Postfix's
        address lookup order ([] when none; None when a lookup failed)."""
        delimiter = self._config.get("recipient_delimiter")
        for table in self._login_tables:
            try:
                value = lookup_address(
                    table,
                    sender,
                    delimiter=delimiter,
                    is_local_domain=lambda d: self._resolver.address_class(d) == "local",
                    propagate_extension=False,
                )
            except TableError:
                return None
            if value is not None:
                return [v.lower() for v in split_result(value)]
        return []

    def _login_mismatch(self, check: Check, authenticated: bool, known_only: bool) -> Result:
        """Postfix's reject_*_sender_login_mismatch: an authenticated client
        may use only the senders its login owns; a client that did not log
        in may not use a sender some login owns. The null sender is exempt."""
        sender = check.sender
        if not sender:
            return DUNNO
        login = check.session.sasl_username
        if bool(login) != authenticated:
            return DUNNO
        owners = self._sender_owners(sender)
        if owners is None:
            return self._lookup_failure(sender)
        if login:
            if login.lower() in owners or (known_only and not owners):
                return DUNNO
            return self._reject(check, 553, "5.7.1", f"not owned by user {login}")
        if owners:
            return self._reject(check, 553, "5.7.1", "not logged in")
        return DUNNO

    def r_reject_sender_login_mismatch(self, check: Check) -> Result:
        result = self._login_mismatch(check, True, False)
        return result if result is not DUNNO else self._login_mismatch(check, False, False)

    def r_reject_authenticated_sender_login_mismatch(self, check: Check) -> Result:
        return self._login_mismatch(check, True, False)

    def r_reject_known_sender_login_mismatch(self, check: Check) -> Result:
        result = self._login_mismatch(check, True, True)
        return result if result is not DUNNO else self._login_mismatch(check, False, False)

    def r_reject_unauthenticated_sender_login_mismatch(self, check: Check) -> Result:
        return self._login_mismatch(check, False, False)

    def _authorized_destination(self, check: Check) -> bool | None:
        rcpt = check.recipient
        if rcpt is None:
            return None
        dest = self.destination(check, rcpt)
        if dest.routed:
            return False
        return dest.address_class in OURS

    def r_permit_auth_destination(self, check: Check) -> Result:
        return PERMIT if self._authorized_destination(check) else DUNNO

    def r_reject_unauth_destination(self, check: Check) -> Result:
        if self._authorized_destination(check) is False:
            return Reject(554, "5.7.1", f"<{check.recipient}>: Relay access denied")
        return DUNNO

    def r_defer_unauth_destination(self, check: Check) -> Result:
        if self._authorized_destination(check) is False:
            return Reject(454, "4.7.1", f"<{check.recipient}>: Relay access denied")
        return DUNNO

    def _unlisted(self, check: Check, address: str, status: str, what: str) -> Result:
        dest = self.destination(check, address)
        table = _UNLISTED_TABLE.get(dest.address_class)
        if table is None or dest.routed:
            return DUNNO
        full = address if split_address(address)[1] else f"{address}@{self._myorigin}"
        try:
            listed = self._resolver.is_listed_recipient(full)
        except TableError:
            return self._lookup_failure(address)
        if listed:
            return DUNNO
        code = self._unknown_codes.get(dest.address_class, 550)
        if code < 500:
            status = "4" + status[1:]
        return Reject(code, status, f"<{address}>: {what} rejected: User unknown in {table}")

    def reject_unlisted_recipient(self, check: Check) -> Result:
        if not check.recipient:
            return DUNNO
        return self._unlisted(check, check.recipient, "5.1.1", "Recipient address")

    def reject_unlisted_sender_check(self, check: Check) -> Result:
        if not check.sender:
            return DUNNO
        return self._unlisted(check, check.sender, "5.1.0", "Sender address")

    r_reject_unlisted_recipient = reject_unlisted_recipient
    r_reject_unlisted_sender = reject_unlisted_sender_check

    @staticmethod
    def _fqdn(address: str) -> bool:
        domain = split_address(address)[1]
        return domain.startswith("[") or "." in domain.strip(".")

    def r_reject_non_fqdn_recipient(self, check: Check) -> Result:
        if check.recipient and not self._fqdn(check.recipient):
            return Reject(
                504,
                "5.5.2",
                f"<{check.recipient}>: Recipient address rejected: need fully-qualified address",
            )
        return DUNNO

    def r_reject_non_fqdn_sender(self, check: Check) -> Result:
        if check.sender and not self._fqdn(check.sender):
            return Reject(
                504,
                "5.5.2",
                f"<{check.sender}>: Sender address rejected: need fully-qualified address",
            )
        return DUNNO

    def r_reject_non_fqdn_helo_hostname(self, check: Check) -> Result:
        helo = check.session.helo_name
        if helo and not (helo.startswith("[") or "." in helo.strip(".")):
            return Reject(
                504, "5.5.2", f"<{helo}>: Helo command rejected: need fully-qualified hostname"
            )
        return DUNNO

    def _unknown_domain(self, check: Check, address: str, what: str) -> MaybeResult:
        """Postfix's reject_unknown_{sender,recipient}_domain: a domain that
        is not ours needs an MX, A or AAAA record in DNS; a null MX (RFC
        7505) accepts no mail; a DNS failure is a 450, never a bounce."""
        domain = split_address(address)[1]
        if not domain or domain.startswith("["):
            return DUNNO
        dest = self.destination(check, address)
        if dest.address_class in OURS:
            return DUNNO
        sender = what == "Sender address"
        status = "1.8" if sender else "1.2"
        code = self._unknown_address_code
        not_found = Reject(
            code, f"{str(code)[0]}.{status}", f"<{address}>: {what} rejected: Domain not found"
        )
        if self._dns is None or "." not in domain.strip("."):
            # Without DNS (embedding), only a name that cannot exist on the
            # Internet is unknown.
            return not_found if "." not in domain.strip(".") else DUNNO
        nullmx = Reject(
            550 if sender else 556,
            "5.7.27" if sender else "5.1.10",
            f"<{address}>: {what} rejected: Domain {domain} does not accept mail (nullMX)",
        )
        temporary = Reject(450, f"4.{status}", f"<{address}>: {what} rejected: Domain not found")

        def decide(state: str) -> Result:
            if state == "ok":
                return DUNNO
            if state == "nullmx":
                return nullmx
            return temporary if state == "temp" else not_found

        return self._name_state(domain, mx=True).addCallback(decide)

    def _name_state(self, name: str, mx: bool) -> Deferred[str]:
        """Does name exist for mail: "ok", "nullmx", "perm" or "temp"."""
        assert self._dns is not None
        types = ["MX", "A", "AAAA"] if mx else ["A", "AAAA", "MX"]
        lookups = [self._dns.lookup(name, t) for t in types]

        def judge(answers: list[DNSAnswer]) -> str:
            for answer in answers:
                if answer.ok:
                    if answer.rrtype == "MX" and any(
                        isinstance(r, tuple) and r[1] in ("", ".") for r in answer.records
                    ):
                        return "nullmx" if mx else "ok"
                    return "ok"
            return "temp" if any(a.status == SERVFAIL for a in answers) else "perm"

        return gatherResults(lookups).addCallback(judge)

    def r_reject_unknown_recipient_domain(self, check: Check) -> MaybeResult:
        if not check.recipient:
            return DUNNO
        return self._unknown_domain(check, check.recipient, "Recipient address")

    def r_reject_unknown_sender_domain(self, check: Check) -> MaybeResult:
        if not check.sender:
            return DUNNO
        return self._unknown_domain(check, check.sender, "Sender address")

    # -- HELO names ---------------------------------------------------------------

    def r_reject_invalid_helo_hostname(self, check: Check) -> Result:
        helo = check.session.helo_name
        if not helo or _valid_helo(helo):
            return DUNNO
        code = self._invalid_hostname_code
        return Reject(code, f"{str(code)[0]}.5.2", f"<{helo}>: Helo command rejected: Invalid name")

    def r_reject_unknown_helo_hostname(self, check: Check) -> MaybeResult:
        """The HELO name needs an A, AAAA or MX record (address literals pass)."""
        helo = check.session.helo_name
        if not helo or helo.startswith("[") or _is_address(helo) or not valid_hostname(helo):
            return DUNNO
        code = self._unknown_hostname_code

        def decide(state: str) -> Result:
            if state == "ok":
                return DUNNO
            reply_code = 450 if state == "temp" else code
            return Reject(
                reply_code,
                f"{str(reply_code)[0]}.7.1",
                f"<{helo}>: Helo command rejected: Host not found",
            )

        return self._name_state(helo.rstrip("."), mx=False).addCallback(decide)

    # -- client names (smtpd_peername_lookup, pymta.smtpd.peername) ------------------

    def _unknown_client(self, check: Check, status: str, what: str) -> Result:
        if status == NAME_OK:
            return DUNNO
        code = 450 if status == NAME_TEMP else self._unknown_client_code
        address = check.session.client_address
        return Reject(
            code,
            f"{str(code)[0]}.7.25",
            f"Client host rejected: cannot find your {what}, [{address}]",
        )

    def r_reject_unknown_client_hostname(self, check: Check) -> Result:
        """Forward-confirmed reverse DNS (RFC 7372's X.7.25)."""
        return self._unknown_client(check, check.session.client_name_status, "hostname")

    def r_reject_unknown_reverse_client_hostname(self, check: Check) -> Result:
        status = check.session.reverse_client_name_status
        return self._unknown_client(check, status, "reverse hostname")

    # -- DNS lists -------------------------------------------------------------------

    def _dnsbl(self, name: str, site: dnsbl.DnsblSite) -> Restriction:
        kind = _DNSBL[name]

        def restriction(check: Check) -> MaybeResult:
            query = _dnsbl_query(kind, check)
            if query is None:
                return DUNNO
            what, reply_class = query
            owner = what if kind != "client" else reverse_labels(what)
            return self._list_lookup(name, site, f"{owner}.{site.domain}", check, what, reply_class)

        return restriction

    def _list_lookup(
        self,
        name: str,
        site: dnsbl.DnsblSite,
        query: str,
        check: Check,
        what: str,
        reply_class: str,
    ) -> Deferred[Result]:
        assert self._dns is not None
        dns = self._dns
        permit = name.startswith("permit_")

        def listed(answer: DNSAnswer) -> MaybeResult:
            if answer.status == SERVFAIL:
                if permit:
                    return DUNNO  # a list that cannot answer permits nothing
                return Reject(
                    450,
                    "4.7.1",
                    f"{reply_class} [{what}]: temporary DNS failure looking up "
                    f"{site.domain}, try again later",
                )
            hits = [str(a) for a in answer.records if site.matches(str(a))] if answer.ok else []
            if not hits:
                return DUNNO
            if permit:
                return PERMIT
            return dns.lookup(query, "TXT").addCallback(
                lambda txt: self._listed_reply(check, site, what, reply_class, hits, txt)
            )

        return dns.lookup(query, "A").addCallback(listed)

    def _listed_reply(
        self,
        check: Check,
        site: dnsbl.DnsblSite,
        what: str,
        reply_class: str,
        hits: list[str],
        txt: DNSAnswer,
    ) -> Result:
        """The reply to a listing: rbl_reply_maps, else default_rbl_reply."""
        reason = "; ".join(dnsbl.clean_text(str(t)) for t in txt.records) if txt.ok else ""
        session = check.session
        values: dict[str, Any] = {
            "rbl_code": str(self._rbl_code),
            "rbl_domain": site.domain,
            "rbl_what": what,
            "rbl_class": reply_class,
            "rbl_reason": reason,
            "rbl_txt": reason,
            "rbl_result": hits[0],
            "client": session.client,
            "client_address": session.client_address,
            "client_name": session.client_name,
            "reverse_client_name": session.reverse_client_name,
            "helo_name": session.helo_name,
        }
        for prefix, address in (("sender", check.sender), ("recipient", check.recipient)):
            if address:
                local, domain = split_address(address)
                values.update({prefix: address, f"{prefix}_name": local})
                values[f"{prefix}_domain"] = domain
        template = self._rbl_reply
        try:
            for table in self._rbl_reply_maps:
                found = table.lookup(site.domain)
                if found is not None:
                    template = found
                    break
        except TableError:
            return self._lookup_failure(site.domain)
        code, status, text = dnsbl.reply_parts(dnsbl.reply_text(template, values), self._rbl_code)
        return Reject(code, status, text)

    # -- access maps ----------------------------------------------------------------

    def _access(self, name: str, spec: str, depth: int) -> Restriction:
        table = self._open_table(spec)
        reply_class = _ACCESS[name]

        def restriction(check: Check) -> MaybeResult:
            keys = self._access_keys(name, check)
            if keys is None:
                return DUNNO
            sub = Check(
                check.session,
                check.recipient,
                check.sender,
                reply_class,
                check._destinations,
                check.stage,
                check.deferrals,
            )
            try:
                for key in keys:
                    value = table.lookup(key)
                    if value is not None:
                        return self._access_result(value, sub, spec, depth)
            except TableError:
                return self._lookup_failure(sub.reply_name)
            return DUNNO

        return restriction

    def _access_keys(self, name: str, check: Check) -> list[str] | None:
        session = check.session
        if name == "check_client_access":
            keys = []
            if session.client_name and session.client_name != "unknown":
                keys += _domain_keys(session.client_name)
            keys += _ip_keys(session.client_address)
            return keys
        if name == "check_helo_access":
            return _domain_keys(session.helo_name) if session.helo_name else None
        address = check.recipient if name == "check_recipient_access" else check.sender
        if address is None:
            return None
        if address == "":
            return [self._null_key]
        local, domain = split_address(address)
        keys = [address]
        if domain:
            keys += _domain_keys(domain)
        keys.append(f"{local}@")
        return keys

    def _access_result(self, value: str, check: Check, spec: str, depth: int) -> MaybeResult:
        word, _, text = value.strip().partition(" ")
        text = text.strip()
        action = word.upper()
        if action in ("OK", "PERMIT") or (action.isdigit() and len(action) != 3):
            return PERMIT
        if action == "DUNNO":
            return DUNNO
        if action == "REJECT":
            return self._custom(check, 554, "5.7.1", text or "Access denied")
        if action == "DEFER":
            return self._custom(check, 450, "4.7.1", text or "Access denied")
        if action in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
            key = "permit" if action == "DEFER_IF_PERMIT" else "reject"
            reply = self._custom(check, 450, "4.7.1", text or "Service unavailable")
            check.deferrals.setdefault(key, reply)
            return DUNNO
        if action in ("WARN", "INFO", "PREPEND"):
            # Postfix only logs WARN/INFO; PREPEND's header is not added by
            # pymta (README: policy delegation), the request goes on.
            return DUNNO
        if len(action) == 3 and action.isdigit() and action[0] in "45":
            return self._custom(check, int(action), f"{action[0]}.7.1", text or "Access denied")
        if depth < _MAX_NESTING:
            try:
                restrictions = self._build(value.replace(",", " ").split(), spec, depth + 1)
            except ConfigError:
                return Reject(451, "4.3.5", "Server configuration error")
            return first_result(restrictions, check)
        return Reject(451, "4.3.5", "Server configuration error")

    def _custom(self, check: Check, code: int, status: str, text: str) -> Reject:
        first, _, rest = text.partition(" ")
        match = _ENHANCED.match(first)
        if match and match.group(1) == str(code)[0]:
            status, text = first, rest.strip() or "Access denied"
        return self._reject(check, code, status, text)


def _domain_keys(domain: str) -> list[str]:
    """The domain, then its parents (parent_domain_matches_subdomains style)."""
    domain = domain.lower().rstrip(".")
    if domain.startswith("["):
        return [domain]
    keys = [domain]
    rest = domain
    while "." in rest:
        rest = rest.partition(".")[2]
        keys.append(rest)
    return keys


def _ip_keys(address: str) -> list[str]:
    """The address, then its shorter IPv4 prefixes (1.2.3, 1.2, 1), as Postfix looks up."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [address]
    if ip.version == 6:
        return [ip.compressed]
    parts = str(ip).split(".")
    return [".".join(parts[:n]) for n in range(4, 0, -1)]


_SIMPLE = {
    "permit": "r_permit",
    "reject": "r_reject",
    "defer": "r_defer",
    "permit_mynetworks": "r_permit_mynetworks",
    "permit_sasl_authenticated": "r_permit_sasl_authenticated",
    "permit_tls_clientcerts": "r_permit_tls_clientcerts",
    "permit_tls_all_clientcerts": "r_permit_tls_all_clientcerts",
    "reject_sender_login_mismatch": "r_reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch": "r_reject_authenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch": "r_reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch": (
        "r_reject_unauthenticated_sender_login_mismatch"
    ),
    "permit_auth_destination": "r_permit_auth_destination",
    "reject_unauth_destination": "r_reject_unauth_destination",
    "defer_unauth_destination": "r_defer_unauth_destination",
    "reject_unlisted_recipient": "r_reject_unlisted_recipient",
    "reject_unlisted_sender": "r_reject_unlisted_sender",
    "reject_non_fqdn_recipient": "r_reject_non_fqdn_recipient",
    "reject_non_fqdn_sender": "r_reject_non_fqdn_sender",
    "reject_non_fqdn_helo_hostname": "r_reject_non_fqdn_helo_hostname",
    "reject_unknown_recipient_domain": "r_reject_unknown_recipient_domain",
    "reject_unknown_sender_domain": "r_reject_unknown_sender_domain",
    "reject_invalid_helo_hostname": "r_reject_invalid_helo_hostname",
    "reject_unknown_helo_hostname": "r_reject_unknown_helo_hostname",
    "reject_unknown_client_hostname": "r_reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname": "r_reject_unknown_reverse_client_hostname",
}
#: DNS list restrictions (each takes a domain[=d.d.d.d] argument) and
#: what they look up.
_DNSBL = {
    "reject_rbl_client": "client",
    "permit_dnswl_client": "client",
    "reject_rhsbl_client": "client_name",
    "permit_rhswl_client": "client_name",
    "reject_rhsbl_reverse_client": "reverse_client_name",
    "reject_rhsbl_sender": "sender",
    "reject_rhsbl_helo": "helo",
}
_NEEDS_DNS = frozenset(("reject_unknown_helo_hostname",))


def _dnsbl_query(kind: str, check: Check) -> tuple[str, str] | None:
    """(what is looked up, its $rbl_class) for one kind of list; None
    when there is nothing to look up (unknown names, null sender, literals)."""
    session = check.session
    if kind == "client":
        return session.client_address, "Client host"
    if kind == "client_name":
        name = session.client_name
        return (name, "Client host") if name != "unknown" else None
    if kind == "reverse_client_name":
        name = session.reverse_client_name
        return (name, "Unverified Client host") if name != "unknown" else None
    if kind == "sender":
        domain = split_address(check.sender or "")[1].rstrip(".").lower()
        usable = domain and not domain.startswith("[")
        return (domain, "Sender address") if usable else None
    helo = session.helo_name.rstrip(".").lower()
    if not helo or helo.startswith("[") or _is_address(helo) or not valid_hostname(helo):
        return None
    return helo, "Helo command"


def _policy_request(check: Check) -> dict[str, str]:
    """SMTPD_POLICY_README's attributes for one check."""
    s = check.session
    sender = check.sender if check.sender is not None else (s.sender or "")
    return {
        "request": "smtpd_access_policy",
        "protocol_state": check.stage,
        "protocol_name": s.log_protocol,
        "helo_name": s.helo_name,
        "queue_id": "",
        "sender": sender,
        "recipient": check.recipient or "",
        "recipient_count": str(len(s.recipients)) if check.stage != "RCPT" else "0",
        "client_address": s.client_address,
        "client_name": s.client_name,
        "reverse_client_name": s.reverse_client_name,
        "instance": f"{id(s):x}",
        "sasl_method": s.sasl_method,
        "sasl_username": s.sasl_username,
        "sasl_sender": "",
        "size": str(s.declared_size),
        "encryption_protocol": s.tls.split()[0] if s.tls else "",
        "policy_context": "",
    }


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_helo(helo: str) -> bool:
    """A host name, an address or an address literal ([1.2.3.4], [IPv6:...])."""
    if helo.startswith("[") and helo.endswith("]"):
        inner = helo[1:-1]
        return _is_address(inner[5:] if inner.lower().startswith("ipv6:") else inner)
    return _is_address(helo) or valid_hostname(helo)


_ACCESS = {
    "check_recipient_access": "Recipient address",
    "check_sender_access": "Sender address",
    "check_client_access": "Client host",
    "check_helo_access": "Helo command",
}


def check_restrictions(config: Config) -> None:
    """Parse every restriction list as smtpd does at start, for ``pymta
    check`` (a ConfigError names the parameter): check and start agree.
    Tables are not opened and nothing is looked up."""
    from pymta.dns.memory import MemoryResolver

    def unopened(spec: str) -> Any:
        return None

    from twisted.internet.task import Clock

    resolver: Any = None
    Restrictions(config, resolver, unopened, dns=MemoryResolver({}), reactor=Clock())
