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


def _dangerous(body: list[tuple[Any, Any]]) -> bool:
    items = _unwrap(body)
    required = [(op, av) for op, av in items if not _optional(op, av)]
    if not required:
        # Every part may be empty: any unbounded part inside loops again.
        return any(_unbounded(op, av) for op, av in items)
    if len(required) == 1:
        op, av = required[0]
        if _unbounded(op, av):
            return True
        if op is c.SUBPATTERN:
            return _dangerous([(op, av)])
    return False


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
