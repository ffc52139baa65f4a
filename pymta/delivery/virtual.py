"""virtual: deliver to virtual mailboxes (Maildir or mbox) under virtual_mailbox_base.

Mirrors Postfix's virtual(8). For each recipient: a ``Delivered-To`` header
already naming it is a mail loop (5.4.6); virtual_mailbox_maps is searched
in Postfix's order (user+ext@domain, user@domain, @domain, split at
recipient_delimiter); not found is ``5.1.1 unknown user``, a failed lookup
a deferral. The value is a path under virtual_mailbox_base: a trailing
``/`` means Maildir (filed through the mail store's delivery API,
:class:`~pymta.mailstore.deliver.MaildirDelivery`, durable before success
is reported), otherwise an mbox file appended under
the virtual_mailbox_lock locks, within virtual_mailbox_limit. A Maildir
user with an active Sieve script (:mod:`pymta.sieve`; ``~`` is the
passwd-file home, else the Maildir) is delivered through
:class:`~pymta.delivery.final.FinalDelivery`, which runs it. A path that
would leave the base (``..``) is a configuration error, which Postfix defers
(4.3.5) so the mail waits for the administrator instead of bouncing.

The message is read from the queue file (the request's reference): its
header once per request for the loop check, its content in blocks by the
writer, which marks the recipient done in the queue file right after its
write is safe (see :mod:`pymta.delivery.interface`).

Untrusted input: the recipient address (a lookup key only) and the message
(copied, never interpreted). Trusted: the table values, once checked for
``..``. May write: mailboxes under virtual_mailbox_base. Logs: through qmgr
(statuses are values); a configuration error is also logged as a warning.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.address import split_extension
from pymta.config import Config
from pymta.delivery import mbox
from pymta.delivery.durable import os_error_status
from pymta.delivery.final import FinalDelivery, Mailbox
from pymta.delivery.headers import delivered_to_loop, delivery_headers, header_of
from pymta.delivery.interface import (
    DeliveryRecipient,
    DeliveryRequest,
    IDeliveryAgent,
    RecipientStatus,
)
from pymta.delivery.lookup import OpenMaps, default_open_maps
from pymta.maillog import maillog
from pymta.mailstore.deliver import MaildirDelivery
from pymta.mailstore.interface import IMailDelivery
from pymta.quota.policy import QuotaPolicy
from pymta.sieve.filter import SieveFilter
from pymta.sync import ISyncBarrier
from pymta.tables import TableError, lookup_address


@functools.lru_cache(maxsize=4096)
def mailbox_path(base: str, value: str) -> str | None:
    """base + value, or None when the value escapes the base (``..``) or is empty.

    A pure function of its two strings, kept for the last few thousand
    mailboxes: four path normalisations per delivery were a visible part
    of the reactor's time per message (bench/smtp_bench.py)."""
    value = value.strip()
    if not value or not base:
        return None
    parts = value.split("/")
    if any(part == ".." for part in parts):
        return None
    # Postfix concatenates base and value: a leading "/" stays under the base.
    path = os.path.normpath(os.path.join(base, value.lstrip("/")))
    if os.path.commonpath([os.path.normpath(base), path]) != os.path.normpath(base):
        return None
    if value.endswith("/"):
        path += "/"
    return path


@implementer(IDeliveryAgent)
class VirtualAgent:
    """The virtual delivery agent; one instance serves every request."""

    name = "virtual"

    def __init__(
        self,
        config: Config,
        sync: ISyncBarrier,
        clock: IReactorTime,
        open_maps: OpenMaps = default_open_maps,
        maildir: IMailDelivery | None = None,
        sieve: SieveFilter | None = None,
        userdb: Callable[[str], tuple[str, str | None] | None] | None = None,
        quota: QuotaPolicy | None = None,
        run_in_thread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
        cleanup: Any = None,
    ) -> None:
        self._config = config
        self._sync = sync
        self._clock = clock
        self._maps = open_maps(config.get_list("virtual_mailbox_maps"), config)
        self._base = config.get("virtual_mailbox_base")
        self._delimiter = config.get("recipient_delimiter")
        self._locks = config.get_list("virtual_mailbox_lock")
        self._limit = config.get_int("virtual_mailbox_limit")
        self._maildir: IMailDelivery = maildir or MaildirDelivery(
            sync, clock, config.get("myhostname")
        )
        self._final: FinalDelivery | None = None
        if sieve is not None or quota is not None:
            self._final = FinalDelivery(
                self._maildir,
                sieve,
                quota,
                run_in_thread,
                cleanup,
                config.get("myhostname"),
                clock.seconds,
            )
        self._userdb = userdb

    def close(self) -> None:
        """Nothing is kept between deliveries (IDeliveryAgent.close)."""

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        recipients = request.recipients
        try:
            header = header_of(request.message)
        except OSError as e:
            return succeed(
                [
                    RecipientStatus(r.index, "4.3.0", f"cannot read queue file: {e}", "virtual")
                    for r in recipients
                ]
            )
        if len(recipients) == 1:
            return self._deliver_one(request, header, recipients[0]).addCallback(lambda s: [s])
        results: list[RecipientStatus | None] = [None] * len(recipients)
        done: Deferred[list[RecipientStatus]] = Deferred()
        remaining = [len(recipients)]

        def store(status: RecipientStatus, slot: int) -> None:
            results[slot] = status
            remaining[0] -= 1
            if remaining[0] == 0:
                done.callback([r for r in results if r is not None])

        for slot, rcpt in enumerate(recipients):
            self._deliver_one(request, header, rcpt).addCallback(store, slot)
        return done

    def _deliver_one(
        self, request: DeliveryRequest, header: bytes, rcpt: DeliveryRecipient
    ) -> Deferred[RecipientStatus]:
        def status(code: str, reason: str) -> RecipientStatus:
            return RecipientStatus(rcpt.index, code, reason, relay="virtual")

        message = request.message
        address = rcpt.address
        if delivered_to_loop(header, address):
            return succeed(status("5.4.6", f"mail forwarding loop for {address}"))
        try:
            value = lookup_address(
                self._maps, address, delimiter=self._delimiter, propagate_extension=False
            )
        except TableError as e:
            return succeed(status("4.3.0", f"virtual_mailbox_maps lookup failure: {e}"))
        if value is None:
            return succeed(status("5.1.1", f'unknown user: "{address.lower()}"'))
        path = mailbox_path(self._base, value)
        if path is None:
            maillog(
                "virtual",
                f"{request.queue_id}: bad virtual_mailbox_base/virtual_mailbox_maps "
                f"result {value!r} for {address}",
                LogLevel.warn,
            )
            return succeed(status("4.3.5", "mail system configuration error"))
        sender = request.envelope.sender
        data_headers = delivery_headers(sender, address.lower())

        def mark() -> None:
            # On the writer's thread, right after the mailbox write is safe.
            message.mark_done(rcpt.index)

        if path.endswith("/") and self._final is not None:
            mailbox = self._mailbox(address, path)
            if self._final.wants(mailbox):
                d_sieve = self._final.deliver(
                    mailbox, data_headers, message, sender=sender, recipient=address, mark=mark
                )
                return d_sieve.addCallback(lambda o: status(o.status, o.reason))
        if path.endswith("/"):
            what = "maildir"
            d: Deferred[object] = self._maildir.deliver(path, data_headers, message, mark)  # type: ignore[assignment]
            ok = status("2.0.0", "delivered to maildir")
        else:
            what = "mailbox"
            now = self._clock.seconds()
            d = mbox.append(  # type: ignore[assignment]
                path, sender, data_headers, message, self._sync, now, self._locks, self._limit, mark
            )
            ok = status("2.0.0", "delivered to mailbox")

        def failed(failure: Failure) -> RecipientStatus | Failure:
            if isinstance(failure.value, mbox.MailboxBusy):
                return status("4.2.0", "cannot update mailbox: mailbox busy")
            if isinstance(failure.value, mbox.MailboxLimit):
                return status("5.2.2", "cannot update mailbox: message would exceed mailbox quota")
            if isinstance(failure.value, OSError):
                return status(*os_error_status(failure.value, what))
            return failure

        return d.addCallbacks(lambda _: ok, failed)

    def _mailbox(self, address: str, path: str) -> Mailbox:
        """The recipient as Sieve and the quota see it: home and quota rule
        from the passwd-file when the user has a line there (Pigeonhole's
        ``~``), else the Maildir itself as home and the default quota."""
        maildir = path.rstrip("/")
        local, _, domain = address.lower().rpartition("@")
        user, detail = split_extension(local, self._delimiter)
        login = f"{user}@{domain}" if domain else user
        found = None
        if self._userdb is not None:
            found = self._userdb(address.lower()) or self._userdb(login)
        home, rule = found if found is not None else ("", None)
        return Mailbox(login, maildir, home or maildir, detail, rule)
