"""MTA-STS discovery and its cache file (pymta.mtasts.discovery, pymta.mtasts.cache).

DNS is an in-memory zone, the HTTPS fetch a fake that counts its calls and
can fail, time a task.Clock; the cache file is real (written in a worker
thread, so these tests run on the reactor through pytest-twisted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from pymta.dns.memory import MemoryResolver
from pymta.mtasts.cache import CachedPolicy, PolicyCache, decode, encode, trim
from pymta.mtasts.discovery import RETRY_FAILED, PolicyDiscovery
from pymta.mtasts.fetch import FetchError
from pymta.mtasts.policy import Policy, parse_policy

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"
TESTING = "version: STSv1\nmode: testing\nmx: *.sts.test\nmax_age: 86400\n"
NONE = "version: STSv1\nmode: none\nmax_age: 86400\n"


class FakeFetcher:
    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.calls: list[str] = []
        self.down = False

    def fetch(self, domain: str) -> Deferred[str]:
        self.calls.append(domain)
        if self.down or domain not in self.texts:
            return fail(FetchError("mta-sts.x: Connection refused"))
        return succeed(self.texts[domain])


def _zone(policy_id: str | None) -> MemoryResolver:
    records: dict[tuple[str, str], list[str]] = {("sts.test", "MX"): []}
    if policy_id is not None:
        records[("_mta-sts.sts.test", "TXT")] = [f"v=STSv1; id={policy_id}"]
    return MemoryResolver(records)


def _discovery(
    tmp_path: Path, dns: MemoryResolver, fetcher: FakeFetcher, clock: Clock
) -> PolicyDiscovery:
    cache = PolicyCache(str(tmp_path / "mta_sts_cache"), 100)
    return PolicyDiscovery(dns, fetcher, cache, clock)


@pytest_twisted.ensureDeferred
async def test_no_txt_record_no_policy(tmp_path: Path) -> None:
    """A domain without an _mta-sts TXT record has no policy and nothing is fetched."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    discovery = _discovery(tmp_path, _zone(None), fetcher, Clock())
    assert await discovery.policy("sts.test") is None
    assert fetcher.calls == []


@pytest_twisted.ensureDeferred
async def test_fetched_once_then_cached_until_the_id_changes(tmp_path: Path) -> None:
    """The first delivery fetches the policy; later ones with the same TXT id use
    the cache; a new id fetches again (RFC 8461 3.3)."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    dns, clock = _zone("one"), Clock()
    discovery = _discovery(tmp_path, dns, fetcher, clock)
    first = await discovery.policy("sts.test")
    assert first == Policy("enforce", ("mx.sts.test",), 86400)
    assert await discovery.policy("STS.test.") == first
    assert fetcher.calls == ["sts.test"]
    dns.records[("_mta-sts.sts.test", "TXT")] = ("v=STSv1; id=two",)
    fetcher.texts["sts.test"] = TESTING
    second = await discovery.policy("sts.test")
    assert second is not None and second.mode == "testing"
    assert fetcher.calls == ["sts.test", "sts.test"]


@pytest_twisted.ensureDeferred
async def test_expired_policy_is_fetched_again(tmp_path: Path) -> None:
    """After max_age the cached policy is not used: the same id fetches anew."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    clock = Clock()
    discovery = _discovery(tmp_path, _zone("one"), fetcher, clock)
    await discovery.policy("sts.test")
    clock.advance(86401)
    await discovery.policy("sts.test")
    assert len(fetcher.calls) == 2


@pytest_twisted.ensureDeferred
async def test_fetch_failure_uses_the_fresh_cached_policy(tmp_path: Path) -> None:
    """When the policy host is down (a new id cannot be fetched), the cached policy
    still applies (RFC 8461 5.1); without a cached one there is no policy."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    dns = _zone("one")
    discovery = _discovery(tmp_path, dns, fetcher, Clock())
    cached = await discovery.policy("sts.test")
    dns.records[("_mta-sts.sts.test", "TXT")] = ("v=STSv1; id=two",)
    fetcher.down = True
    assert await discovery.policy("sts.test") == cached
    fresh = _discovery(tmp_path / "other", _zone("one"), fetcher, Clock())
    (tmp_path / "other").mkdir()
    assert await fresh.policy("sts.test") is None


@pytest_twisted.ensureDeferred
async def test_txt_record_gone_cached_policy_applies(tmp_path: Path) -> None:
    """A TXT record that disappears (or is blocked) does not turn off a fresh
    cached policy (RFC 8461 3.3), but an expired one is not used."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    dns, clock = _zone("one"), Clock()
    discovery = _discovery(tmp_path, dns, fetcher, clock)
    cached = await discovery.policy("sts.test")
    del dns.records[("_mta-sts.sts.test", "TXT")]
    dns.servfail.add("_mta-sts.sts.test")
    assert await discovery.policy("sts.test") == cached
    clock.advance(86401)
    assert await discovery.policy("sts.test") is None


@pytest_twisted.ensureDeferred
async def test_mode_none_withdraws_the_policy(tmp_path: Path) -> None:
    """A policy in mode none replaces the cached one and means no MTA-STS."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    dns = _zone("one")
    discovery = _discovery(tmp_path, dns, fetcher, Clock())
    assert await discovery.policy("sts.test") is not None
    dns.records[("_mta-sts.sts.test", "TXT")] = ("v=STSv1; id=two",)
    fetcher.texts["sts.test"] = NONE
    assert await discovery.policy("sts.test") is None
    fetcher.down = True
    dns.records[("_mta-sts.sts.test", "TXT")] = ("v=STSv1; id=three",)
    assert await discovery.policy("sts.test") is None  # the cached "none" applies


@pytest_twisted.ensureDeferred
async def test_invalid_policy_text_is_a_failed_fetch(tmp_path: Path) -> None:
    """A policy host serving something that is not a policy gives no policy."""
    fetcher = FakeFetcher({"sts.test": "<html>hello</html>"})
    discovery = _discovery(tmp_path, _zone("one"), fetcher, Clock())
    assert await discovery.policy("sts.test") is None


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_share_one_fetch(tmp_path: Path) -> None:
    """Two deliveries to one domain at the same time cause one fetch."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    discovery = _discovery(tmp_path, _zone("one"), fetcher, Clock())
    first, second = discovery.policy("sts.test"), discovery.policy("sts.test")
    assert await first == await second
    assert fetcher.calls == ["sts.test"]


@pytest_twisted.ensureDeferred
async def test_cache_survives_a_restart(tmp_path: Path) -> None:
    """The cache file written after a fetch gives the next process (a restart)
    the policy while the policy host is down, without fetching."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    first = _discovery(tmp_path, _zone("one"), fetcher, Clock())
    policy = await first.policy("sts.test")
    await first.cache.flushed()
    data = json.loads((tmp_path / "mta_sts_cache").read_text())
    assert data["domains"]["sts.test"]["id"] == "one"
    fetcher.down = True
    restarted = _discovery(tmp_path, _zone("two"), fetcher, Clock())
    assert await restarted.policy("sts.test") == policy
    assert list((tmp_path).glob(".mta_sts.*")) == []  # no temporary file left


@pytest_twisted.ensureDeferred
async def test_damaged_cache_file_starts_empty(tmp_path: Path) -> None:
    """A cache file that is not one is logged and replaced, not trusted."""
    (tmp_path / "mta_sts_cache").write_text("{not json")
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    discovery = _discovery(tmp_path, _zone("one"), fetcher, Clock())
    assert await discovery.policy("sts.test") is not None
    await discovery.cache.flushed()
    assert "sts.test" in decode((tmp_path / "mta_sts_cache").read_text())


@pytest_twisted.ensureDeferred
async def test_writers_merge(tmp_path: Path) -> None:
    """Two caches (two reactor processes) writing one file keep both domains."""
    path = str(tmp_path / "mta_sts_cache")
    one, two = PolicyCache(path, 10), PolicyCache(path, 10)
    policy = parse_policy(ENFORCE)
    one.put("a.test", CachedPolicy("1", policy, 100.0))
    await one.flushed()
    two.put("b.test", CachedPolicy("1", policy, 200.0))
    await two.flushed()
    assert sorted(decode(Path(path).read_text())) == ["a.test", "b.test"]
    assert two.get("a.test") is not None


def test_size_keeps_the_entries_that_expire_last() -> None:
    """Over pymta_mta_sts_cache_size, the entries that expire first are dropped,
    and the file format round-trips."""
    policy = parse_policy(ENFORCE)
    entries = {f"d{i}.test": CachedPolicy("x", policy, float(i)) for i in range(5)}
    kept = trim(entries, 2)
    assert sorted(kept) == ["d3.test", "d4.test"]
    assert decode(encode(kept)) == kept


def test_cache_file_that_is_not_one() -> None:
    """Text that is not a cache file (not JSON, another format, brackets nested
    past Python's recursion limit) is a ValueError: the reader starts empty."""
    for text in ("{not json", '{"format": "other"}', "[" * 10000):
        with pytest.raises(ValueError):
            decode(text)


@pytest_twisted.ensureDeferred
async def test_failed_fetch_is_not_repeated_for_five_minutes(tmp_path: Path) -> None:
    """After a failed fetch, deliveries to the domain do not fetch the same
    policy id again for RETRY_FAILED seconds; then they do, and a new id is
    fetched at once."""
    fetcher = FakeFetcher({"sts.test": ENFORCE})
    fetcher.down = True
    dns, clock = _zone("one"), Clock()
    discovery = _discovery(tmp_path, dns, fetcher, clock)
    assert await discovery.policy("sts.test") is None
    clock.advance(RETRY_FAILED - 1)
    assert await discovery.policy("sts.test") is None
    assert len(fetcher.calls) == 1
    dns.records[("_mta-sts.sts.test", "TXT")] = ("v=STSv1; id=two",)
    await discovery.policy("sts.test")
    assert len(fetcher.calls) == 2
    clock.advance(RETRY_FAILED)
    fetcher.down = False
    assert await discovery.policy("sts.test") is not None
    assert len(fetcher.calls) == 3
