"""Credentials that carry the client's address, for throttling and logs.

twisted.cred credentials (IUsernamePassword, IUsernameHashedPassword) that
also provide :class:`IClientCredentials`: what every pymta protocol fills
in, ``client_address`` (the remote IP, for the per-address failure delay),
``secured`` (the session is under TLS) and ``service`` (``pop3``,
``imap``, ``smtp``, for logs). Checkers adapt to it
(``IClientCredentials(credentials, None)``), so plain Twisted credentials
work too (without the per-address delay).

Untrusted input: user name, password and APOP digest come from the network;
they are only compared here, never logged in full (passwords never).
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from zope.interface import Attribute, Interface, implementer


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class IClientCredentials(Interface):
    """Credentials that say where the login comes from."""

    client_address = Attribute("The client's IP address (str), or None when unknown.")
    secured = Attribute("bool: the session is under TLS (Dovecot's ``secured``).")
    service = Attribute("The protocol asking (``pop3``, ``imap``, ``smtp``), for logs.")


@implementer(IUsernamePassword, IClientCredentials)
class PasswordCredentials:
    """A user name and a clear-text password (POP3 USER/PASS, SASL PLAIN)."""

    def __init__(
        self,
        username: str,
        password: str,
        client_address: str | None = None,
        service: str = "",
        secured: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.client_address = client_address
        self.service = service
        #: The session is under TLS (Dovecot's ``secured``).
        self.secured = secured

    def checkPassword(self, password: str | bytes) -> bool:
        return hmac.compare_digest(self.password.encode("utf-8"), _text(password).encode("utf-8"))


@implementer(IUsernameHashedPassword, IClientCredentials)
class APOPCredentials:
    """RFC 1939 APOP: MD5 of the banner timestamp and the shared secret.

    The checker calls checkPassword with the stored clear-text secret; only
    PLAIN/CLEAR passwords can answer an APOP challenge.
    """

    def __init__(
        self,
        username: str,
        timestamp: bytes,
        digest: str,
        client_address: str | None = None,
        service: str = "",
        secured: bool = False,
    ) -> None:
        self.username = username
        self.timestamp = timestamp
        self.digest = digest.lower()
        self.client_address = client_address
        self.service = service
        self.secured = secured

    def checkPassword(self, password: str | bytes) -> bool:
        secret = password if isinstance(password, bytes) else password.encode("utf-8")
        expected = hashlib.md5(self.timestamp + secret).hexdigest()
        return hmac.compare_digest(expected.encode("ascii"), self.digest.encode("ascii", "replace"))
