"""Where a user's Maildir is: passwd-file fields, else virtual_mailbox_maps.

Mirrors how Dovecot (userdb ``home`` / ``mail`` fields) and Postfix's virtual
agent (``virtual_mailbox_base`` + ``virtual_mailbox_maps``) agree on one
path, so the mail the virtual agent delivers is the mail POP3 and IMAP serve:

1. ``mail=maildir:PATH`` (or ``userdb_mail=``) in the passwd-file line;
2. the passwd-file ``home`` field: the Maildir is the home directory itself;
3. ``virtual_mailbox_maps`` looked up by the full address, the result taken
   under ``virtual_mailbox_base`` (a result ending in ``/`` is a Maildir, as
   for Postfix's virtual agent; one without is an mbox, which is not served).

Untrusted input: the user name (authenticated, but chosen by a client). A
table result that would leave ``virtual_mailbox_base`` (``..``) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pymta.auth.passwdfile import PasswdFile, PasswdFileError
from pymta.config import Config
from pymta.tables.interface import TableError


class MailboxLocator:
    """Callable: user -> Maildir path, or None when the user has none."""

    def __init__(
        self,
        passwd: PasswdFile | None,
        virtual_mailbox_lookup: Callable[[str], str | None] | None = None,
        virtual_mailbox_base: str = "",
    ) -> None:
        self._passwd = passwd
        self._lookup = virtual_mailbox_lookup
        self._base = virtual_mailbox_base

    def __call__(self, user: str) -> str | None:
        if self._passwd is not None:
            try:
                entry = self._passwd.lookup(user)
            except PasswdFileError:
                entry = None
            if entry is not None:
                location = entry.mail_location()
                if location:
                    return location
                if entry.home:
                    return entry.home
        if self._lookup is None or "@" not in user:
            return None
        try:
            value = self._lookup(user)
        except TableError:
            return None
        if not value or not value.endswith("/"):
            return None
        relative = value.strip()
        base = self._base or "/"
        path = os.path.normpath(os.path.join(base, relative.lstrip("/")))
        root = os.path.normpath(base)
        if path != root and not path.startswith(root.rstrip("/") + "/"):
            return None
        return path


def virtual_mailbox_lookup(config: Config) -> Callable[[str], str | None] | None:
    """A function address -> virtual_mailbox_maps value (Postfix's lookup
    order), or None without the parameter: the third source above, built
    once per pop3d/imapd service."""
    specs = config.get_list("virtual_mailbox_maps")
    if not specs:
        return None
    from pymta.tables.addrmaps import lookup_address
    from pymta.tables.maps import open_maps

    maps = open_maps(specs, config)
    delimiter = config.get("recipient_delimiter")

    def lookup(address: str) -> str | None:
        return lookup_address(maps, address, delimiter=delimiter, propagate_extension=False)

    return lookup
