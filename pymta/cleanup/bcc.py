"""Recipients that cleanup adds or replaces: automatic BCC and REDIRECT.

Mirrors Postfix's cleanup_addr.c (cleanup_addr_bcc) and the REDIRECT/BCC
actions of header_checks(5):

- ``recipient_bcc_maps``: each envelope recipient, after canonical
  rewriting and before virtual alias expansion, is looked up (Postfix's
  address lookup order, extension not propagated); the result is one
  address, added as a recipient;
- ``sender_bcc_maps``: the same for the (rewritten) sender, unless it is
  the null sender;
- ``always_bcc``: one address added to every message;
- BCC actions of header/body checks.

Each added address is put in standard form and rewritten like an
envelope recipient (canonical maps, virtual alias expansion), is added once
(an address already a recipient is not added again), and asks for no DSN
(NOTIFY=NEVER), as Postfix does. A REDIRECT action replaces every
recipient, the added ones included, by its address (rewritten the same
way; DSN parameters of the first recipient kept).

Only mail from outside enters here: smtpd, sendmail/pickup. Mail that
pymta makes itself (bounces, local(8) forwarding) gets no automatic BCC,
as Postfix's internal mail (CLEANUP_FLAG_MASK_INTERNAL). A failed lookup is
``451 4.3.0 Temporary lookup failure``. Untrusted input: the addresses.
Writes nothing; logs failed lookups (warning).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import LogLevel

from pymta.cleanup.addresses import EnvelopeRewriter
from pymta.cleanup.interface import CleanupRejected
from pymta.config import Config
from pymta.maillog import maillog
from pymta.queue.model import Envelope, Recipient
from pymta.tables import Maps, TableError, lookup_address, open_maps


class AutomaticBcc:
    """always_bcc, sender_bcc_maps and recipient_bcc_maps; see module doc."""

    def __init__(
        self,
        config: Config,
        rewriter: EnvelopeRewriter,
        is_local_domain: Callable[[str], bool],
        open_maps: Callable[..., Maps] = open_maps,
    ) -> None:
        self._rewriter = rewriter
        self._is_local = is_local_domain
        self._delimiter = config.get("recipient_delimiter")
        self._always = config.get("always_bcc").strip()
        self._sender_maps = open_maps(config.get_list("sender_bcc_maps"), config)
        self._recipient_maps = open_maps(config.get_list("recipient_bcc_maps"), config)
        # Decided once: the tables are fixed for this object's life.
        self._has_sender_maps = bool(self._sender_maps)
        self._has_recipient_maps = bool(self._recipient_maps)

    def _find(self, maps: Maps, address: str) -> str | None:
        value = lookup_address(
            maps,
            address,
            delimiter=self._delimiter,
            is_local_domain=self._is_local,
            propagate_extension=False,
        )
        return value.strip() if value and value.strip() else None

    def automatic(self, envelope: Envelope, rewritten: Envelope) -> list[str]:
        """The BCC addresses for a message (envelope as received, rewritten)."""
        found: list[str] = []
        if self._has_recipient_maps:
            for rcpt in envelope.recipients:
                address = self._rewriter.recipient(rcpt.address)
                value = self._find(self._recipient_maps, address) if address else None
                if value:
                    found.append(value)
        if self._has_sender_maps and rewritten.sender:
            value = self._find(self._sender_maps, rewritten.sender)
            if value:
                found.append(value)
        if self._always:
            found.append(self._always)
        return found

    def apply(
        self,
        queue_id: str,
        envelope: Envelope,
        rewritten: Envelope,
        extra: list[str],
        redirect: str | None,
    ) -> None:
        """Add the automatic BCC and ``extra`` (BCC actions) to ``rewritten``'s
        recipients, or replace them all by ``redirect``."""
        try:
            if redirect is not None:
                first = rewritten.recipients[0]
                rewritten.recipients = [
                    Recipient(address, first.original, first.orcpt, first.notify)
                    for address in self._expand(redirect, queue_id)
                ]
                return
            seen = {r.address.lower() for r in rewritten.recipients}
            for bcc in self.automatic(envelope, rewritten) + extra:
                original = self._rewriter.recipient(bcc)
                for address in self._expand(bcc, queue_id):
                    if address.lower() not in seen:
                        seen.add(address.lower())
                        rewritten.recipients.append(Recipient(address, original, None, "NEVER"))
        except TableError as e:
            maillog("cleanup", f"{queue_id}: warning: table lookup failed: {e}", LogLevel.warn)
            raise CleanupRejected(451, "4.3.0", "Temporary lookup failure") from None

    def _expand(self, address: str, queue_id: str) -> list[str]:
        unique: dict[str, str] = {}
        for item in self._rewriter.expand(self._rewriter.recipient(address), queue_id):
            unique.setdefault(item.lower(), item)
        return list(unique.values())
