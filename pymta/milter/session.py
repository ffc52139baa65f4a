"""session: one milter's conversation for one SMTP session (or one message).

Mirrors Postfix's milter8.c event functions. The connection is opened at
the first event (``milter_connect_timeout``), options are negotiated
(SMFIC_OPTNEG: the actions and protocol steps of ``milter_protocol``; the
milter may skip steps, SMFIP_NO*, and leave steps unanswered, SMFIP_NR_*,
and may ask for other macros per stage, SMFIR_SETSYMLIST), then each SMTP
stage is one event whose answer is a :class:`Verdict`. Commands wait at
most ``milter_command_timeout``; header, body and end of message
``milter_content_timeout``.

A milter that cannot be reached, times out, or breaks the protocol is
closed and from then on answers every event with ``milter_default_action``
(as Postfix's milter8 keeps its error state): ``accept`` leaves it out,
``tempfail`` answers ``451 4.7.1 Service unavailable - try again later``,
``reject`` ``550 5.7.1 Command rejected``, ``quarantine`` lets the mail
through into the hold queue. SMFIR_ACCEPT at connect or HELO leaves the
milter out for the connection, later for the message.

Untrusted input: the milter's replies. Logs: warnings about the milter
(through the caller's ``log`` callable, keyed by queue id or NOQUEUE).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed

from pymta.milter import wire
from pymta.milter.protocol import MilterError, MilterProtocol

# Verdict actions.
CONTINUE = "continue"
ACCEPT = "accept"
REJECT = "reject"
TEMPFAIL = "tempfail"
DISCARD = "discard"

DEFAULT_ACTIONS = ("accept", "reject", "tempfail", "quarantine")
REJECT_REPLY = "550 5.7.1 Command rejected"
TEMPFAIL_REPLY = "451 4.7.1 Service unavailable - try again later"
SHUTDOWN_REPLY = "421 4.7.0 Server closing connection"

# What each milter_protocol version offers (Postfix's milter8.c table).
_OFFER = {
    2: (0x3F, 0x7F),
    3: (0x3F, 0x17F),
    4: (0x3F, 0x3FF),
    6: (wire.ALL_ACTIONS, wire.ALL_PROTOCOL),
}
PROTOCOL_VERSIONS = tuple(_OFFER)

_ENHANCED = re.compile(r"\A(\d{3})[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?(.*)\Z", re.S)

#: opens a connection to a milter: fires with the connected protocol.
Connector = Callable[[float], "Deferred[MilterProtocol]"]
Log = Callable[[str], None]


@dataclass
class Verdict:
    """A stage's answer: ``action`` (CONTINUE, ACCEPT, REJECT, TEMPFAIL,
    DISCARD), the SMTP ``reply`` of a refusal, ``quarantine`` reason (the
    message goes to hold), the end-of-message ``edits``."""

    action: str = CONTINUE
    reply: str = ""
    quarantine: str = ""
    edits: list[wire.Reply] = field(default_factory=list)
    #: the milter that refused (for the log).
    by: str = ""

    @property
    def refused(self) -> bool:
        return self.action in (REJECT, TEMPFAIL)


@dataclass(frozen=True)
class MilterSpec:
    """One configured milter (an ``smtpd_milters`` entry and its settings)."""

    name: str
    connect_timeout: float
    command_timeout: float
    content_timeout: float
    default_action: str
    version: int
    #: milter_*_macros by stage (SMFIM_*): the macro names sent.
    macros: dict[int, list[str]]


def split_reply(text: str, default_status: str) -> tuple[int, str, str]:
    """``550 5.7.1 text`` (or without the enhanced code, or multi-line) ->
    (code, status, text); a missing enhanced code gets ``default_status``
    of the reply's class, as Postfix adds one."""
    lines = text.replace("\r\n", "\n").split("\n")
    texts: list[str] = []
    code, status = 0, ""
    for line in lines:
        match = _ENHANCED.match(line)
        if match is None:
            continue
        code = int(match.group(1))
        status = status or (match.group(2) or "")
        texts.append(match.group(3))
    if not code:
        code, texts = int(default_status[0]) * 100 + 50, [text]
    if not status or status[0] != str(code)[0]:
        status = f"{str(code)[0]}{default_status[1:]}"
    return code, status, "; ".join(t for t in texts if t) or "Command rejected"


class MilterSession:
    """One milter; every method fires with a Verdict, never errbacks."""

    def __init__(self, spec: MilterSpec, connect: Connector, log: Log) -> None:
        self.spec = spec
        self._connect = connect
        self._log = log
        self._proto: MilterProtocol | None = None
        self._failed = False
        self._off_for_connection = False
        self._off_for_message = False
        self._in_message = False
        self._skip_body = False
        self.actions = 0
        self.protocol = 0
        self.version = spec.version
        self._macros: dict[int, list[str]] = dict(spec.macros)

    # -- state ----------------------------------------------------------------

    @property
    def active(self) -> bool:
        return not (self._failed or self._off_for_connection or self._off_for_message)

    def _default(self) -> Verdict:
        action = self.spec.default_action
        if action == "reject":
            return Verdict(REJECT, REJECT_REPLY)
        if action == "tempfail":
            return Verdict(TEMPFAIL, TEMPFAIL_REPLY)
        if action == "quarantine":
            return Verdict(CONTINUE, quarantine="milter_default_action = quarantine")
        return Verdict()

    def _fail(self, why: str) -> Verdict:
        if not self._failed:
            self._log(
                f"warning: milter {self.spec.name}: {why}; "
                f"default_action={self.spec.default_action}"
            )
        self._failed = True
        if self._proto is not None:
            self._proto.close()
        return self._default()

    def _after_failure(self) -> Verdict:
        """Postfix's milter8 keeps answering with its default reply."""
        verdict = self._default()
        return verdict

    # -- opening --------------------------------------------------------------

    async def _open(self) -> MilterProtocol:
        if self._proto is not None:
            return self._proto
        version = self.spec.version
        offered_actions, offered_protocol = _OFFER[version]
        proto = await self._connect(self.spec.connect_timeout)
        self._proto = proto
        answer = await proto.negotiate(
            wire.optneg(version, offered_actions, offered_protocol), self.spec.command_timeout
        )
        if answer.version < 2 or answer.version > 6:
            raise MilterError(f"protocol version {answer.version} not supported")
        if answer.actions & ~offered_actions:
            raise MilterError(f"requests unavailable actions 0x{answer.actions:x}")
        if answer.protocol & ~offered_protocol:
            raise MilterError(f"requests unavailable protocol steps 0x{answer.protocol:x}")
        self.actions = answer.actions
        self.protocol = answer.protocol
        # An older milter speaks its own version: no SMFIC_DATA before 4
        # (Postfix's milter8 does the same).
        self.version = min(version, answer.version)
        if self.version < 4:
            self.protocol |= wire.SMFIP_NODATA
        if answer.macros and self.actions & wire.SMFIF_SETSYMLIST:
            self._macros.update(answer.macros)
        return proto

    # -- events ---------------------------------------------------------------

    def _event(
        self,
        packets: bytes,
        macro_stage: int | None,
        macro_command: bytes,
        values: _Values,
        skip: int,
        no_reply: int,
        timeout: float,
        *,
        modifications_ok: bool = False,
    ) -> Deferred[Verdict]:
        if self._failed:
            return succeed(self._after_failure())
        if not self.active:
            return succeed(Verdict())
        return Deferred.fromCoroutine(
            self._ask(
                packets,
                macro_stage,
                macro_command,
                values,
                skip,
                no_reply,
                timeout,
                modifications_ok,
            )
        )

    async def _ask(
        self,
        packets: bytes,
        macro_stage: int | None,
        macro_command: bytes,
        values: _Values,
        skip: int,
        no_reply: int,
        timeout: float,
        modifications_ok: bool,
    ) -> Verdict:
        try:
            proto = await self._open()
            if self.protocol & skip:
                return Verdict()
            macro_packet = b""
            if macro_stage is not None:
                pairs = [
                    (name, value)
                    for name in self._macros.get(macro_stage, [])
                    if (value := values(name)) is not None
                ]
                if pairs:
                    macro_packet = wire.macros(macro_command, pairs)
            if self.protocol & no_reply:
                proto.send(macro_packet + packets)
                return Verdict()
            replies = await proto.request(
                macro_packet + packets, timeout, modifications_ok=modifications_ok
            )
        except MilterError as e:
            return self._fail(str(e))
        except Exception as e:
            # Connection refused, no such socket, DNS: the milter is down.
            return self._fail(f"{type(e).__name__}: {e}")
        return self._interpret(replies)

    def _interpret(self, replies: list[wire.Reply]) -> Verdict:
        final = replies[-1]
        edits = replies[:-1]
        for edit in edits:
            needed = _NEEDS.get(edit.code, 0)
            if not self.actions & needed:
                return self._fail(f"action {edit.code.decode()!r} was not negotiated")
        quarantine = next(
            (e.text or "milter" for e in edits if e.code == wire.SMFIR_QUARANTINE), ""
        )
        edits = [e for e in edits if e.code != wire.SMFIR_QUARANTINE]
        code = final.code
        if code == wire.SMFIR_SKIP:
            self._skip_body = True
        if code == wire.SMFIR_CONTINUE or code == wire.SMFIR_SKIP:
            return Verdict(CONTINUE, quarantine=quarantine, edits=edits)
        if code == wire.SMFIR_ACCEPT:
            if self._in_message:
                self._off_for_message = True
            else:
                self._off_for_connection = True
            return Verdict(ACCEPT, quarantine=quarantine, edits=edits)
        if code == wire.SMFIR_REJECT:
            return Verdict(REJECT, REJECT_REPLY)
        if code == wire.SMFIR_TEMPFAIL:
            return Verdict(TEMPFAIL, TEMPFAIL_REPLY)
        if code == wire.SMFIR_REPLYCODE:
            action = REJECT if final.text.startswith("5") else TEMPFAIL
            return Verdict(action, final.text)
        if code == wire.SMFIR_DISCARD:
            return Verdict(DISCARD)
        # SMFIR_SHUTDOWN, SMFIR_CONN_FAIL: the milter gives up the connection.
        self._failed = True
        if self._proto is not None:
            self._proto.close()
        return Verdict(TEMPFAIL, SHUTDOWN_REPLY if code == wire.SMFIR_SHUTDOWN else TEMPFAIL_REPLY)

    def connect(self, hostname: str, address: str, port: int, values: _Values) -> Deferred[Verdict]:
        self._in_message = False
        return self._event(
            wire.connect(hostname, address, port),
            wire.SMFIM_CONNECT,
            wire.SMFIC_CONNECT,
            values,
            wire.SMFIP_NOCONNECT,
            wire.SMFIP_NR_CONN,
            self.spec.command_timeout,
        )

    def helo(self, name: str, values: _Values) -> Deferred[Verdict]:
        return self._event(
            wire.strings(wire.SMFIC_HELO, name),
            wire.SMFIM_HELO,
            wire.SMFIC_HELO,
            values,
            wire.SMFIP_NOHELO,
            wire.SMFIP_NR_HELO,
            self.spec.command_timeout,
        )

    def mail(self, sender: str, args: list[str], values: _Values) -> Deferred[Verdict]:
        self._in_message = True
        self._off_for_message = False
        return self._event(
            wire.strings(wire.SMFIC_MAIL, f"<{sender}>", *args),
            wire.SMFIM_ENVFROM,
            wire.SMFIC_MAIL,
            values,
            wire.SMFIP_NOMAIL,
            wire.SMFIP_NR_MAIL,
            self.spec.command_timeout,
        )

    def rcpt(self, recipient: str, args: list[str], values: _Values) -> Deferred[Verdict]:
        return self._event(
            wire.strings(wire.SMFIC_RCPT, f"<{recipient}>", *args),
            wire.SMFIM_ENVRCPT,
            wire.SMFIC_RCPT,
            values,
            wire.SMFIP_NORCPT,
            wire.SMFIP_NR_RCPT,
            self.spec.command_timeout,
        )

    def data(self, values: _Values) -> Deferred[Verdict]:
        return self._event(
            wire.packet(wire.SMFIC_DATA),
            wire.SMFIM_DATA,
            wire.SMFIC_DATA,
            values,
            wire.SMFIP_NODATA,
            wire.SMFIP_NR_DATA,
            self.spec.command_timeout,
        )

    def content(
        self, headers: list[tuple[str, str]], body: Iterable[bytes], values: _Values
    ) -> Deferred[Verdict]:
        """Headers, end of headers, the body in chunks, end of message.

        ``headers`` are (name, value) with the value as it follows the
        colon (LF line ends inside a folded header); ``body`` yields the
        body in blocks with CR LF line ends, read one block at a time as
        the milter answers (or at once when it answers no body chunks)."""
        if self._failed:
            return succeed(self._after_failure())
        if not self.active:
            return succeed(Verdict())
        return Deferred.fromCoroutine(self._content(headers, body, values))

    def _ended(self, verdict: Verdict) -> bool:
        """The content phase stops: a refusal, ACCEPT, or a failure."""
        return verdict.action != CONTINUE or not self.active

    async def _content(
        self, headers: list[tuple[str, str]], body: Iterable[bytes], values: _Values
    ) -> Verdict:
        timeout = self.spec.content_timeout
        # Without SMFIP_HDR_LEADSPC the value is sent without the space
        # after the colon, as sendmail and Postfix send it.
        leadspc = bool(self.protocol & wire.SMFIP_HDR_LEADSPC)
        for name, value in headers:
            if not leadspc:
                value = value.lstrip(" \t")
            verdict = await self._event(
                wire.strings(wire.SMFIC_HEADER, name, value),
                None,
                b"",
                values,
                wire.SMFIP_NOHDRS,
                wire.SMFIP_NR_HDR,
                timeout,
            )
            if self._ended(verdict):
                return verdict
        verdict = await self._event(
            wire.packet(wire.SMFIC_EOH),
            wire.SMFIM_EOH,
            wire.SMFIC_EOH,
            values,
            wire.SMFIP_NOEOH,
            wire.SMFIP_NR_EOH,
            timeout,
        )
        if self._ended(verdict):
            return verdict
        self._skip_body = False
        if not self.protocol & wire.SMFIP_NOBODY:
            for block in _chunks(body):
                verdict = await self._event(
                    wire.packet(wire.SMFIC_BODY, block),
                    None,
                    b"",
                    values,
                    wire.SMFIP_NOBODY,
                    wire.SMFIP_NR_BODY,
                    timeout,
                )
                if self._ended(verdict):
                    return verdict
                if self._skip_body:
                    break  # SMFIR_SKIP: the milter has seen enough of the body
        return await self._event(
            wire.packet(wire.SMFIC_BODYEOB),
            wire.SMFIM_EOM,
            wire.SMFIC_BODYEOB,
            values,
            0,
            0,
            timeout,
            modifications_ok=True,
        )

    def abort(self) -> None:
        """SMFIC_ABORT: the transaction ended (RSET, a new MAIL, a refusal)."""
        self._off_for_message = False
        if self._in_message and not self._failed and self._proto is not None:
            self._proto.send(wire.packet(wire.SMFIC_ABORT))
        self._in_message = False

    def end_message(self) -> None:
        """The message was answered; the next transaction starts afresh."""
        self._off_for_message = False
        self._in_message = False

    def quit(self) -> None:
        if self._proto is not None:
            if not self._failed:
                self._proto.send(wire.packet(wire.SMFIC_QUIT))
            self._proto.close()


_Values = Callable[[str], "str | None"]


def _chunks(body: Iterable[bytes]) -> Iterator[bytes]:
    """Re-block the body into packets of at most CHUNK_SIZE bytes."""
    for block in body:
        for start in range(0, len(block), wire.CHUNK_SIZE):
            yield block[start : start + wire.CHUNK_SIZE]


_NEEDS = {
    wire.SMFIR_ADDHEADER: wire.SMFIF_ADDHDRS,
    wire.SMFIR_INSHEADER: wire.SMFIF_ADDHDRS,
    wire.SMFIR_CHGHEADER: wire.SMFIF_CHGHDRS,
    wire.SMFIR_REPLBODY: wire.SMFIF_CHGBODY,
    wire.SMFIR_ADDRCPT: wire.SMFIF_ADDRCPT,
    wire.SMFIR_ADDRCPT_PAR: wire.SMFIF_ADDRCPT_PAR,
    wire.SMFIR_DELRCPT: wire.SMFIF_DELRCPT,
    wire.SMFIR_CHGFROM: wire.SMFIF_CHGFROM,
    wire.SMFIR_QUARANTINE: wire.SMFIF_QUARANTINE,
}
