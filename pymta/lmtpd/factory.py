"""Build an lmtpd listener's factory from its (master.cf-overridden) Config.

Called by :mod:`pymta.service` for each master.cf ``lmtpd`` service, TCP
(``inet``) or UNIX socket (``unix``). Wires the userdb (the passwd-file of
``pymta_passdb`` and ``virtual_mailbox_maps``, as IMAP logins find their
mailbox: :class:`~pymta.lmtpd.users.RecipientDirectory`), the final
delivery (:class:`~pymta.delivery.final.FinalDelivery` on a
:class:`~pymta.mailstore.deliver.MaildirDelivery` that shares the delivery
agents' group-commit barrier) and the limits.

Parameters: ``pymta_lmtpd_networks`` (TCP clients allowed),
``pymta_lmtpd_timeout``, ``pymta_lmtpd_recipient_limit``,
``message_size_limit``, ``line_length_limit``, ``recipient_delimiter``,
``myhostname``, ``mail_name``, and Sieve's (:mod:`pymta.sieve.filter`).
Writes nothing itself; logs nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from pymta.auth.passdb import shared_checker
from pymta.config.config import Config
from pymta.delivery.final import FinalDelivery, Mailbox
from pymta.lmtpd.protocol import LMTPServerProtocol
from pymta.lmtpd.users import RecipientDirectory
from pymta.mailstore.deliver import MaildirDelivery
from pymta.netmatch import NetworkList
from pymta.queue.qid import QueueIdAllocator
from pymta.quota.policy import QuotaPolicy
from pymta.sieve.filter import sieve_filter, thread_runner
from pymta.sync import ISyncBarrier


class LMTPServerFactory(Factory):
    """Makes one :class:`LMTPServerProtocol` per connection."""

    def __init__(
        self,
        config: Config,
        users: RecipientDirectory,
        delivery: FinalDelivery,
        clock: IReactorTime,
        service_name: str = "lmtpd",
    ) -> None:
        self.users = users
        self.delivery = delivery
        self.clock = clock
        self.service_name = service_name
        self.hostname = config.get("myhostname")
        self.mail_name = config.get("mail_name") or "pymta"
        self.timeout = config.get_time("pymta_lmtpd_timeout")
        self.recipient_limit = max(1, config.get_int("pymta_lmtpd_recipient_limit"))
        self.message_size_limit = config.get_int("message_size_limit")
        self.line_length_limit = max(512, config.get_int("line_length_limit"))
        self._networks = NetworkList(
            config.get_list("pymta_lmtpd_networks"), "pymta_lmtpd_networks"
        )
        self._ids = QueueIdAllocator(clock.seconds)

    def buildProtocol(self, addr: Any) -> LMTPServerProtocol:
        return LMTPServerProtocol(self)

    def client_allowed(self, ip: str) -> bool:
        """True when a TCP client at ``ip`` may use this server."""
        return self._networks.contains(ip)

    def new_id(self) -> str:
        """A transaction id for the log, in Postfix's queue-id form."""
        return self._ids()

    def check_recipient(self, mailbox: Mailbox) -> Deferred[tuple[int, str, str] | None] | None:
        """None when RCPT may be accepted at once; else a Deferred firing
        with (code, status, text) to refuse it, or None: the mailbox's quota
        is counted off the reactor, and a mailbox already full is refused
        (``pymta_quota_full_action``: 452 4.2.2 or 552 5.2.2)."""
        delivery = self.delivery
        quota = delivery.quota
        if quota is None:
            return None
        limit = quota.limit(mailbox.quota_rule)
        if limit.unlimited or delivery._run is None:
            return None

        def count() -> tuple[int, str, str] | None:
            state = quota.usage(mailbox.maildir, limit)
            return quota.rcpt_reply() if state.full() else None

        return delivery._run(count)


def make_lmtp_factory(
    config: Config,
    reactor: Any,
    sync: ISyncBarrier,
    cleanup: Any = None,
    service_name: str = "lmtpd",
) -> LMTPServerFactory:
    """The LMTPServerFactory of one lmtpd service; ``cleanup`` takes what
    Sieve's redirect and vacation send."""
    from pymta.auth.locate import virtual_mailbox_lookup

    # The passwd-file IMAP and POP3 read (one copy per process, re-read when it changes).
    users = RecipientDirectory(
        shared_checker(config, reactor).passwd,
        virtual_mailbox_lookup(config),
        config.get("virtual_mailbox_base"),
        config.get("recipient_delimiter"),
    )
    writer = MaildirDelivery(sync, reactor, config.get("myhostname"))
    delivery = FinalDelivery(
        writer,
        sieve_filter(config, reactor, cleanup),
        QuotaPolicy.from_config(config),
        thread_runner(reactor),
        cleanup,
        config.get("myhostname"),
        reactor.seconds,
    )
    return LMTPServerFactory(config, users, delivery, reactor, service_name)
