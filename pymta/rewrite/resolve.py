"""Resolve a recipient to (transport, nexthop, recipient): trivial-rewrite.

Mirrors Postfix's trivial-rewrite resolve service (resolve.c) and the
address classes of ADDRESS_CLASS_README. A domain is, in this order:

=================  ===================================  =====================
class              listed in                            transport
=================  ===================================  =====================
local              mydestination, "" or our [address]   local_transport
virtual_alias      virtual_alias_domains                error: 5.1.1 User
                                                        unknown in virtual
                                                        alias table
virtual_mailbox    virtual_mailbox_domains              virtual_transport
relay              relay_domains                        relay_transport
default            anything else                        default_transport
=================  ===================================  =====================

A transport value ``name:nexthop`` is split; without a nexthop, local mail
goes to $myhostname, virtual mail to the domain, relay and default mail to
$relayhost when set, else the domain. (A virtual alias domain reaches the
error transport only when cleanup's alias expansion found nothing.) Then
transport_maps (:mod:`pymta.rewrite.transport`) may override both, for any
class, per address, domain, parent domain or ``*``.

Relay tricks are resolved as Postfix resolves them, so that smtpd's relay
check sees where mail would really go: a local domain is stripped when the
local part still routes (``"user@other"@here`` with resolve_dequoted_address,
``user%other@here`` with allow_percent_hack, ``other!user@here`` with
swap_bangpath) and resolution starts again; source routes are dropped.

Also what smtpd needs: :meth:`Resolver.address_class` and
:meth:`Resolver.is_listed_recipient` (reject_unlisted_recipient, with
Postfix's lookup order and recipient_delimiter). Untrusted input: the
address. Writes and logs nothing; TableError from a table propagates (the
caller defers).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Collection

from zope.interface import implementer

from pymta.address import split_address, unquote_local
from pymta.config import Config
from pymta.rewrite.domains import DomainList
from pymta.rewrite.interface import IResolver, Resolution
from pymta.rewrite.srs import SRS, SRSError
from pymta.rewrite.transport import TransportMaps, apply_value
from pymta.tables import Maps, lookup_address, open_maps

LOCAL = "local"
VIRTUAL_ALIAS = "virtual_alias"
VIRTUAL_MAILBOX = "virtual_mailbox"
RELAY = "relay"
DEFAULT = "default"

VIRTUAL_ALIAS_ERROR = "5.1.1 User unknown in virtual alias table"
# Bounds the strip-and-retry loop of routed local parts (a@b@c@d...).
_MAX_REROUTES = 20

OpenMaps = Callable[[list[str], Config], Maps]


def _default_open_maps(specs: list[str], config: Config) -> Maps:
    return open_maps(specs, config)


def _split_transport(value: str) -> tuple[str, str]:
    name, _, nexthop = value.strip().partition(":")
    return name.strip(), nexthop.strip()


def _literal_address(domain: str) -> str | None:
    """The IP of an address literal ``[1.2.3.4]`` / ``[IPv6:::1]``, else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return ipaddress.ip_address(inner).compressed
    except ValueError:
        return None


def _local_addresses(config: Config) -> set[str]:
    """Our own IPs for address literals: loopback, plus explicit inet_interfaces."""
    addresses = {"127.0.0.1", "::1"}
    for item in config.get_list("inet_interfaces"):
        text = item.strip("[]")
        try:
            addresses.add(ipaddress.ip_address(text).compressed)
        except ValueError:
            continue  # all, loopback-only, host names
    return addresses


@implementer(IResolver)
class Resolver:
    """trivial-rewrite's resolve service over one configuration.

    ``open_maps(specs, config)`` opens table lists (pymta.tables.open_maps
    by default; tests pass inline: tables through it too). ``local_addresses``
    are the IPs whose address literals are local (default: loopback and
    the addresses named in inet_interfaces).
    """

    def __init__(
        self,
        config: Config,
        open_maps: OpenMaps = _default_open_maps,
        *,
        local_addresses: Collection[str] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        # pymta_srs_domain: SRS addresses our cleanup reverses are listed.
        self._srs = SRS.from_config(config)
        self._now = now

        def table(spec: str) -> Maps:
            return open_maps([spec], config)

        def maps(name: str) -> Maps:
            return open_maps(config.get_list(name), config)

        self._mydestination = DomainList(config.get_list("mydestination"), table)
        self._virtual_alias_domains = DomainList(config.get_list("virtual_alias_domains"), table)
        self._virtual_mailbox_domains = DomainList(
            config.get_list("virtual_mailbox_domains"), table
        )
        self._relay_domains = DomainList(config.get_list("relay_domains"), table)
        self._local_addresses = set(
            local_addresses if local_addresses is not None else _local_addresses(config)
        )
        self._myhostname = config.get("myhostname").lower()
        self._relayhost = config.get("relayhost").strip()
        self._delimiter = config.get("recipient_delimiter")
        self._percent_hack = config.get_bool("allow_percent_hack")
        self._swap_bangpath = config.get_bool("swap_bangpath")
        self._dequote = config.get_bool("resolve_dequoted_address")
        self._double_bounce = config.get("double_bounce_sender").lower()
        self._transports = {
            LOCAL: _split_transport(config.get("local_transport")),
            VIRTUAL_MAILBOX: _split_transport(config.get("virtual_transport")),
            RELAY: _split_transport(config.get("relay_transport")),
            DEFAULT: _split_transport(config.get("default_transport")),
        }
        self._virtual_alias_maps = maps("virtual_alias_maps")
        self._virtual_mailbox_maps = maps("virtual_mailbox_maps")
        self._canonical = [maps("recipient_canonical_maps"), maps("canonical_maps")]
        # local_recipient_maps and relay_recipient_maps may be missing from
        # pymta's defaults table: Postfix's defaults then apply
        # (proxy:unix:passwd.byname $alias_maps: the system's users too).
        if config.raw("local_recipient_maps") is None:
            local_rcpt = ["proxy:unix:passwd.byname", *config.get_list("alias_maps")]
            self._local_recipient_check = True
        else:
            local_rcpt = config.get_list("local_recipient_maps")
            self._local_recipient_check = bool(local_rcpt)
        self._local_recipient_maps = open_maps(local_rcpt, config)
        self._relay_recipient_maps = maps("relay_recipient_maps")
        self._transport_maps = TransportMaps(
            maps("transport_maps"),
            self._delimiter,
            "transport_maps" in config.get_list("parent_domain_matches_subdomains"),
        )
        # Tables are fixed for this resolver's life (a reload makes a new
        # one): which to search is decided once, not per address.
        self._rewriting_maps = [m for m in (*self._canonical, self._virtual_alias_maps) if m]
        self._has_transport_maps = bool(self._transport_maps)
        self._class_cache: dict[str, str] = {}

    # address classes ---------------------------------------------------------

    def address_class(self, domain: str) -> str:
        """local, virtual_alias, virtual_mailbox, relay or default (cached per domain)."""
        domain = domain.lower().rstrip(".")
        cached = self._class_cache.get(domain)
        if cached is not None:
            return cached
        if self._is_local_domain(domain):
            result = LOCAL
        elif self._virtual_alias_domains.matches(domain):
            result = VIRTUAL_ALIAS
        elif self._virtual_mailbox_domains.matches(domain):
            result = VIRTUAL_MAILBOX
        elif self._relay_domains.matches(domain):
            result = RELAY
        else:
            result = DEFAULT
        if len(self._class_cache) > 10000:
            self._class_cache.clear()
        self._class_cache[domain] = result
        return result

    def _is_local_domain(self, domain: str) -> bool:
        if not domain:
            return True
        literal = _literal_address(domain)
        if literal is not None:
            return literal in self._local_addresses
        return self._mydestination.matches(domain)

    def is_local_domain(self, domain: str) -> bool:
        """True for mydestination, the empty domain and our address literals."""
        return self.address_class(domain) == LOCAL

    # resolve ----------------------------------------------------------------

    def route(self, address: str) -> tuple[str, str]:
        """(local part, domain) after stripping local domains from routed
        addresses (percent hack, quoted @, bang paths, source routes)."""
        if address.startswith("@") and ":" in address:
            address = address.partition(":")[2]
        local, domain = split_address(address)
        for _ in range(_MAX_REROUTES):
            if domain and self.address_class(domain) != LOCAL:
                break
            inner = unquote_local(local) if self._dequote else local
            if "@" in inner:
                local, domain = split_address(inner)
            elif self._percent_hack and "%" in inner:
                local, _, domain = inner.rpartition("%")
            elif self._swap_bangpath and "!" in inner:
                domain, _, local = inner.partition("!")
            else:
                break
        return local, domain.lower().rstrip(".")

    def resolve_class(self, address: str) -> str:
        """The address class of where address really goes (after routing)."""
        return self.address_class(self.route(address)[1])

    def resolve(self, address: str) -> Resolution:
        local, domain = self.route(address)
        recipient = f"{local}@{domain}" if domain else local
        cls = self.address_class(domain)
        if cls == VIRTUAL_ALIAS:
            transport, nexthop = "error", VIRTUAL_ALIAS_ERROR
        else:
            transport, nexthop = self._transports[cls]
            if not nexthop:
                if cls == LOCAL:
                    nexthop = self._myhostname
                elif cls == VIRTUAL_MAILBOX:
                    nexthop = domain
                else:
                    nexthop = self._relayhost or domain
        if self._has_transport_maps:
            # transport(5): the table overrides every address class.
            value = self._transport_maps.find(local, domain)
            if value is not None:
                transport, nexthop = apply_value(value, transport, nexthop, domain)
        return Resolution(transport, nexthop, recipient)

    # reject_unlisted_recipient -------------------------------------------

    def is_listed_recipient(self, address: str) -> bool:
        """Whether a recipient is known, as smtpd's reject_unlisted_recipient
        asks (Postfix's check_rcpt_maps).

        Known everywhere: an address that canonical or virtual alias maps
        rewrite. Local: local_recipient_maps (default
        proxy:unix:passwd.byname $alias_maps: Unix users and aliases; empty
        turns the check off) knows it, or it is the double-bounce address or
        postmaster (RFC 5321 section 4.5.1 requires postmaster). Virtual
        mailbox: virtual_mailbox_maps knows it. Virtual alias: only the alias maps. Relay:
        relay_recipient_maps when set. Default: always.
        """
        local, domain = self.route(address)
        full = f"{local}@{domain}" if domain else local
        cls = self.address_class(domain)
        is_local = self.is_local_domain
        if self._srs is not None:
            # A bounce to an address our SRS wrote (pymta.cleanup.srs reverses it).
            try:
                if self._srs.reverse(full, self._now()) is not None:
                    return True
            except SRSError:
                return False
        for maps in self._rewriting_maps:
            if self._find(maps, full, is_local):
                return True
        if cls == LOCAL:
            if not self._local_recipient_check:
                return True
            user = unquote_local(local).lower()
            if user in (self._double_bounce, "postmaster"):
                return True
            return self._find(self._local_recipient_maps, full, lambda d: True)
        if cls == VIRTUAL_MAILBOX:
            return self._find(self._virtual_mailbox_maps, full, is_local)
        if cls == VIRTUAL_ALIAS:
            return False
        if cls == RELAY:
            if not self._relay_recipient_maps:
                return True
            return self._find(self._relay_recipient_maps, full, is_local)
        return True

    def _find(self, maps: Maps, address: str, is_local: Callable[[str], bool]) -> bool:
        value = lookup_address(
            maps,
            address,
            delimiter=self._delimiter,
            is_local_domain=is_local,
            propagate_extension=False,
        )
        return value is not None
