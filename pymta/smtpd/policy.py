"""policy: Postfix's policy delegation client (SMTPD_POLICY_README).

``check_policy_service inet:host:port`` or ``unix:/path`` sends the state of
the SMTP session to an external policy server (postgrey, policyd-spf, …)
as ``name=value`` lines ended by an empty line, and reads one answer in the
same form, of which ``action=`` counts: an access(5) action that
:mod:`pymta.smtpd.restrictions` applies (OK, DUNNO, REJECT, DEFER,
DEFER_IF_PERMIT, DEFER_IF_REJECT, NNN text, restriction names).

Each query opens a connection, sends, reads the answer, and closes
(Postfix keeps connections for ``smtpd_policy_service_max_idle``; pymta
does not reuse them, so those parameters are not listed). The whole
exchange has ``smtpd_policy_service_timeout``; a server that is down,
silent, or answers garbage is tried ``smtpd_policy_service_try_limit``
times, then ``smtpd_policy_service_default_action`` answers (Postfix's
``451 4.3.5 Server configuration problem``). Never blocks the reactor.
Logs ``warning: problem talking to server SPEC: WHY`` when it falls back
to the default action.
Untrusted: the server's answer (bounded to 8 KiB, control characters
replaced before a reply carries them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from pymta.config.errors import ConfigError
from pymta.maillog import maillog

__all__ = ["PolicyError", "PolicyService", "encode_request", "parse_endpoint"]

_MAX_ANSWER = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PolicyError(Exception):
    """The policy server could not be asked or gave no usable answer."""


def parse_endpoint(spec: str, reactor: Any) -> Any:
    """``inet:host:port``, ``inet:[v6]:port`` or ``unix:/path`` -> an endpoint."""
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return UNIXClientEndpoint(reactor, rest)
    if kind == "inet":
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]:")
            if port.isdigit():
                return TCP6ClientEndpoint(reactor, host, int(port))
        else:
            host, _, port = rest.rpartition(":")
            if host and port.isdigit():
                return TCP4ClientEndpoint(reactor, host, int(port))
    raise ConfigError(f"bad policy service {spec!r}: expected inet:host:port or unix:/path")


def encode_request(attributes: Mapping[str, str]) -> bytes:
    """The request: ``name=value`` lines and an empty line (values on one
    line: a CR or LF from the client never starts an attribute)."""
    lines = []
    for name, value in attributes.items():
        clean = value.replace("\r", " ").replace("\n", " ")
        lines.append(f"{name}={clean}\n")
    return ("".join(lines) + "\n").encode("utf-8", "replace")


class _Exchange(Protocol):
    def __init__(self, request: bytes, answer: Deferred[str]) -> None:
        self._request = request
        self._answer = answer
        self._buf = b""

    def connectionMade(self) -> None:
        self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\n\n")
        if end < 0:
            if len(self._buf) > _MAX_ANSWER:
                self._finish(Failure(PolicyError("answer too long")))
            return
        action = None
        for line in self._buf[:end].decode("utf-8", "replace").split("\n"):
            name, eq, value = line.partition("=")
            if eq and name.strip().lower() == "action":
                action = _CONTROL.sub(" ", value).strip()
        self._finish(action if action else Failure(PolicyError("answer without action")))

    def _finish(self, result: str | Failure) -> None:
        if not self._answer.called:
            if isinstance(result, Failure):
                self._answer.errback(result)
            else:
                self._answer.callback(result)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._answer.called:
            self._answer.errback(PolicyError("connection closed before the answer"))


class PolicyService:
    """One ``check_policy_service`` endpoint."""

    def __init__(
        self,
        spec: str,
        reactor: Any,
        clock: IReactorTime,
        timeout: float,
        try_limit: int,
        default_action: str,
    ) -> None:
        self.spec = spec
        self._endpoint = parse_endpoint(spec, reactor)
        self._clock = clock
        self._timeout = timeout
        self._tries = max(try_limit, 1)
        self.default_action = default_action

    def query(self, attributes: Mapping[str, str]) -> Deferred[tuple[str, str]]:
        """Fire with (action, "") or, when every try failed, with
        (default_action, why)."""
        request = encode_request(attributes)
        result: Deferred[tuple[str, str]] = Deferred()
        self._try(request, result, 1)
        return result

    def _try(self, request: bytes, result: Deferred[tuple[str, str]], attempt: int) -> None:
        answer: Deferred[str] = Deferred()
        connections: list[Any] = []

        def too_late() -> None:
            if not answer.called:
                answer.errback(PolicyError("timeout"))
            for protocol in connections:
                protocol.transport.abortConnection()

        timer = self._clock.callLater(self._timeout, too_late)

        def connected(protocol: Any) -> None:
            connections.append(protocol)
            if answer.called:  # the timeout came first
                protocol.transport.abortConnection()

        def not_connected(failure: Failure) -> None:
            if not answer.called:
                answer.errback(PolicyError(failure.getErrorMessage()))

        factory = Factory.forProtocol(lambda: _Exchange(request, answer))
        self._endpoint.connect(factory).addCallbacks(connected, not_connected)

        def done(action: str) -> None:
            if timer.active():
                timer.cancel()
            result.callback((action, ""))

        def failed(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            if attempt < self._tries:
                self._try(request, result, attempt + 1)
            else:
                why = failure.getErrorMessage()
                # Postfix's words, so that log watchers keep matching.
                maillog(
                    "smtpd",
                    f"problem talking to server {self.spec}: {why}",
                    LogLevel.warn,
                )
                result.callback((self.default_action, why))

        answer.addCallbacks(done, failed)
