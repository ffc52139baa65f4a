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
from typing import Final

from pymta.address import split_address
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.netmatch import NetworkList
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


Restriction = Callable[[Check], Result]


class Restrictions:
    """The restriction lists of one smtpd service, built once per factory."""

    def __init__(
        self,
        config: Config,
        resolver: SmtpdResolver,
        open_table: OpenTable,
        mynetworks: NetworkList | None = None,
    ) -> None:
        self._config = config
        self._resolver = resolver
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
                    f"{', '.join(sorted([*_SIMPLE, *_ACCESS]))})",
                )
            out.append(getattr(self, simple))
        return out

    def _class_restriction(self, name: str) -> Restriction:
        def restriction(check: Check) -> Result:
            # Resolved at call time: classes may refer to each other.
            for item in self._class_lists[name]:
                result = item(check)
                if result is not DUNNO:
                    return result
            return DUNNO

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
    def evaluate(restrictions: list[Restriction], check: Check) -> Reject | None:
        """Run one list: a Reject stops everything, PERMIT ends the list."""
        for restriction in restrictions:
            result = restriction(check)
            if result is DUNNO:
                continue
            if isinstance(result, Reject):
                return result
            return None
        return None

    def check_client(self, session: Session) -> Reject | None:
        return self.evaluate(self.client, Check(session, reply_class="Client host"))

    def check_helo(self, session: Session) -> Reject | None:
        return self.evaluate(self.helo, Check(session, reply_class="Helo command"))

    def check_sender(self, session: Session, sender: str) -> Reject | None:
        return self.evaluate(
            self.sender, Check(session, sender=sender, reply_class="Sender address")
        )

    def check_recipient(self, session: Session, recipient: str) -> Reject | None:
        """Everything that runs at RCPT TO, in Postfix's order."""
        sender = session.sender or ""
        if self.delay_reject:
            for restrictions, reply_class in (
                (self.client, "Client host"),
                (self.helo, "Helo command"),
                (self.sender, "Sender address"),
            ):
                if restrictions:
                    check = Check(session, recipient, sender, reply_class)
                    reject = self.evaluate(restrictions, check)
                    if reject is not None:
                        return reject
        check = Check(session, recipient, sender)
        reject = self.evaluate(self.relay, check)
        if reject is None:
            reject = self.evaluate(self.recipient, check)
        if reject is None and self.reject_unlisted:
            result = self.reject_unlisted_recipient(check)
            if isinstance(result, Reject):
                reject = result
        if reject is None and self.reject_unlisted_sender and sender:
            result = self.reject_unlisted_sender_check(check)
            if isinstance(result, Reject):
                reject = result
        return reject

    def check_data(self, session: Session) -> Reject | None:
        return self.evaluate(
            self.data, Check(session, sender=session.sender, reply_class="Data command")
        )

    def check_end_of_data(self, session: Session) -> Reject | None:
        """smtpd_end_of_data_restrictions, after the content, before queueing."""
        return self.evaluate(
            self.end_of_data,
            Check(session, sender=session.sender, reply_class="End-of-data"),
        )

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

    def _unknown_domain(self, check: Check, address: str, what: str) -> Result:
        # No DNS yet: a domain that is not ours and cannot be a host name on
        # the Internet (no dot, bad literal) is unknown. Postfix's
        # unknown_address_tempfail... code is 450 for the temporary case.
        domain = split_address(address)[1]
        if not domain:
            return DUNNO
        dest = self.destination(check, address)
        if dest.address_class in OURS:
            return DUNNO
        if domain.startswith("["):
            return DUNNO
        if "." not in domain.strip("."):
            return Reject(450, "4.1.2", f"<{address}>: {what} rejected: Domain not found")
        return DUNNO

    def r_reject_unknown_recipient_domain(self, check: Check) -> Result:
        if not check.recipient:
            return DUNNO
        return self._unknown_domain(check, check.recipient, "Recipient address")

    def r_reject_unknown_sender_domain(self, check: Check) -> Result:
        if not check.sender:
            return DUNNO
        return self._unknown_domain(check, check.sender, "Sender address")

    # -- access maps ----------------------------------------------------------------

    def _access(self, name: str, spec: str, depth: int) -> Restriction:
        table = self._open_table(spec)
        reply_class = _ACCESS[name]

        def restriction(check: Check) -> Result:
            keys = self._access_keys(name, check)
            if keys is None:
                return DUNNO
            sub = Check(
                check.session, check.recipient, check.sender, reply_class, check._destinations
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

    def _access_result(self, value: str, check: Check, spec: str, depth: int) -> Result:
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
        if len(action) == 3 and action.isdigit() and action[0] in "45":
            return self._custom(check, int(action), f"{action[0]}.7.1", text or "Access denied")
        if depth < _MAX_NESTING:
            try:
                restrictions = self._build(value.replace(",", " ").split(), spec, depth + 1)
            except ConfigError:
                return Reject(451, "4.3.5", "Server configuration error")
            for restriction in restrictions:
                result = restriction(check)
                if result is not DUNNO:
                    return result
            return DUNNO
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
}
_ACCESS = {
    "check_recipient_access": "Recipient address",
    "check_sender_access": "Sender address",
    "check_client_access": "Client host",
    "check_helo_access": "Helo command",
}
