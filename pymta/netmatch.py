"""Client network lists in Postfix's mynetworks syntax.

Mirrors Postfix's match_list/cidr matching for ``mynetworks``,
``smtpd_forbid_bare_newline_exclusions`` and similar parameters:
``127.0.0.0/8``, ``[::1]/128``, ``10.1.2.3``, ``[2001:db8::1]``, and
``!pattern`` negation (the first matching entry decides). ``/file/name``
and ``type:table`` entries are not supported yet: they are skipped with a
warning naming them, so a start never silently trusts more than configured.

The address tested comes from the network (the client's IP); a string that
is not an IP address matches nothing. A list keeps its answers for the
last few thousand addresses (smtpd asks several lists at every
connection, nearly always about the same few clients; a list never
changes after it is built). Nothing here writes.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from twisted.logger import Logger

from pymta.config.errors import ConfigError

__all__ = ["NetworkList", "is_loopback"]

_log = Logger()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Answers a NetworkList keeps (then it starts again: a bound, not an LRU).
ANSWER_CACHE_SIZE = 4096


def is_loopback(ip: str) -> bool:
    """Whether a client address (from the network; ``[..]`` and IPv4-mapped
    IPv6 allowed) is a loopback address: pop3d and imapd allow plaintext
    logins from it, as Dovecot does. Not an address: False."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _parse(entry: str) -> Network:
    text = entry
    prefix = ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(entry)
        prefix = text[close + 1 :]
        text = text[1:close]
        if prefix and not prefix.startswith("/"):
            raise ValueError(entry)
    elif "/" in text:
        text, _, rest = text.partition("/")
        prefix = "/" + rest
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    # strict=False: Postfix accepts 10.1.2.3/8 and masks it (with a warning).
    return ipaddress.ip_network(text + prefix, strict=False)


class NetworkList:
    """An ordered list of networks; ``contains(ip)`` answers the first match."""

    def __init__(self, entries: Iterable[str], parameter: str = "mynetworks") -> None:
        self._entries: list[tuple[bool, Network]] = []
        self._answers: dict[str, bool] = {}
        self.skipped: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            negate = entry.startswith("!")
            if negate:
                entry = entry[1:].strip()
            if entry.startswith("/") or (":" in entry and not _looks_like_ip(entry)):
                self.skipped.append(raw)
                _log.warn(
                    "{parameter}: {entry!r} is not supported yet (file and table entries): skipped",
                    parameter=parameter,
                    entry=raw,
                )
                continue
            try:
                network = _parse(entry)
            except ValueError:
                raise ConfigError(
                    f"bad network {raw!r}: expected an address or address/prefix "
                    "like 127.0.0.0/8 or [::1]/128",
                    parameter=parameter,
                ) from None
            self._entries.append((negate, network))

    def contains(self, ip: str) -> bool:
        """True when the first entry that matches ``ip`` is not negated."""
        answer = self._answers.get(ip)
        if answer is None:
            answer = self._match(ip)
            if len(self._answers) >= ANSWER_CACHE_SIZE:
                self._answers.clear()
            self._answers[ip] = answer
        return answer

    def _match(self, ip: str) -> bool:
        address = _client_address(ip)
        if address is None:
            return False
        for negate, network in self._entries:
            if address.version == network.version and address in network:
                return not negate
        return False

    def __bool__(self) -> bool:
        return bool(self._entries)


@functools.lru_cache(maxsize=1024)
def _client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The parsed address (IPv4-mapped IPv6 as IPv4), or None. Cached: every
    session asks several lists about the same few client addresses."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _looks_like_ip(entry: str) -> bool:
    """True for IPv6 networks, whose colons must not be taken for type:table."""
    if entry.startswith("["):
        return True
    try:
        _parse(entry)
    except ValueError:
        return False
    return True
