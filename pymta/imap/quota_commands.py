"""IMAP QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT, SETQUOTA, and the
APPEND check.

As Dovecot's imap_quota: each user has one quota root, ``""``, covering
the whole mailbox, with the resources STORAGE (in units of 1024 octets)
and MESSAGE; its limits are the user's (:mod:`pymta.quota.policy`). A user
without limits has no quota root: GETQUOTAROOT lists none, GETQUOTA ""
is ``NO``. SETQUOTA is refused (limits are the administrator's). APPEND
of a message that would not fit is ``NO [OVERQUOTA]`` (RFC 9208 section
4.3; COPY and MOVE are not checked). Usage is counted in the session's
thread pool.

Untrusted input: the quota root and mailbox names (only compared).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred

from pymta.imap.mailbox_commands import mailbox_arg
from pymta.imap.parser import ParseError, Token
from pymta.imap.wire import mailbox_out
from pymta.quota.policy import QuotaState

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

CAPABILITIES = ("QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE")


def _maildir(s: IMAPSession) -> str | None:
    return s.mailbox.root if s.mailbox is not None else None


def _quota_line(state: QuotaState) -> bytes:
    parts = []
    if state.limit.storage is not None:
        parts.append(b"STORAGE %d %d" % (state.used_bytes // 1024, state.limit.storage // 1024))
    if state.limit.messages is not None:
        parts.append(b"MESSAGE %d %d" % (state.used_messages, state.limit.messages))
    return b'* QUOTA "" (' + b" ".join(parts) + b")\r\n"


def _with_usage(
    s: IMAPSession, tag: bytes, name: str, answer: Callable[[QuotaState | None], None]
) -> None:
    quota = s.quota
    maildir = _maildir(s)
    # QUOTA not offered (no quota policy): no quota root, as for a user
    # without limits.
    limit = quota.limit(s.user) if quota is not None else None
    if limit is None or limit.unlimited or maildir is None:
        answer(None)
        return
    assert quota is not None
    result: list[QuotaState] = []

    def count() -> None:
        result.append(quota.policy.usage(maildir, limit))

    runner: Any = s.run_in_thread
    d: Deferred[Any] = runner(count) if runner is not None else maybeDeferred(count)
    s.later(d, lambda: answer(result[0] if result else None), tag, name)


def getquotaroot(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 1:
        raise ParseError("GETQUOTAROOT takes a mailbox name.")
    name = mailbox_arg(args[0], s.utf8_names)
    wire = mailbox_out(name, s.utf8_names)

    def answer(state: QuotaState | None) -> None:
        if state is None:
            s.send(b"* QUOTAROOT " + wire + b"\r\n")
        else:
            s.send(b"* QUOTAROOT " + wire + b' ""\r\n')
            s.send(_quota_line(state))
        s.ok(tag, b"Getquotaroot completed.")

    _with_usage(s, tag, "GETQUOTAROOT", answer)


def getquota(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 1 or isinstance(args[0], list):
        raise ParseError("GETQUOTA takes a quota root.")
    root = args[0]

    def answer(state: QuotaState | None) -> None:
        if state is None or root not in (b"", ""):
            s.no(tag, b"Quota root does not exist.")
            return
        s.send(_quota_line(state))
        s.ok(tag, b"Getquota completed.")

    _with_usage(s, tag, "GETQUOTA", answer)


def setquota(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    s.no(tag, b"[NOPERM] Quota limits are set by the administrator.")
