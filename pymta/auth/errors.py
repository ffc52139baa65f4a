"""Authentication failures that are not a wrong password.

A wrong password or unknown user is twisted.cred's UnauthorizedLogin (POP3
``-ERR [AUTH]``). These are the other outcomes, which protocols answer with
a temporary or permanent system error instead, never as a bad password.
"""

from __future__ import annotations


class AuthTemporaryError(Exception):
    """The password database could not be consulted (file unreadable...): try later."""


class MailboxUnavailable(Exception):
    """The user authenticated but has no usable mailbox (no mail location, store error)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class TooManyLoginAttempts(Exception):
    """The client has pymta_auth_client_concurrency_limit logins in progress:
    refused without a check (POP3 ``-ERR [SYS/TEMP]``, IMAP ``NO [UNAVAILABLE]``)."""
