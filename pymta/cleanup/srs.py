"""srs: cleanup's SRS step — forwarded mail gets an SRS sender, SRS recipients are reversed.

What Postfix sites get from postsrsd behind canonical maps, done where it
is needed (pymta.rewrite.srs has the address format):

- **forward**: a message that leaves for another domain because we
  forwarded it — the local agent's aliases and ``.forward`` (envelope
  attribute ``forwarded_from``), or a virtual alias of one of our domains
  that points elsewhere — gets its envelope sender rewritten to
  ``SRS0=...@$pymta_srs_domain``, so that the next hop's SPF check sees
  our domain, not the original sender's. Senders in our own domains, in
  ``pymta_srs_exclude_domains``, the null sender, and mail that stays here
  are left alone. The whole envelope has one sender: when a forward
  expands to local and remote recipients, the local ones see the SRS
  sender too.
- **reverse**: a recipient ``SRS0=...`` / ``SRS1=...`` at
  ``$pymta_srs_domain`` (a bounce of forwarded mail) whose hash and age
  verify is replaced by the address it stands for; one that does not
  verify stays as it is (and bounces as unknown).

Logs ``QID: srs: sender <S> rewritten to <SRS>`` and ``QID: srs:
recipient <R> reversed to <A>`` (or ``warning: srs: ... not reversed:
WHY``). Untrusted input: the addresses.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import LogLevel

from pymta.address import split_address
from pymta.config import Config
from pymta.maillog import maillog
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite.srs import SRS, SRSError


class SenderRewriting:
    """See the module docstring; ``is_ours(domain)`` tells our domains."""

    def __init__(self, srs: SRS, is_ours: Callable[[str], bool], exclude: list[str]) -> None:
        self.srs = srs
        self._is_ours = is_ours
        self._exclude = {d.lower().lstrip(".") for d in exclude}

    @classmethod
    def from_config(cls, config: Config, is_ours: Callable[[str], bool]) -> SenderRewriting | None:
        srs = SRS.from_config(config)
        if srs is None:
            return None
        return cls(srs, is_ours, config.get_list("pymta_srs_exclude_domains"))

    def _stays(self, domain: str) -> bool:
        domain = domain.lower()
        return not domain or self._is_ours(domain) or domain == self.srs.domain

    def _excluded(self, domain: str) -> bool:
        domain = domain.lower()
        return any(domain == d or domain.endswith("." + d) for d in self._exclude)

    def apply(self, qid: str, envelope: Envelope, rewritten: Envelope, now: float) -> None:
        """Reverse SRS recipients, then rewrite the sender of forwarded mail."""
        recipients: list[Recipient] = []
        for rcpt in rewritten.recipients:
            try:
                original = self.srs.reverse(rcpt.address, now)
            except SRSError as e:
                maillog(
                    "cleanup",
                    f"{qid}: warning: srs: recipient <{rcpt.address}> not reversed: {e}",
                    LogLevel.warn,
                )
                original = None
            if original is None:
                recipients.append(rcpt)
                continue
            maillog("cleanup", f"{qid}: srs: recipient <{rcpt.address}> reversed to <{original}>")
            recipients.append(
                Recipient(original, rcpt.original or rcpt.address, rcpt.orcpt, rcpt.notify)
            )
        rewritten.recipients = recipients
        sender = rewritten.sender
        if not sender:
            return
        sender_domain = split_address(sender)[1]
        if self._stays(sender_domain) or self._excluded(sender_domain):
            return
        if not forwards_elsewhere(envelope, rewritten, self._stays_here):
            return
        rewritten.sender = self.srs.forward(sender, now)
        maillog("cleanup", f"{qid}: srs: sender <{sender}> rewritten to <{rewritten.sender}>")

    def _stays_here(self, domain: str) -> bool:
        return self._is_ours(domain) or domain.lower() == self.srs.domain


def forwards_elsewhere(
    envelope: Envelope, rewritten: Envelope, is_ours: Callable[[str], bool]
) -> bool:
    """Whether we forward this message to another domain: the local agent's
    forward (``forwarded_from``) with a recipient elsewhere, or a recipient
    of one of our domains that canonical or virtual alias maps sent
    elsewhere."""
    forwarded = bool(envelope.attributes.get("forwarded_from"))
    for rcpt in rewritten.recipients:
        domain = split_address(rcpt.address)[1].lower()
        if not domain or is_ours(domain):
            continue
        if forwarded:
            return True
        original_domain = split_address(rcpt.original or rcpt.address)[1].lower()
        if original_domain and is_ours(original_domain):
            return True
    return False
