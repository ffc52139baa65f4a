"""dsn: compose an RFC 3464 delivery status notification, as Postfix lays it out.

Mirrors Postfix's bounce(8) templates and bounce_notify_util.c: a
multipart/report with a human-readable text/plain part ("This is the mail
system at host ..."), a message/delivery-status part (per-message fields
Reporting-MTA, X-Postfix-Queue-ID, X-Postfix-Sender, Arrival-Date, and
Original-Envelope-Id first when the sender gave an ENVID; per recipient
Final-Recipient, Original-Recipient (the ORCPT, else
the address as received), Action (failed, delayed or delivered), Status,
Remote-MTA and Diagnostic-Code when known), and the returned message:
message/rfc822 for a failure report that fits in bounce_size_limit unless
the sender asked for headers only (RET=HDRS), else text/rfc822-headers.

A pure function of its arguments (time and host are passed in), so a DSN
can be compared with a golden file. Untrusted input: the original message
(returned as is, never interpreted) and the delivery reasons (one line each).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pymta.delivery.interface import RecipientStatus
from pymta.queue.model import Envelope, Recipient

FAILED_TEXT = """\
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to {postmaster}.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
"""

DELAYED_TEXT = """\
####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than {delayed}.
It will be retried until it is {lifetime} old.

For further assistance, please send mail to {postmaster}.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
"""


SUCCESS_TEXT = """\
Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system
"""

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
}
TEMPLATES = {"failed": FAILED_TEXT, "delayed": DELAYED_TEXT, "delivered": SUCCESS_TEXT}


@dataclass(frozen=True)
class DsnParams:
    """What a DSN needs besides the message: host names, time, limits."""

    hostname: str
    now: float
    size_limit: int = 50000
    postmaster: str = "postmaster"
    mail_name: str = "Postfix"


def rfc2822_date(when: float) -> str:
    """``Sat, 28 Nov 2026 16:54:18 +0000 (UTC)``: always UTC, for stable output."""
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000 (UTC)", time.gmtime(when))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _hours(seconds: float) -> str:
    hours = max(1, round(seconds / 3600))
    return f"{hours} hour(s)"


def _days(seconds: float) -> str:
    days = max(1, round(seconds / 86400))
    return f"{days} day(s)"


def envid_field(envelope: Envelope) -> list[str]:
    """RFC 3464 section 2.2.1: the sender's ENVID, first of the per-message fields."""
    envid = _one_line(envelope.attributes.get("envid", ""))
    return [f"Original-Envelope-Id: {envid}"] if envid else []


def _headers_of(content: bytes) -> bytes:
    end = content.find(b"\n\n")
    return content if end < 0 else content[: end + 1]


def compose(
    queue_id: str,
    envelope: Envelope,
    content: bytes,
    recipients: list[tuple[Recipient, RecipientStatus]],
    params: DsnParams,
    to: str,
    action: str = "failed",
    delayed_for: float = 0.0,
    lifetime: float = 0.0,
    subject: str | None = None,
) -> bytes:
    """The DSN message (LF line endings) for ``recipients`` with ``action``
    ``failed``, ``delayed`` or ``delivered``, addressed to ``to``.

    RFC 3461 section 4.3: RET applies to failure reports; delay and success
    reports return the headers only."""
    host = params.hostname
    boundary = f"{queue_id}.{int(params.now)}/{host}"
    if subject is None:
        subject = SUBJECTS[action]
    returned_full = (
        action == "failed"
        and len(content) <= params.size_limit
        and envelope.attributes.get("ret", "").upper() != "HDRS"
    )
    eight_bit = any(b > 127 for b in content) if returned_full else False
    out: list[str] = [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"Subject: {subject}",
        f"To: {to}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
        f"Date: {rfc2822_date(params.now)}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {host}.",
        "",
    ]
    template = TEMPLATES[action]
    out.extend(
        template.format(
            postmaster=params.postmaster,
            delayed=_hours(delayed_for),
            lifetime=_days(lifetime),
        ).split("\n")
    )
    for rcpt, status in recipients:
        line = f"<{rcpt.address}>"
        if rcpt.original and rcpt.original.lower() != rcpt.address.lower():
            line += f" (expanded from <{rcpt.original}>)"
        reason = _one_line(status.reason)
        out.extend([f"{line}: {reason}", ""])
    out.extend(
        [
            f"--{boundary}",
            "Content-Description: Delivery report",
            "Content-Type: message/delivery-status",
            "",
            *envid_field(envelope),
            f"Reporting-MTA: dns; {host}",
            f"X-Postfix-Queue-ID: {queue_id}",
            f"X-Postfix-Sender: rfc822; {envelope.sender}",
            f"Arrival-Date: {rfc2822_date(envelope.arrival_time)}",
        ]
    )
    for rcpt, status in recipients:
        out.append("")
        out.append(f"Final-Recipient: rfc822; {rcpt.address}")
        original = rcpt.orcpt or (f"rfc822;{rcpt.original}" if rcpt.original else "")
        if original:
            out.append(f"Original-Recipient: {original}")
        out.append(f"Action: {action}")
        out.append(f"Status: {status.status}")
        if status.diagnostic:
            relay_host = status.relay.split("[", 1)[0]
            if relay_host and relay_host != "none":
                out.append(f"Remote-MTA: dns; {relay_host}")
            out.append(f"Diagnostic-Code: smtp; {_one_line(status.diagnostic)}")
        else:
            out.append(f"Diagnostic-Code: X-Postfix; {_one_line(status.reason)}")
        if action == "delayed" and lifetime:
            out.append(f"Will-Retry-Until: {rfc2822_date(envelope.arrival_time + lifetime)}")
    out.append("")
    if returned_full:
        out.extend(
            [
                f"--{boundary}",
                "Content-Description: Undelivered Message",
                "Content-Type: message/rfc822",
                f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
                "",
            ]
        )
        returned = content
    else:
        out.extend(
            [
                f"--{boundary}",
                "Content-Description: "
                + ("Delivered" if action == "delivered" else "Undelivered")
                + " Message Headers",
                "Content-Type: text/rfc822-headers",
                "",
            ]
        )
        returned = _headers_of(content)
    head = ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")
    if returned and not returned.endswith(b"\n"):
        returned += b"\n"
    tail = f"\n--{boundary}--\n".encode()
    return head + returned + tail
