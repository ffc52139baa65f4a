"""IMAP sequence sets: ``1:3,7,10:*`` of message numbers or UIDs (RFC 3501 9).

A :class:`SequenceSet` keeps the ranges as the client wrote them (``*`` is
None: "the largest number in use"); :meth:`SequenceSet.ranges` resolves
them against the largest message number or UID, ordered and merged.
:func:`format_set` writes a set of numbers back in the short form (for
COPYUID, APPENDUID, VANISHED, MODIFIED).

Untrusted input: the text of the set. Malformed sets raise ValueError; at
most :data:`MAX_RANGES` ranges are accepted (no unbounded memory).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_RANGES = 10000
MAX_NUMBER = 0xFFFFFFFF


def _number(text: str) -> int | None:
    if text == "*":
        return None
    if not text.isdigit() or text.startswith("0") or len(text) > 10:
        raise ValueError(f"invalid number in sequence set: {text!r}")
    value = int(text)
    if value > MAX_NUMBER:
        raise ValueError("number out of range in sequence set")
    return value


@dataclass(frozen=True)
class SequenceSet:
    """Ranges ``(low, high)``, each end a number or None for ``*``."""

    parts: tuple[tuple[int | None, int | None], ...]

    @property
    def uses_star(self) -> bool:
        return any(lo is None or hi is None for lo, hi in self.parts)

    def ranges(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges with ``*`` as ``largest``."""
        out: list[tuple[int, int]] = []
        for lo, hi in self.parts:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if a > b:
                a, b = b, a
            out.append((a, b))
        out.sort()
        merged: list[tuple[int, int]] = []
        for a, b in out:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def contains(self, value: int, largest: int) -> bool:
        for lo, hi in self.parts:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if min(a, b) <= value <= max(a, b):
                return True
        return False


def parse_sequence_set(text: str) -> SequenceSet:
    """Parse ``1:3,5,*``; ValueError when malformed."""
    if not text:
        raise ValueError("empty sequence set")
    pieces = text.split(",")
    if len(pieces) > MAX_RANGES:
        raise ValueError("too many ranges in sequence set")
    parts: list[tuple[int | None, int | None]] = []
    for piece in pieces:
        lo, sep, hi = piece.partition(":")
        a = _number(lo)
        b = _number(hi) if sep else a
        if a == 0 or b == 0:
            raise ValueError("0 is not a message number")
        parts.append((a, b))
    return SequenceSet(tuple(parts))


def format_set(numbers: Iterable[int]) -> str:
    """``1:3,7`` for 1, 2, 3, 7 (sorted, duplicates dropped); empty for none."""
    out: list[str] = []
    start = prev = -2
    for n in sorted(set(numbers)):
        if n == prev + 1:
            prev = n
            continue
        if prev >= 0:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if prev >= 0:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def format_pairs(numbers: list[int]) -> str:
    """Numbers in the given order, ranges only where they run up by one
    (COPYUID keeps source and target lists in step)."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)
