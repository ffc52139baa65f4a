"""smtp_proto: the SMTP client's conversation — handshake, one mail transaction, RSET, QUIT.

Mirrors Postfix's smtp_proto.c over a connected :class:`~pymta.delivery.smtp_chat.SMTPChat`:

- :func:`handshake`: the 220 greeting (4xx, or 5xx with
  ``smtp_skip_5xx_greeting``: try the next host), EHLO with HELO fallback
  on 5xx (``smtp_never_send_ehlo``; a peer that names itself with our
  ``myhostname`` is a mail loop, 5.4.6), STARTTLS per the TLS policy, EHLO
  again over TLS, then AUTH PLAIN/LOGIN when credentials are configured.
- :func:`transaction`: one message to some recipients. Refuses before
  sending when the peer's SIZE is smaller than the message (5.3.4) or
  when the message needs SMTPUTF8 and the peer lacks it (5.6.7). MAIL
  carries SIZE, BODY=8BITMIME, SMTPUTF8, and RET/ENVID when the peer
  offers DSN; RCPT carries NOTIFY/ORCPT (RFC 3461). With PIPELINING,
  MAIL, every RCPT and DATA go in one write (RFC 2920) and the replies are
  read in order; otherwise one command at a time. Returns one
  :class:`~pymta.delivery.interface.RecipientStatus` per recipient: the
  final reply for those the peer accepted, the RCPT (or MAIL, or DATA)
  reply for the others; a broken session defers whoever has no answer.
- :func:`reset` (RSET before a cached connection is reused) and
  :func:`quit`.

With ``lmtp`` set (RFC 2033, Postfix's lmtp): LHLO instead of EHLO (no
HELO fallback, no own-hostname loop check) and one final reply per
accepted recipient after the data.

Every reply is untrusted (parsed by smtp_reply, shown, never executed).
Logs the TLS line Postfix logs (``Untrusted TLS connection established
to ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults

from pymta.delivery.dane import dane_verified, fingerprint_verified, names_verified
from pymta.delivery.interface import DeliveryRecipient, RecipientStatus
from pymta.delivery.smtp_chat import SessionError, SMTPChat
from pymta.delivery.smtp_reply import Reply, said
from pymta.delivery.smtp_sasl import SASLCredentials, b64, plain_response, usable_mechanisms
from pymta.delivery.smtp_tls import ClientIdentity, TLSPolicy, client_context
from pymta.maillog import maillog
from pymta.queue.model import Envelope
from pymta.queue.reference import IMessageContent
from pymta.tls import describe
from pymta.tls_grades import TLSSettings


@dataclass
class SessionSettings:
    """What one session needs from the configuration (built by the agent)."""

    helo_name: str
    timeouts: dict[str, float]
    tls: TLSPolicy = field(default_factory=lambda: TLSPolicy("may"))
    trust: Any = None
    #: smtp_tls_* (False) and smtp_tls_mandatory_* (True) protocols and ciphers.
    tls_grades: dict[bool, TLSSettings] | None = None
    sasl: SASLCredentials | None = None
    sasl_options: list[str] = field(default_factory=lambda: ["noplaintext", "noanonymous"])
    sasl_tls_options: list[str] = field(default_factory=lambda: ["noplaintext", "noanonymous"])
    sasl_cleartext: bool = False
    never_ehlo: bool = False
    skip_5xx_greeting: bool = True
    service: str = "smtp"
    myhostname: str = ""
    lmtp: bool = False  # RFC 2033: LHLO, and one final reply per recipient
    fingerprint_digest: str = "sha256"  # smtp_tls_fingerprint_digest
    identity: ClientIdentity | None = None  # smtp_tls_cert_file / chain_files


@dataclass
class Session:
    """An established session: who, what the peer offers, TLS and AUTH state."""

    chat: SMTPChat
    relay: str
    features: dict[str, str] = field(default_factory=dict)
    tls: str = ""
    authenticated: str = ""
    messages: int = 0
    opened: float = 0.0


def timeout(settings: SessionSettings, stage: str) -> float:
    return settings.timeouts.get(stage, 300.0)


async def _reply(chat: SMTPChat, stage: str, seconds: float) -> Reply:
    d: Deferred[Reply] = chat.expect(stage, seconds)
    return await d


async def handshake(chat: SMTPChat, settings: SessionSettings, tls_name: str) -> Session:
    """Greeting, EHLO/HELO, STARTTLS, AUTH; SessionError when it fails."""
    relay = chat.relay
    helo_t = timeout(settings, "helo")
    greeting = await _reply(chat, "receiving the initial server greeting", helo_t)
    if greeting.code != 220:
        permanent = greeting.code >= 500 and not settings.skip_5xx_greeting
        dsn = greeting.dsn if permanent or greeting.code < 500 else "4" + greeting.dsn[1:]
        raise SessionError(
            dsn,
            f"host {relay} refused to talk to me: {greeting.text}",
            greeting.text,
            next_host=not permanent,
        )
    session = Session(chat, relay)
    session.features = await _hello(chat, settings)
    _check_loop(chat, settings)
    policy = settings.tls
    if policy.level != "none" and "STARTTLS" in session.features:
        chat.send("STARTTLS")
        reply = await _reply(chat, "receiving the STARTTLS response", helo_t)
        if reply.code == 220:
            chat.tls_pending = True
            transport: Any = chat.transport
            grades = settings.tls_grades[policy.required] if settings.tls_grades else None
            transport.startTLS(
                client_context(policy, tls_name, settings.trust, grades, settings.identity)
            )
            session.features = await _hello(chat, settings, timeout(settings, "starttls"))
            session.tls = describe(chat.transport) or "TLS"
            matched = _matched(chat, policy, settings) if policy.verified else True
            trust = "Verified" if policy.verified and matched else "Untrusted"
            maillog(
                settings.service, f"{trust} TLS connection established to {relay}: {session.tls}"
            )
            if not matched:
                # Postfix: the session is used for nothing, the next MX is
                # tried, and the mail defers when none verifies.
                raise SessionError("4.7.5", f"Server certificate not verified: {relay}")
        elif policy.required:
            raise SessionError(
                "4.7.4",
                f"TLS is required, but host {relay} refused to start TLS: {reply.text}",
                reply.text,
            )
    elif policy.required:
        raise SessionError("4.7.4", f"TLS is required, but was not offered by host {relay}")
    if settings.sasl is not None and "AUTH" in session.features:
        await _authenticate(session, settings)
    return session


def _matched(chat: SMTPChat, policy: TLSPolicy, settings: SessionSettings) -> bool:
    """The chain the server presented, judged by :mod:`pymta.delivery.dane`:
    its names (verify, secure: OpenSSL checked the chain), its digests
    (fingerprint) or its TLSA records (dane)."""
    try:
        transport: Any = chat.transport
        chain = transport.getHandle().get_peer_cert_chain() or []
    except Exception:
        return False
    if policy.level == "fingerprint":
        return fingerprint_verified(policy, chain, settings.fingerprint_digest)
    if policy.level == "dane":
        return dane_verified(policy, chain)
    return names_verified(policy, chain)


def _check_loop(chat: SMTPChat, settings: SessionSettings) -> None:
    """Postfix's smtp_helo: a peer that calls itself by our name is us
    (not for LMTP, whose server is usually this very host)."""
    name = chat.peer_name.lower()
    if settings.lmtp:
        return
    if settings.myhostname and name == settings.myhostname.lower():
        raise SessionError(
            "5.4.6",
            f"host {chat.relay} greeted me with my own hostname {settings.myhostname}",
            next_host=False,
        )


async def _hello(
    chat: SMTPChat, settings: SessionSettings, seconds: float | None = None
) -> dict[str, str]:
    relay = chat.relay
    seconds = timeout(settings, "helo") if seconds is None else seconds
    if settings.lmtp:
        chat.send(f"LHLO {settings.helo_name}")
        reply = await _reply(chat, "performing the LHLO handshake", seconds)
        if reply.code != 250:
            raise SessionError(reply.dsn, said(relay, reply, "LHLO"), reply.text)
        chat.peer_name = (reply.lines[0].split() or [""])[0]
        return reply.keywords
    if not settings.never_ehlo:
        chat.send(f"EHLO {settings.helo_name}")
        reply = await _reply(chat, "performing the EHLO handshake", seconds)
        if reply.code == 250:
            chat.peer_name = (reply.lines[0].split() or [""])[0]
            return reply.keywords
        if reply.code < 500:
            raise SessionError(reply.dsn, said(relay, reply, "EHLO"), reply.text)
    chat.send(f"HELO {settings.helo_name}")
    reply = await _reply(chat, "performing the HELO handshake", seconds)
    if reply.code != 250:
        raise SessionError(
            reply.dsn, said(relay, reply, "HELO"), reply.text, next_host=reply.code < 500
        )
    chat.peer_name = (reply.lines[0].split() or [""])[0] if reply.lines else ""
    return {}


async def _authenticate(session: Session, settings: SessionSettings) -> None:
    chat, relay = session.chat, session.relay
    creds = settings.sasl
    assert creds is not None
    options = settings.sasl_tls_options if session.tls else settings.sasl_options
    cleartext_ok = bool(session.tls) or settings.sasl_cleartext
    mechanisms = usable_mechanisms(session.features.get("AUTH", ""), options, cleartext_ok)
    if not mechanisms:
        raise SessionError(
            "4.7.0",
            f"SASL authentication failed; cannot authenticate to server {relay}: "
            "no mechanism available",
        )
    seconds = timeout(settings, "helo")
    stage = "sending AUTH"
    if mechanisms[0] == "PLAIN":
        chat.send(f"AUTH PLAIN {plain_response(creds)}")
        reply = await _reply(chat, stage, seconds)
    else:
        chat.send("AUTH LOGIN")
        reply = await _reply(chat, stage, seconds)
        for answer in (creds.username, creds.password):
            if reply.code != 334:
                break
            chat.send(b64(answer))
            reply = await _reply(chat, stage, seconds)
    if reply.code != 235:
        # Postfix's smtp_sasl_auth_soft_bounce: an AUTH failure defers.
        raise SessionError(
            "4" + reply.dsn[1:],
            f"SASL authentication failed; server {relay} said: {reply.text}",
            reply.text,
            next_host=True,
        )
    session.authenticated = creds.username


def needs_smtputf8(envelope: Envelope, recipients: list[DeliveryRecipient]) -> bool:
    if envelope.attributes.get("smtputf8", "").lower() in ("1", "yes", "true", "y"):
        return True
    return not envelope.sender.isascii() or any(not r.address.isascii() for r in recipients)


def xtext(value: str) -> str:
    """RFC 3461 section 4: ``+XX`` for '+', '=', and bytes outside ! .. ~."""
    out = []
    for byte in value.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 33 <= byte <= 126 and ch not in "+=" else f"+{byte:02X}")
    return "".join(out)


def _orcpt(value: str) -> str:
    kind, sep, address = value.partition(";")
    if not sep:
        kind, address = "rfc822", value
    return f"{kind};{xtext(address)}"


def mail_command(
    envelope: Envelope, features: dict[str, str], size: int, eight_bit: bool, utf8: bool
) -> str:
    command = f"MAIL FROM:<{envelope.sender}>"
    if "SIZE" in features:
        command += f" SIZE={size}"
    body = envelope.attributes.get("body", "").upper()
    if "8BITMIME" in features and (body == "8BITMIME" or (body != "7BIT" and eight_bit)):
        command += " BODY=8BITMIME"
    if utf8:
        command += " SMTPUTF8"
    if "DSN" in features:
        ret = envelope.attributes.get("ret", "").upper()
        if ret in ("FULL", "HDRS"):
            command += f" RET={ret}"
        envid = envelope.attributes.get("envid", "")
        if envid:
            command += f" ENVID={xtext(envid)}"
    return command


def rcpt_command(envelope: Envelope, recipient: DeliveryRecipient, features: dict[str, str]) -> str:
    command = f"RCPT TO:<{recipient.address}>"
    if "DSN" in features and 0 <= recipient.index < len(envelope.recipients):
        queued = envelope.recipients[recipient.index]
        if queued.notify:
            command += f" NOTIFY={queued.notify.upper()}"
        if queued.orcpt:
            command += f" ORCPT={_orcpt(queued.orcpt)}"
    return command


async def transaction(
    session: Session,
    settings: SessionSettings,
    envelope: Envelope,
    content: IMessageContent,
    survey: tuple[int, bool],
    recipients: list[DeliveryRecipient],
) -> list[RecipientStatus]:
    """One message over an established session (see module doc); ``survey``
    is the content's (wire size, has 8-bit bytes), from
    :func:`~pymta.delivery.smtp_content.survey`."""
    relay, features = session.relay, session.features
    session.messages += 1

    def every(status: str, reason: str, diagnostic: str = "") -> list[RecipientStatus]:
        return [RecipientStatus(r.index, status, reason, relay, diagnostic) for r in recipients]

    utf8 = needs_smtputf8(envelope, recipients)
    if utf8 and "SMTPUTF8" not in features:
        return every("5.6.7", f"SMTPUTF8 is required, but was not offered by host {relay}")
    size, eight_bit = survey
    limit_text = features.get("SIZE", "")
    if limit_text.isdigit() and 0 < int(limit_text) < size:
        return every(
            "5.3.4", f"message size {size} exceeds size limit {limit_text} of server {relay}"
        )
    results: dict[int, RecipientStatus] = {}
    try:
        await _exchange(
            session, settings, envelope, content, recipients, size, eight_bit, utf8, results
        )
    except SessionError as e:
        for r in recipients:
            if r.index not in results:
                results[r.index] = RecipientStatus(r.index, e.dsn, e.reason, relay, e.diagnostic)
    return [results[r.index] for r in recipients]


async def _exchange(
    session: Session,
    settings: SessionSettings,
    envelope: Envelope,
    content: IMessageContent,
    recipients: list[DeliveryRecipient],
    size: int,
    eight_bit: bool,
    utf8: bool,
    results: dict[int, RecipientStatus],
) -> None:
    chat, relay, features = session.chat, session.relay, session.features
    mail = mail_command(envelope, features, size, eight_bit, utf8)
    rcpts = [rcpt_command(envelope, r, features) for r in recipients]
    t_mail, t_rcpt = timeout(settings, "mail"), timeout(settings, "rcpt")
    t_data = timeout(settings, "data_init")
    pipelining = "PIPELINING" in features

    def fail_all(reply: Reply, command: str, who: list[DeliveryRecipient]) -> None:
        for r in who:
            results[r.index] = RecipientStatus(
                r.index, reply.dsn, said(relay, reply, command), relay, reply.text
            )

    if pipelining:
        chat.send(mail, *rcpts, "DATA")
        waiting = [chat.expect("sending MAIL FROM", t_mail)]
        waiting.extend(chat.expect("sending RCPT TO", t_rcpt) for _ in rcpts)
        waiting.append(chat.expect("sending DATA command", t_data))
        try:
            replies = await gatherResults(waiting, consumeErrors=True)
        except FirstError as e:
            cause = e.subFailure.value
            raise (cause if isinstance(cause, BaseException) else e) from None
        mail_reply, rcpt_replies = replies[0], replies[1:-1]
        data_reply: Reply | None = replies[-1]
    else:
        chat.send(mail)
        mail_reply = await _reply(chat, "sending MAIL FROM", t_mail)
        rcpt_replies = []
        data_reply = None
        if mail_reply.positive:
            for command in rcpts:
                chat.send(command)
                rcpt_replies.append(await _reply(chat, "sending RCPT TO", t_rcpt))
    if not mail_reply.positive:
        fail_all(mail_reply, "MAIL FROM", recipients)
        if data_reply is not None and data_reply.code == 354:
            await _abort_data(chat, settings)
        return
    accepted: list[DeliveryRecipient] = []
    for r, reply in zip(recipients, rcpt_replies, strict=True):
        if reply.positive:
            accepted.append(r)
        else:
            fail_all(reply, "RCPT TO", [r])
    if not pipelining and accepted:
        chat.send("DATA")
        data_reply = await _reply(chat, "sending DATA command", t_data)
    if not accepted:
        if data_reply is not None and data_reply.code == 354:
            await _abort_data(chat, settings)
        return
    assert data_reply is not None
    if data_reply.code != 354:
        fail_all(data_reply, "DATA", accepted)
        return
    await chat.send_message(content, "sending message body", timeout(settings, "data_xfer"))
    stage = "sending end of data -- message may be sent more than once"
    t_done = timeout(settings, "data_done")
    if settings.lmtp:
        # RFC 2033 section 4.2: one reply per accepted recipient, in order.
        for r in accepted:
            reply = await _reply(chat, stage, t_done)
            text = reply.text if reply.positive else said(relay, reply, "end of DATA")
            results[r.index] = RecipientStatus(
                r.index, reply.dsn, text, relay, "" if reply.positive else reply.text
            )
        return
    final = await _reply(chat, stage, t_done)
    for r in accepted:
        if final.positive:
            results[r.index] = RecipientStatus(r.index, final.dsn, final.text, relay)
        else:
            results[r.index] = RecipientStatus(
                r.index, final.dsn, said(relay, final, "end of DATA"), relay, final.text
            )


async def _abort_data(chat: SMTPChat, settings: SessionSettings) -> None:
    """A 354 with no valid recipient (pipelining): end the empty message."""
    await chat.send_data(b".\r\n", "sending message body", timeout(settings, "data_xfer"))
    await _reply(chat, "sending end of data", timeout(settings, "data_done"))


async def reset(session: Session, settings: SessionSettings) -> bool:
    """RSET before reuse; False when the connection is no longer usable."""
    if not session.chat.connected or session.chat.failed:
        return False
    session.chat.send("RSET")
    try:
        reply = await _reply(session.chat, "sending RSET", timeout(settings, "rset"))
    except SessionError:
        return False
    return reply.code == 250


def quit(session: Session, settings: SessionSettings) -> None:
    """Send QUIT and close once it is answered (or its timeout passes)."""
    chat = session.chat
    if not chat.connected or chat.failed:
        chat.abort()
        return
    chat.send("QUIT")
    d = chat.expect("sending QUIT", timeout(settings, "quit"))
    d.addBoth(lambda _: chat.close())
