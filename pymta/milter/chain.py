"""chain: the milters of one SMTP session, asked in order at each stage.

Mirrors Postfix's milter.c (the list of milters behind smtpd_milters or
non_smtpd_milters). Each stage asks every active milter in turn; the
first refusal (reject, tempfail) or DISCARD ends the stage. DISCARD at
MAIL, RCPT, DATA or the content drops the whole message after it is
accepted, as Postfix does; QUARANTINE (or ``milter_default_action =
quarantine``) sends it to the hold queue. At the end of the message each
milter sees the message as the milters before it left it (their edits
are applied in between), as Postfix's cleanup applies each milter's edits
to the queue file before the next one reads it.

The macros sent (``milter_*_macros``) are looked up in :attr:`Milters.macros`,
which the caller fills as the session learns them (``j``, ``_``,
``{client_addr}``, ``{auth_authen}``, ``i``, ...); a macro without a value
is not sent. Untrusted input: the milters' replies (see
:mod:`pymta.milter.session`). Logs nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred

from pymta.milter import wire
from pymta.milter.edits import (
    EnvelopeEdits,
    apply_edits,
    body_blocks,
    milter_headers,
)
from pymta.milter.session import (
    ACCEPT,
    CONTINUE,
    DISCARD,
    MilterSession,
    Verdict,
)


@dataclass
class ContentResult:
    """The end of one message: the message as the milters left it."""

    message: bytes
    envelope: EnvelopeEdits = field(default_factory=EnvelopeEdits)
    #: a refusal (REJECT, TEMPFAIL with its SMTP reply), or None.
    refusal: Verdict | None = None
    discard: bool = False
    quarantine: str = ""
    #: which milter refused, discarded or quarantined (for the log).
    by: str = ""


class Milters:
    """The milters of one session; every method fires with a Verdict."""

    def __init__(self, sessions: list[MilterSession], macros: dict[str, str] | None = None) -> None:
        self.sessions = sessions
        self.macros: dict[str, str] = dict(macros or {})
        #: DISCARD or QUARANTINE decided before the content (for the message).
        self.discard = False
        self.quarantine = ""
        self.by = ""
        self._busy = False
        self._quit_later = False

    def value(self, name: str) -> str | None:
        """A macro's value: ``{name}`` and ``name`` are one macro (libmilter
        accepts both spellings of long names)."""
        if name in self.macros:
            return self.macros[name]
        bare = name.strip("{}")
        for key in (bare, "{" + bare + "}"):
            if key in self.macros:
                return self.macros[key]
        return None

    def _stage(self, ask: Callable[[MilterSession], Deferred[Verdict]]) -> Deferred[Verdict]:
        """Ask each active milter in order until one refuses or discards."""
        return Deferred.fromCoroutine(self._ask_all(ask))

    async def _ask_all(self, ask: Callable[[MilterSession], Deferred[Verdict]]) -> Verdict:
        for session in self.sessions:
            verdict = await ask(session)
            if verdict.quarantine and not self.quarantine:
                self.quarantine = verdict.quarantine
                self.by = session.spec.name
            if verdict.action == DISCARD:
                self.discard = True
                self.by = session.spec.name
                return Verdict(CONTINUE)
            if verdict.refused:
                verdict.by = session.spec.name
                return verdict
        return Verdict(CONTINUE)

    def connect(self, hostname: str, address: str, port: int) -> Deferred[Verdict]:
        return self._stage(lambda s: s.connect(hostname, address, port, self.value))

    def helo(self, name: str) -> Deferred[Verdict]:
        return self._stage(lambda s: s.helo(name, self.value))

    def mail(self, sender: str, args: list[str]) -> Deferred[Verdict]:
        """A new transaction (after SMFIC_ABORT of an unfinished one)."""
        self.abort()
        return self._stage(lambda s: s.mail(sender, args, self.value))

    def rcpt(self, recipient: str, args: list[str]) -> Deferred[Verdict]:
        return self._stage(lambda s: s.rcpt(recipient, args, self.value))

    def data(self) -> Deferred[Verdict]:
        return self._stage(lambda s: s.data(self.value))

    def content(self, message: bytes) -> Deferred[ContentResult]:
        """Headers, body and end of message to each milter; fires with the
        message after their edits, or their refusal."""
        self._busy = True
        d = Deferred.fromCoroutine(self._content(message))

        def done(result: ContentResult) -> ContentResult:
            self._busy = False
            if self._quit_later:
                self.quit()
            return result

        return d.addCallback(done)

    async def _content(self, message: bytes) -> ContentResult:
        result = ContentResult(
            message, discard=self.discard, quarantine=self.quarantine, by=self.by
        )
        if self.discard:
            self.end_message()
            return result
        for session in self.sessions:
            verdict = await session.content(
                milter_headers(result.message), body_blocks(result.message), self.value
            )
            if verdict.quarantine and not result.quarantine:
                result.quarantine = verdict.quarantine
                result.by = session.spec.name
            if verdict.action == DISCARD:
                result.discard = True
                result.by = session.spec.name
                break
            if verdict.refused:
                result.refusal = verdict
                result.by = session.spec.name
                break
            if verdict.edits:
                leadspc = bool(session.protocol & wire.SMFIP_HDR_LEADSPC)
                result.message, changes = apply_edits(
                    result.message, verdict.edits, leadspc=leadspc
                )
                _merge(result.envelope, changes)
            assert verdict.action in (CONTINUE, ACCEPT)
        self.end_message()
        return result

    def abort(self) -> None:
        """The transaction ended without a message (RSET, HELO, a refusal)."""
        for session in self.sessions:
            session.abort()
        self.discard = False
        self.quarantine = ""
        self.by = ""

    def end_message(self) -> None:
        for session in self.sessions:
            session.end_message()
        self.discard = False
        self.quarantine = ""
        self.by = ""

    def quit(self) -> None:
        """End the milter connections; while a message's content is with
        the milters (the client left before the DATA reply), only once they
        answered it: closing them then would let the message pass unfiltered
        under milter_default_action = accept."""
        if self._busy:
            self._quit_later = True
            return
        for session in self.sessions:
            session.quit()


def _merge(into: EnvelopeEdits, more: EnvelopeEdits) -> None:
    if more.sender is not None:
        into.sender = more.sender
    into.add.extend(more.add)
    into.delete.extend(more.delete)
