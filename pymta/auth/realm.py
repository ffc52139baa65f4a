"""The mail realm: turns an authenticated user into each protocol's avatar.

Mirrors Dovecot's userdb step after passdb: the checker says who the user
is, the realm finds their mailbox (``mailbox_path_for``, usually a
:class:`~pymta.auth.locate.MailboxLocator`) and opens it in the mail store.
Avatars: :class:`~pymta.auth.interface.IMailAccount` (POP3, IMAP) and
:class:`~pymta.auth.interface.ISubmitIdentity` (SMTP AUTH).

Untrusted input: none directly (avatar ids come from a checker). A user
without a mailbox, or a store that fails to open it, is
:class:`~pymta.auth.errors.MailboxUnavailable` (POP3 answers
``-ERR [SYS/PERM]`` or ``[SYS/TEMP]``), never a crash. Opening a mailbox
creates it when missing (the store's rule), through the store's
asynchronous API (its threads: the directories may be made on the disk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.auth.errors import MailboxUnavailable
from pymta.auth.interface import IMailAccount, ISubmitIdentity
from pymta.mailstore.asyncstore import IAsyncMailStore, IAsyncUserMailbox
from pymta.mailstore.interface import IMailStore, IUserMailbox, MailStoreError


@implementer(IMailAccount)
class MailAccount:
    """A user's mailbox in the store: ``folders`` its asynchronous API,
    ``mailbox`` the synchronous one (IMAP commands not yet moved)."""

    def __init__(self, user: str, mailbox: IUserMailbox, folders: IAsyncUserMailbox) -> None:
        self.user = user
        self.mailbox = mailbox
        self.folders = folders


@implementer(ISubmitIdentity)
class SubmitIdentity:
    """An authenticated SMTP client."""

    def __init__(self, user: str) -> None:
        self.user = user


def _logout() -> None:
    """Nothing to release: sessions release their own folder locks."""


@implementer(IRealm)
class MailRealm:
    """Hands each protocol its avatar for an authenticated user."""

    def __init__(self, store: IMailStore, mailbox_path_for: Callable[[str], str | None]) -> None:
        self.store = store
        self.mailbox_path_for = mailbox_path_for

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, object, Callable[[], None]] | Deferred[tuple[Any, object, Callable[[], None]]]:
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        for iface in interfaces:
            if iface is IMailAccount:
                return self._account(user).addCallback(
                    lambda account: (IMailAccount, account, _logout)
                )
            if iface is ISubmitIdentity:
                return iface, SubmitIdentity(user), _logout
        raise NotImplementedError("no avatar for the requested interfaces")

    def _account(self, user: str) -> Deferred[MailAccount]:
        path = self.mailbox_path_for(user)
        if not path:
            raise MailboxUnavailable(f"user {user} has no mail location", permanent=True)

        def opened(folders: IAsyncUserMailbox) -> MailAccount:
            # Made (and cached) by the asynchronous call: this finds it.
            return MailAccount(user, self.store.open_user(user, path), folders)

        def refused(failure: Failure) -> Failure:
            error = failure.check(MailStoreError, OSError)
            if error is None:
                return failure
            raise MailboxUnavailable(f"cannot open mailbox of {user}: {failure.value}")

        d = IAsyncMailStore(self.store.asynchronous()).open_user(user, path)
        return d.addCallback(opened).addErrback(refused)
