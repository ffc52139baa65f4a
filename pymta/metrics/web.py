"""The HTTP side: ``GET /metrics`` over twisted.web, collected in a thread.

A scrape reads the queue directories and, with several reactor processes,
every process's metric files: slow file-system work that must not run on
the reactor thread (DESIGN.md invariant 4). :class:`MetricsResource`
therefore answers with NOT_DONE_YET and collects in the reactor's thread
pool; the text goes back to the client from the reactor. The format
follows the client's Accept header (OpenMetrics when asked for it, the
Prometheus text format otherwise), as prometheus-client negotiates it.

``/`` says where the metrics are; anything else is 404. The site writes no
access log (a scrape every few seconds would fill the twistd log).
Untrusted input: the request (only its path and Accept header are read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

log = Logger(namespace="pymta.metrics")


class MetricsResource(Resource):
    """``/metrics``: the exposition of the registry ``registry()`` returns."""

    isLeaf = True

    def __init__(self, registry: Callable[[], CollectorRegistry], reactor: Any) -> None:
        super().__init__()
        self._registry = registry
        self._reactor = reactor

    def _collect(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self._registry()), content_type

    def render_GET(self, request: Request) -> Any:
        accept = (request.getHeader("accept") or "").strip()
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._collect, accept)

        def send(result: tuple[bytes, str]) -> None:
            if finished:
                return  # the client went away while we collected
            body, content_type = result
            request.setHeader(b"Content-Type", content_type.encode("ascii"))
            request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            log.failure("metrics collection failed", failure)
            if finished:
                return
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(b"metrics collection failed\n")
            request.finish()

        d.addCallbacks(send, failed)
        return NOT_DONE_YET


class _Index(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return notFound()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"pymta metrics: /metrics\n"


class _QuietSite(Site):
    def log(self, request: http.Request) -> None:
        pass


def metrics_site(registry: Callable[[], CollectorRegistry], reactor: Any) -> Site:
    """The twisted.web Site of the metrics service."""
    root = _Index()
    root.putChild(b"metrics", MetricsResource(registry, reactor))
    return _QuietSite(root)
