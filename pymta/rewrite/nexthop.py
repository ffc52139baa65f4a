"""Parse a next-hop destination: ``host``, ``[host]``, ``host:port``, ``[host]:port``.

Mirrors the forms Postfix accepts in relayhost and transport(5) nexthops
for the smtp transport: a name without brackets means "look up its MX
records", brackets suppress the MX lookup (the name, or an IP address,
is connected to directly); ``:port`` picks the TCP port (a number or one of
the service names smtp, submission, smtps, lmtp), default 25. IPv6
literals are written ``[2001:db8::1]`` or ``[ipv6:2001:db8::1]``.

Untrusted input: the text (from main.cf or a table). Raises
:class:`NextHopError` on bad syntax. Writes and logs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

_SERVICES = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "lmtp": 24}


class NextHopError(ValueError):
    """A next-hop text that is not one of the accepted forms."""


@dataclass(frozen=True)
class NextHop:
    """Where to connect: ``host`` (a name or IP address), ``port``, and
    whether the host is a domain whose MX records are to be used."""

    host: str
    port: int = 25
    mx_lookup: bool = True


def _port(text: str, whole: str) -> int:
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    port = _SERVICES.get(text.lower())
    if port is None:
        raise NextHopError(f"bad port in next hop {whole!r}")
    return port


def parse_nexthop(text: str, default_port: int = 25) -> NextHop:
    """The parsed form of a nexthop (see module doc)."""
    value = text.strip()
    if not value:
        raise NextHopError("empty next hop")
    if value.startswith("["):
        close = value.find("]")
        if close < 0:
            raise NextHopError(f"missing ']' in next hop {text!r}")
        host = value[1:close]
        rest = value[close + 1 :]
        if host[:5].lower() == "ipv6:":
            host = host[5:]
        if rest and not rest.startswith(":"):
            raise NextHopError(f"junk after ']' in next hop {text!r}")
        port = _port(rest[1:], text) if rest else default_port
        mx_lookup = False
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            host, port = value, default_port
        else:
            port = _port(port_text, text)
        mx_lookup = True
    host = host.strip().rstrip(".").lower()
    if not host or any(c in host for c in " \t[]/@,"):
        raise NextHopError(f"bad host in next hop {text!r}")
    return NextHop(host, port, mx_lookup)
