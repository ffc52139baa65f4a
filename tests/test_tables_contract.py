"""The ILookupTable contract, checked against every table type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from pymta.tables import ILookupTable, TableError, open_table
from pymta.tables.hashdb import compile_db

# Each factory builds a table holding exactly {"alice@example.test": "Result"}.
Factory = Callable[[Path], str]


def _texthash(tmp: Path) -> str:
    (tmp / "t").write_text("Alice@Example.TEST  Result\n")
    return f"texthash:{tmp / 't'}"


def _hash(tmp: Path) -> str:
    compile_db(str(tmp / "h.db"), [("alice@example.test", "Result")])
    return f"hash:{tmp / 'h'}"


def _regexp(tmp: Path) -> str:
    (tmp / "r").write_text("/^alice@example\\.test$/ Result\n")
    return f"regexp:{tmp / 'r'}"


def _pcre(tmp: Path) -> str:
    (tmp / "p").write_text("/^alice@example\\.test$/ Result\n")
    return f"pcre:{tmp / 'p'}"


def _inline(tmp: Path) -> str:
    return "inline:{ Alice@Example.test=Result }"


FACTORIES: dict[str, Factory] = {
    "texthash": _texthash,
    "hash": _hash,
    "regexp": _regexp,
    "pcre": _pcre,
    "inline": _inline,
}


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_contract(kind: str, tmp_path: Path) -> None:
    """Every keyed table provides ILookupTable, finds its key in any case, and says None for a
    missing key.
    """
    spec = FACTORIES[kind](tmp_path)
    table = open_table(spec, strict=True)
    verifyObject(ILookupTable, table)
    assert table.name == spec
    assert table.lookup("alice@example.test") == "Result"
    assert table.lookup("ALICE@example.Test") == "Result"
    assert table.lookup("bob@example.test") is None
    assert table.lookup("") is None


def test_static_contract() -> None:
    """static: provides ILookupTable and answers every key with its value."""
    table = open_table("static:{ a value }", strict=True)
    verifyObject(ILookupTable, table)
    assert table.lookup("anything") == "a value"
    assert table.lookup("") == "a value"


@pytest.mark.parametrize("spec", ["fail:x", "hash:/nonexistent/file", "nosuchtype:x"])
def test_failing_contract(spec: str) -> None:
    """fail: and surrogates provide ILookupTable and raise TableError, never say not found."""
    table = open_table(spec)
    verifyObject(ILookupTable, table)
    with pytest.raises(TableError):
        table.lookup("alice@example.test")
