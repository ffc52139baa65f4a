"""The lookup table contract shared by every table type.

Mirrors Postfix's DICT: one interface, many types, opened by ``type:name``.
Not found (None) is not the same as lookup failed (TableError): a failed
lookup defers mail, it never bounces it.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class TableError(Exception):
    """A lookup could not be done (file unreadable, bad pattern...): defer, never bounce."""


class ILookupTable(Interface):
    """A key -> value table, named ``type:name``."""

    name = Attribute("The table's ``type:name`` as configured.")

    def lookup(key: str) -> str | None:
        """The value for key, or None when there is none; TableError when it fails.

        Keys are matched case-insensitively (Postfix folds keys to lower case
        unless the table type is case-sensitive, as regexp: is).
        """


class IIterableTable(ILookupTable):
    """A table whose entries can be listed (``postmap -s``)."""

    def items() -> list[tuple[str, str]]:
        """Every (key, value) pair, in the table's order; TableError when it fails."""
