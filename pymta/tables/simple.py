"""Tables without a file: inline:{...}, static:, fail:, and the surrogate.

Mirrors Postfix's dict_inline, dict_static, dict_fail and dict_surrogate.
``inline:{ key=value, { key = value with spaces } }`` holds its entries in
the table name; ``static:value`` (or ``static:{ value with spaces }``)
answers every key with the same value; ``fail:name`` fails every lookup.
A table that failed to open is replaced by a :class:`SurrogateTable` that
fails every lookup with the saved reason, so the daemon keeps running and
the mail that needs the table is deferred, not bounced. Untrusted input:
the table name (from main.cf). Writes nothing; the surrogate logs a
warning to the mail log at each lookup.
"""

from __future__ import annotations

from twisted.logger import LogLevel
from zope.interface import implementer

from pymta.config import split_list
from pymta.maillog import maillog
from pymta.tables.interface import IIterableTable, ILookupTable, TableError


def strip_braces(text: str) -> str | None:
    """The inside of ``{ ... }`` with surrounding white space removed, else None."""
    text = text.strip()
    if len(text) >= 2 and text[0] == "{" and text[-1] == "}":
        return text[1:-1].strip()
    return None


def parse_inline(name: str) -> dict[str, str]:
    """Entries of an ``inline:`` table name; TableError on bad syntax."""
    inside = strip_braces(name)
    if inside is None:
        raise TableError(f"inline:{name}: expected {{ key=value, ... }}")
    entries: dict[str, str] = {}
    for item in split_list(inside):
        grouped = strip_braces(item)
        text = grouped if grouped is not None else item
        key, eq, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise TableError(f"inline:{name}: expected key=value, found {item!r}")
        entries.setdefault(key.lower(), value)
    return entries


@implementer(IIterableTable)
class InlineTable:
    """``inline:{ key=value, ... }``: entries given in the name, case-folded keys."""

    def __init__(self, name: str, entries: dict[str, str]) -> None:
        self.name = name
        self._entries = entries

    def lookup(self, key: str) -> str | None:
        return self._entries.get(key.lower())

    def items(self) -> list[tuple[str, str]]:
        return list(self._entries.items())


@implementer(ILookupTable)
class StaticTable:
    """``static:value``: every key finds value."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def lookup(self, key: str) -> str:
        return self.value


def parse_static(name: str) -> str:
    """The value of a ``static:`` table name (braces around it removed)."""
    inside = strip_braces(name)
    return name if inside is None else inside


@implementer(ILookupTable)
class FailTable:
    """``fail:name``: every lookup fails (for testing error handling)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def lookup(self, key: str) -> str | None:
        raise TableError(f"{self.name}: table lookup failed")


@implementer(ILookupTable)
class SurrogateTable:
    """Stands in for a table that failed to open; every lookup fails with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def lookup(self, key: str) -> str | None:
        # As Postfix's dict_surrogate, each failed lookup says why in the
        # mail log, next to the 451 or the deferral it causes.
        maillog("tables", f"{self.name} is unavailable. {self.reason}", LogLevel.warn)
        raise TableError(f"{self.name}: table is unavailable: {self.reason}")
