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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from pymta.cleanup.interface import CleanupRejected
from pymta.delivery.durable import os_error_status
from pymta.delivery.mailbox import Mailbox as Mailbox  # the recipient's mailbox
from pymta.maillog import maillog
from pymta.mailstore.interface import IMailDelivery, InvalidFolderName, NoSuchFolder
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import IMessageContent
from pymta.quota import maildirsize
from pymta.quota.policy import QuotaPolicy, QuotaState, warning_message
from pymta.quota.rules import QuotaLimit

if TYPE_CHECKING:
    from pymta.sieve.filter import Evaluation, SieveFilter
    from pymta.sieve.interpret import Action


@dataclass(frozen=True)
class Outcome:
    """One recipient's result: enhanced status, reason for the log and DSN."""

    status: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


class FinalDelivery:
    """Delivers into users' mailboxes; one instance serves every recipient.

    With a :class:`~pymta.sieve.filter.SieveFilter`, a user's active script
    decides where the message goes (see :meth:`_filtered`)."""

    def __init__(
        self,
        writer: IMailDelivery,
        sieve: SieveFilter | None = None,
        quota: QuotaPolicy | None = None,
        run_in_thread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
        cleanup: Any = None,
        hostname: str = "localhost",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.sieve = sieve
        self.quota = quota if run_in_thread is not None else None
        self._run = run_in_thread
        self._cleanup = cleanup
        self._hostname = hostname
        self._now = now

    def wants(self, mailbox: Mailbox) -> bool:
        """Whether delivering to this mailbox needs more than a plain write
        (an active Sieve script, or a quota)."""
        if self.sieve is not None and self.sieve.active(mailbox):
            return True
        return self._limit(mailbox) is not None

    def _limit(self, mailbox: Mailbox) -> QuotaLimit | None:
        if self.quota is None:
            return None
        limit = self.quota.limit(mailbox.quota_rule)
        return None if limit.unlimited else limit

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
        """Write the message (after ``prefix``, the delivery headers) where
        it belongs (INBOX without a Sieve script) if it fits the user's
        quota; fires with the outcome once every copy is durable. ``mark``
        runs once the delivery is safe (the queue's done mark)."""
        limit = self._limit(mailbox)
        if limit is None or self.quota is None or self._run is None:
            return self._route(
                mailbox, prefix, message, sender=sender, recipient=recipient, mark=mark
            )
        quota = self.quota
        size = len(prefix) + message.size
        counted: Deferred[QuotaState] = self._run(lambda: quota.usage(mailbox.maildir, limit))

        def checked(state: QuotaState) -> Deferred[Outcome] | Outcome:
            if not state.fits(size):
                return Outcome(*quota.full_status())
            d = self._route(mailbox, prefix, message, sender=sender, recipient=recipient, mark=mark)
            d.addCallback(self._warn, mailbox, state, size)
            return d.addCallback(self._recount, mailbox, limit, size)

        return counted.addCallback(checked)

    def _recount(self, outcome: Outcome, mailbox: Mailbox, limit: QuotaLimit, size: int) -> Outcome:
        """Bring the mailbox's ``maildirsize`` to the new usage at once, as
        Dovecot's quota driver does at each save: the delivery's change
        line appended (pymta.quota.maildirsize.add), or, when the file is
        missing or must be written anew, a count (in a thread either way).
        The outcome does not wait for it, and a failure is only logged."""
        assert self.quota is not None and self._run is not None
        if outcome.ok:
            quota = self.quota

            def update() -> None:
                if not maildirsize.add(mailbox.maildir, limit, size, 1):
                    quota.usage(mailbox.maildir, limit)

            self._run(update).addErrback(
                lambda f: maillog(
                    "quota", f"warning: {mailbox.user}: maildirsize: {f.value}", LogLevel.warn
                )
            )
        return outcome

    def _warn(self, outcome: Outcome, mailbox: Mailbox, before: QuotaState, size: int) -> Outcome:
        """Send the quota warning a delivery that crossed a percentage earns."""
        assert self.quota is not None
        percent = self.quota.crossed(before, size)
        if not outcome.ok or percent is None or self._cleanup is None or "@" not in mailbox.user:
            return outcome
        after = QuotaState(before.limit, before.used_bytes + size, before.used_messages + 1)
        text = warning_message(mailbox.user, percent, after, self._hostname, self._now())
        envelope = Envelope("", [Recipient(mailbox.user, original=mailbox.user)], self._now())
        self._cleanup.submit(envelope, text).addCallbacks(
            lambda qid: maillog("quota", f"{mailbox.user}: {percent:.0f}% warning queued as {qid}"),
            lambda f: maillog(
                "quota", f"warning: {mailbox.user}: quota warning failed: {f.value}", LogLevel.warn
            ),
        )
        return outcome

    def _route(
        self,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        *,
        sender: str,
        recipient: str,
        mark: Callable[[], None] | None = None,
    ) -> Deferred[Outcome]:
        if self.sieve is not None and self.sieve.active(mailbox):
            d = self.sieve.evaluate(mailbox, prefix, message, sender, recipient)
            return d.addCallback(self._filtered, mailbox, prefix, message, sender, recipient, mark)
        return self._inbox(mailbox, prefix, message, mark)

    def _inbox(
        self,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        mark: Callable[[], None] | None,
        flags: tuple[str, ...] = (),
        reason: str = "saved mail to INBOX",
    ) -> Deferred[Outcome]:
        d = self.writer.deliver(mailbox.maildir, prefix, message, mark, flags=flags)
        return d.addCallbacks(lambda _: Outcome("2.0.0", reason), _failed)

    def _filtered(
        self,
        evaluation: Evaluation | None,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        sender: str,
        recipient: str,
        mark: Callable[[], None] | None,
    ) -> Deferred[Outcome] | Outcome:
        """Carry out what the script decided (RFC 5228 section 2.10)."""
        assert self.sieve is not None
        sieve = self.sieve
        if evaluation is None:
            return self._inbox(mailbox, prefix, message, mark)
        if evaluation.outcome is None:
            # A broken script never loses mail: INBOX, and the error logged.
            maillog(
                "sieve",
                f"warning: {mailbox.user}: script {evaluation.script}: {evaluation.error}; "
                "message kept in INBOX",
                LogLevel.warn,
            )
            return self._inbox(
                mailbox, prefix, message, mark, reason="saved mail to INBOX (Sieve script error)"
            )
        outcome = evaluation.outcome
        if evaluation.warning:
            maillog("sieve", f"warning: {mailbox.user}: {evaluation.warning}", LogLevel.warn)
        for action in outcome.actions:
            if action.kind in ("reject", "ereject"):
                reason = " ".join(action.reason.split()) or "rejected"
                return Outcome("5.7.1", f"rejected by Sieve: {reason}")
        targets: list[tuple[str, tuple[str, ...], bool]] = [
            (a.folder, a.flags, a.create) for a in outcome.actions if a.kind in ("keep", "fileinto")
        ]
        if outcome.implicit_keep and not any(t[0] == "INBOX" for t in targets):
            targets.append(("INBOX", outcome.keep_flags, False))
        work: list[Deferred[str]] = []
        done: list[str] = []
        for folder, flags, create in targets:
            work.append(self._store(mailbox, folder, flags, create, prefix, message, done))
        for action in outcome.actions:
            if action.kind == "redirect":
                assert evaluation.content is not None
                work.append(sieve.redirect(sender, action.address, evaluation.content))
                done.append(f"redirected to {action.address}")
        marks: list[tuple[str, float]] = list(outcome.duplicate_marks)
        for action in outcome.actions:
            if action.kind == "vacation":
                self._vacation(mailbox, recipient, action, marks)

        def finished(_: object) -> Outcome:
            if marks:
                sieve.record(mailbox, marks).addErrback(
                    lambda f: maillog(
                        "sieve",
                        f"warning: {mailbox.user}: cannot record Sieve tracking: {f.value}",
                        LogLevel.warn,
                    )
                )
            if mark is not None:
                try:
                    mark()
                except OSError:
                    pass  # the queue manager marks it, a moment later
            if not done:
                return Outcome("2.0.0", "discarded by Sieve")
            return Outcome("2.0.0", "delivered by Sieve: " + ", ".join(done))

        def failed(failure: Failure) -> Outcome | Failure:
            value = failure.value
            if isinstance(value, FirstError):
                value = value.subFailure.value
            if isinstance(value, OSError):
                return Outcome(*os_error_status(value, "maildir"))
            if isinstance(value, CleanupRejected):
                return Outcome("4.3.0", f"cannot redirect: {value.text}")
            return Failure(value)

        return gatherResults(work, consumeErrors=True).addCallbacks(finished, failed)

    def _store(
        self,
        mailbox: Mailbox,
        folder: str,
        flags: tuple[str, ...],
        create: bool,
        prefix: bytes,
        message: IMessageContent,
        done: list[str],
    ) -> Deferred[str]:
        # System flags and keywords alike (the store's dovecot-keywords
        # gives keywords their letters); the store refuses an invalid folder
        # name (InvalidFolderName) and makes a missing one only with create.
        d = self.writer.deliver(
            mailbox.maildir, prefix, message, folder=folder, flags=flags, create=create
        )

        def stored(path: str) -> str:
            done.append(folder)
            return path

        def missing(failure: Failure) -> Deferred[str] | Failure:
            # Pigeonhole: fileinto a folder that does not exist (without
            # :create) or cannot exist keeps the message in INBOX instead.
            if (
                not isinstance(failure.value, (NoSuchFolder, InvalidFolderName))
                or folder == "INBOX"
            ):
                return failure
            maillog(
                "sieve",
                f"warning: {mailbox.user}: fileinto {folder!r}: no such folder; kept in INBOX",
                LogLevel.warn,
            )
            if "INBOX" in done:
                return succeed("")
            fallback = self.writer.deliver(mailbox.maildir, prefix, message, flags=flags)
            return fallback.addCallback(stored_inbox)

        def stored_inbox(path: str) -> str:
            done.append("INBOX")
            return path

        return d.addCallbacks(stored, missing)

    def _vacation(
        self, mailbox: Mailbox, recipient: str, action: Action, marks: list[tuple[str, float]]
    ) -> None:
        assert self.sieve is not None
        params = action.vacation  # its tracking entry was made with the decision
        d = self.sieve.vacation(mailbox, recipient, params, action.address, action.reason)
        d.addCallbacks(
            lambda queue_id: maillog(
                "sieve",
                f"{mailbox.user}: vacation reply to <{action.address}> queued as {queue_id}",
            ),
            lambda f: maillog(
                "sieve",
                f"warning: {mailbox.user}: vacation reply to <{action.address}> failed: {f.value}",
                LogLevel.warn,
            ),
        )


def _failed(failure: Failure) -> Outcome | Failure:
    if isinstance(failure.value, OSError):
        return Outcome(*os_error_status(failure.value, "maildir"))
    return failure
