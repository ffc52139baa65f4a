"""mx: from a next hop to the ordered list of hosts to try (Postfix's smtp_addr.c).

``find_hosts(resolver, domain, use_mx=True, ...)`` fires with a
:class:`HostList`, never an errback:

- MX records sorted by preference, equal preferences shuffled with the
  injected ``random`` (RFC 5321 section 5.1 load spreading), each MX host
  resolved to its A and AAAA addresses (hosts without an address are
  skipped);
- no MX record (NODATA): the domain's own A/AAAA records (the implicit MX);
- a null MX (RFC 7505: one MX ``0 .``): ``5.1.10`` at once;
- NXDOMAIN: ``5.1.2 Host or domain name not found``; SERVFAIL or timeout:
  ``4.4.3`` (deferred, as "lookup failed" never bounces);
- ``use_mx=False`` (a ``[bracketed]`` next hop): the host's addresses only,
  and an IP literal is used as is;
- loop detection (Postfix's smtp_find_self): an MX host that is this host
  (one of ``own_addresses``, or named ``own_names``) and every MX of equal
  or lower preference are dropped; when nothing is left the mail "loops
  back to myself" (``5.4.6``). Bracketed next hops are not checked, as in
  Postfix.

Each :class:`Host` says whether its name is DNSSEC-secure (``secure``):
the MX answer (when there was an MX lookup) and the host's address answer
were both authentic, RFC 7672 section 2.2's condition for looking up its
TLSA records. An IP literal is never secure.
"""

from __future__ import annotations

import ipaddress
import random as random_module
from collections.abc import Collection
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, gatherResults, succeed

from pymta.dns.interface import NXDOMAIN, SERVFAIL, DNSAnswer, IDNSResolver


@dataclass(frozen=True)
class Host:
    """One address to connect to: the host's name (for relay= and TLS
    name checks), its address, its MX preference (-1: no MX), and whether
    the DNS answers that led to it were DNSSEC-secure."""

    name: str
    address: str
    preference: int = -1
    secure: bool = False


@dataclass
class HostList:
    """The hosts to try in order; or, when ``status`` is set, why there are
    none (an RFC 3463 code and Postfix's text)."""

    hosts: list[Host] = field(default_factory=list)
    status: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.status


def _literal(host: str) -> str | None:
    text = host[5:] if host.lower().startswith("ipv6:") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _not_found(answer: DNSAnswer, permanent: str = "5.1.2") -> HostList:
    temporary = answer.status == SERVFAIL
    text = "Host not found, try again" if temporary else "Host not found"
    return HostList(
        status="4.4.3" if temporary else permanent,
        reason=(
            f"Host or domain name not found. Name service error for "
            f"name={answer.name} type={answer.rrtype}: {text}"
        ),
    )


def _addresses(resolver: IDNSResolver, name: str, ipv6: bool) -> Deferred[list[DNSAnswer]]:
    lookups = [resolver.lookup(name, "A")]
    if ipv6:
        lookups.append(resolver.lookup(name, "AAAA"))
    return gatherResults(lookups)


def _collect(
    name: str, preference: int, answers: list[DNSAnswer], mx_secure: bool = True
) -> list[Host]:
    return [
        Host(name, str(a), preference, secure=mx_secure and answer.authentic)
        for answer in answers
        if answer.ok
        for a in answer.records
    ]


def find_hosts(
    resolver: IDNSResolver,
    domain: str,
    use_mx: bool = True,
    random: random_module.Random | None = None,
    own_addresses: Collection[str] = (),
    own_names: Collection[str] = (),
    ipv6: bool = True,
) -> Deferred[HostList]:
    """The hosts for ``domain`` (see the module doc)."""
    domain = domain.rstrip(".").lower()
    literal = _literal(domain)
    if literal is not None:
        return succeed(HostList([Host(literal, literal)]))
    if not use_mx:
        return _addresses(resolver, domain, ipv6).addCallback(_host_result, domain)
    rng = random or random_module.Random()
    return resolver.lookup(domain, "MX").addCallback(
        _mx_answer, resolver, domain, rng, own_addresses, {n.lower() for n in own_names}, ipv6
    )


def _host_result(answers: list[DNSAnswer], name: str, mx_secure: bool = True) -> HostList:
    hosts = _collect(name, -1, answers, mx_secure)
    if hosts:
        return HostList(hosts)
    worst = next((a for a in answers if a.status == SERVFAIL), None) or next(
        (a for a in answers if a.status == NXDOMAIN), answers[0]
    )
    return _not_found(worst)


def _mx_answer(
    answer: DNSAnswer,
    resolver: IDNSResolver,
    domain: str,
    rng: random_module.Random,
    own_addresses: Collection[str],
    own_names: set[str],
    ipv6: bool,
) -> Deferred[HostList] | HostList:
    if answer.status in (SERVFAIL, NXDOMAIN):
        return _not_found(answer)
    if not answer.ok:  # no MX: the domain is its own mail exchanger (RFC 5321 5.1)
        return _addresses(resolver, domain, ipv6).addCallback(
            _host_result, domain, answer.authentic
        )
    records = [r for r in answer.records if isinstance(r, tuple)]
    if any(host in ("", ".") for _, host in records):
        # RFC 7505: a null MX says the domain accepts no mail at all.
        return HostList(status="5.1.10", reason=f"Domain {domain} does not accept mail (nullMX)")
    by_preference: dict[int, list[str]] = {}
    for preference, host in records:
        by_preference.setdefault(preference, []).append(host)
    ordered: list[tuple[int, str]] = []
    for preference in sorted(by_preference):
        group = sorted(set(by_preference[preference]))
        rng.shuffle(group)
        ordered.extend((preference, host) for host in group)
    lookups = [_addresses(resolver, host, ipv6) for _, host in ordered]
    return gatherResults(lookups).addCallback(
        _mx_hosts, domain, ordered, own_addresses, own_names, answer.authentic
    )


def _mx_hosts(
    results: list[list[DNSAnswer]],
    domain: str,
    ordered: list[tuple[int, str]],
    own_addresses: Collection[str],
    own_names: set[str],
    mx_secure: bool,
) -> HostList:
    hosts: list[Host] = []
    failures: list[DNSAnswer] = []
    for (preference, name), answers in zip(ordered, results, strict=True):
        found = _collect(name, preference, answers, mx_secure)
        if not found:
            failures.extend(answers)
        hosts.extend(found)
    own = {str(ipaddress.ip_address(a)) for a in own_addresses}
    self_pref = min(
        (h.preference for h in hosts if h.address in own or h.name in own_names), default=None
    )
    if self_pref is not None:
        hosts = [h for h in hosts if h.preference < self_pref]
        if not hosts:
            return HostList(status="5.4.6", reason=f"mail for {domain} loops back to myself")
    if hosts:
        return HostList(hosts)
    temporary = next((a for a in failures if a.status == SERVFAIL), None)
    if temporary is not None:
        return _not_found(temporary)
    return _not_found(failures[0] if failures else DNSAnswer(domain, "MX", NXDOMAIN), "5.4.4")
