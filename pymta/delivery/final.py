"""final: final delivery of one message to one user's mailbox.

What Dovecot's LDA and LMTP do after the user is known (``mail_deliver``):
the message goes into the user's INBOX, or, when a Sieve script is active
for the user (:mod:`pymta.sieve`), wherever the script says. Used by the
LMTP server (:mod:`pymta.lmtpd`) and the virtual agent for Maildir
mailboxes. The outcome is a value (an RFC 3463 status and a reason), never
an exception: 2.0.0 once every copy is durable, 4.x.x for what may work
later (a full disk, a mailbox that cannot be written), 5.x.x for a
permanent refusal (a Sieve ``reject``, a full quota with
``pymta_quota_full_action = bounce``).

Untrusted input: the message (copied, or read by the Sieve interpreter).
May write: the user's Maildir. Logs: nothing (callers log the outcome).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pymta.delivery.durable import os_error_status
from pymta.delivery.folder import deliver_to_folder
from pymta.delivery.maildir import MaildirWriter
from pymta.queue.reference import IMessageContent


@dataclass(frozen=True)
class Mailbox:
    """A user's mailbox as the userdb gives it: the login name, the Maildir
    root, the home directory (where Sieve scripts live; "" when none) and
    the address's extension (``user+ext@``: Sieve's ``:detail``)."""

    user: str
    maildir: str
    home: str = ""
    detail: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One recipient's result: enhanced status, reason for the log and DSN."""

    status: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


class FinalDelivery:
    """Delivers into users' mailboxes; one instance serves every recipient."""

    def __init__(self, writer: MaildirWriter) -> None:
        self.writer = writer

    def deliver(
        self,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        *,
        sender: str,
        recipient: str,
        mark: Callable[[], None] | None = None,
    ) -> Deferred[Outcome]:
        """Write the message (after ``prefix``, the delivery headers) into
        the mailbox's INBOX; fires with the outcome once durable. ``mark``
        runs right after the (first) copy is safe: the queue's done mark."""
        d = deliver_to_folder(self.writer, mailbox.maildir, "INBOX", prefix, message, mark=mark)
        return d.addCallbacks(lambda _: Outcome("2.0.0", "saved mail to INBOX"), _failed)


def _failed(failure: Failure) -> Outcome | Failure:
    if isinstance(failure.value, OSError):
        return Outcome(*os_error_status(failure.value, "maildir"))
    return failure
