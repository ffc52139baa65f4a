"""folder: where a folder of a user's Maildir++ mailbox is, and whether it exists.

Sieve's ``mailbox`` test (``mailboxexists``) asks here. INBOX is the
Maildir root, the folder ``A/B`` the directory ``.A.B``
(:func:`pymta.mailstore.names.folder_dirname`, modified UTF-7 per part).
Writing into a folder is the mail store's delivery API
(:class:`~pymta.mailstore.interface.IMailDelivery`), which final delivery
calls directly.

Untrusted input: the folder name (from a Sieve script); it is checked by
:func:`~pymta.mailstore.names.validate_folder_name`. Reads the directory
only; writes nothing.
"""

from __future__ import annotations

import os

from pymta.mailstore.interface import InvalidFolderName
from pymta.mailstore.names import folder_dirname, is_inbox, validate_folder_name

__all__ = ["folder_exists", "folder_path"]


def folder_path(maildir: str, folder: str) -> str:
    """The Maildir directory of ``folder`` in the mailbox rooted at ``maildir``
    (InvalidFolderName for a name no client could create)."""
    validate_folder_name(folder)
    return os.path.join(maildir, folder_dirname(folder))


def folder_exists(maildir: str, folder: str) -> bool:
    """True when the folder exists (INBOX always does); blocking stat."""
    if is_inbox(folder):
        return True
    try:
        return os.path.isdir(os.path.join(folder_path(maildir, folder), "cur"))
    except InvalidFolderName:
        return False
