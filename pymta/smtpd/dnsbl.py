"""dnsbl: DNS list sites, their result filters and their reply text.

Mirrors the DNSBL half of Postfix's smtpd_check.c. A site is written
``domain`` or ``domain=d.d.d.d`` (postconf(5)): each ``d`` is a number or a
``[...]`` pattern of ``;``-separated numbers and ``n..m`` ranges, so
``zen.example=127.0.0.[2..11]`` lists only those answers. Without a filter
any A record is a listing.

``reply_text(template, values)`` expands Postfix's ``default_rbl_reply``
(or an ``rbl_reply_maps`` result) with ``$rbl_code``, ``$rbl_domain``,
``$rbl_what``, ``$rbl_class``, ``$rbl_reason``/``$rbl_txt``,
``$client_address``, ``$client_name``, ``$helo_name``, ``$sender`` …,
``${name?text}`` and ``${name:text}``. Untrusted: the TXT text (control
characters are replaced before it reaches a reply).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pymta.config.errors import ConfigError
from pymta.config.expand import expand

__all__ = ["DnsblSite", "parse_site", "reply_parts", "reply_text"]

DEFAULT_RBL_REPLY = (
    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
    "$rbl_domain${rbl_reason?; $rbl_reason}"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELD = re.compile(r"\[[^\]]*\]|[^.\[\]]+")
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")

Octet = tuple[tuple[int, int], ...]  # allowed (low, high) ranges of one byte


@dataclass(frozen=True)
class DnsblSite:
    domain: str
    pattern: tuple[Octet, Octet, Octet, Octet] | None = None

    def matches(self, address: str) -> bool:
        """Is this A record a listing under the filter?"""
        if self.pattern is None:
            return True
        try:
            octets = ipaddress.IPv4Address(address).packed
        except ValueError:
            return False
        return all(
            any(low <= byte <= high for low, high in allowed)
            for byte, allowed in zip(octets, self.pattern, strict=True)
        )


def _octet(text: str, spec: str) -> Octet:
    bad = ConfigError(f"bad DNSBL result filter in {spec!r}: expected d.d.d.d")
    if text.startswith("[") and text.endswith("]"):
        parts = text[1:-1].split(";")
    else:
        parts = [text]
    ranges: list[tuple[int, int]] = []
    for part in parts:
        low, dots, high = part.partition("..")
        if not dots:
            high = low
        if not (low.isdigit() and high.isdigit()) or not 0 <= int(low) <= int(high) <= 255:
            raise bad
        ranges.append((int(low), int(high)))
    return tuple(ranges)


def parse_site(spec: str) -> DnsblSite:
    """``domain[=d.d.d.d]`` -> a site; ConfigError for a bad filter."""
    domain, eq, filt = spec.partition("=")
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        raise ConfigError(f"bad DNSBL site {spec!r}: expected domain or domain=d.d.d.d")
    if not eq:
        return DnsblSite(domain)
    fields = _FIELD.findall(filt)
    if len(fields) != 4 or ".".join(fields) != filt:
        raise ConfigError(f"bad DNSBL result filter in {spec!r}: expected d.d.d.d")
    o = [_octet(f, spec) for f in fields]
    return DnsblSite(domain, (o[0], o[1], o[2], o[3]))


def clean_text(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def reply_text(template: str, values: Mapping[str, str]) -> str:
    """The template with Postfix's ``$name`` forms expanded from values
    (unknown names expand to nothing, as Postfix's attribute lookups do)."""
    return expand(template, lambda name: values.get(name, ""))


def reply_parts(text: str, code: int) -> tuple[int, str, str]:
    """``554 5.7.1 text`` / ``554 text`` / ``text`` -> (code, status, text);
    the status follows the code's class, as in Postfix's reply footer."""
    first, _, rest = text.partition(" ")
    if len(first) == 3 and first.isdigit() and first[0] in "45":
        code, text = int(first), rest
    second, _, rest = text.partition(" ")
    if _ENHANCED.match(second) and second[0] == str(code)[0]:
        return code, second, rest
    return code, f"{str(code)[0]}.7.1", text
