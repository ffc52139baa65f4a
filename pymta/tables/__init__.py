"""Lookup tables, Postfix's dict_* family: one interface, opened by ``type:name``.

- :func:`open_table` (``pymta.tables.registry``): one table, or a surrogate
  that fails every lookup when it cannot be opened.
- :func:`open_maps` / :class:`Maps` (``pymta.tables.maps``): an ordered list
  of tables, searched in order (maps.c).
- :func:`lookup_address` / :func:`split_result` (``pymta.tables.addrmaps``):
  virtual(5)/canonical(5) lookup order with extension propagation.
- :func:`lookup_alias` (``pymta.tables.aliases``): aliases(5) lookups.

Not found is None; a lookup that fails raises :class:`TableError` (defer,
never bounce).
"""

from pymta.tables.addrmaps import lookup_address, split_extension, split_result
from pymta.tables.aliases import lookup_alias, split_alias_value
from pymta.tables.interface import IIterableTable, ILookupTable, TableError
from pymta.tables.maps import Maps, TableCache, open_maps, shared_tables
from pymta.tables.registry import open_table, split_spec

__all__ = [
    "IIterableTable",
    "ILookupTable",
    "Maps",
    "TableCache",
    "TableError",
    "lookup_address",
    "lookup_alias",
    "open_maps",
    "open_table",
    "shared_tables",
    "split_alias_value",
    "split_extension",
    "split_result",
    "split_spec",
]
