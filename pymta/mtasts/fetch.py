"""fetch: an MTA-STS policy over HTTPS (RFC 8461 section 3.3).

:class:`PolicyFetcher` ``.fetch(domain)`` fires with the text of
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` or errbacks with
:class:`FetchError` (the reason, for the log). As the RFC asks:

- the policy host's name is resolved through the smtp client's own
  resolver (``pymta_dns_servers``), its addresses tried in order;
- the server's certificate must chain to the smtp client's trust
  (``smtp_tls_CAfile``, else the system's CAs) and name
  ``mta-sts.<domain>`` (service-identity), TLS 1.2 or later;
- only a ``200`` answer counts: redirects are not followed (3.3);
- the media type must be ``text/plain`` (parameters such as charset allowed);
- at most :data:`BODY_LIMIT` bytes (64 KiB) are read: a longer body is
  refused and the connection dropped;
- the whole fetch (lookup, connection, handshake, body) is bounded by
  ``timeout`` seconds (``pymta_mta_sts_timeout``) on the injected clock.

Twisted's Agent does the HTTP; nothing blocks the reactor. ``port`` (443)
is a constructor argument so that tests can serve a policy from an
unprivileged port; it is not a main.cf parameter. Untrusted input: DNS
answers and everything the policy host sends. Writes nothing, logs nothing.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from pymta.dns.interface import IDNSResolver

#: RFC 8461 3.3 suggests a limit; 64 KiB is what common senders allow.
BODY_LIMIT = 64 * 1024

WELL_KNOWN = "/.well-known/mta-sts.txt"

_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+")


class FetchError(Exception):
    """The policy could not be fetched; the message says why."""


@implementer(IAgentEndpointFactory)
class _PinnedEndpoint:
    """The one address a request goes to, with TLS verified for ``host``."""

    def __init__(
        self, reactor: Any, address: str, port: int, host: str, trust: Any, timeout: float
    ) -> None:
        self._reactor = reactor
        self._address = address
        self._port = port
        self._host = host
        self._trust = trust
        self._timeout = timeout

    def endpointForURI(self, uri: Any) -> Any:
        tcp: Any
        if ":" in self._address:
            tcp = TCP6ClientEndpoint(self._reactor, self._address, self._port, self._timeout)
        else:
            tcp = TCP4ClientEndpoint(self._reactor, self._address, self._port, self._timeout)
        options = ssl.optionsForClientTLS(
            self._host,
            trustRoot=self._trust if self._trust is not None else ssl.platformTrust(),
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )
        return wrapClientTLS(options, tcp)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" line per fetch


class _LimitedBody(Protocol):
    """Collects a response body, giving up past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done.errback(FetchError(f"policy larger than {self._limit} bytes"))
            self._stop()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(FetchError(f"policy body lost: {reason.getErrorMessage()}"))

    def _stop(self) -> None:
        transport: Any = self.transport  # the response body's IPushProducer
        if transport is not None:
            transport.stopProducing()

    def _cancel(self, _d: Deferred[bytes]) -> None:
        self._stop()


class PolicyFetcher:
    """Fetches policies (see the module doc)."""

    def __init__(
        self,
        reactor: Any,
        clock: IReactorTime,
        dns: IDNSResolver,
        trust: Any = None,
        timeout: float = 10.0,
        port: int = 443,
        ipv6: bool = True,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._dns = dns
        self._trust = trust
        self._timeout = timeout
        self._port = port
        self._ipv6 = ipv6

    def fetch(self, domain: str) -> Deferred[str]:
        """The policy text of ``domain``; FetchError when there is none to be had."""
        d = Deferred.fromCoroutine(self._fetch(domain))
        d.addTimeout(self._timeout, self._clock, self._timed_out)
        return d

    def _timed_out(self, result: Any, timeout: float) -> Any:
        # Called only when the time limit cancelled the fetch: whatever the
        # cancelled request failed with, the reason is the time limit.
        if isinstance(result, Failure):
            raise FetchError(f"timed out after {timeout:g}s")
        return result

    async def _fetch(self, domain: str) -> str:
        host = "mta-sts." + domain.rstrip(".").lower()
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchError(f"{host[:80]!r}: not a host name") from None
        if not _HOST.fullmatch(host):  # the name goes into a URL: nothing else may
            raise FetchError(f"{host[:80]!r}: not a host name")
        addresses = await self._addresses(host)
        if not addresses:
            raise FetchError(f"{host}: host not found")
        port = "" if self._port == 443 else f":{self._port}"
        url = f"https://{host}{port}{WELL_KNOWN}".encode("ascii")
        last = ""
        for address in addresses:
            endpoints = _PinnedEndpoint(
                self._reactor, address, self._port, host, self._trust, self._timeout
            )
            pool = HTTPConnectionPool(self._reactor, persistent=False)
            pool._factory = _QuietFactory
            agent = Agent.usingEndpointFactory(self._reactor, endpoints, pool)
            try:
                response: IResponse = await agent.request(
                    b"GET", url, Headers({b"User-Agent": [b"pymta MTA-STS"]})
                )
            except Exception as e:  # connection or TLS failure: the next address
                if _cancelled(e):
                    raise
                last = f"{host}[{address}]: {_describe(e)}"
                continue
            return await self._body(host, address, response)
        raise FetchError(last)

    async def _addresses(self, host: str) -> list[str]:
        lookups = [self._dns.lookup(host, "A")]
        if self._ipv6:
            lookups.append(self._dns.lookup(host, "AAAA"))
        answers = await defer.gatherResults(lookups)
        return [str(a) for answer in answers if answer.ok for a in answer.records]

    async def _body(self, host: str, address: str, response: IResponse) -> str:
        where = f"{host}[{address}]"
        if response.code != 200:
            # A redirect (3xx) is a failure too: RFC 8461 3.3.
            _discard(response)
            raise FetchError(f"{where}: HTTP status {response.code} {_phrase(response)}")
        kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if kind.split(b";")[0].strip().lower() != b"text/plain":
            _discard(response)
            shown = kind[:60].decode("latin-1")
            raise FetchError(f"{where}: content type {shown!r}, not text/plain")
        length = response.length
        if isinstance(length, int) and length > BODY_LIMIT:
            _discard(response)
            raise FetchError(f"{where}: policy larger than {BODY_LIMIT} bytes")
        body = _LimitedBody(BODY_LIMIT)
        response.deliverBody(body)
        try:
            data = await body.done
        except FetchError as e:
            raise FetchError(f"{where}: {e}") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError(f"{where}: policy is not UTF-8") from None


def _discard(response: IResponse) -> None:
    """Drop the connection of a response whose body is not wanted."""
    body = _LimitedBody(0)
    body.done.addErrback(lambda _failure: None)
    response.deliverBody(body)
    body._stop()


def _cancelled(error: BaseException) -> bool:
    """Whether the request failed because the fetch was cancelled (time limit)."""
    if isinstance(error, defer.CancelledError):
        return True
    return any(r.check(defer.CancelledError) for r in getattr(error, "reasons", None) or ())


def _phrase(response: IResponse) -> str:
    return response.phrase.decode("latin-1", "replace")[:60]


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)  # ResponseNeverReceived, ConnectingCancelledError...
    if reasons:
        return "; ".join(_describe(r.value) for r in reasons)
    text = str(error) or error.__class__.__name__
    return text[:200]
