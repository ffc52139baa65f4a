"""What smtpd needs to know about destinations: the small seam to trivial-rewrite.

smtpd asks two questions of the rewrite engine (pymta.rewrite's Resolver
implements them): which address class a domain belongs to, and whether an
address is a listed recipient. Tests fake it. Nothing here logs or writes.
"""

from __future__ import annotations

from typing import Protocol

from pymta.rewrite.interface import Resolution

__all__ = ["ADDRESS_CLASSES", "OURS", "SmtpdResolver"]

#: Postfix's address classes (ADDRESS_CLASS_README).
ADDRESS_CLASSES = ("local", "virtual_alias", "virtual_mailbox", "relay", "default")
#: The classes this server accepts mail for from anyone.
OURS = frozenset(("local", "virtual_alias", "virtual_mailbox", "relay"))


class SmtpdResolver(Protocol):
    def address_class(self, domain: str) -> str:
        """One of ADDRESS_CLASSES for a (normalized) domain."""

    def is_listed_recipient(self, address: str) -> bool:
        """True when the address has a mailbox, an alias or a relay entry.

        May raise pymta.tables.interface.TableError (the check then defers).
        """

    def resolve(self, address: str) -> Resolution:
        """Where the address would be delivered (trivial-rewrite's resolve:
        the milter macros {mail_mailer}/{rcpt_host} ... tell milters)."""
