"""deadline: every lookup answers within a time limit (injected clock).

``DeadlineResolver(resolver, clock, seconds)`` wraps an IDNSResolver: a
lookup still unanswered after ``seconds`` answers SERVFAIL ("timeout"),
the temporary failure callers already handle, so no SMTP session ever
hangs on a silent DNS server (the late answer, if any, is dropped). smtpd
puts it in front of the cache, so a timeout is never cached.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymta.dns.interface import SERVFAIL, DNSAnswer, IDNSResolver


@implementer(IDNSResolver)
class DeadlineResolver:
    def __init__(self, resolver: IDNSResolver, clock: IReactorTime, seconds: float) -> None:
        self._resolver = resolver
        self._clock = clock
        self._seconds = seconds

    def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
        result: Deferred[DNSAnswer] = Deferred()

        def too_late() -> None:
            if not result.called:
                reason = "Host not found, try again (timeout)"
                result.callback(DNSAnswer(name, rrtype, SERVFAIL, reason=reason))

        timer = self._clock.callLater(self._seconds, too_late)

        def answered(answer: DNSAnswer) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(answer)

        self._resolver.lookup(name, rrtype).addCallback(answered)
        return result
