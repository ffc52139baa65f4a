"""The MTA-STS policy fetch (pymta.mtasts.fetch) against a real HTTPS host on loopback.

The policy host is twisted.web with TLS (tests/mtasts_hosts.py) on
127.0.0.1, a kernel-chosen port given to the fetcher (the constructor's
test hook; RFC 8461 fixes 443), its certificate from a test CA that the
fetcher trusts as the smtp client would through smtp_tls_CAfile. The host
name mta-sts.sts.test resolves through an in-memory zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from pymta.delivery.smtp_tls import load_trust
from pymta.dns.memory import MemoryResolver
from pymta.mtasts.fetch import BODY_LIMIT, FetchError, PolicyFetcher
from tests.mtasts_hosts import issue, serve

POLICY = "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"


class Host:
    def __init__(self, tmp_path: Path, self_signed: bool = False, name: str = "mta-sts.sts.test"):
        from twisted.internet import reactor

        cert, key = issue(tmp_path, name, self_signed=self_signed)
        self.policies: dict[str, list[Any]] = {"mta-sts.sts.test": [200, "text/plain", POLICY]}
        self.port, self.resource = serve(reactor, self.policies, cert, key, "127.0.0.1", 0)
        self.trust = load_trust(str(tmp_path / "ca.pem"))
        self.clock = Clock()

    def fetcher(self, zone: dict[tuple[str, str], Any] | None = None) -> PolicyFetcher:
        from twisted.internet import reactor

        dns = MemoryResolver(zone or {("mta-sts.sts.test", "A"): ["127.0.0.1"]})
        return PolicyFetcher(
            reactor, self.clock, dns, trust=self.trust, timeout=5, port=self.port.getHost().port
        )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    found = Host(tmp_path)
    yield found
    pytest_twisted.blockon(defer.maybeDeferred(found.port.stopListening))


async def _failure(fetcher: PolicyFetcher) -> str:
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch("sts.test")
    return str(caught.value)


@pytest_twisted.ensureDeferred
async def test_policy_fetched(host: Host) -> None:
    """The policy is fetched over verified HTTPS from the well-known path of
    mta-sts.<domain>."""
    assert await host.fetcher().fetch("sts.test") == POLICY
    assert host.resource.requests == [("mta-sts.sts.test", "/.well-known/mta-sts.txt")]


@pytest_twisted.ensureDeferred
async def test_charset_parameter_accepted(host: Host) -> None:
    """text/plain with a charset parameter is text/plain."""
    host.policies["mta-sts.sts.test"][1] = "text/plain; charset=utf-8"
    assert await host.fetcher().fetch("sts.test") == POLICY


@pytest_twisted.ensureDeferred
async def test_redirect_not_followed(host: Host) -> None:
    """A 301 redirect is a failed fetch, not followed (RFC 8461 3.3)."""
    host.policies["mta-sts.sts.test"][0] = 301
    assert "HTTP status 301" in await _failure(host.fetcher())
    assert len(host.resource.requests) == 1


@pytest_twisted.ensureDeferred
async def test_wrong_content_type(host: Host) -> None:
    """A policy served as text/html is refused."""
    host.policies["mta-sts.sts.test"][1] = "text/html"
    assert "not text/plain" in await _failure(host.fetcher())


@pytest_twisted.ensureDeferred
async def test_body_limit(host: Host) -> None:
    """A body over 64 KiB is refused without reading it all."""
    host.policies["mta-sts.sts.test"][2] = POLICY + "x: " + "y" * BODY_LIMIT + "\n"
    assert "larger than 65536 bytes" in await _failure(host.fetcher())


@pytest_twisted.ensureDeferred
async def test_not_found(host: Host) -> None:
    """A 404 is a failed fetch, and so is an unknown host name."""
    del host.policies["mta-sts.sts.test"]
    assert "HTTP status 404" in await _failure(host.fetcher())
    assert "host not found" in await _failure(host.fetcher({("other.test", "A"): ["127.0.0.1"]}))


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate(tmp_path: Path) -> None:
    """A policy host whose certificate no trusted CA signed is a failed fetch."""
    bad = Host(tmp_path, self_signed=True)
    try:
        reason = await _failure(bad.fetcher())
        assert "certificate verify failed" in reason
        assert bad.resource.requests == []
    finally:
        await bad.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_certificate_for_another_name(tmp_path: Path) -> None:
    """A trusted certificate that does not name mta-sts.<domain> is a failed fetch."""
    other = Host(tmp_path, name="www.sts.test")
    try:
        await _failure(other.fetcher())
        assert other.resource.requests == []
    finally:
        await other.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_timeout(host: Host) -> None:
    """A host that never answers fails the fetch at pymta_mta_sts_timeout."""
    host.policies["mta-sts.sts.test"][0] = "hang"
    fetching = host.fetcher().fetch("sts.test")
    while not host.resource.requests:  # the request reached the host: an event, polled
        await _turn()
    host.clock.advance(5)
    with pytest.raises(FetchError, match="timed out after 5s"):
        await fetching


async def _turn() -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_domain_that_is_no_host_name(host: Host) -> None:
    """A domain that cannot be a host name (it would change the URL) is
    refused before any lookup or connection."""
    with pytest.raises(FetchError, match="not a host name"):
        await host.fetcher().fetch("sts.test/evil?")
    assert host.resource.requests == []
