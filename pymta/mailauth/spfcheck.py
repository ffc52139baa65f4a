"""spfcheck: SPF (RFC 7208) for the MAIL FROM and the HELO identity, through pyspf.

pyspf is the reference SPF implementation in Python (maintained by Scott
Kitterman, one of RFC 7208's authors) and passes the RFC's test suite.
Its lookups go through the module-level ``spf.DNSLookup``; pymta replaces
it once with a function that asks the :class:`~pymta.mailauth.resolver.Lookup`
of the calling worker thread, so every check uses pymta's configured
servers and timeout, and a timeout is ``temperror`` (RFC 7208 2.6.6).

MAIL FROM ``<>`` is checked as ``postmaster@HELO`` (RFC 7208 2.4). The
HELO check (2.3) uses ``postmaster@HELO`` too; a HELO that is an address
literal has no SPF (``none``). Results are pyspf's words: pass, fail,
softfail, neutral, none, temperror, permerror.

Untrusted input: the client address, HELO, sender and every DNS answer.
Writes and logs nothing.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Any

import spf

from pymta.mailauth.resolver import DNSTempError, Lookup

_local = threading.local()


def _dns_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    lookup: Lookup = _local.lookup
    try:
        records = lookup.lookup(name, qtype)
    except DNSTempError as e:
        raise spf.TempError(f"DNS {e}") from None
    return [((name, qtype), record) for record in records]


spf.DNSLookup = _dns_lookup


@dataclass(frozen=True)
class SPFResult:
    result: str
    identity: str  # "mailfrom" | "helo"
    domain_of: str  # the address or name checked
    explanation: str = ""

    @property
    def domain(self) -> str:
        return self.domain_of.rpartition("@")[2].lower()


def check_spf(
    lookup: Lookup, client_ip: str, sender: str, helo: str
) -> tuple[SPFResult, SPFResult]:
    """The (MAIL FROM, HELO) results for a client."""
    ip = client_ip.removeprefix("IPv6:")
    helo_result = _check(lookup, ip, f"postmaster@{helo}", helo, "helo", helo)
    if sender:
        mailfrom = _check(lookup, ip, sender, helo, "mailfrom", sender)
    else:
        mailfrom = SPFResult(helo_result.result, "mailfrom", f"postmaster@{helo}", "")
    return mailfrom, helo_result


def _check(lookup: Lookup, ip: str, sender: str, helo: str, identity: str, shown: str) -> SPFResult:
    domain = sender.rpartition("@")[2]
    if not domain or domain.startswith("[") or _is_address(domain):
        return SPFResult("none", identity, shown)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return SPFResult("none", identity, shown, "no client address")
    _local.lookup = lookup
    try:
        query = spf.query(i=ip, s=sender, h=helo, timeout=20, querytime=20)
        result, _code, explanation = query.check()
    finally:
        _local.lookup = None
    return SPFResult(str(result), identity, shown, str(explanation))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
