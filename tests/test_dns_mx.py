"""pymta.dns.mx and pymta.dns.cache with an in-memory resolver (no sockets)."""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pymta.dns import HostList, find_hosts
from pymta.dns.cache import CachingResolver
from pymta.dns.interface import DNSAnswer
from pymta.dns.memory import MemoryResolver

ZONE: dict[tuple[str, str], list[tuple[int, str] | str]] = {
    ("example.org", "MX"): [(20, "b.example.org"), (10, "a.example.org"), (20, "c.example.org")],
    ("a.example.org", "A"): ["192.0.2.1"],
    ("b.example.org", "A"): ["192.0.2.2"],
    ("c.example.org", "A"): ["192.0.2.3"],
    ("c.example.org", "AAAA"): ["2001:db8::3"],
    ("plain.example.org", "A"): ["192.0.2.9"],
    ("null.example.org", "MX"): [(0, "")],
    ("self.example.org", "MX"): [(10, "mx.ours.test"), (20, "backup.example.org")],
    ("mx.ours.test", "A"): ["198.51.100.1"],
    ("backup.example.org", "A"): ["192.0.2.20"],
    ("backup-of.example.org", "MX"): [(10, "a.example.org"), (20, "ours.example.org")],
    ("ours.example.org", "A"): ["127.0.0.1"],
    ("named-self.example.org", "MX"): [(10, "mx.ours.test")],
    ("noaddr.example.org", "MX"): [(10, "gone.example.org")],
}


def _hosts(d: Deferred[HostList]) -> HostList:
    results: list[HostList] = []
    d.addCallback(results.append)
    assert results, "lookup did not complete"
    return results[0]


def test_mx_order_by_preference() -> None:
    """The lowest preference comes first; every address of each MX is listed."""
    result = _hosts(find_hosts(MemoryResolver(ZONE), "example.org", random=random.Random(0)))
    assert result.ok
    assert result.hosts[0].name == "a.example.org"
    assert {h.name for h in result.hosts[1:]} == {"b.example.org", "c.example.org"}
    assert ("c.example.org", "2001:db8::3") in [(h.name, h.address) for h in result.hosts]


def test_equal_preferences_are_shuffled_by_the_injected_random() -> None:
    """Equal preferences appear in both orders for different seeds, deterministically per seed."""
    orders = set()
    for seed in range(20):
        result = _hosts(find_hosts(MemoryResolver(ZONE), "example.org", random=random.Random(seed)))
        orders.add(tuple(dict.fromkeys(h.name for h in result.hosts[1:])))
    assert orders == {("b.example.org", "c.example.org"), ("c.example.org", "b.example.org")}
    first = _hosts(find_hosts(MemoryResolver(ZONE), "example.org", random=random.Random(7)))
    again = _hosts(find_hosts(MemoryResolver(ZONE), "example.org", random=random.Random(7)))
    assert first.hosts == again.hosts


def test_a_fallback_without_mx() -> None:
    """A domain without MX is its own mail exchanger (its A record)."""
    result = _hosts(find_hosts(MemoryResolver(ZONE), "plain.example.org"))
    assert [(h.name, h.address, h.preference) for h in result.hosts] == [
        ("plain.example.org", "192.0.2.9", -1)
    ]


def test_null_mx_bounces() -> None:
    """RFC 7505 null MX: 5.1.10, nothing to try."""
    result = _hosts(find_hosts(MemoryResolver(ZONE), "null.example.org"))
    assert (result.status, result.hosts) == ("5.1.10", [])
    assert "does not accept mail (nullMX)" in result.reason


def test_nxdomain_bounces_and_servfail_defers() -> None:
    """NXDOMAIN is 5.1.2 Host or domain name not found; SERVFAIL is 4.4.3."""
    resolver = MemoryResolver(ZONE, servfail=["down.example.org"])
    missing = _hosts(find_hosts(resolver, "missing.example.org"))
    down = _hosts(find_hosts(resolver, "down.example.org"))
    assert missing.status == "5.1.2"
    assert missing.reason == (
        "Host or domain name not found. Name service error for "
        "name=missing.example.org type=MX: Host not found"
    )
    assert down.status == "4.4.3"


def test_mx_host_without_address() -> None:
    """An MX whose host has no address at all is 5.4.4."""
    result = _hosts(find_hosts(MemoryResolver(ZONE), "noaddr.example.org"))
    assert result.status == "5.4.4"


def test_brackets_suppress_mx_lookup() -> None:
    """use_mx=False looks up only the host's addresses; an IP literal needs no lookup."""
    resolver = MemoryResolver(ZONE)
    result = _hosts(find_hosts(resolver, "example.org", use_mx=False))
    assert result.status == "5.1.2"
    assert ("example.org", "MX") not in resolver.queries
    literal = _hosts(find_hosts(resolver, "192.0.2.77", use_mx=False))
    assert [h.address for h in literal.hosts] == ["192.0.2.77"]


def test_loop_to_myself_by_address_and_by_name() -> None:
    """An MX that is this host (address or myhostname) with nothing better: 5.4.6."""
    resolver = MemoryResolver(ZONE)
    by_name = _hosts(find_hosts(resolver, "named-self.example.org", own_names={"mx.ours.test"}))
    assert (by_name.status, by_name.reason) == (
        "5.4.6",
        "mail for named-self.example.org loops back to myself",
    )
    by_address = _hosts(find_hosts(resolver, "self.example.org", own_addresses={"198.51.100.1"}))
    assert by_address.status == "5.4.6"


def test_backup_mx_keeps_only_better_hosts() -> None:
    """As a backup MX we relay only to MX hosts preferred over ourselves."""
    result = _hosts(
        find_hosts(MemoryResolver(ZONE), "backup-of.example.org", own_addresses={"127.0.0.1"})
    )
    assert [h.name for h in result.hosts] == ["a.example.org"]


def test_cache_honours_ttl_and_never_caches_servfail() -> None:
    """Answers are reused within their TTL, asked again after it; SERVFAIL is not kept."""
    clock = Clock()
    inner = MemoryResolver(ZONE, servfail=["down.example.org"], ttl=60)
    cache = CachingResolver(inner, clock)
    answers: list[DNSAnswer] = []
    cache.lookup("example.org", "MX").addCallback(answers.append)
    cache.lookup("EXAMPLE.org.", "MX").addCallback(answers.append)
    assert inner.queries == [("example.org", "MX")]
    clock.advance(61)
    cache.lookup("example.org", "MX").addCallback(answers.append)
    assert inner.queries.count(("example.org", "MX")) == 2
    cache.lookup("down.example.org", "MX")
    cache.lookup("down.example.org", "MX")
    assert inner.queries.count(("down.example.org", "MX")) == 2
    assert len(answers) == 3 and all(a.ok for a in answers)


def test_cache_shares_one_query_between_concurrent_lookups() -> None:
    """Two lookups of one name while the first is in flight send one query."""
    clock = Clock()
    pending: list[Deferred[DNSAnswer]] = []

    class Slow:
        def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
            d: Deferred[DNSAnswer] = Deferred()
            pending.append(d)
            return d

    cache = CachingResolver(Slow(), clock)  # type: ignore[arg-type]
    got: list[DNSAnswer] = []
    cache.lookup("x.test", "A").addCallback(got.append)
    cache.lookup("x.test", "A").addCallback(got.append)
    assert len(pending) == 1
    pending[0].callback(DNSAnswer("x.test", "A", "ok", ("192.0.2.1",), 10))
    assert len(got) == 2
