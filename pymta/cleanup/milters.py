"""milters: cleanup's milter step — the content to the milters, their edits applied.

Mirrors Postfix's cleanup_milter.c. After cleanup has the final headers
(Received included, so the milters see what will be queued) and before
the queue file is written, the message goes to the milters: smtpd's
(``smtpd_milters``, whose connection smtpd opened and took through
MAIL, RCPT and DATA) or, for mail from the maildrop, ``non_smtpd_milters``
(a conversation of their own: connect as ``localhost [127.0.0.1]``, MAIL,
RCPT for each recipient, DATA, then the content). Their edits change the
message and the envelope before it is durable, so the 250 covers the
message as the milters left it:

- added recipients are rewritten as cleanup rewrites any (canonical and
  virtual alias maps); deleted ones are matched against the address as
  received or as rewritten; a changed sender goes through the sender
  canonical maps;
- a refusal is the client's reply (``550 5.7.1 ...``); DISCARD accepts and
  drops the message; QUARANTINE (or ``milter_default_action =
  quarantine`` after a failure) queues it in hold/.

Logs as Postfix's cleanup: ``QID: milter-reject: END-OF-MESSAGE from
CLIENT: 5.7.1 TEXT; from=<S> to=<R> proto=P helo=<H>``, ``milter-discard``
and ``milter-hold`` lines. Untrusted input: the milters' edits.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from pymta.cleanup.addresses import EnvelopeRewriter, ExpansionError
from pymta.cleanup.interface import CleanupRejected
from pymta.maillog import maillog
from pymta.milter.chain import ContentResult, Milters
from pymta.milter.config import MilterClients
from pymta.milter.session import split_reply
from pymta.queue.model import Envelope, Recipient
from pymta.tables import TableError


@dataclass
class MilterOutcome:
    """The message after the milters, and whether it goes to hold or nowhere."""

    message: bytes
    hold: bool = False
    discard: bool = False


def _context(envelope: Envelope, rewritten: Envelope) -> tuple[str, str]:
    """(``from CLIENT``, ``; from=<> to=<> proto= helo=<>``) for the log."""
    attrs = envelope.attributes
    address = attrs.get("client_address") or "127.0.0.1"
    client = f"{attrs.get('client_name') or 'localhost'}[{address}]"
    first = rewritten.recipients[0].address if rewritten.recipients else ""
    protocol = attrs.get("protocol", "")
    proto = "ESMTP" if protocol.upper().startswith("ESMTP") else protocol.upper() or "SMTP"
    tail = f"; from=<{envelope.sender}> to=<{first}> proto={proto}"
    if attrs.get("helo_name"):
        tail += f" helo=<{attrs['helo_name']}>"
    return client, tail


def non_smtpd_conversation(
    clients: MilterClients, envelope: Envelope, qid: str, message: bytes
) -> Deferred[ContentResult]:
    """The whole conversation of non_smtpd_milters for one message."""

    async def talk() -> ContentResult:
        milters = clients.session(lambda line: maillog("cleanup", f"{qid}: {line}", LogLevel.warn))
        milters.macros.update(
            {
                "i": qid,
                "_": "localhost [127.0.0.1]",
                "{client_addr}": "127.0.0.1",
                "{client_name}": "localhost",
                "{mail_addr}": envelope.sender,
            }
        )
        try:
            verdict = await milters.connect("localhost", "127.0.0.1", 0)
            if not verdict.refused:
                verdict = await milters.mail(envelope.sender, [])
            for rcpt in envelope.recipients:
                if verdict.refused:
                    break
                verdict = await milters.rcpt(rcpt.original or rcpt.address, [])
            if not verdict.refused:
                verdict = await milters.data()
            if verdict.refused:
                return ContentResult(message, refusal=verdict, by=verdict.by)
            return await milters.content(message)
        finally:
            milters.quit()

    return Deferred.fromCoroutine(talk())


def apply_outcome(
    result: ContentResult,
    qid: str,
    envelope: Envelope,
    rewritten: Envelope,
    rewriter: EnvelopeRewriter,
) -> MilterOutcome:
    """Act on the milters' answer: refuse (CleanupRejected), drop, hold, or
    apply their envelope edits to ``rewritten``."""
    client, tail = _context(envelope, rewritten)
    if result.refusal is not None:
        default = "5.7.1" if result.refusal.reply.startswith("5") else "4.7.1"
        code, status, text = split_reply(result.refusal.reply, default)
        maillog(
            "cleanup",
            f"{qid}: milter-reject: END-OF-MESSAGE from {client}: {status} {text}{tail}",
        )
        raise CleanupRejected(code, status, text)
    if result.discard:
        maillog(
            "cleanup",
            f"{qid}: milter-discard: END-OF-MESSAGE from {client}: "
            f"milter triggers DISCARD action{tail}",
        )
        return MilterOutcome(result.message, discard=True)
    try:
        _edit_envelope(result, rewritten, rewriter, qid)
    except TableError as e:
        maillog("cleanup", f"{qid}: warning: table lookup failed: {e}", LogLevel.warn)
        raise CleanupRejected(451, "4.3.0", "Temporary lookup failure") from None
    except ExpansionError as e:
        raise CleanupRejected(451, "4.3.0", f"Error: unreasonable {e}") from None
    if not rewritten.recipients:
        maillog("cleanup", f"{qid}: milter-reject: END-OF-MESSAGE from {client}: no recipients")
        raise CleanupRejected(554, "5.7.1", "Error: the milters removed every recipient")
    if result.quarantine:
        maillog(
            "cleanup",
            f"{qid}: milter-hold: END-OF-MESSAGE from {client}: "
            f"milter triggers HOLD action ({result.quarantine}){tail}",
        )
        return MilterOutcome(result.message, hold=True)
    return MilterOutcome(result.message)


def _edit_envelope(
    result: ContentResult, rewritten: Envelope, rewriter: EnvelopeRewriter, qid: str
) -> None:
    edits = result.envelope
    if edits.sender is not None:
        rewritten.sender = rewriter.sender(edits.sender[0])
        maillog("cleanup", f"{qid}: milter: sender changed to <{rewritten.sender}>")
    for address in edits.delete:
        key = address.lower()
        rewritten.recipients = [
            r
            for r in rewritten.recipients
            if r.address.lower() != key and (r.original or "").lower() != key
        ]
    seen = {r.address.lower() for r in rewritten.recipients}
    for address, _args in edits.add:
        for expanded in rewriter.expand(rewriter.recipient(address), qid):
            if expanded.lower() not in seen:
                seen.add(expanded.lower())
                rewritten.recipients.append(Recipient(expanded, address))


__all__ = ["MilterOutcome", "Milters", "apply_outcome", "non_smtpd_conversation"]
