"""policy: the quota checks at LMTP RCPT, at delivery and at IMAP APPEND,
and the warning mails.

Limits come from the user's passwd-file line (``userdb_quota_rule=`` or
``quota_rule=``, Dovecot's extra fields) or else from ``pymta_quota_rule``
(Dovecot's ``quota_rule``; empty: no quota). Usage is counted from the
Maildir (:mod:`pymta.quota.usage`).

- Delivery (virtual agent Maildirs, lmtpd): a message that would take the
  mailbox over its limit is not stored; with ``pymta_quota_full_action =
  defer`` (the default) the recipient is deferred ``4.2.2``, the queue
  tries again and bounces after ``maximal_queue_lifetime``; with
  ``bounce`` it fails at once ``5.2.2`` (Dovecot's ``quota_full_tempfail =
  yes`` / ``no``).
- LMTP RCPT: a mailbox already at or over its limit is refused right away,
  with the same choice: ``452 4.2.2`` (defer) or ``552 5.2.2`` (bounce),
  so the MTA in front keeps or returns the message without sending it.
- IMAP APPEND: ``NO [OVERQUOTA]`` when the message would not fit.
- A delivery that takes the mailbox across one of ``pymta_quota_warning``'s
  percentages (80 and 95) sends the user a warning message through
  cleanup, once per crossing.

Blocking file I/O in :meth:`QuotaPolicy.usage`: callers run it off the
reactor; with a limit it also keeps the Maildir++ ``maildirsize`` file in
step with the count, for Dovecot, Courier and maildrop. Untrusted input:
none (passwd-file values are the administrator's; a bad rule is a warning
and no quota for that user).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

from twisted.logger import Logger

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.quota import maildirsize
from pymta.quota.rules import QuotaLimit, QuotaRuleError, parse_rule
from pymta.quota.usage import SHARED, MaildirUsage

_log = Logger(namespace="pymta.quota")


def user_rule(extra: Mapping[str, str]) -> str | None:
    """The quota rule of a passwd-file line's extra fields, if it has one."""
    return extra.get("userdb_quota_rule") or extra.get("quota_rule")


@dataclass(frozen=True)
class QuotaState:
    """One mailbox's usage against its limit."""

    limit: QuotaLimit
    used_bytes: int
    used_messages: int

    def full(self) -> bool:
        """At or over a limit already (nothing more fits)."""
        l = self.limit  # noqa: E741
        return (l.storage is not None and self.used_bytes >= l.storage) or (
            l.messages is not None and self.used_messages >= l.messages
        )

    def fits(self, size: int) -> bool:
        l = self.limit  # noqa: E741
        return (l.storage is None or self.used_bytes + size <= l.storage) and (
            l.messages is None or self.used_messages + 1 <= l.messages
        )

    def percent(self, extra_bytes: int = 0, extra_messages: int = 0) -> float:
        """The fuller of the two resources, in percent."""
        shares = []
        if self.limit.storage:
            shares.append(100.0 * (self.used_bytes + extra_bytes) / self.limit.storage)
        if self.limit.messages:
            shares.append(100.0 * (self.used_messages + extra_messages) / self.limit.messages)
        return max(shares, default=0.0)


class QuotaPolicy:
    """The quota settings of one part (lmtpd, the virtual agent, imapd)."""

    def __init__(
        self,
        default_rule: str,
        full_action: str = "defer",
        warnings: tuple[float, ...] = (80.0, 95.0),
        counter: MaildirUsage = SHARED,
    ) -> None:
        self.default = parse_rule(default_rule)
        self.bounce = full_action == "bounce"
        self.warnings = tuple(sorted(warnings))
        self._counter = counter

    @classmethod
    def from_config(cls, config: Config) -> QuotaPolicy:
        """From ``pymta_quota_rule``, ``pymta_quota_full_action`` and
        ``pymta_quota_warning``; ConfigError naming a bad one."""
        try:
            warnings = tuple(float(p.rstrip("%")) for p in config.get_list("pymta_quota_warning"))
        except ValueError:
            raise ConfigError(
                "bad value: expected percentages such as 80 95", parameter="pymta_quota_warning"
            ) from None
        try:
            return cls(
                config.get("pymta_quota_rule"),
                config.get("pymta_quota_full_action").strip().lower(),
                warnings,
            )
        except QuotaRuleError as e:
            src = config.source("pymta_quota_rule")
            raise ConfigError(
                f"bad value: {e}: expected a rule such as *:storage=1G",
                src.filename if src else None,
                src.lineno if src else None,
                "pymta_quota_rule",
            ) from None

    def limit(self, rule: str | None) -> QuotaLimit:
        """The limits for a user with this passwd-file rule (None: the default)."""
        if rule is None:
            return self.default
        try:
            return parse_rule(rule)
        except QuotaRuleError as e:
            _log.warn("bad quota rule {rule!r}: {error}; no quota", rule=rule, error=e)
            return QuotaLimit()

    def usage(self, maildir: str, limit: QuotaLimit) -> QuotaState:
        """The mailbox's state (blocking: a directory scan when it changed);
        with a limit, ``maildirsize`` is brought to say the same
        (:mod:`pymta.quota.maildirsize`)."""
        used_bytes, used_messages = self._counter.usage(maildir)
        if not limit.unlimited:
            maildirsize.sync(maildir, limit, used_bytes, used_messages)
        return QuotaState(limit, used_bytes, used_messages)

    def full_status(self) -> tuple[str, str]:
        """(status, reason) for a message that does not fit."""
        status = "5.2.2" if self.bounce else "4.2.2"
        return status, "Quota exceeded (mailbox for user is full)"

    def rcpt_reply(self) -> tuple[int, str, str]:
        """LMTP's RCPT answer for a mailbox already full."""
        status, reason = self.full_status()
        return (552 if self.bounce else 452), status, reason

    def crossed(self, before: QuotaState, size: int) -> float | None:
        """The highest warning percentage a delivery of ``size`` crossed."""
        old, new = before.percent(), before.percent(size, 1)
        hit = [p for p in self.warnings if old < p <= new]
        return hit[-1] if hit else None


def warning_message(
    user: str, percent: float, state: QuotaState, hostname: str, now: float
) -> bytes:
    """The warning mail a user gets when their mailbox crossed ``percent``."""
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{user}>",
        f"Subject: Your mailbox is {percent:.0f}% full",
        f"Date: {formatdate(now, localtime=True)}",
        "Auto-Submitted: auto-generated (quota warning)",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Your mailbox {user} is now over {percent:.0f}% of its quota:",
    ]
    if state.limit.storage:
        lines.append(f"  storage: {state.used_bytes // 1024} of {state.limit.storage // 1024} KiB")
    if state.limit.messages:
        lines.append(f"  messages: {state.used_messages} of {state.limit.messages}")
    lines += ["", "Please delete old mail; mail that does not fit will not be delivered.", ""]
    return "\n".join(lines).encode("utf-8")
