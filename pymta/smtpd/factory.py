"""The SMTP server factory: one per master.cf smtpd service.

Mirrors the per-service start-up of Postfix's smtpd: the settings every
session shares are read and checked once (pymta.smtpd.settings: a bad
value is a ConfigError at start), and every connection gets an
:class:`~pymta.smtpd.protocol.SMTPServerProtocol` reading them. The
session knows only the settings, not this factory, so the two modules do
not import each other. Nothing here writes; connections log.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from pymta.smtpd.protocol import SMTPServerProtocol
from pymta.smtpd.settings import SMTPServerSettings

__all__ = ["SMTPServerFactory"]


class SMTPServerFactory(SMTPServerSettings):
    """Builds SMTP sessions for one listener (constructor: SMTPServerSettings)."""

    protocol = SMTPServerProtocol

    def buildProtocol(self, addr: IAddress) -> SMTPServerProtocol:  # type: ignore[override]
        return SMTPServerProtocol(self)
