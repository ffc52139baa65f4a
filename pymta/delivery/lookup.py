"""How the delivery agents open their tables: ``open_maps(specs, config)``.

The default is pymta.tables.open_maps (an ordered list of ``type:name``
tables, Postfix's maps.c); tests inject in-memory tables. The search order
of addresses and aliases is pymta.tables' (lookup_address, lookup_alias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pymta.config import Config


class Lookup(Protocol):
    """Anything with ``lookup(key) -> str | None`` (a table or a list of tables)."""

    def lookup(self, key: str) -> str | None: ...


OpenMaps = Callable[[list[str], Config], Lookup]


def default_open_maps(specs: list[str], config: Config) -> Lookup:
    """pymta.tables.open_maps, imported when first needed."""
    from pymta.tables import open_maps

    return open_maps(specs, config)


class DictLookup:
    """An in-memory table (keys folded to lower case), for tests and embedding."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = {k.lower(): v for k, v in entries.items()}

    def lookup(self, key: str) -> str | None:
        return self.entries.get(key.lower())
