"""An ordered list of lookup tables searched in order, Postfix's maps.c.

A parameter such as ``virtual_alias_maps = hash:/etc/postfix/virtual,
regexp:/etc/postfix/virtual.re`` names several tables; :func:`open_maps`
opens them (through a :class:`TableCache`, so two parameters naming the same
table share one instance) and :meth:`Maps.lookup` returns the first table's
answer. A failed lookup (TableError) stops the search and propagates: lookup
failed is not "not found", and the mail is deferred. Untrusted input: the
keys. Writes nothing; open failures are logged by the registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from pymta.config import Config, split_list
from pymta.tables.interface import ILookupTable
from pymta.tables.registry import Clock, open_table
from pymta.tables.simple import SurrogateTable


class TableCache:
    """Tables already opened, by spec; surrogates are not kept, so a later open retries."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or time.monotonic
        self._tables: dict[str, ILookupTable] = {}

    def open(self, spec: str, config: Config | None = None) -> ILookupTable:
        spec = spec.strip()
        table = self._tables.get(spec)
        if table is None:
            table = open_table(spec, config, clock=self.clock)
            if not isinstance(table, SurrogateTable):
                self._tables[spec] = table
        return table

    def clear(self) -> None:
        self._tables.clear()


#: The process-wide cache that open_maps uses unless given another one.
shared_tables = TableCache()


class Maps:
    """Tables searched in order; the first answer wins."""

    def __init__(self, tables: list[ILookupTable], title: str = "") -> None:
        self.tables = list(tables)
        self.title = title or ", ".join(str(t.name) for t in self.tables)

    def lookup(self, key: str) -> str | None:
        """The first table's value for key; None if none has it; TableError propagates."""
        for table in self.tables:
            value = table.lookup(key)
            if value is not None:
                return value
        return None

    def __bool__(self) -> bool:
        return bool(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def __iter__(self) -> Iterator[ILookupTable]:
        return iter(self.tables)

    def __repr__(self) -> str:
        return f"Maps({self.title!r})"


def open_maps(
    specs: list[str] | str,
    config: Config | None = None,
    *,
    cache: TableCache | None = None,
) -> Maps:
    """Open the tables of a list (a string is split as a Postfix list)."""
    names = split_list(specs) if isinstance(specs, str) else [s for s in specs if s.strip()]
    cache = cache if cache is not None else shared_tables
    return Maps([cache.open(spec, config) for spec in names])
