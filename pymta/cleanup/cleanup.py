"""The cleanup service: an accepted message becomes a durable queue file.

Mirrors Postfix's cleanup(8). For each submitted message, in order:

1. allocate the queue id (the Received header carries it);
2. rewrite the envelope (pymta.cleanup.addresses: standard form,
   canonical maps, virtual alias expansion, duplicates removed);
3. count Received headers against hopcount_limit (ours included): too many
   is ``554 5.4.0 Error: too many hops``, as Postfix answers;
4. prepend Received, and append Message-ID and Date where missing (pymta
   adds them to all mail, as the issue asks); From only for local
   submissions (no client address, or one of our own addresses), as
   Postfix's always_add_missing_headers = no with the default
   local_header_rewrite_clients = permit_inet_interfaces;
5. enqueue (written, renamed, synced by group commit), then log
   ``QID: message-id=<...>`` and tell on_queued the queue id and the
   envelope it wrote (the queue manager need not read the records back;
   the content it never needs: agents read it from the queue file).

A table lookup that fails is ``451 4.3.0 Temporary lookup failure``; an
unreasonable alias expansion ``451 4.3.0 ...``; a queue write error ``451
4.3.0 Error: queue file write error``. Rejections are CleanupRejected
errbacks; the message is not queued. Untrusted input: the message and the
envelope. Writes: the queue (through the store). Logs: message-id, warnings.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.cleanup.addresses import EnvelopeRewriter, ExpansionError
from pymta.cleanup.headers import (
    assemble,
    format_date,
    missing_headers,
    received_header,
    scan_headers,
)
from pymta.cleanup.interface import CleanupRejected, ICleanup
from pymta.config import Config
from pymta.maillog import maillog
from pymta.queue.interface import IQueueStore
from pymta.queue.model import Envelope
from pymta.tables import Maps, TableError, open_maps

_log = Logger(namespace="pymta.cleanup")

OnQueued = Callable[[str, Envelope], None]

LOCAL_PROTOCOLS = ("local", "sendmail", "pickup")


def _is_our_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.removeprefix("IPv6:")).is_loopback
    except ValueError:
        return False


def log_client(qid: str, attributes: dict[str, str]) -> None:
    """Log smtpd's ``QID: client=name[addr]`` line for a message from the network.

    Postfix's smtpd logs it when cleanup hands it the queue id, before
    cleanup's and qmgr's lines; log analysers (pflogsumm) count a message
    as received only in that order, so it is logged here, as the queue id
    is made.
    """
    address = attributes.get("client_address")
    if address:
        maillog("smtpd", f"{qid}: client={attributes.get('client_name') or 'unknown'}[{address}]")


@implementer(ICleanup)
class Cleanup:
    """cleanup(8) over a queue store.

    ``resolver`` supplies ``is_local_domain(domain)`` (pymta.rewrite's
    Resolver) for the lookup order of local addresses; ``clock`` the arrival
    time and Date; ``tz`` the zone of Date/Received (None: local time);
    ``on_queued(queue_id, envelope)`` is called once the message is
    durable.
    """

    def __init__(
        self,
        config: Config,
        store: IQueueStore,
        resolver: object,
        *,
        clock: IReactorTime,
        on_queued: OnQueued | None = None,
        open_maps: Callable[..., Maps] = open_maps,
        tz: datetime.tzinfo | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._on_queued = on_queued
        self._tz = tz
        self._myhostname = config.get("myhostname")
        self._hopcount_limit = config.get_int("hopcount_limit")
        is_local: Callable[[str], bool] = getattr(resolver, "is_local_domain", None) or (
            lambda domain: False
        )
        self._rewriter = EnvelopeRewriter(config, is_local, open_maps)

    def _is_local_submission(self, envelope: Envelope) -> bool:
        attrs = envelope.attributes
        if attrs.get("protocol", "").lower() in LOCAL_PROTOCOLS:
            return True
        address = attrs.get("client_address", "")
        return not address or _is_our_address(address)

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        """Queue a message; the Deferred fires with its queue id once durable.

        The queue manager hears of the message only after the submitter's
        callbacks ran: smtpd's 250 goes out first, so a client never waits
        for the scheduling of its delivery.
        """
        try:
            qid, rewritten, message, message_id = self._prepare(envelope, content)
        except CleanupRejected as e:
            return fail(e)
        result: Deferred[str] = Deferred()

        def queued(_: object) -> None:
            self._log_queued(qid, rewritten, message_id)
            result.callback(qid)
            self._notify(qid, rewritten)

        def failed(failure: Failure) -> None:
            result.errback(self._write_failed(failure, qid))

        self._store.enqueue(rewritten, message, qid).addCallbacks(queued, failed)
        return result

    def _prepare(self, envelope: Envelope, content: bytes) -> tuple[str, Envelope, bytes, str]:
        qid = self._store.new_queue_id()
        now = self._clock.seconds()
        try:
            rewritten = self._rewriter.rewrite(envelope, qid)
        except TableError as e:
            maillog("cleanup", f"{qid}: warning: table lookup failed: {e}", LogLevel.warn)
            raise CleanupRejected(451, "4.3.0", "Temporary lookup failure") from None
        except ExpansionError as e:
            raise CleanupRejected(451, "4.3.0", f"Error: unreasonable {e}") from None
        if not rewritten.recipients:
            raise CleanupRejected(554, "5.1.0", "Error: no recipients")
        if not rewritten.arrival_time:
            rewritten.arrival_time = now
        scan = scan_headers(content)
        if scan.received + 1 >= self._hopcount_limit:
            maillog("cleanup", f"{qid}: hopcount exceeded", LogLevel.warn)
            raise CleanupRejected(554, "5.4.0", "Error: too many hops")
        date = format_date(now, self._tz)
        for_rcpt = None
        if len(envelope.recipients) == 1:
            first = envelope.recipients[0]
            for_rcpt = first.original or first.address
        received = received_header(envelope, qid, self._myhostname, date, for_rcpt)
        added, new_id = missing_headers(
            scan, rewritten, qid, self._myhostname, date, self._is_local_submission(envelope)
        )
        message = assemble(content, scan, received, added)
        message_id = new_id or scan.message_id or ""
        return qid, rewritten, message, message_id

    def _log_queued(self, qid: str, envelope: Envelope, message_id: str) -> None:
        log_client(qid, envelope.attributes)
        maillog("cleanup", f"{qid}: message-id={message_id}")

    def _notify(self, qid: str, envelope: Envelope) -> None:
        if self._on_queued is None:
            return
        try:
            self._on_queued(qid, envelope)
        except Exception:
            # The message is durable and acknowledged; qmgr finds it in
            # incoming/ on its next scan.
            maillog("cleanup", f"{qid}: warning: queue manager notification failed", LogLevel.warn)
            _log.failure("on_queued failed for {qid}", qid=qid)

    def _write_failed(self, failure: Failure, qid: str) -> Failure:
        maillog(
            "cleanup",
            f"{qid}: warning: queue file write error: {failure.getErrorMessage()}",
            LogLevel.warn,
        )
        return Failure(CleanupRejected(451, "4.3.0", "Error: queue file write error"))
