"""folder: deliver one message into a folder of a user's Maildir++ mailbox.

The one place where final delivery (LMTP, and Sieve's ``keep`` /
``fileinto`` in the virtual agent and LMTP) writes a message into a
mailbox folder. Mirrors Dovecot's ``mailbox_save`` as LMTP and the LDA use
it: INBOX is the Maildir root, the folder ``A/B`` the directory ``.A.B``
(:func:`pymta.mailstore.names.folder_dirname`, modified UTF-7 per part)
marked with an empty ``maildirfolder`` file (Maildir++). The write itself
is the mail store's delivery API
(:class:`~pymta.mailstore.interface.IMailDelivery`): tmp, group-commit
sync, rename into new/ (or cur/ with flags), and only then does the
returned Deferred fire.

Untrusted input: the folder name (from a Sieve script); it is checked by
:func:`~pymta.mailstore.names.validate_folder_name` and refused with
:class:`~pymta.mailstore.interface.InvalidFolderName`. A folder that does
not exist is :class:`NoSuchFolder` unless ``create`` (Sieve's
``:create``, RFC 5490 section 3.2). May write: the folder's directories,
its ``maildirfolder`` file and one message file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

from twisted.internet.defer import Deferred, fail

from pymta.mailstore.interface import IMailDelivery, InvalidFolderName, NoSuchFolder
from pymta.mailstore.names import folder_dirname, is_inbox, validate_folder_name
from pymta.queue.reference import IMessageContent

__all__ = ["InvalidFolderName", "NoSuchFolder", "deliver_to_folder", "folder_path"]

#: Maildir++: a folder directory holds this empty file (Courier, Dovecot).
MAILDIRFOLDER = "maildirfolder"


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


def deliver_to_folder(
    writer: IMailDelivery,
    maildir: str,
    folder: str,
    prefix: bytes,
    message: IMessageContent,
    *,
    create: bool = False,
    flags: Collection[str] = (),
    mark: Callable[[], None] | None = None,
) -> Deferred[str]:
    """Write ``prefix`` + ``message`` into ``folder`` of the mailbox at
    ``maildir``; fires with the new file's path once it is durable.

    ``flags`` are IMAP flags and keywords (Sieve's imap4flags: ``\\Seen``,
    ``$Label1``; the store drops what is neither a system flag nor an atom);
    ``mark`` runs right after the rename (the queue file's done mark).
    Errbacks: InvalidFolderName, NoSuchFolder (without ``create``), OSError.
    """
    try:
        folder_path(maildir, folder)
    except InvalidFolderName:
        return fail()
    # The store makes a missing folder (with ``create``) complete: cur/ new/
    # tmp/ and the maildirfolder file, renamed into place.
    return writer.deliver(maildir, prefix, message, mark, folder=folder, flags=flags, create=create)
