"""The cleanup service: an accepted message becomes a durable queue file.

Mirrors Postfix's cleanup(8). For each submitted message, in order:

1. allocate the queue id (the Received header carries it);
2. rewrite the envelope (pymta.cleanup.addresses: standard form,
   canonical maps, masquerading, virtual alias expansion, duplicates
   removed); header addresses of mail from local_header_rewrite_clients
   (pymta.cleanup.header_addresses: standard form, canonical maps,
   masquerading, by address class); SRS
   (pymta.cleanup.srs, with pymta_srs_domain): recipients at the SRS
   domain reversed, the sender of mail forwarded elsewhere rewritten;
3. cut each header longer than header_size_limit (pymta.cleanup.headers);
   count Received headers against hopcount_limit (ours included): too many
   is ``554 5.4.0 Error: too many hops``, as Postfix answers; then
   header_checks, mime_header_checks, nested_header_checks and body_checks
   (pymta.cleanup.checks), automatic BCC recipients and REDIRECT
   (pymta.cleanup.bcc), for mail from outside (not bounces, not forwarding);
4. prepend Received, and append Message-ID and Date where missing (pymta
   adds them to all mail, as the issue asks); From only for local
   submissions (no client address, or one of our own addresses), as
   Postfix's always_add_missing_headers = no with the default
   local_header_rewrite_clients = permit_inet_interfaces;
5. milters (pymta.cleanup.milters): the content goes to smtpd's milters
   (smtpd_milters, the connection smtpd opened) or, for mail that did not
   come from smtpd, to non_smtpd_milters; their edits, refusal, DISCARD or
   QUARANTINE take effect before the queue file is written;
6. mail authentication (pymta.mailauth, when configured): inbound mail
   gets SPF/DKIM/DMARC checked and an Authentication-Results header (or a
   ``550 5.7.1`` DMARC rejection), our own mail a DKIM signature — in the
   thread pool, before the message is made durable;
7. enqueue (written, renamed, synced by group commit; into hold/ after a
   HOLD action, and not at all after DISCARD), then log
   ``QID: message-id=<...>`` and trigger the queue manager with the queue
   id and the envelope it wrote (pymta.queue.trigger: the queue manager
   need not read the records back; the content it never needs: agents
   read it from the queue file).

smtpd writes a message as it arrives (``open_message``,
pymta.cleanup.writer): a message larger than the writer's threshold is
spooled to the queue's file system, and only its header block is rewritten
in memory (``submit_spooled``); the queue file is assembled from it and the
spool. When header_checks/body_checks or mail authentication apply to it,
or its header block does not end within the threshold, the spooled
message is read back (off the reactor) and takes the whole-message path,
because those steps need it in one piece; at most WHOLE_READS such
messages are in memory at once (the others wait their turn, so 20
clients sending 10 MiB each cost four messages' worth, not twenty).

A table lookup that fails is ``451 4.3.0 Temporary lookup failure``; an
unreasonable alias expansion ``451 4.3.0 ...``; a queue write error ``451
4.3.0 Error: queue file write error``. Rejections are CleanupRejected
errbacks; the message is not queued. Untrusted input: the message and the
envelope. Writes: the queue (through the store). Logs: message-id, warnings.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.cleanup.addresses import EnvelopeRewriter, ExpansionError
from pymta.cleanup.bcc import AutomaticBcc
from pymta.cleanup.checks import SLICED_SIZE, ContentChecks, Verdict, report
from pymta.cleanup.header_addresses import ClientRule, rewrite_headers
from pymta.cleanup.headers import (
    assemble,
    format_date,
    header_block_length,
    limit_header_size,
    missing_headers,
    received_header,
    scan_headers,
)
from pymta.cleanup.interface import CleanupRejected, ICleanup, IMessageWriter
from pymta.cleanup.milters import MilterOutcome, apply_outcome, non_smtpd_conversation
from pymta.cleanup.srs import SenderRewriting, forwards_elsewhere
from pymta.cleanup.writer import SPOOL_THRESHOLD, MessageWriter
from pymta.config import Config
from pymta.maillog import maillog
from pymta.queue.interface import IQueueStore, ISpool
from pymta.queue.model import Envelope
from pymta.queue.spool import SpooledContent
from pymta.queue.trigger import IQueueTrigger
from pymta.rewrite.interface import IResolver
from pymta.tables import Maps, TableError, open_maps

if TYPE_CHECKING:
    from pymta.mailauth.service import MailAuth
    from pymta.milter.chain import Milters
    from pymta.milter.config import MilterClients

_log = Logger(namespace="pymta.cleanup")

OnQueued = Callable[[str, Envelope], None]

LOCAL_PROTOCOLS = ("local", "sendmail", "pickup")
# Mail pymta makes itself: no header/body checks, no automatic BCC (Postfix's
# internal_mail_filter_classes is empty by default).
INTERNAL_ORIGINS = ("bounce", "local")
#: Spooled messages read back into memory at once (see the module docstring).
WHOLE_READS = 4


@functools.lru_cache(maxsize=1024)
def _is_our_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.removeprefix("IPv6:")).is_loopback
    except ValueError:
        return False


def _from_smtpd(envelope: Envelope) -> bool:
    """Received by smtpd (smtpd_milters' mail, even from a loopback client)."""
    attrs = envelope.attributes
    return bool(attrs.get("client_address")) and (
        attrs.get("protocol", "").lower() not in LOCAL_PROTOCOLS
    )


def log_client(qid: str, attributes: dict[str, str], sender: str = "") -> None:
    """Log smtpd's ``QID: client=name[addr]`` line for a message from the network,
    or pickup's ``QID: uid=N from=<sender>`` for one from the maildrop.

    Postfix's smtpd logs it when cleanup hands it the queue id, before
    cleanup's and qmgr's lines; log analysers (pflogsumm) count a message
    as received only in that order, so it is logged here, as the queue id
    is made.
    """
    address = attributes.get("client_address")
    if address:
        line = f"{qid}: client={attributes.get('client_name') or 'unknown'}[{address}]"
        username = attributes.get("sasl_username")
        if username:
            # Postfix's smtpd adds the login, as pflogsumm and fail2ban expect.
            line += f", sasl_method={attributes.get('sasl_method', '')}, sasl_username={username}"
        maillog("smtpd", line)
    elif attributes.get("protocol") == "pickup" and attributes.get("uid"):
        # Postfix's pickup line; uid is the kernel's (the maildrop file's owner).
        maillog("pickup", f"{qid}: uid={attributes['uid']} from=<{sender}>")


def _lines_after(before: bytes, lines: int | None, after: bytes) -> int | None:
    """The LF count of ``after``, a message made from ``before`` (of
    ``lines`` LF) by changes to its front part, counting only that part:
    the body of a 10 KiB message is not counted again. None when ``lines``
    is unknown or the changes reached the body (header_checks' MIME
    headers, body_checks): the queue store counts it then.

    The tail the two share is found by comparing it (memcmp, no count):
    cleanup's own changes (Received, added headers, header rewriting and
    size limits) leave everything after the header block as it was."""
    if lines is None:
        return None
    if after is before:
        return lines
    scan = scan_headers(before)
    tail = len(before) - scan.end
    if tail > len(after) or (tail and not after.endswith(before[scan.end :])):
        return None
    return lines - before.count(b"\n", 0, scan.end) + after.count(b"\n", 0, len(after) - tail)


@implementer(ICleanup)
class Cleanup:
    """cleanup(8) over a queue store.

    ``resolver`` (trivial-rewrite) says which domains are local and ours,
    for the lookup order of local addresses and SRS; ``clock`` the arrival
    time and Date; ``tz`` the zone of Date/Received (None: local time).
    Once a message is durable, ``trigger`` (the queue manager, through
    :class:`~pymta.queue.trigger.TriggerChannel`) is told its queue id and
    envelope; ``on_queued(queue_id, envelope)`` is the same as a plain
    function (tests).
    """

    def __init__(
        self,
        config: Config,
        store: IQueueStore,
        resolver: IResolver,
        *,
        clock: IReactorTime,
        trigger: IQueueTrigger | None = None,
        on_queued: OnQueued | None = None,
        open_maps: Callable[..., Maps] = open_maps,
        tz: datetime.tzinfo | None = None,
        mailauth: MailAuth | None = None,
        non_smtpd_milters: MilterClients | None = None,
    ) -> None:
        self._mailauth = mailauth
        self._non_smtpd_milters = non_smtpd_milters
        self._config = config
        self._store = store
        self._clock = clock
        if on_queued is None and trigger is not None:
            on_queued = trigger.queued
        self._on_queued = on_queued
        self._tz = tz
        self._myhostname = config.get("myhostname")
        self._hopcount_limit = config.get_int("hopcount_limit")
        self._header_size_limit = config.get_int("header_size_limit")
        is_local = resolver.is_local_domain
        self._rewriter = EnvelopeRewriter(config, is_local, open_maps)
        self._checks = ContentChecks(config, open_maps)
        self._bcc = AutomaticBcc(config, self._rewriter, is_local, open_maps)
        self._whole_reads = DeferredSemaphore(WHOLE_READS)
        address_class = resolver.address_class

        def is_ours(domain: str) -> bool:
            return address_class(domain) in ("local", "virtual_alias", "virtual_mailbox")

        self._is_ours = is_ours
        self._srs = SenderRewriting.from_config(config, is_ours)
        self._header_clients = ClientRule(config)

    def _is_local_submission(self, envelope: Envelope) -> bool:
        attrs = envelope.attributes
        if attrs.get("protocol", "").lower() in LOCAL_PROTOCOLS:
            return True
        address = attrs.get("client_address", "")
        return not address or _is_our_address(address)

    def open_message(self, milters: Milters | None = None) -> IMessageWriter:
        """A writer that spools a large message as it arrives
        (pymta.cleanup.writer); ``milters`` (smtpd's) see it at the end."""

        def submit(envelope: Envelope, content: bytes, lines: int | None) -> Deferred[str]:
            return self.submit(envelope, content, milters, lines)

        def submit_spooled(
            envelope: Envelope, head: bytes, spool: ISpool, lines: int | None
        ) -> Deferred[str]:
            return self.submit_spooled(envelope, head, spool, milters, lines)

        return MessageWriter(self._store, submit, submit_spooled, self.spool_threshold)

    #: Content a writer keeps in memory before it spools (tests lower it).
    spool_threshold = SPOOL_THRESHOLD

    def _needs_whole(self, envelope: Envelope, milters: Milters | None = None) -> bool:
        """Whether steps that read the whole message apply: the content
        checks (not for pymta's own mail), milters or mail authentication."""
        if self._mailauth is not None or milters is not None:
            return True
        if self._non_smtpd_milters is not None and not _from_smtpd(envelope):
            return True
        return bool(self._checks) and envelope.attributes.get("origin") not in INTERNAL_ORIGINS

    def submit_spooled(
        self,
        envelope: Envelope,
        head: bytes,
        spool: ISpool,
        milters: Milters | None = None,
        lines: int | None = None,
    ) -> Deferred[str]:
        """Queue a message whose content is ``head`` followed by the closed
        ``spool`` (``lines`` LF in all, when known); fires as submit does.
        The spool is consumed (made part of the queue file) or deleted,
        whatever the outcome."""
        split = None if self._needs_whole(envelope, milters) else header_block_length(head)
        if split is None:
            # Read it back: the checks and DKIM need the message in one piece.
            def whole(rest: bytes) -> Deferred[str]:
                spool.discard()
                return self.submit(envelope, head + rest, milters, lines)

            def unreadable(failure: Failure) -> Failure:
                spool.discard()
                return self._write_failed(failure, spool.queue_id)

            # The turn is held until the message is queued (or refused):
            # that is as long as its bytes are in memory.
            def read() -> Deferred[str]:
                return spool.read().addCallbacks(whole, unreadable)

            return self._whole_reads.run(read)
        return self._submit(envelope, head[:split], None, spool=(spool, head[split:]), lines=lines)

    def submit(
        self,
        envelope: Envelope,
        content: bytes,
        milters: Milters | None = None,
        lines: int | None = None,
    ) -> Deferred[str]:
        """Queue a message; the Deferred fires with its queue id once durable.

        The queue manager hears of the message only after the submitter's
        callbacks ran: smtpd's 250 goes out first, so a client never waits
        for the scheduling of its delivery. Header and body checks run
        first; a message larger than SLICED_SIZE is inspected in slices, so
        that the reactor serves other clients meanwhile. ``milters`` are
        smtpd's (smtpd_milters) for this session; they get the content.
        ``lines``, the content's LF count when the caller knows it, saves
        a count of the body (see _lines_after).
        """
        if not self._checks or envelope.attributes.get("origin") in INTERNAL_ORIGINS:
            return self._submit(envelope, content, None, milters, lines=lines)
        original = content
        content = limit_header_size(content, self._header_size_limit)
        if content is not original:
            lines = _lines_after(original, lines, content)
        if len(content) > SLICED_SIZE:
            later = self._checks.inspect_later(content, self._clock.callLater)
            return later.addCallback(
                lambda verdict: self._submit(envelope, content, verdict, milters, lines=lines)
            )
        verdict = self._checks.inspect(content)
        return self._submit(envelope, content, verdict, milters, lines=lines)

    def _non_smtpd_applies(self, envelope: Envelope) -> bool:
        """Whether non_smtpd_milters see this message (not smtpd's, not pymta's own)."""
        return (
            self._non_smtpd_milters is not None
            and envelope.attributes.get("origin") not in INTERNAL_ORIGINS
            and not _from_smtpd(envelope)
        )

    def _milter_step(
        self,
        qid: str,
        envelope: Envelope,
        rewritten: Envelope,
        message: bytes,
        milters: Milters | None,
    ) -> Deferred[MilterOutcome] | None:
        """The milters' answer about the message, or None when none applies."""
        if milters is not None:
            milters.macros["i"] = qid
            asked = milters.content(message)
        elif self._non_smtpd_milters is not None and self._non_smtpd_applies(envelope):
            asked = non_smtpd_conversation(self._non_smtpd_milters, envelope, qid, message)
        else:
            return None
        return asked.addCallback(apply_outcome, qid, envelope, rewritten, self._rewriter)

    def _submit(
        self,
        envelope: Envelope,
        content: bytes,
        checked: Verdict | None,
        milters: Milters | None = None,
        spool: tuple[ISpool, bytes] | None = None,
        lines: int | None = None,
    ) -> Deferred[str]:
        """Queue content, or (with ``spool``: the spool and the bytes between
        the header block and the spool) the header block ``content``, whose
        message goes on with those bytes and the spool. A spooled message
        has no milters and no mail authentication (see _needs_whole).
        ``lines`` counts the LF of the whole content (spool included)."""
        qid_given = spool[0].queue_id if spool is not None else None
        # Of the content given here (a spooled message's header block):
        given_lines = lines
        if spool is not None and lines is not None:
            given_lines = content.count(b"\n")
        try:
            qid, rewritten, message, message_id, verdict, message_lines = self._prepare(
                envelope, content, checked, qid_given, given_lines
            )
        except CleanupRejected as e:
            if spool is not None:
                spool[0].discard()
            return fail(e)
        stored: bytes | SpooledContent = message
        stored_lines = message_lines
        if spool is not None:
            stored = SpooledContent(message + spool[1], spool[0])
            if lines is not None and message_lines is not None and given_lines is not None:
                # The spooled rest is as the reader counted it.
                stored_lines = lines - given_lines + message_lines
        if verdict.discard:
            if milters is not None:
                milters.abort()
            return succeed(qid)  # DISCARD: accepted and dropped, as Postfix does
        result: Deferred[str] = Deferred()
        outcome = MilterOutcome(message, hold=verdict.hold)

        def enqueue(authenticated: bytes | SpooledContent) -> Deferred[str] | None:
            if outcome.discard:
                return None
            # Milters and mail authentication may have changed the message:
            # then the store counts it.
            counted = stored_lines if authenticated is stored else None
            if outcome.hold:
                return self._store.enqueue(
                    rewritten, authenticated, qid, queue="hold", lines=counted
                )
            return self._store.enqueue(rewritten, authenticated, qid, lines=counted)

        def queued(_: object) -> None:
            if not outcome.discard:
                self._log_queued(qid, rewritten, message_id)
            result.callback(qid)
            if not outcome.hold and not outcome.discard:
                self._notify(qid, rewritten)

        def miltered(answer: MilterOutcome) -> bytes:
            outcome.message = answer.message
            outcome.hold = outcome.hold or answer.hold
            outcome.discard = answer.discard
            return answer.message

        def authenticate(message: bytes) -> Deferred[bytes]:
            if self._mailauth is None or outcome.discard:
                return succeed(message)
            forwarding = forwards_elsewhere(envelope, rewritten, self._is_ours)
            return self._mailauth.process(qid, envelope, message, forwarding=forwarding)

        def failed(failure: Failure) -> None:
            rejected = failure.check(CleanupRejected)
            result.errback(failure if rejected else self._write_failed(failure, qid))

        if spool is not None or (
            milters is None and self._mailauth is None and not self._non_smtpd_applies(envelope)
        ):
            # Nothing to ask before the queue (no milter, no mail
            # authentication; a spooled message has neither): enqueued at
            # once, the same steps in the same order without the chain of
            # callbacks below (a few Deferreds per message on the reactor).
            try:
                enqueued = enqueue(stored)
            except Exception:
                enqueued = fail(Failure())
            assert enqueued is not None  # nothing discarded it
            enqueued.addCallbacks(queued, failed)
            return result
        asked = self._milter_step(qid, envelope, rewritten, message, milters)
        auth: Deferred[bytes] = succeed(message) if asked is None else asked.addCallback(miltered)
        auth.addCallback(authenticate).addCallback(enqueue).addCallbacks(queued, failed)
        return result

    def _prepare(
        self,
        envelope: Envelope,
        content: bytes,
        checked: Verdict | None,
        qid: str | None = None,
        lines: int | None = None,
    ) -> tuple[str, Envelope, bytes, str, Verdict, int | None]:
        """The queue id, the rewritten envelope, the message as it will be
        queued, its Message-ID, the checks' verdict, and the message's LF
        count when ``lines`` (the content's) lets it be derived."""
        if qid is None:
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
        if self._srs is not None:
            self._srs.apply(qid, envelope, rewritten, now)
        if not rewritten.arrival_time:
            rewritten.arrival_time = now
        original = content
        content = limit_header_size(content, self._header_size_limit)
        scan = scan_headers(content)
        if scan.received + 1 >= self._hopcount_limit:
            maillog("cleanup", f"{qid}: hopcount exceeded", LogLevel.warn)
            raise CleanupRejected(554, "5.4.0", "Error: too many hops")
        # Hops are counted before the checks, as Postfix does: IGNOREing
        # Received headers must not hide a mail loop.
        verdict = self._inspect(qid, envelope, rewritten, content, checked)
        if verdict.content is not content:
            content = verdict.content
            scan = scan_headers(content)
        local = self._is_local_submission(envelope)
        attrs = envelope.attributes
        if attrs.get("origin") not in INTERNAL_ORIGINS and self._header_clients.applies(
            attrs, attrs.get("protocol", "").lower() in LOCAL_PROTOCOLS, local
        ):
            try:
                headers = rewrite_headers(
                    content, self._rewriter.header_sender, self._rewriter.header_recipient
                )
            except TableError as e:
                maillog("cleanup", f"{qid}: warning: table lookup failed: {e}", LogLevel.warn)
                raise CleanupRejected(451, "4.3.0", "Temporary lookup failure") from None
            if headers is not content:
                content = headers
                scan = scan_headers(content)
        date = format_date(now, self._tz)
        for_rcpt = None
        if len(envelope.recipients) == 1:
            first = envelope.recipients[0]
            for_rcpt = first.original or first.address
        received = received_header(envelope, qid, self._myhostname, date, for_rcpt)
        added, new_id = missing_headers(scan, rewritten, qid, self._myhostname, date, local)
        message = assemble(content, scan, received, added)
        message_id = new_id or scan.message_id or ""
        if content is not original:
            lines = _lines_after(original, lines, content)
        message_lines = None
        if lines is not None:
            # assemble changed only the header block: the rest is shared.
            tail = len(content) - scan.end
            message_lines = (
                lines
                - content.count(b"\n", 0, scan.end)
                + message.count(b"\n", 0, len(message) - tail)
            )
        return qid, rewritten, message, message_id, verdict, message_lines

    def _inspect(
        self,
        qid: str,
        envelope: Envelope,
        rewritten: Envelope,
        content: bytes,
        checked: Verdict | None,
    ) -> Verdict:
        """Log the checks' actions and add recipients (pymta.cleanup.checks, .bcc)."""
        if envelope.attributes.get("origin") in INTERNAL_ORIGINS:
            return Verdict(content)
        try:
            verdict = checked or Verdict(content)
            if checked is not None:
                # Postfix logs the first recipient after canonical maps, before virtual aliases.
                first = self._rewriter.recipient(envelope.recipients[0].address)
                report(checked, qid, rewritten, first)
            self._bcc.apply(qid, envelope, rewritten, verdict.bcc, verdict.redirect)
        except TableError as e:
            maillog("cleanup", f"{qid}: warning: table lookup failed: {e}", LogLevel.warn)
            raise CleanupRejected(451, "4.3.0", "Temporary lookup failure") from None
        except ExpansionError as e:
            raise CleanupRejected(451, "4.3.0", f"Error: unreasonable {e}") from None
        return verdict

    def _log_queued(self, qid: str, envelope: Envelope, message_id: str) -> None:
        log_client(qid, envelope.attributes, envelope.sender)
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
