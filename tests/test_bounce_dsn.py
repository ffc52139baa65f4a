"""bounce: RFC 3464 DSNs in Postfix's layout, and the Bouncer's rules."""

from __future__ import annotations

import email
import email.policy
import os
from email.message import Message
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from pymta.bounce.bouncer import Bouncer
from pymta.bounce.dsn import DsnParams, compose
from pymta.cleanup.interface import ICleanup
from pymta.config import Config
from pymta.delivery.interface import RecipientStatus
from pymta.queue.model import Envelope, Recipient

GOLDEN = Path(__file__).parent / "golden" / "bounce_dsn.txt"
NOW = 1_800_000_000.0
ORIGINAL = (
    b"Received: from client.example (client.example [192.0.2.7])\n"
    b"\tby mx.example.org (Postfix) with ESMTP id 0123456789ABC000001\n"
    b"From: Alice <alice@example.org>\nTo: bob@virt.example\nSubject: lunch\n"
    b"Message-ID: <1@example.org>\n\nAre you free at noon?\n"
)


def failed() -> list[tuple[Recipient, RecipientStatus]]:
    return [
        (
            Recipient("nobody@virt.example", original="nobody@virt.example"),
            RecipientStatus(0, "5.1.1", 'unknown user: "nobody@virt.example"', relay="virtual"),
        ),
        (
            Recipient("carol@remote.example", original="c@alias.example"),
            RecipientStatus(
                1,
                "5.7.1",
                "host mx.remote.example said: 550 5.7.1 rejected",
                relay="mx.remote.example[198.51.100.2]:25",
                diagnostic="550 5.7.1 rejected (in reply to RCPT TO command)",
            ),
        ),
    ]


def envelope() -> Envelope:
    return Envelope(
        "alice@example.org",
        [r for r, _ in failed()],
        arrival_time=NOW - 65,
    )


def make_dsn(size_limit: int = 50000) -> bytes:
    return compose(
        "0123456789ABC000001",
        envelope(),
        ORIGINAL,
        failed(),
        DsnParams(hostname="mx.example.org", now=NOW, size_limit=size_limit),
        "alice@example.org",
    )


def test_dsn_matches_golden_file() -> None:
    """The DSN for a fixed clock and queue id is byte-for-byte the golden file
    (set PYMTA_UPDATE_GOLDEN=1 to rewrite it after a deliberate change)."""
    dsn = make_dsn()
    if os.environ.get("PYMTA_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(dsn)
    assert dsn == GOLDEN.read_bytes()


def _parts(message: Message) -> list[Message]:
    return list(message.walk())


def test_dsn_parses_as_rfc3464_report() -> None:
    """Python's email package sees a multipart/report with text/plain,
    message/delivery-status (per-message and per-recipient fields) and the
    returned message/rfc822."""
    message: Any = email.message_from_bytes(make_dsn(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.org"
    assert message["To"] == "alice@example.org"
    assert message["Auto-Submitted"] == "auto-replied"
    payload: Any = message.get_payload()
    text, status, returned = payload
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert "This is the mail system at host mx.example.org." in body
    assert "<carol@remote.example> (expanded from <c@alias.example>): host mx.remote" in body
    assert status.get_content_type() == "message/delivery-status"
    per_message, first, second = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.example.org"
    assert per_message["X-Postfix-Queue-ID"] == "0123456789ABC000001"
    assert per_message["X-Postfix-Sender"] == "rfc822; alice@example.org"
    assert per_message["Arrival-Date"] == "Fri, 15 Jan 2027 07:58:55 +0000 (UTC)"
    assert first["Final-Recipient"] == "rfc822; nobody@virt.example"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Diagnostic-Code"] == 'X-Postfix; unknown user: "nobody@virt.example"'
    assert first["Remote-MTA"] is None
    assert second["Original-Recipient"] == "rfc822;c@alias.example"
    assert second["Remote-MTA"] == "dns; mx.remote.example"
    assert second["Diagnostic-Code"].startswith("smtp; 550 5.7.1 rejected")
    assert returned.get_content_type() == "message/rfc822"
    [inner] = returned.get_payload()
    assert inner["Subject"] == "lunch"


def test_large_original_returns_headers_only() -> None:
    """Above bounce_size_limit only the headers come back, as text/rfc822-headers."""
    message: Any = email.message_from_bytes(make_dsn(size_limit=100), policy=email.policy.default)
    returned = message.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Are you free" not in make_dsn(size_limit=100)


@implementer(ICleanup)
class RecordingCleanup:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        self.submitted.append((envelope, content))
        return succeed("NEW0000000001")


def bouncer(main_cf: str = "") -> tuple[Bouncer, RecordingCleanup]:
    clock = Clock()
    clock.advance(NOW)
    cleanup = RecordingCleanup()
    config = Config.from_text("myhostname = mx.example.org\nmyorigin = example.org\n" + main_cf)
    return Bouncer(config, cleanup, clock), cleanup


def test_bounce_goes_to_sender_from_null_sender() -> None:
    """A DSN is submitted with the null sender to the original sender and
    fires with the new queue id."""
    b, cleanup = bouncer()
    result: list[str | None] = []
    b.bounce("0123456789ABC000001", envelope(), ORIGINAL, failed()).addCallback(result.append)
    assert result == ["NEW0000000001"]
    [(env, content)] = cleanup.submitted
    assert env.sender == ""
    assert [r.address for r in env.recipients] == ["alice@example.org"]
    assert b"Undelivered Mail Returned to Sender" in content


def test_null_sender_is_never_bounced_to_anyone_but_2bounce() -> None:
    """A bounce of a bounce is dropped unless notify_classes has 2bounce;
    then it goes to 2bounce_notice_recipient only."""
    null = Envelope("", [r for r, _ in failed()], arrival_time=NOW)
    b, cleanup = bouncer()
    result: list[str | None] = []
    b.bounce("0123456789ABC000001", null, ORIGINAL, failed()).addCallback(result.append)
    assert result == [None] and cleanup.submitted == []
    b, cleanup = bouncer("notify_classes = resource, 2bounce\n")
    b.bounce("0123456789ABC000001", null, ORIGINAL, failed())
    [(env, content)] = cleanup.submitted
    assert [r.address for r in env.recipients] == ["postmaster@example.org"]
    assert b"Subject: Postmaster Copy: Undelivered Mail" in content


def test_delay_warning() -> None:
    """A delay warning says 'THIS IS A WARNING ONLY', Action: delayed, and
    carries Will-Retry-Until; none is sent for the null sender."""
    b, cleanup = bouncer("maximal_queue_lifetime = 5d\n")
    delayed = [(Recipient("bob@slow.example"), RecipientStatus(0, "4.4.1", "connection timed out"))]
    b.delay_warning("0123456789ABC000001", envelope(), ORIGINAL, delayed)
    [(_, content)] = cleanup.submitted
    message: Any = email.message_from_bytes(content, policy=email.policy.default)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    assert b"THIS IS A WARNING ONLY" in content
    status = message.get_payload()[1].get_payload()[1]
    assert status["Action"] == "delayed"
    assert status["Will-Retry-Until"] == "Wed, 20 Jan 2027 07:58:55 +0000 (UTC)"
    null = Envelope("", [Recipient("bob@slow.example")], arrival_time=NOW)
    b.delay_warning("0123456789ABC000001", null, ORIGINAL, delayed)
    assert len(cleanup.submitted) == 1


def test_notify_never_suppresses_the_dsn() -> None:
    """RFC 3461: a recipient with NOTIFY=NEVER (or without FAILURE) is not
    reported; when none is left no DSN is sent and the result is None."""
    b, cleanup = bouncer()
    quiet = [
        (Recipient("a@virt.example", notify="NEVER"), RecipientStatus(0, "5.1.1", "x")),
        (Recipient("b@virt.example", notify="SUCCESS,DELAY"), RecipientStatus(1, "5.1.1", "y")),
    ]
    result: list[str | None] = []
    b.bounce("0123456789ABC000001", envelope(), ORIGINAL, quiet).addCallback(result.append)
    assert result == [None] and cleanup.submitted == []
    loud = [
        *quiet,
        (Recipient("c@virt.example", notify="FAILURE"), RecipientStatus(2, "5.1.1", "z")),
    ]
    b.bounce("0123456789ABC000001", envelope(), ORIGINAL, loud)
    [(_, content)] = cleanup.submitted
    assert b"c@virt.example" in content and b"a@virt.example" not in content
