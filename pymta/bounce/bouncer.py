"""bouncer: send non-delivery and delay notifications through cleanup.

Mirrors Postfix's bounce(8) service as qmgr uses it: for the recipients that
failed (5.x.x, or expired), compose a DSN (:mod:`pymta.bounce.dsn`) from
MAILER-DAEMON with the null sender and submit it to cleanup, addressed to
the original sender. Fires with the new queue id once the DSN is durable;
only then does qmgr mark those recipients done.

Recipients whose RFC 3461 NOTIFY excludes the event (NEVER, or a list
without FAILURE / DELAY) get no notification. A null-sender message
(itself a bounce) is never returned to its sender: when notify_classes
contains ``2bounce`` a postmaster copy goes to 2bounce_notice_recipient,
otherwise it is logged and dropped (fires None).
Success notices (RFC 3461 NOTIFY=SUCCESS) are sent only for recipients
that asked for them, and delay warnings only to recipients whose NOTIFY
allows DELAY (no NOTIFY: yes, as Postfix's default).
Logs ``QID: sender non-delivery notification: NEWQID`` (or ``postmaster``,
``sender delay notification``, ``sender delivery status notification``),
as Postfix does.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from pymta.bounce.dsn import DsnParams, compose
from pymta.cleanup.interface import ICleanup
from pymta.config import Config
from pymta.delivery.interface import RecipientStatus
from pymta.maillog import maillog
from pymta.queue.model import Envelope, Recipient

Failed = list[tuple[Recipient, RecipientStatus]]


def _wants(recipient: Recipient, event: str) -> bool:
    """Whether the recipient's RFC 3461 NOTIFY allows a DSN for event
    (without NOTIFY: failures and delays yes, success no)."""
    if not recipient.notify:
        return event != "SUCCESS"
    return event in recipient.notify.upper().replace(" ", "").split(",")


def wants_success(recipient: Recipient) -> bool:
    """Whether the recipient asked for a success DSN (NOTIFY=SUCCESS)."""
    return _wants(recipient, "SUCCESS")


class Bouncer:
    """Builds and queues DSNs; one instance serves the queue manager."""

    def __init__(self, config: Config, cleanup: ICleanup, clock: IReactorTime) -> None:
        self._config = config
        self._cleanup = cleanup
        self._clock = clock

    def _params(self) -> DsnParams:
        return DsnParams(
            hostname=self._config.get("myhostname"),
            now=self._clock.seconds(),
            size_limit=self._config.get_int("bounce_size_limit"),
            mail_name=self._config.get("mail_name"),
        )

    def _postmaster_address(self, name: str) -> str:
        value = self._config.get(name) or "postmaster"
        if "@" not in value:
            value = f"{value}@{self._config.get('myorigin')}"
        return value

    def _submit(self, queue_id: str, to: str, message: bytes, what: str) -> Deferred[str | None]:
        envelope = Envelope(
            sender="",
            recipients=[Recipient(address=to, original=to)],
            arrival_time=self._clock.seconds(),
            attributes={"origin": "bounce", "queue_id_of_original": queue_id},
        )
        d = self._cleanup.submit(envelope, message)

        def queued(new_id: str) -> str:
            maillog("bounce", f"{queue_id}: {what}: {new_id}")
            return new_id

        return d.addCallback(queued)

    def bounce(
        self, queue_id: str, envelope: Envelope, content: bytes, failed: Failed
    ) -> Deferred[str | None]:
        """Queue a non-delivery notification for ``failed``; fires with its
        queue id, or None when none is due (a null-sender message without
        2bounce in notify_classes). Errbacks when cleanup refused it: the
        caller keeps the recipients queued and tries again later."""
        # RFC 3461: NOTIFY=NEVER, or a NOTIFY list without FAILURE, asks for no DSN.
        failed = [(r, s) for r, s in failed if _wants(r, "FAILURE")]
        if not failed:
            return succeed(None)
        if envelope.sender:
            message = compose(queue_id, envelope, content, failed, self._params(), envelope.sender)
            return self._submit(
                queue_id, envelope.sender, message, "sender non-delivery notification"
            )
        if "2bounce" not in self._config.get_list("notify_classes"):
            maillog(
                "bounce", f"{queue_id}: undeliverable bounce discarded (no 2bounce notification)"
            )
            return succeed(None)
        to = self._postmaster_address("2bounce_notice_recipient")
        message = compose(
            queue_id,
            envelope,
            content,
            failed,
            self._params(),
            to,
            subject="Postmaster Copy: Undelivered Mail",
        )
        return self._submit(queue_id, to, message, "postmaster non-delivery notification")

    def delay_warning(
        self, queue_id: str, envelope: Envelope, content: bytes, delayed: Failed
    ) -> Deferred[str | None]:
        """Queue a "Delayed Mail (still being retried)" notice to the sender
        (never for the null sender); fires with its queue id or None."""
        delayed = [(r, s) for r, s in delayed if _wants(r, "DELAY")]
        if not delayed or not envelope.sender:
            return succeed(None)
        now = self._clock.seconds()
        lifetime = self._config.get_time("maximal_queue_lifetime")
        message = compose(
            queue_id,
            envelope,
            content,
            delayed,
            self._params(),
            envelope.sender,
            action="delayed",
            delayed_for=now - envelope.arrival_time,
            lifetime=lifetime,
        )
        return self._submit(queue_id, envelope.sender, message, "sender delay notification")

    def success(
        self, queue_id: str, envelope: Envelope, content: bytes, delivered: Failed
    ) -> Deferred[str | None]:
        """Queue a "Successful Mail Delivery Report" (Action: delivered) for
        the recipients that asked for it with NOTIFY=SUCCESS; fires with its
        queue id, or None when none is due (nobody asked, or the null sender)."""
        delivered = [(r, s) for r, s in delivered if wants_success(r)]
        if not delivered or not envelope.sender:
            return succeed(None)
        message = compose(
            queue_id,
            envelope,
            content,
            delivered,
            self._params(),
            envelope.sender,
            action="delivered",
        )
        return self._submit(
            queue_id, envelope.sender, message, "sender delivery status notification"
        )
