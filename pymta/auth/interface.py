"""The avatars the mail realm hands out, one interface per kind of session.

A protocol asks the Portal for the interface it speaks:

- :class:`IMailAccount` (POP3, IMAP): the user's mailbox in the mail
  store, through its asynchronous API (``folders``); IMAP commands not yet
  moved onto it use the synchronous ``mailbox``.
- :class:`ISubmitIdentity` (SMTP AUTH, submission): who the client is, for
  ``smtpd_sender_login_maps`` and the Received header; no mailbox needed.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IMailAccount(Interface):
    """An authenticated user's mail (shared by POP3 and IMAP sessions)."""

    user = Attribute("str: the user name, as authenticated (lower case).")
    mailbox = Attribute("IUserMailbox: the user's folders in the mail store.")
    folders = Attribute(
        "IAsyncUserMailbox: the same folders through the store's asynchronous API"
        " (pymta.mailstore.asyncstore)."
    )


class ISubmitIdentity(Interface):
    """An authenticated sender (SMTP AUTH)."""

    user = Attribute("str: the SASL login name (lower case).")
