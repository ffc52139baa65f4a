"""What smtpd knows about one SMTP session and its current mail transaction.

Read by the restrictions and by the hand-off to cleanup, whose envelope
the session builds (:meth:`Session.envelope`: the sender, the recipients
with their DSN parameters, and the attributes that Received, the log and
the DSN code read). Every field that came from the network (helo_name,
sender, recipients) is untrusted text that already passed address syntax
checks. Nothing here logs or writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymta.tls_ccert import ClientCert

from pymta.queue.model import Envelope, Recipient

__all__ = ["Session"]


@dataclass
class Session:
    """One connection: the client, its greeting, TLS/SASL state, the transaction."""

    client_address: str
    client_port: int = 0
    client_name: str = "unknown"
    # Postfix's peer name states (pymta.smtpd.peername): ok, perm or temp;
    # reverse_client_name is the unverified PTR name.
    client_name_status: str = "perm"
    reverse_client_name: str = "unknown"
    reverse_client_name_status: str = "perm"
    helo_name: str = ""
    esmtp: bool = False
    tls: str = ""
    #: The TLS client certificate, when smtpd asked for one and got one.
    ccert: ClientCert | None = None
    sasl_username: str = ""
    sasl_method: str = ""
    # The current transaction: sender is None until MAIL succeeds.
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    smtputf8: bool = False
    body: str = ""
    declared_size: int = 0
    # RFC 3461 DSN parameters: RET and ENVID of MAIL, (NOTIFY, ORCPT) per
    # accepted recipient, parallel to ``recipients``.
    dsn_ret: str = ""
    dsn_envid: str = ""
    dsn_recipients: list[tuple[str | None, str | None]] = field(default_factory=list)

    @property
    def client(self) -> str:
        """``name[address]``, as Postfix logs the client."""
        return f"{self.client_name}[{self.client_address}]"

    @property
    def protocol(self) -> str:
        """The RFC 3848 ``with`` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
        if not self.esmtp:
            return "SMTP"
        return "ESMTP" + ("S" if self.tls else "") + ("A" if self.sasl_username else "")

    @property
    def log_protocol(self) -> str:
        """``proto=`` in Postfix's reject lines: SMTP or ESMTP."""
        return "ESMTP" if self.esmtp else "SMTP"

    def envelope(self, arrival_time: float, sasl_header: bool = False) -> Envelope:
        """The current transaction as cleanup takes it. ``sasl_header``:
        smtpd_sasl_authenticated_header (Received names the login)."""
        attributes = {
            "client_name": self.client_name,
            "client_address": self.client_address,
            "client_port": str(self.client_port),
            "helo_name": self.helo_name,
            "protocol": self.protocol,
        }
        if self.tls:
            attributes["tls"] = self.tls
        if self.sasl_username:
            attributes["sasl_username"] = self.sasl_username
            attributes["sasl_method"] = self.sasl_method
            if sasl_header:
                attributes["sasl_header"] = "yes"
        if self.smtputf8:
            attributes["smtputf8"] = "yes"
        if self.body:
            attributes["body"] = self.body
        if self.dsn_ret:
            attributes["ret"] = self.dsn_ret
        if self.dsn_envid:
            attributes["envid"] = self.dsn_envid
        dsn = self.dsn_recipients
        if len(dsn) != len(self.recipients):
            dsn = [(None, None)] * len(self.recipients)
        recipients = [
            Recipient(address=r, original=r, orcpt=orcpt, notify=notify)
            for r, (notify, orcpt) in zip(self.recipients, dsn, strict=True)
        ]
        return Envelope(self.sender or "", recipients, arrival_time, attributes)

    def reset_transaction(self) -> None:
        self.sender = None
        self.recipients = []
        self.smtputf8 = False
        self.body = ""
        self.declared_size = 0
        self.dsn_ret = ""
        self.dsn_envid = ""
        self.dsn_recipients = []

    def forget_greeting(self) -> None:
        """After STARTTLS (RFC 3207 section 4.2): back to the state before
        EHLO, a login included (Postfix resets SASL there too)."""
        self.reset_transaction()
        self.helo_name = ""
        self.esmtp = False
        self.sasl_username = ""
        self.sasl_method = ""
