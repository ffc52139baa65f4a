"""The resolver contract of pymta.dns: one lookup, one value.

A lookup never errbacks for a DNS condition: NXDOMAIN, "no such record"
(NODATA), SERVFAIL and timeouts are answers with a ``status``, so the
caller decides — Postfix's rule that "not found" differs from "lookup
failed" (a failed lookup defers, it never bounces).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Interface

from pymta.dns.tlsa import TLSARecord

#: statuses of a :class:`DNSAnswer`
OK = "ok"
NXDOMAIN = "nxdomain"  # the name does not exist (permanent)
NODATA = "nodata"  # the name exists, without records of this type (permanent)
SERVFAIL = "servfail"  # server failure, refusal or timeout (temporary)

#: MX record data: (preference, exchange host name without trailing dot)
MXRecord = tuple[int, str]


@dataclass(frozen=True)
class DNSAnswer:
    """The answer to one query. ``records`` holds (preference, host) pairs
    for MX, address strings for A/AAAA, texts for TXT and names for PTR;
    ``ttl`` is the smallest TTL of the records (or of the negative answer);
    ``reason`` a human text for failures. ``authentic`` is True only when a
    DNSSEC-validating resolver the client trusts (Postfix's
    ``smtp_dns_support_level = dnssec``, on loopback) set the AD bit: the
    answer, positive or negative, is DNSSEC-secure. TLSA answers hold
    :class:`~pymta.dns.tlsa.TLSARecord` values."""

    name: str
    rrtype: str
    status: str
    records: tuple[MXRecord | str | TLSARecord, ...] = ()
    ttl: int = 0
    reason: str = ""
    authentic: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def temporary(self) -> bool:
        return self.status == SERVFAIL


class IDNSResolver(Interface):
    def lookup(name: str, rrtype: str) -> Deferred[DNSAnswer]:
        """Look up ``rrtype`` (``MX``, ``A``, ``AAAA``, ``TXT``, ``PTR`` or
        ``TLSA``) records of ``name`` and fire with the answer; only a bug
        errbacks."""
