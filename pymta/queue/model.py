"""The envelope of a queued message: sender, recipients and their state.

Shared by smtpd, cleanup, the queue store, qmgr, delivery and bounce. The
message content travels beside it as bytes with LF line endings (the
canonical internal form; agents that speak SMTP convert to CRLF).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recipient:
    """One envelope recipient.

    ``address`` is the rewritten address qmgr delivers to; ``original`` the
    address as received (Postfix's orig_rcpt, shown in DSNs and in the log
    as orig_to=); ``orcpt``/``notify`` are the RFC 3461 DSN parameters.
    ``done`` is True once the recipient is delivered, bounced or discarded.
    """

    address: str
    original: str = ""
    orcpt: str | None = None
    notify: str | None = None
    done: bool = False


@dataclass
class Envelope:
    """Sender, recipients and attributes of one message.

    ``sender`` is "" for the null sender (<>). ``attributes`` holds what the
    receiving side learned (client_name, client_address, helo_name, protocol,
    sasl_username, tls, envid, ret, smtputf8, body) as strings.
    """

    sender: str
    recipients: list[Recipient]
    arrival_time: float = 0.0
    attributes: dict[str, str] = field(default_factory=dict)
