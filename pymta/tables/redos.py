"""redos: refuse the patterns that make Python's regular expressions take
exponential time.

Postfix's pcre: tables run under PCRE's match limit (a runaway match is an
error, logged, and the rule does not match); Python's ``re`` has no such
limit, so one rule like ``/^(.*)*-x@/`` makes a lookup of a 40-character
key run for hours — and header_checks look up lines an attacker writes.
:func:`exponential_repeat` finds the classic shape at load time instead:
an unbounded repetition whose body is itself, apart from optional parts,
one unbounded repetition (``(.*)*``, ``(a+)+``, ``(\\S+\\s*)+``,
``(?:\\w+)*``): the two loops can split the same text in exponentially
many ways, and a key that almost matches tries them all. Bodies with a
required separator (``([a-z0-9]+\\.)+``) split one way only and pass.

A heuristic, not a proof: overlapping alternatives (``(a|aa)+``) are not
found. Reads ``re._parser``'s parse tree (the module ``re`` itself uses).
"""

from __future__ import annotations

import importlib
from typing import Any

# The modules re itself uses (typeshed does not describe them).
c: Any = importlib.import_module("re._constants")
sre_parser: Any = importlib.import_module("re._parser")

_REPEATS = (c.MAX_REPEAT, c.MIN_REPEAT)


def _unbounded(op: Any, av: Any) -> bool:
    return op in _REPEATS and av[1] == c.MAXREPEAT


def _unwrap(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """A body that is one capturing or plain group: the group's items."""
    while len(items) == 1 and items[0][0] is c.SUBPATTERN:
        items = list(items[0][1][3])
    return items


def _optional(op: Any, av: Any) -> bool:
    """Matches the empty string (a repetition with a minimum of 0)."""
    return op in _REPEATS and av[0] == 0


def _matches(op: Any, av: Any, ch: int) -> bool | None:
    """Whether a one-character item matches character ``ch``; None when the
    item is not one character (or of a kind not judged here)."""
    if op is c.LITERAL:
        return av == ch
    if op is c.NOT_LITERAL:
        return av != ch
    if op is c.ANY:
        return ch != 10
    if op is c.IN:
        negate = False
        hit = False
        for sub_op, sub_av in av:
            if sub_op is c.NEGATE:
                negate = True
            elif sub_op is c.LITERAL:
                hit = hit or sub_av == ch
            elif sub_op is c.RANGE:
                hit = hit or sub_av[0] <= ch <= sub_av[1]
            elif sub_op is c.CATEGORY:
                hit = hit or _category(sub_av, ch)
            else:
                return True  # unknown member: assume it may match
        return hit != negate
    return None


def _is_word(text: str) -> bool:
    return text.isalnum() or text == "_"


#: The character classes \d \D \s \S \w \W as tests of one character.
_CATEGORIES = {
    c.CATEGORY_DIGIT: str.isdigit,
    c.CATEGORY_NOT_DIGIT: lambda text: not text.isdigit(),
    c.CATEGORY_SPACE: str.isspace,
    c.CATEGORY_NOT_SPACE: lambda text: not text.isspace(),
    c.CATEGORY_WORD: _is_word,
    c.CATEGORY_NOT_WORD: lambda text: not _is_word(text),
}


def _category(category: Any, ch: int) -> bool:
    test = _CATEGORIES.get(category)
    return True if test is None else bool(test(chr(ch)))


#: Characters beyond Latin-1 that the classes judge differently: a letter,
#: a digit, a space, a mark, a surrogate (undecodable bytes of a key).
_WIDE_PROBES = (0x100, 0x3B1, 0x663, 0x2003, 0x300, 0xDCFF, 0xFFFF)


def _named(item: tuple[Any, Any]) -> set[int]:
    """The characters an item names (literals, range ends): an overlap
    beyond Latin-1 is found by probing them."""
    op, av = item
    if op in (c.LITERAL, c.NOT_LITERAL):
        return {av}
    found: set[int] = set()
    if op is c.IN:
        for sub_op, sub_av in av:
            if sub_op is c.LITERAL:
                found.add(sub_av)
            elif sub_op is c.RANGE:
                found.update(sub_av)
    return found


def _overlap(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    """Whether two items can match the same character (True when unsure)."""
    probes = {*range(256), *_WIDE_PROBES, *_named(a), *_named(b)}
    for ch in sorted(probes):
        x, y = _matches(*a, ch), _matches(*b, ch)
        if x is None or y is None:
            return True
        if x and y:
            return True
    return False


def _dangerous(body: list[tuple[Any, Any]]) -> bool:
    """Whether a repeated body can split one text in many ways: it is made
    of unbounded repetitions of one-character items and of one-character
    items those repetitions also match, and nothing else that it needs
    (``.+``, ``..*``, ``x+x+``, ``\\w+\\s?``); a required separator the
    repetitions cannot match (``[a-z]+\\.``) splits it one way only."""
    items = _unwrap(body)
    if all(_optional(op, av) for op, av in items):
        # The body may match nothing: any loop inside it loops again.
        return any(_unbounded(op, av) for op, av in items)
    loops = [av[2] for op, av in items if _unbounded(op, av)]
    loop_items = [list(_unwrap(list(loop))) for loop in loops]
    if not loops:
        return False
    if any(len(inner) != 1 for inner in loop_items):
        # A repetition of something longer: judge it where the walk finds it.
        return any(_dangerous(list(loop)) for loop in loops) and len(loops) == len(items)
    elements = [inner[0] for inner in loop_items]
    for op, av in items:
        if _unbounded(op, av) or _optional(op, av):
            continue
        if _matches(op, av, 0) is None:
            return False  # a required group or a longer item: not this shape
        if not any(_overlap((op, av), element) for element in elements):
            return False  # a separator the loops cannot eat
    return True


def _walk(items: Any) -> str | None:
    for op, av in items:
        if _unbounded(op, av) and _dangerous(list(av[2])):
            return "it repeats a repetition"
        if op in _REPEATS or op is c.POSSESSIVE_REPEAT:
            found = _walk(av[2])
        elif op is c.SUBPATTERN:
            found = _walk(av[3])
        elif op is c.BRANCH:
            found = next((f for f in (_walk(b) for b in av[1]) if f), None)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            found = _walk(av[1])
        elif op is c.ATOMIC_GROUP:
            found = None  # no backtracking into an atomic group
        else:
            found = None
        if found:
            return found
    return None


def exponential_repeat(pattern: str, flags: int = 0) -> str | None:
    """Why ``pattern`` can take exponential time, or None."""
    try:
        tree = sre_parser.parse(pattern, flags)
    except Exception:
        return None  # re.compile reports it
    return _walk(tree.data)
