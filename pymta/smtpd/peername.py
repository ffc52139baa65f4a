"""peername: the client's host name, forward-confirmed (Postfix's smtpd_peer.c).

``PeerNames(dns, hosts).lookup(address)`` fires with a :class:`PeerName`:

- ``reverse_name``: the PTR name of the address, unverified ("unknown"
  without one), and ``reverse_status``;
- ``name``: the same name only when one of its A/AAAA records is the
  address again (forward-confirmed reverse DNS), else "unknown", and
  ``status``.

A status is ``ok``, ``perm`` (no name: NXDOMAIN, no PTR, a name that does
not point back) or ``temp`` (SERVFAIL or a timeout somewhere on the way),
so that reject_unknown_client_hostname answers 450 for a DNS outage.
As Postfix's getnameinfo()/getaddrinfo() go through nsswitch "files"
first, the hosts file (/etc/hosts) answers before DNS: 127.0.0.1 is
``localhost``. Untrusted: every answer (names are checked for syntax
before use).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed

from pymta.dns.interface import SERVFAIL, DNSAnswer, IDNSResolver

__all__ = ["OK", "PERM", "TEMP", "HostsFile", "PeerName", "PeerNames", "reverse_query_name"]

OK = "ok"
PERM = "perm"
TEMP = "temp"

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9_-]{1,63}\Z")


@dataclass(frozen=True)
class PeerName:
    name: str = "unknown"
    status: str = PERM
    reverse_name: str = "unknown"
    reverse_status: str = PERM


def reverse_labels(address: str) -> str:
    """1.2.3.4 -> 4.3.2.1; an IPv6 address -> its 32 nibbles reversed
    (the owner name of DNSBL and PTR lookups, without the zone)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ".".join(reversed(str(ip).split(".")))
    return ".".join(reversed(ip.exploded.replace(":", "")))


def reverse_query_name(address: str) -> str:
    ip = ipaddress.ip_address(address)
    zone = "in-addr.arpa" if ip.version == 4 else "ip6.arpa"
    return f"{reverse_labels(address)}.{zone}"


@functools.lru_cache(maxsize=1024)
def _canonical(address: str) -> str:
    """The address in its standard text form (ValueError when it is none);
    kept for the last clients, as each connection asks once."""
    return str(ipaddress.ip_address(address))


def valid_hostname(name: str) -> bool:
    return bool(_HOSTNAME.match(name.lower().rstrip(".")))


class HostsFile:
    """The hosts file as two maps: address -> first name, name -> addresses."""

    def __init__(self, text: str = "") -> None:
        self.names: dict[str, str] = {}
        self.addresses: dict[str, set[str]] = {}
        for line in text.splitlines():
            fields = line.partition("#")[0].split()
            if len(fields) < 2:
                continue
            try:
                address = str(ipaddress.ip_address(fields[0]))
            except ValueError:
                continue
            self.names.setdefault(address, fields[1].lower())
            for name in fields[1:]:
                self.addresses.setdefault(name.lower(), set()).add(address)

    @classmethod
    def read(cls, path: str = "/etc/hosts") -> HostsFile:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return cls(f.read())
        except OSError:
            return cls()


class PeerNames:
    """Client name lookups over an IDNSResolver (with its deadline)."""

    def __init__(self, dns: IDNSResolver, hosts: HostsFile | None = None) -> None:
        self._dns = dns
        self._hosts = hosts or HostsFile()

    def lookup(self, address: str) -> Deferred[PeerName]:
        known = self.known(address)
        if known is not None:
            return succeed(known)
        return self._dns.lookup(reverse_query_name(address), "PTR").addCallback(
            self._reverse, _canonical(address)
        )

    def known(self, address: str) -> PeerName | None:
        """The answer that needs no DNS query (an address that is none, or
        one the hosts file names), else None: what :meth:`lookup` fires
        with at once, without a Deferred (smtpd asks at every connection)."""
        try:
            address = _canonical(address)
        except ValueError:
            return PeerName()
        known = self._hosts.names.get(address)
        if known is None:
            return None
        confirmed = address in self._hosts.addresses.get(known, ())
        return PeerName(known if confirmed else "unknown", OK if confirmed else PERM, known, OK)

    def _reverse(self, answer: DNSAnswer, address: str) -> PeerName | Deferred[PeerName]:
        if answer.status == SERVFAIL:
            return PeerName(status=TEMP, reverse_status=TEMP)
        names = [str(n) for n in answer.records if valid_hostname(str(n))] if answer.ok else []
        if not names:
            return PeerName()
        name = names[0]
        rrtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        return self._dns.lookup(name, rrtype).addCallback(self._forward, name, address)

    @staticmethod
    def _forward(answer: DNSAnswer, name: str, address: str) -> PeerName:
        if answer.status == SERVFAIL:
            return PeerName("unknown", TEMP, name, OK)
        wanted = ipaddress.ip_address(address)
        for record in answer.records if answer.ok else ():
            try:
                if ipaddress.ip_address(str(record)) == wanted:
                    return PeerName(name, OK, name, OK)
            except ValueError:
                continue
        return PeerName("unknown", PERM, name, OK)
