"""stored: answer an IMAP command when its call to the mail store fires.

The commands reach the mail store through its asynchronous API
(:mod:`pymta.mailstore.asyncstore`): every call returns a Deferred. A
store that answered at once (the memory store; a Maildir read when
nothing of the folder waits) has fired it already, and the command is
answered in the same reactor turn, as before the API was asynchronous;
otherwise the session waits (:meth:`IMAPSession.later`), later commands
queued behind it, and the answer goes out when the store's thread is done.

Untrusted input: none here. Writes: nothing. Logs: through ``later`` (a
failure that is not answered is logged there and answered
``NO [SERVERBUG]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

T = TypeVar("T")


def when_stored(
    s: IMAPSession, tag: bytes, name: str, d: Deferred[T], answer: Callable[[T], None]
) -> None:
    """Answer a command with ``answer(result)`` once its call to the store's
    asynchronous API fires: at once when the store answered at once, else
    later, with later commands waiting meanwhile (:meth:`IMAPSession.later`).
    A failure is raised where the command's errors are answered: a store
    that cannot be written gets its code, anything else ``NO [SERVERBUG]``."""
    outcome: list[T | Failure] = []
    fired = d.addBoth(outcome.append)

    def finish() -> None:
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        answer(cast(T, result))

    if outcome:
        finish()
    else:
        s.later(fired, finish, tag, name)
