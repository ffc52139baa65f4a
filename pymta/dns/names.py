"""names: the real IDNSResolver, on twisted.names (asynchronous, never blocks).

Servers come from ``pymta_dns_servers`` (``host`` or ``host:port`` or
``[v6]:port``, comma/space separated; empty means /etc/resolv.conf, as the
system's own resolver would). Exceptions of twisted.names become answer
statuses: DNSNameError is NXDOMAIN, an empty answer is NODATA, and
everything else (server failure, refusal, timeout) is SERVFAIL, which the
caller treats as temporary. CNAMEs are followed by the server; only records
of the asked type are kept. TXT answers are text (the strings of one record
joined), PTR answers lower-case names, TLSA answers
:class:`~pymta.dns.tlsa.TLSARecord` values.

DNSSEC (Postfix's ``smtp_dns_support_level = dnssec``, for DANE): pymta
does not validate signatures itself; like Postfix it asks a validating
resolver (unbound, a local BIND) with the AD bit set in the query (RFC 6840
section 5.7) and believes the AD bit of the reply only from a resolver on
loopback, where nobody on the path can forge it. A resolver built with
``dnssec=True`` therefore refuses to start unless every server
(``pymta_dns_servers``, else the nameservers of /etc/resolv.conf, read once
at start) is on 127.0.0.0/8 or ::1; its answers carry ``authentic`` from
the AD bit. Without it, ``authentic`` is always False. Untrusted: the
answers (only names, addresses and TLSA data are taken from them).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred
from twisted.names import client, dns, error
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.config import Config, ConfigError
from pymta.dns.interface import NODATA, NXDOMAIN, OK, SERVFAIL, DNSAnswer, IDNSResolver
from pymta.dns.tlsa import TLSA_TYPE, from_rdata

_TYPES = {
    "MX": dns.MX,
    "A": dns.A,
    "AAAA": dns.AAAA,
    "TXT": dns.TXT,
    "PTR": dns.PTR,
    "TLSA": TLSA_TYPE,
}


class _Sections(tuple[Any, ...]):
    """twisted.names' (answers, authority, additional), plus the AD bit."""

    authentic = False


def _asking_ad(protocol: Any) -> Any:
    """Make a DNS protocol set the AD bit in every query it writes: RFC
    6840 section 5.7, a validating resolver says AD only to those who ask."""
    write = protocol.writeMessage

    def write_with_ad(message: dns.Message, *address: Any) -> None:
        message.authenticData = 1
        write(message, *address)

    protocol.writeMessage = write_with_ad
    return protocol


class _ADFactory(client.DNSClientFactory):
    def buildProtocol(self, addr: Any) -> Any:
        return _asking_ad(super().buildProtocol(addr))


class DNSSECClient(client.Resolver):
    """A twisted.names client that asks for, and keeps, the AD bit."""

    def __init__(self, servers: list[tuple[str, int]], reactor: Any) -> None:
        super().__init__(servers=servers, reactor=reactor)
        self.factory = _ADFactory(self, self.timeout)
        self.factory.noisy = False

    def _connectedProtocol(self, interface: str = "") -> Any:
        return _asking_ad(super()._connectedProtocol(interface))

    def filterAnswers(self, message: dns.Message) -> Any:
        result = super().filterAnswers(message)
        if isinstance(result, tuple):
            sections = _Sections(result)
            sections.authentic = bool(message.authenticData)
            return sections
        if isinstance(result, Failure):
            # A negative answer (NXDOMAIN) is secure too when AD is set.
            setattr(result.value, "authentic", bool(message.authenticData))  # noqa: B010
        return result


def resolv_conf_servers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The ``nameserver`` lines of resolv.conf (port 53); none: 127.0.0.1,
    as the C library assumes."""
    servers: list[tuple[str, int]] = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    servers.append((words[1], 53))
    except OSError:
        pass
    return servers or [("127.0.0.1", 53)]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def parse_servers(value: list[str]) -> list[tuple[str, int]]:
    """``127.0.0.1:5353``, ``[::1]:53``, ``10.0.0.1`` -> (host, port) pairs."""
    servers: list[tuple[str, int]] = []
    for item in value:
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not port.isdigit() or not host:
            raise ConfigError(
                f"bad DNS server {item!r}: expected host or host:port",
                parameter="pymta_dns_servers",
            )
        servers.append((host, int(port)))
    return servers


@implementer(IDNSResolver)
class NamesResolver:
    """IDNSResolver over a twisted.names client.Resolver."""

    def __init__(self, resolver: Any, dnssec: bool = False) -> None:
        self._resolver = resolver
        self.dnssec = dnssec

    @classmethod
    def from_config(cls, config: Config, reactor: Any, dnssec: bool = False) -> NamesResolver:
        """The resolver of ``pymta_dns_servers`` (else /etc/resolv.conf);
        with ``dnssec`` one that trusts the AD bit, refused (ConfigError)
        unless every server is on loopback."""
        servers = parse_servers(config.get_list("pymta_dns_servers"))
        if dnssec:
            servers = servers or resolv_conf_servers()
            remote = [host for host, _port in servers if not is_loopback(host)]
            if remote:
                raise ConfigError(
                    f"smtp_dns_support_level = dnssec trusts the AD bit only from a "
                    f"validating resolver on loopback; {', '.join(remote)} is not "
                    "(run unbound on 127.0.0.1 and list it in pymta_dns_servers)",
                    parameter="smtp_dns_support_level",
                )
            return cls(DNSSECClient(servers, reactor), dnssec=True)
        if servers:
            resolver = client.Resolver(servers=servers, reactor=reactor)
        else:
            resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
        return cls(resolver)

    def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
        qtype = _TYPES[rrtype.upper()]
        d = self._query(name, qtype)
        return d.addCallbacks(
            self._answer,
            self._failure,
            callbackArgs=(name, rrtype, qtype),
            errbackArgs=(name, rrtype),
        )

    def _query(self, name: str, qtype: int) -> Deferred[Any]:
        lookup = {
            dns.MX: self._resolver.lookupMailExchange,
            dns.A: self._resolver.lookupAddress,
            dns.AAAA: self._resolver.lookupIPV6Address,
            dns.TXT: self._resolver.lookupText,
            dns.PTR: self._resolver.lookupPointer,
        }.get(qtype)
        if lookup is None:  # TLSA: no lookupTLSA in twisted.names
            result: Deferred[Any] = self._resolver.query(dns.Query(name, qtype, dns.IN))
            return result
        result = lookup(name)
        return result

    def _answer(self, result: Any, name: str, rrtype: str, qtype: int) -> DNSAnswer:
        answers, authority, _additional = result
        authentic = self.dnssec and getattr(result, "authentic", False)
        records: list[Any] = []
        ttls: list[int] = []
        for rr in answers:
            if rr.type != qtype:
                continue
            ttls.append(rr.ttl)
            payload = rr.payload
            if qtype == dns.MX:
                records.append((int(payload.preference), str(payload.name).rstrip(".").lower()))
            elif qtype == dns.TXT:
                # One TXT record is one or more strings, joined (RFC 7208 3.3).
                records.append(b"".join(payload.data).decode("utf-8", "replace"))
            elif qtype == dns.PTR:
                records.append(str(payload.name).rstrip(".").lower())
            elif qtype == TLSA_TYPE:
                try:
                    records.append(from_rdata(payload.data))
                except (ValueError, AttributeError):
                    continue  # malformed: as if absent (RFC 7672 unusable)
            else:
                records.append(payload.dottedQuad() if qtype == dns.A else _v6(payload))
        if records:
            return DNSAnswer(name, rrtype, OK, tuple(records), min(ttls), authentic=authentic)
        ttl = min((int(rr.payload.minimum) for rr in authority if rr.type == dns.SOA), default=0)
        return DNSAnswer(
            name,
            rrtype,
            NODATA,
            ttl=ttl,
            reason="No address associated with hostname",
            authentic=authentic,
        )

    def _failure(self, failure: Failure, name: str, rrtype: str) -> DNSAnswer:
        authentic = self.dnssec and bool(getattr(failure.value, "authentic", False))
        if failure.check(error.DNSNameError):
            return DNSAnswer(name, rrtype, NXDOMAIN, reason="Host not found", authentic=authentic)
        if failure.check(error.AuthoritativeDomainError):
            return DNSAnswer(name, rrtype, NXDOMAIN, reason="Host not found")
        return DNSAnswer(name, rrtype, SERVFAIL, reason="Host not found, try again")


def _v6(payload: Any) -> str:
    import socket

    return socket.inet_ntop(socket.AF_INET6, payload.address)
