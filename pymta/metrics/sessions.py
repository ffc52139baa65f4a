"""Sessions per protocol, counted at the listener without touching the protocol.

smtpd logs ``connect from`` / ``disconnect from``, but pop3d and imapd (as
Dovecot) log a session only when it ends, so the open sessions of every
protocol are counted in one place: :class:`SessionCountingFactory` wraps a
listener's factory (:func:`pymta.service.build` does it when the metrics
service runs). Its ``buildProtocol`` returns the protocol the real factory
built, with ``connectionMade`` and ``connectionLost`` chained on that one
instance. Unlike twisted.protocols.policies.WrappingFactory it puts no
transport wrapper between the protocol and the socket, so STARTTLS,
``ISSLTransport`` checks and producers see exactly what they see without
metrics.

A session ended encrypted when its transport provides ISSLTransport at
``connectionLost`` (Twisted's startTLS marks the TCP transport; an implicit
TLS protocol provides it itself). Everything else goes to the real factory.
Untrusted input: none. Writes and logs nothing.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

#: master.cf command -> the protocol label of its sessions.
PROTOCOLS = {"smtpd": "smtp", "pop3d": "pop3", "imapd": "imap"}


class SessionRecorder(TypingProtocol):
    """Where sessions are counted (:class:`pymta.metrics.families.MailMetrics`)."""

    def session_opened(self, protocol: str) -> bool:
        """Count a new session; False when it was not counted (not recording)."""

    def session_closed(self, protocol: str, tls: bool) -> None:
        """Count the end of a session that session_opened counted."""


class SessionCountingFactory:
    """A listener factory that counts the sessions of ``factory`` as ``protocol``."""

    _OWN = frozenset({"wrapped_factory", "_protocol", "_metrics"})

    def __init__(self, factory: Any, protocol: str, metrics: SessionRecorder) -> None:
        self.wrapped_factory = factory
        self._protocol = protocol
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        # doStart, doStop, logPrefix, and whatever the part's factory offers.
        return getattr(self.wrapped_factory, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Whoever changes a listener's factory (a reload) changes the part's.
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.wrapped_factory, name, value)

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        protocol = self.wrapped_factory.buildProtocol(addr)
        if protocol is None:
            return None
        label, metrics = self._protocol, self._metrics
        made, lost = protocol.connectionMade, protocol.connectionLost
        counted: list[bool] = []

        def connection_made() -> None:
            # Once per session: TLSMemoryBIOProtocol (implicit TLS) runs its
            # own connectionMade twice.
            if not counted and metrics.session_opened(label):
                counted.append(True)
            made()

        def connection_lost(reason: Failure = connectionDone) -> None:
            transport = protocol.transport
            tls = ISSLTransport.providedBy(transport) or ISSLTransport.providedBy(protocol)
            try:
                lost(reason)
            finally:
                if counted:
                    counted.clear()
                    metrics.session_closed(label, bool(tls))

        # Instance attributes: this one protocol, not its class.
        protocol.connectionMade = connection_made
        protocol.connectionLost = connection_lost
        return protocol
