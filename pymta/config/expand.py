"""Postfix ``$name`` expansion: lazy, recursive, with loop detection.

Supports ``$name``, ``${name}``, ``$(name)``, ``${name?value}`` (value when
name is non-empty), ``${name:value}`` (value when name is empty) and ``$$``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pymta.config.errors import ConfigError

_TOKEN = re.compile(
    r"\$(?:\$|(?P<plain>[A-Za-z0-9_]+)|\{(?P<braced>[^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|"
    r"\((?P<paren>[^()]*)\))"
)


def expand(value: str, lookup: Callable[[str], str | None], _stack: tuple[str, ...] = ()) -> str:
    """Expand every ``$`` reference in value; lookup returns a raw value or None."""
    if "$" not in value:
        return value

    def resolve(name: str) -> str:
        if name in _stack:
            chain = " -> ".join((*_stack, name))
            raise ConfigError(f"recursive parameter expansion: {chain}", parameter=_stack[0])
        raw = lookup(name)
        if raw is None:
            return ""
        return expand(raw, lookup, (*_stack, name))

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("plain") or match.group("paren")
        if name is not None:
            return resolve(name)
        inner = match.group("braced") or ""
        for op in ("?", ":"):
            if op in inner:
                base, _, alternative = inner.partition(op)
                current = resolve(base.strip())
                if op == "?":
                    return expand(alternative, lookup, _stack) if current else ""
                return current if current else expand(alternative, lookup, _stack)
        return resolve(inner.strip())

    return _TOKEN.sub(replace, value)
