"""users: which mailbox an LMTP recipient address is (the userdb step).

Mirrors Dovecot LMTP's userdb lookup of ``RCPT TO``: the address is looked
up as IMAP logins are (:class:`~pymta.auth.locate.MailboxLocator`'s order:
the passwd-file line's ``mail=``, its home, then ``virtual_mailbox_maps``
under ``virtual_mailbox_base``), so mail delivered over LMTP is the mail
POP3 and IMAP serve. An address with an extension (``alice+news@...``,
split at ``recipient_delimiter``) that is not a user itself is the user
without it; the extension is kept as Sieve's ``:detail``.

Unlike a login, a lookup that *fails* (an unreadable passwd-file, a table
error) is not "no such user": it raises :class:`LookupFailed`, which LMTP
answers with a 4xx so the client retries (Postfix: not found is not the
same as lookup failed).

Untrusted input: the address (a lookup key only). A table result that would
leave ``virtual_mailbox_base`` is treated as no mailbox. Writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pymta.address import split_address, split_extension
from pymta.auth.passwdfile import PasswdFile, PasswdFileError
from pymta.delivery.final import Mailbox
from pymta.quota.policy import user_rule
from pymta.tables.interface import TableError


class LookupFailed(Exception):
    """The userdb could not be read: try again later (4.3.0)."""


class RecipientDirectory:
    """Callable: address -> :class:`Mailbox` or None (no such user)."""

    def __init__(
        self,
        passwd: PasswdFile | None,
        virtual_mailbox_lookup: Callable[[str], str | None] | None,
        virtual_mailbox_base: str,
        delimiter: str = "",
    ) -> None:
        self._passwd = passwd
        self._lookup = virtual_mailbox_lookup
        self._base = virtual_mailbox_base
        self._delimiter = delimiter

    def __call__(self, address: str) -> Mailbox | None:
        address = address.lower()
        found = self._find(address, None)
        if found is not None or not self._delimiter:
            return found
        local, domain = split_address(address)
        user, extension = split_extension(local, self._delimiter)
        if extension is None:
            return None
        return self._find(f"{user}@{domain}" if domain else user, extension)

    def _find(self, user: str, detail: str | None) -> Mailbox | None:
        if self._passwd is not None:
            try:
                entry = self._passwd.lookup(user)
            except PasswdFileError as e:
                raise LookupFailed(str(e)) from e
            if entry is not None:
                maildir = entry.mail_location() or entry.home
                if maildir:
                    return Mailbox(
                        user, maildir, entry.home or maildir, detail, user_rule(entry.extra)
                    )
        if self._lookup is None or "@" not in user:
            return None
        try:
            value = self._lookup(user)
        except TableError as e:
            raise LookupFailed(str(e)) from e
        if not value or not value.strip().endswith("/"):
            return None
        base = self._base or "/"
        path = os.path.normpath(os.path.join(base, value.strip().lstrip("/")))
        root = os.path.normpath(base)
        if path == root or not path.startswith(root.rstrip("/") + "/"):
            return None
        rule = None
        if self._passwd is not None:
            try:
                entry = self._passwd.lookup(user)
            except PasswdFileError:
                entry = None
            if entry is not None:
                rule = user_rule(entry.extra)
        return Mailbox(user, path, path, detail, rule)
