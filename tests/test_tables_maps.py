"""Maps (ordered search) and the shared table cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.tables import Maps, TableCache, TableError, open_maps, open_table


def test_first_table_wins() -> None:
    """Tables are searched in order and the first answer wins."""
    maps = open_maps("inline:{a=first}, inline:{a=second, b=only-second}", cache=TableCache())
    assert maps.lookup("a") == "first"
    assert maps.lookup("b") == "only-second"
    assert maps.lookup("c") is None


def test_list_forms() -> None:
    """A string is split as a Postfix list (commas, white space, {..} kept whole); a list is used
    as is.
    """
    maps = open_maps("inline:{ {a = x y}, b=c }\n  static:z", cache=TableCache())
    assert len(maps) == 2
    assert maps.lookup("a") == "x y"
    assert maps.lookup("nothing") == "z"
    assert len(open_maps(["static:1", " ", "static:2"], cache=TableCache())) == 2


def test_empty_maps_are_false() -> None:
    """bool(maps) is False when the list names no table, True otherwise."""
    assert not open_maps("", cache=TableCache())
    assert not Maps([])
    assert open_maps("static:x", cache=TableCache())


def test_failure_propagates_and_stops_search() -> None:
    """A failing table raises TableError; later tables are not asked, so fail is not 'not found'."""
    maps = open_maps("inline:{a=b}, fail:broken, static:fallback", cache=TableCache())
    assert maps.lookup("a") == "b"
    with pytest.raises(TableError):
        maps.lookup("other")


def test_cache_shares_instances() -> None:
    """Two parameters naming the same table share one instance."""
    cache = TableCache()
    one = open_maps("static:x, inline:{a=b}", cache=cache)
    two = open_maps(["inline:{a=b}"], cache=cache)
    assert one.tables[1] is two.tables[0]


def test_cache_retries_failed_open(tmp_path: Path) -> None:
    """A table that failed to open is not cached: once the file exists, a new open works."""
    cache = TableCache()
    spec = f"texthash:{tmp_path / 'later'}"
    with pytest.raises(TableError):
        open_maps(spec, cache=cache).lookup("a")
    (tmp_path / "later").write_text("a b\n")
    assert open_maps(spec, cache=cache).lookup("a") == "b"


def test_open_table_returns_fresh_instances() -> None:
    """open_table itself does not cache; only TableCache/open_maps do."""
    assert open_table("inline:{a=b}") is not open_table("inline:{a=b}")
