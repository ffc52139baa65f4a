"""mailbox: one recipient's mailbox as final delivery sees it.

What the userdb (pymta.lmtpd.users, the virtual maps) says of a recipient,
for final delivery (pymta.delivery.final), Sieve (pymta.sieve.filter) and
ManageSieve: a plain value, so that each of them can name it without
importing the others.

Untrusted input: none (a value). Writes: nothing. Logs: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mailbox:
    """A user's mailbox as the userdb gives it: the login name, the Maildir
    root, the home directory (where Sieve scripts live; "" when none) and
    the address's extension (``user+ext@``: Sieve's ``:detail``)."""

    user: str
    maildir: str
    home: str = ""
    detail: str | None = None
    #: The user's own quota rule from the userdb (None: the default).
    quota_rule: str | None = None
