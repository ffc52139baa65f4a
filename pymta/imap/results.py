"""ESEARCH result options shared by SEARCH and SORT: RETURN (...) and PARTIAL.

``RETURN (MIN MAX COUNT ALL SAVE PARTIAL a:b)`` of RFC 4731 (SEARCH),
RFC 5267 (ESORT: the same options on SORT, where the result keeps the sort
order) and RFC 9394 (PARTIAL: a window of the result by position, ``1:100``
from the start or ``-1:-100`` from the end). :func:`parse_return` reads the
options; :func:`ordered_set` writes a result in its order, runs of
consecutive ascending numbers as ranges (``5,3:4,2,1``, as Dovecot writes
ESORT results); :func:`partial_window` cuts the window out of a result.

Untrusted input: the options (ParseError on anything else). Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pymta.imap.parser import Atom, ParseError, Token

SEARCH_OPTIONS = frozenset({"MIN", "MAX", "COUNT", "ALL", "SAVE", "PARTIAL"})

#: RFC 9394 section 3: a position beyond this is refused (2^32 - 1).
_MAX_POSITION = 0xFFFFFFFF


@dataclass(frozen=True)
class Partial:
    """A PARTIAL window: ``first:last`` positions, 1-based, both positive
    (from the start) or both negative (from the end, -1 the last);
    ``abs(first) <= abs(last)``."""

    first: int
    last: int

    def text(self) -> bytes:
        return b"%d:%d" % (self.first, self.last)


@dataclass(frozen=True)
class ReturnOptions:
    """The options of a RETURN (...) (``()`` means ALL), PARTIAL's window."""

    options: frozenset[str]
    partial: Partial | None = None


def parse_partial(token: Token) -> Partial:
    """``a:b`` of PARTIAL (RFC 9394 3): both positive or both negative,
    never 0 nor ``*``; ``4:2`` is the same window as ``2:4``."""
    if not isinstance(token, Atom):
        raise ParseError("PARTIAL takes a range.")
    first, colon, last = token.partition(":")
    if not colon:
        raise ParseError("PARTIAL takes a range a:b.")
    try:
        a, b = _position(first), _position(last)
    except ValueError:
        raise ParseError("Invalid PARTIAL range.") from None
    if (a < 0) != (b < 0):
        raise ParseError("PARTIAL range ends must have the same sign.")
    if abs(a) > abs(b):
        a, b = b, a
    return Partial(a, b)


def _position(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if not digits.isdigit() or digits.startswith("0") or len(digits) > 10:
        raise ValueError(text)
    value = int(text)
    if abs(value) > _MAX_POSITION:
        raise ValueError(text)
    return value


def parse_return(
    args: list[Token], allowed: frozenset[str]
) -> tuple[ReturnOptions | None, list[Token]]:
    """``RETURN (options)`` at the start of ``args``: the options, or None
    when absent; and the remaining tokens."""
    if not (len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "RETURN"):
        return None, args
    opts = args[1]
    if not isinstance(opts, list):
        raise ParseError("RETURN takes a list of options.")
    chosen: set[str] = set()
    partial: Partial | None = None
    i = 0
    while i < len(opts):
        o = opts[i]
        if not isinstance(o, Atom) or o.upper() not in allowed:
            raise ParseError("Unknown RETURN option.")
        word = o.upper()
        if word == "PARTIAL":
            if partial is not None or i + 1 >= len(opts):
                raise ParseError("PARTIAL takes one range.")
            partial = parse_partial(opts[i + 1])
            i += 1
        chosen.add(word)
        i += 1
    if partial is not None and "ALL" in chosen:
        # RFC 9394 3: PARTIAL and ALL are mutually exclusive.
        raise ParseError("PARTIAL and ALL cannot be combined.")
    return ReturnOptions(frozenset(chosen or {"ALL"}), partial), args[2:]


def partial_window(found: Sequence[int], window: Partial) -> Sequence[int]:
    """The numbers at the window's positions of ``found``."""
    if window.first > 0:
        return found[window.first - 1 : window.last]
    count = len(found)
    start = max(0, count + window.last)
    end = max(0, count + window.first + 1)
    return found[start:end]


def ordered_set(numbers: Sequence[int]) -> bytes:
    """Numbers in their order, ascending consecutive runs as ranges."""
    parts: list[bytes] = []
    i = 0
    count = len(numbers)
    while i < count:
        j = i
        while j + 1 < count and numbers[j + 1] == numbers[j] + 1:
            j += 1
        if j > i:
            parts.append(b"%d:%d" % (numbers[i], numbers[j]))
        else:
            parts.append(b"%d" % numbers[i])
        i = j + 1
    return b",".join(parts)


def partial_item(found: Sequence[int], window: Partial) -> bytes:
    """`` PARTIAL (a:b set)``, ``NIL`` for an empty window (RFC 9394 3.1)."""
    got = partial_window(found, window)
    return b" PARTIAL (" + window.text() + b" " + (ordered_set(got) if got else b"NIL") + b")"
