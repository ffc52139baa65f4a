"""Policy delegation answers: what a check_policy_service server sends back.

The input is the server's answer, cut into chunks as the network might
deliver them, fed to the client protocol of pymta.smtpd.policy on a
StringTransport; the action it yields is then applied by smtpd's
restriction code (as an access-table result would be) to a RCPT check.
Documented errors: :class:`~pymta.smtpd.policy.PolicyError` (smtpd then
uses smtpd_policy_service_default_action). Anything else is a finding.
Checked besides: an action never carries a control character, and what
the restriction makes of it is a reply with a valid SMTP code or no
verdict.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fuzz.common import Finding, LoggedFailures, chunks
from pymta.smtpd.policy import PolicyError, _Exchange
from pymta.smtpd.restrictions import DUNNO, PERMIT, Check, Reject
from pymta.smtpd.testing import SMTPHarness

EXPECTED: tuple[type[BaseException], ...] = (PolicyError,)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REPLY = re.compile(r"[45]\d\d [245]\.\d{1,3}\.\d{1,3} .*", re.S)
_SPEC = "check_policy_service inet:127.0.0.1:9"


def seeds() -> list[bytes]:
    """Answers of the kinds SMTPD_POLICY_README lists (first byte: chunking)."""
    answers = [
        b"action=DUNNO\n\n",
        b"action=defer_if_permit Greylisted, see http://postgrey.schweikert.ch/\n\n",
        b"action=REJECT 5.7.1 go away\n\n",
        b"action=450 4.2.0 try later\n\n",
        b"action=PREPEND X-Greylist: delayed 12 seconds\n\n",
        b"action=OK\nother=x\n\n",
        b"action=HOLD\n\n",
        b"action=REDIRECT user@example.org\n\n",
    ]
    return [bytes([0]) + a for a in answers] + [bytes([3]) + answers[1]]


def one_input(data: bytes) -> None:
    answer: Deferred[str] = Deferred()
    protocol = _Exchange(b"request=smtpd_access_policy\n\n", answer)
    transport = StringTransport()
    protocol.makeConnection(transport)
    for chunk in chunks(data):
        if answer.called:
            break
        protocol.dataReceived(chunk)
    if not answer.called:
        protocol.connectionLost(Failure(ConnectionError("closed")))
    results: list[object] = []
    answer.addBoth(results.append)
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, str)
    if _CONTROL.search(result):
        raise Finding(f"action with a control character: {result!r}")
    with LoggedFailures():
        harness = SMTPHarness("")
        check = Check(harness.protocol.session, "user@example.com", "s@example.org")
        verdict = harness.factory.restrictions._access_result(result, check, _SPEC, 0)
    if isinstance(verdict, Deferred):
        outcome: list[object] = []
        verdict.addBoth(outcome.append)
        harness.clock.advance(600)
        if not outcome:
            return  # a nested restriction waiting on DNS: smtpd's timeouts end it
        verdict = outcome[0]  # type: ignore[assignment]
        if isinstance(verdict, Failure):
            verdict.raiseException()
    if isinstance(verdict, Reject):
        line = verdict.line()
        if not _REPLY.fullmatch(line) or _CONTROL.search(line):
            raise Finding(f"action {result!r} gave the reply {line!r}")
    elif verdict not in (PERMIT, DUNNO):
        raise Finding(f"action {result!r} gave {verdict!r}")
