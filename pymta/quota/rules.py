"""rules: Dovecot's ``quota_rule`` values, e.g. ``*:storage=1G``.

Mirrors Dovecot's quota rules (``quota_rule = *:storage=1G:messages=10000``,
in a passwd-file as the extra field ``userdb_quota_rule=*:storage=1G``):
the mailbox part before the first ``:`` must be ``*`` (the whole mailbox;
per-folder rules are not implemented and refused), then ``storage=``
(a plain number is kilobytes, as in Dovecot), ``bytes=`` (a plain number
is bytes), ``messages=``; sizes take the suffixes ``b``, ``k``, ``M``,
``G``, ``T`` (powers of 1024). ``0`` means no limit, ``none`` / ``noenforcing``
means no quota at all. Pure; a bad rule is :class:`QuotaRuleError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"([0-9]+)\s*([bkmgt]?)\Z", re.IGNORECASE)


class QuotaRuleError(ValueError):
    """A quota rule that does not parse."""


@dataclass(frozen=True)
class QuotaLimit:
    """Limits in bytes and messages; None: unlimited."""

    storage: int | None = None
    messages: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.storage is None and self.messages is None


def _size(value: str, plain_unit: int) -> int:
    m = _SIZE.match(value.strip())
    if m is None:
        raise QuotaRuleError(f"bad size {value!r}")
    unit = m.group(2).lower()
    return int(m.group(1)) * (_UNITS[unit] if unit else plain_unit)


def parse_rule(text: str) -> QuotaLimit:
    """The limits of one rule (empty text: unlimited)."""
    text = text.strip()
    if not text or text.lower() in ("none", "noenforcing"):
        return QuotaLimit()
    where, _, settings = text.partition(":")
    if where != "*":
        raise QuotaRuleError(f"only '*' rules are implemented, not {where!r}")
    storage: int | None = None
    messages: int | None = None
    for item in settings.split(":"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq:
            raise QuotaRuleError(f"bad quota rule item {item!r}")
        if key == "storage":
            storage = _size(value, 1024)
        elif key == "bytes":
            storage = _size(value, 1)
        elif key == "messages":
            if not value.strip().isdigit():
                raise QuotaRuleError(f"bad messages value {value!r}")
            messages = int(value)
        elif key in ("ignore",):
            continue
        else:
            raise QuotaRuleError(f"unknown quota rule item {key!r}")
    return QuotaLimit(storage or None, messages or None)
