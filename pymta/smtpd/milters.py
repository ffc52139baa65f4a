"""milters: smtpd's side of smtpd_milters — each SMTP stage asks the milters.

Mirrors Postfix's smtpd_milter.c and the milter calls in smtpd.c. One
:class:`SmtpdMilters` per SMTP session keeps the session's milter
connections (pymta.milter) and the macros Postfix sends: ``j``, ``_``,
``v``, ``{daemon_name}``, ``{daemon_addr}``, ``{daemon_port}``,
``{client_addr}``, ``{client_port}``, ``{client_name}``, ``{client_ptr}``,
``{tls_version}``, ``{cipher}``, ``{cipher_bits}``, ``{auth_type}``,
``{auth_authen}``, ``{mail_addr}``, ``{mail_mailer}``, ``{mail_host}``,
``{rcpt_addr}``, ``{rcpt_mailer}``, ``{rcpt_host}`` (the transport and
next hop trivial-rewrite resolves the address to, as Postfix's
resolve_clnt gives them), and ``i`` (the queue
id, known from the end of the message on: pymta gives the queue id when
cleanup takes the message, not at MAIL FROM as Postfix does).

:func:`then_milter` chains a stage after smtpd's own restriction: the
milters are asked only about what the restrictions let through, and
their refusal becomes smtpd's reply like a restriction's. The content
goes to the milters from cleanup (pymta.cleanup.milters). Untrusted input:
the milters' replies (checked by pymta.milter). Logs milter warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from pymta.maillog import maillog
from pymta.milter.chain import Milters
from pymta.milter.config import MilterClients
from pymta.milter.session import Verdict, split_reply
from pymta.rewrite.interface import Resolution
from pymta.smtpd.restrictions import Outcome, Reject
from pymta.smtpd.session import Session


def to_reject(verdict: Verdict) -> Reject | None:
    """A milter's refusal as smtpd's Reject (None: go on)."""
    if not verdict.refused:
        return None
    default = "5.7.1" if verdict.reply.startswith("5") else "4.7.1"
    code, status, text = split_reply(verdict.reply, default)
    return Reject(code, status, text)


def then_milter(outcome: Outcome, ask: Callable[[], Deferred[Verdict]] | None) -> Outcome:
    """smtpd's restriction answer, then, when it lets the command through,
    the milters' (``ask`` None: no milters)."""
    if ask is None or isinstance(outcome, Reject):
        return outcome
    if outcome is None:
        return ask().addCallback(to_reject)

    def after(reject: Reject | None) -> Outcome:
        return reject if reject is not None else ask().addCallback(to_reject)

    return outcome.addCallback(after)


def _tls_macros(transport: Any) -> dict[str, str]:
    try:
        conn = transport.getHandle()
        version = conn.get_protocol_version_name()
        cipher = conn.get_cipher_name()
        bits = conn.get_cipher_bits()
    except Exception:
        return {}
    if not cipher:
        return {}
    return {"{tls_version}": str(version), "{cipher}": str(cipher), "{cipher_bits}": str(bits)}


class SmtpdMilters:
    """The milters of one SMTP session (see the module docstring)."""

    def __init__(
        self,
        clients: MilterClients,
        service_name: str,
        resolve: Callable[[str], Resolution] | None = None,
    ) -> None:
        self._service = service_name
        self._resolve = resolve
        self.chain: Milters = clients.session(self._warn)

    def _resolved(self, prefix: str, address: str) -> None:
        """{PREFIX_mailer} and {PREFIX_host} of ``address``: where it would
        be delivered (none for the null sender, or when it cannot be told)."""
        macros = self.chain.macros
        macros.pop(f"{{{prefix}_mailer}}", None)
        macros.pop(f"{{{prefix}_host}}", None)
        if self._resolve is None or not address:
            return
        try:
            where = self._resolve(address)
        except Exception:
            return  # a table that fails now: the restrictions already said so
        macros[f"{{{prefix}_mailer}}"] = where.transport
        macros[f"{{{prefix}_host}}"] = where.nexthop

    def _warn(self, line: str) -> None:
        qid = self.chain.macros.get("i") or "NOQUEUE"
        maillog(self._service, f"{qid}: {line}", LogLevel.warn)

    def connect(self, session: Session, transport: Any) -> Deferred[Verdict]:
        host: Any = getattr(transport, "getHost", lambda: None)()
        macros = self.chain.macros
        macros.update(
            {
                "_": f"{session.client_name} [{session.client_address}]",
                "{client_addr}": session.client_address,
                "{client_port}": str(session.client_port),
                "{client_name}": session.client_name,
                "{client_ptr}": session.reverse_client_name,
            }
        )
        if host is not None and hasattr(host, "host"):
            macros["{daemon_addr}"] = str(host.host)
            macros["{daemon_port}"] = str(getattr(host, "port", ""))
        name = session.client_name if session.client_name != "unknown" else ""
        return self.chain.connect(
            name or f"[{session.client_address}]", session.client_address, session.client_port
        )

    def helo(self, session: Session, transport: Any) -> Deferred[Verdict]:
        self.chain.abort()  # HELO/EHLO ends any transaction (RFC 5321 4.1.4)
        self.chain.macros.update(_tls_macros(transport))
        return self.chain.helo(session.helo_name)

    def mail(self, session: Session, sender: str, args: list[str]) -> Deferred[Verdict]:
        macros = self.chain.macros
        macros.pop("i", None)
        macros["{mail_addr}"] = sender
        self._resolved("mail", sender)
        for key in ("{auth_type}", "{auth_authen}"):
            macros.pop(key, None)
        if session.sasl_username:
            macros["{auth_type}"] = session.sasl_method
            macros["{auth_authen}"] = session.sasl_username
        return self.chain.mail(sender, args)

    def rcpt(self, recipient: str, args: list[str]) -> Deferred[Verdict]:
        self.chain.macros["{rcpt_addr}"] = recipient
        self._resolved("rcpt", recipient)
        return self.chain.rcpt(recipient, args)

    def data(self) -> Deferred[Verdict]:
        return self.chain.data()

    def quit(self) -> None:
        self.chain.quit()
