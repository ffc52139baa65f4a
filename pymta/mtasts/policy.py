"""policy: MTA-STS records and policies as values (RFC 8461 sections 3.1, 3.2, 4.1).

- :func:`parse_record`: the TXT record at ``_mta-sts.<domain>``
  (``v=STSv1; id=20240101T000000;``). Of several TXT records only those
  that begin with ``v=STSv1`` count; more than one of them, or one without
  a valid ``id`` (1 to 32 letters and digits), is no record at all (3.1).
- :func:`parse_policy`: the text served at
  ``https://mta-sts.<domain>/.well-known/mta-sts.txt``: ``key: value``
  lines separated by LF or CRLF; ``version: STSv1``, ``mode``
  (``enforce``, ``testing`` or ``none``), ``max_age`` (seconds, capped at
  31557600, one year) and one ``mx`` line per pattern are required (mx
  may be absent under mode ``none``); unknown keys are ignored; of a key
  given twice (other than ``mx``) the first counts.
- :func:`mx_matches`: an MX host name against a pattern: equal names, or
  ``*.example.net`` for exactly one more label on the left (4.1), case
  and a final dot ignored.

Untrusted input: the TXT record and the policy text (from the network).
Pure: writes nothing, logs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: RFC 8461 3.2: max_age is at most 31557600 seconds (about one year).
MAX_AGE_LIMIT = 31557600

MODES = ("enforce", "testing", "none")

_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class PolicyError(ValueError):
    """A policy text that is not a valid MTA-STS policy (the reason)."""


@dataclass(frozen=True)
class Policy:
    """One domain's policy: its ``mode``, ``mx`` patterns (lower case,
    without a final dot) and ``max_age`` in seconds."""

    mode: str
    mx: tuple[str, ...]
    max_age: int

    def permits(self, host: str) -> bool:
        """Whether the MX host ``host`` matches one of the policy's patterns."""
        return any(mx_matches(host, pattern) for pattern in self.mx)

    def text(self) -> str:
        """The policy written out again (for the cache file)."""
        lines = ["version: STSv1", f"mode: {self.mode}"]
        lines.extend(f"mx: {pattern}" for pattern in self.mx)
        lines.append(f"max_age: {self.max_age}")
        return "\r\n".join(lines) + "\r\n"


def parse_record(texts: Iterable[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records, or None when there is
    no valid MTA-STS record among them (RFC 8461 3.1)."""
    candidates = [t for t in texts if re.match(r"v=STSv1[ \t]*(;|$)", t)]
    if len(candidates) != 1:
        return None
    found: dict[str, str] = {}
    for field in candidates[0].split(";"):
        name, equals, value = field.strip(" \t").partition("=")
        if equals and name not in found:
            found[name] = value
    policy_id = found.get("id", "")
    return policy_id if _ID.fullmatch(policy_id) else None


def parse_policy(text: str) -> Policy:
    """The policy of ``text`` (see the module doc); PolicyError when invalid."""
    fields: dict[str, str] = {}
    patterns: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        # partition and strip, not one regular expression: a 64 KiB line of
        # blanks must cost linear time.
        key, colon, value = line.partition(":")
        if not colon or not _KEY.fullmatch(key):
            raise PolicyError(f"malformed policy line {line[:80]!r}")
        value = value.strip(" \t")
        if key == "mx":
            patterns.append(_pattern(value))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"unsupported policy version {fields.get('version', '')!r}")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"bad policy mode {mode!r}")
    age = fields.get("max_age", "")
    if not re.fullmatch(r"[0-9]{1,10}", age):
        raise PolicyError(f"bad policy max_age {age!r}")
    if not patterns and mode != "none":
        raise PolicyError("policy without mx")
    return Policy(mode, tuple(patterns), min(int(age), MAX_AGE_LIMIT))


def _pattern(value: str) -> str:
    pattern = value.lower().rstrip(".")
    labels = pattern.removeprefix("*.").split(".")
    if len(pattern) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise PolicyError(f"bad mx pattern {value[:80]!r}")
    return pattern


def mx_matches(host: str, pattern: str) -> bool:
    """RFC 8461 4.1: ``host`` is ``pattern``, or the pattern is
    ``*.rest`` and the host is one label followed by ``rest``."""
    name = host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = name.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return name == pattern


def permitted(hosts: Sequence[str], policy: Policy) -> list[str]:
    """The names of ``hosts`` that the policy permits, in order."""
    return [h for h in hosts if policy.permits(h)]
