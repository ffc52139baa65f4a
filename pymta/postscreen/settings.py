"""What every connection of one postscreen listener shares: its settings.

Mirrors the start-up of Postfix's postscreen(8): the ``postscreen_*``
parameters (after the master.cf service's ``-o`` overrides) are read and
checked once; a bad value is a ConfigError naming the parameter. The
weighted DNSBL sites (``zen.example*3 list.example=127.0.0.2*2``, weight 1
when none is given, negative for allowlists such as a DNSWL) and the access
list (``permit_mynetworks`` and ``type:table`` lookups answering
``permit``, ``reject`` or ``dunno``) are parsed here. Nothing here writes
or logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.netmatch import NetworkList
from pymta.smtpd.dnsbl import DnsblSite, parse_site
from pymta.tables.interface import ILookupTable, TableError

__all__ = [
    "ACTIONS",
    "DENY_REPLY",
    "AccessList",
    "PostscreenSettings",
    "WeightedSite",
    "parse_weighted_site",
]

#: postscreen's answers to a failed test (postscreen(8)): ignore it, refuse
#: every RCPT with 550 in postscreen's own SMTP engine, or hang up with 521.
ACTIONS = ("ignore", "enforce", "drop")

IGNORE, ENFORCE, DROP = ACTIONS

#: What a client the access list rejects is told (after 521 or 550).
DENY_REPLY = "5.3.2 Service currently unavailable"

#: The access list's verdicts.
PERMIT, REJECT, DUNNO = "permit", "reject", "dunno"

_WEIGHT = re.compile(r"\*([+-]?\d+)\Z")

OpenTable = Callable[[str], ILookupTable]


@dataclass(frozen=True)
class WeightedSite:
    """One ``postscreen_dnsbl_sites`` entry: a DNS list, its result filter
    and the weight a listing adds to the client's score."""

    site: DnsblSite
    weight: int

    @property
    def domain(self) -> str:
        return self.site.domain


def parse_weighted_site(spec: str) -> WeightedSite:
    """``domain[=d.d.d.d][*weight]`` -> a site; ConfigError when malformed."""
    weight = 1
    match = _WEIGHT.search(spec)
    if match:
        weight = int(match.group(1))
        spec = spec[: match.start()]
    elif "*" in spec:
        raise ConfigError(
            f"bad DNSBL site {spec!r}: expected domain[=d.d.d.d][*weight]",
            parameter="postscreen_dnsbl_sites",
        )
    try:
        return WeightedSite(parse_site(spec), weight)
    except ConfigError as e:
        raise ConfigError(e.message, parameter="postscreen_dnsbl_sites") from None


class AccessList:
    """``postscreen_access_list``: the first entry with a verdict decides.

    ``permit_mynetworks`` permits clients in mynetworks; a ``type:table``
    entry looks the client address up and answers ``permit``, ``reject``
    or ``dunno`` (go on to the next entry), as Postfix's postscreen_access.
    A table that fails is logged by the caller and counts as ``dunno`` for
    this client, as Postfix does (the client is then tested normally).
    """

    def __init__(self, entries: list[str], mynetworks: NetworkList, open_table: OpenTable) -> None:
        self._checks: list[NetworkList | ILookupTable] = []
        for entry in entries:
            word = entry.strip()
            if not word:
                continue
            if word.lower() == "permit_mynetworks":
                self._checks.append(mynetworks)
            elif ":" in word:
                self._checks.append(open_table(word))
            else:
                raise ConfigError(
                    f"bad entry {word!r}: expected permit_mynetworks or type:table",
                    parameter="postscreen_access_list",
                )

    def verdict(self, address: str) -> tuple[str, str]:
        """(permit, reject or dunno, and a warning text when a table failed)."""
        for check in self._checks:
            if isinstance(check, NetworkList):
                if check.contains(address):
                    return PERMIT, ""
                continue
            try:
                value = check.lookup(address)
            except TableError as e:
                return DUNNO, f"{check.name}: table lookup problem: {e}"
            if value is None:
                continue
            word = value.strip().split()[0].lower() if value.strip() else ""
            if word in (PERMIT, REJECT):
                return word, ""
            if word != DUNNO:
                return DUNNO, f"{check.name}: unknown action {value!r} for {address}: ignored"
        return DUNNO, ""


def _action(config: Config, name: str) -> str:
    value = config.get(name).strip().lower()
    if value == "continue":  # Postfix's compatibility name of ignore
        value = IGNORE
    if value not in ACTIONS:
        raise ConfigError(f"bad value {value!r}: expected ignore, enforce or drop", parameter=name)
    return value


class PostscreenSettings:
    """The settings of one postscreen listener; see the module docstring."""

    def __init__(self, config: Config, open_table: OpenTable) -> None:
        self.config = config
        self.myhostname = config.get("myhostname")
        self.greet_wait = config.get_time("postscreen_greet_wait")
        if self.greet_wait <= 0:
            raise ConfigError(
                "bad value: postscreen_greet_wait must be at least 1s",
                parameter="postscreen_greet_wait",
            )
        banner = config.get("postscreen_greet_banner").strip()
        #: The first line of a multi-line 220 greeting, sent before the greet
        #: wait; smtpd's own 220 line completes it (postscreen(8)).
        self.teaser = f"220-{banner}\r\n".encode() if banner else b""
        #: The full greeting of postscreen's own SMTP engine.
        self.banner = f"220 {config.get('smtpd_banner')}\r\n".encode()
        self.greet_action = _action(config, "postscreen_greet_action")
        self.greet_ttl = config.get_time("postscreen_greet_ttl")
        self.sites = [parse_weighted_site(s) for s in config.get_list("postscreen_dnsbl_sites")]
        self.dnsbl_threshold = config.get_int("postscreen_dnsbl_threshold")
        self.allowlist_threshold = config.get_int("postscreen_dnsbl_allowlist_threshold")
        self.dnsbl_action = _action(config, "postscreen_dnsbl_action")
        self.dnsbl_timeout = config.get_time("postscreen_dnsbl_timeout")
        self.dnsbl_min_ttl = config.get_time("postscreen_dnsbl_min_ttl")
        self.dnsbl_max_ttl = max(config.get_time("postscreen_dnsbl_max_ttl"), self.dnsbl_min_ttl)
        reply_map = config.get("postscreen_dnsbl_reply_map").strip()
        self.dnsbl_reply_map = open_table(reply_map) if reply_map else None
        self.denylist_action = _action(config, "postscreen_denylist_action")
        self.access = AccessList(
            config.get_list("postscreen_access_list"),
            NetworkList(config.get_list("mynetworks")),
            open_table,
        )
        self.cache_map = config.get("postscreen_cache_map").strip()
        self.cache_retention = config.get_time("postscreen_cache_retention_time")
        self.cache_cleanup_interval = config.get_time("postscreen_cache_cleanup_interval")
        self.connection_count_limit = config.get_int("postscreen_client_connection_count_limit")
        self.command_count_limit = config.get_int("postscreen_command_count_limit")
        self.command_time_limit = config.get_time("postscreen_command_time_limit")
        self.helo_required = config.get_bool("postscreen_helo_required")
        self.disable_vrfy = config.get_bool("postscreen_disable_vrfy_command")
        self.message_size_limit = config.get_int("message_size_limit")
        self.line_length_limit = max(config.get_int("line_length_limit"), 512)

    def dnsbl_name(self, domain: str) -> str:
        """The name a reply shows for a list (postscreen_dnsbl_reply_map
        hides a list's secret query domain); the domain when unmapped."""
        if self.dnsbl_reply_map is None:
            return domain
        try:
            shown = self.dnsbl_reply_map.lookup(domain)
        except TableError:
            return domain
        return shown.strip() if shown and shown.strip() else domain
