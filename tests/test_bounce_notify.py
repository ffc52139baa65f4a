"""bounce: what RFC 3461 asks of DSNs — RET, ENVID, ORCPT, NOTIFY and success reports."""

from __future__ import annotations

import email
import email.policy
from email.message import Message

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from pymta.bounce.bouncer import Bouncer
from pymta.bounce.dsn import DsnParams, compose
from pymta.cleanup.interface import ICleanup
from pymta.config import Config
from pymta.delivery.interface import RecipientStatus
from pymta.queue.model import Envelope, Recipient

NOW = 1_800_000_000.0
ORIGINAL = b"From: alice@example.org\nSubject: lunch\n\nAre you free at noon?\n"
BODY = b"Are you free at noon?"


def _envelope(**attributes: str) -> Envelope:
    return Envelope(
        "alice@example.org",
        [Recipient("bob@virt.example", "bob@virt.example", "rfc822;Bob+x@Virt.example")],
        arrival_time=NOW - 60,
        attributes=dict(attributes),
    )


def _compose(envelope: Envelope, action: str = "failed") -> bytes:
    status = RecipientStatus(0, "5.1.1" if action == "failed" else "2.0.0", "why", relay="virtual")
    return compose(
        "QID1",
        envelope,
        ORIGINAL,
        [(envelope.recipients[0], status)],
        DsnParams(hostname="mx.example.org", now=NOW),
        "alice@example.org",
        action=action,
    )


def _report(dsn: bytes) -> list[Message]:
    message = email.message_from_bytes(dsn, policy=email.policy.compat32)
    parts = message.get_payload()
    assert isinstance(parts, list) and isinstance(parts[1], Message)
    status = parts[1].get_payload()
    assert isinstance(status, list)
    return [p for p in status if isinstance(p, Message)]


def test_ret_full_and_default_return_the_whole_message() -> None:
    """Without RET, or with RET=FULL, a failure report returns message/rfc822."""
    for attributes in ({}, {"ret": "FULL"}):
        dsn = _compose(_envelope(**attributes))
        assert b"Content-Type: message/rfc822" in dsn and BODY in dsn


def test_ret_hdrs_returns_headers_only() -> None:
    """RET=HDRS returns text/rfc822-headers without the body."""
    dsn = _compose(_envelope(ret="HDRS"))
    assert b"Content-Type: text/rfc822-headers" in dsn
    assert b"Subject: lunch" in dsn and BODY not in dsn


def test_envid_and_orcpt_in_the_report() -> None:
    """ENVID is the first per-message field (Original-Envelope-Id); ORCPT is
    the recipient's Original-Recipient."""
    dsn = _compose(_envelope(envid="ENV 42"))
    per_message, per_recipient = _report(dsn)
    assert per_message.keys()[0] == "Original-Envelope-Id"
    assert per_message["Original-Envelope-Id"] == "ENV 42"
    assert per_recipient["Original-Recipient"] == "rfc822;Bob+x@Virt.example"
    assert "Original-Envelope-Id" not in _compose(_envelope()).decode()


def test_success_report() -> None:
    """A success report has its own subject and text, Action: delivered,
    and returns the headers only whatever RET says (RFC 3461 section 4.3)."""
    dsn = _compose(_envelope(ret="FULL"), action="delivered")
    text = dsn.decode()
    assert "Subject: Successful Mail Delivery Report" in text
    assert "Your message was successfully delivered" in text
    assert _report(dsn)[1]["Action"] == "delivered"
    assert b"text/rfc822-headers" in dsn and BODY not in dsn


@implementer(ICleanup)
class Cleanup:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        self.submitted.append((envelope, content))
        return succeed("NEW1")


def test_bouncer_success_honours_notify() -> None:
    """Bouncer.success sends only for NOTIFY containing SUCCESS, never for
    recipients without NOTIFY, and never to the null sender."""
    cleanup = Cleanup()
    bouncer = Bouncer(Config.from_text("myhostname = mx.example.org\n"), cleanup, Clock())
    ok = RecipientStatus(0, "2.0.0", "delivered to maildir", relay="virtual")
    for notify, sender, expected in (
        ("SUCCESS,FAILURE", "alice@example.org", 1),
        ("FAILURE", "alice@example.org", 0),
        (None, "alice@example.org", 0),
        ("SUCCESS", "", 0),
    ):
        cleanup.submitted.clear()
        rcpt = Recipient("bob@virt.example", "bob@virt.example", None, notify)
        envelope = Envelope(sender, [rcpt], NOW)
        results: list[str | None] = []
        bouncer.success("QID1", envelope, ORIGINAL, [(rcpt, ok)]).addCallback(results.append)
        assert len(cleanup.submitted) == expected
        assert results == (["NEW1"] if expected else [None])
