"""lookup_alias: aliases(5) lookups with and without the address extension."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.tables import Maps, TableError, lookup_alias, open_maps, split_alias_value
from pymta.tables.maps import TableCache

ALIASES = """\
# aliases(5)
postmaster: alice@example.test
Root: postmaster, bob
list: a,
  b
prog: "|/usr/bin/vacation -a x", keep
"quoted name": c
inc: :include:/etc/mail/list
bob+special: special-target
"""


@pytest.fixture
def maps(tmp_path: Path) -> Maps:
    path = tmp_path / "aliases"
    path.write_text(ALIASES)
    return open_maps(f"texthash:{path}", cache=TableCache())


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("postmaster", ["alice@example.test"]),
        ("ROOT", ["postmaster", "bob"]),
        ("list", ["a", "b"]),
        ("prog", ['"|/usr/bin/vacation -a x"', "keep"]),
        ("quoted name", ["c"]),
        ("inc", [":include:/etc/mail/list"]),
        ("postmaster+tag", ["alice@example.test"]),
        ("bob+special", ["special-target"]),
        ("nobody", None),
        ("nobody+tag", None),
    ],
)
def test_lookup_alias(maps: Maps, local: str, expected: list[str] | None) -> None:
    """Local parts are looked up lower-cased, with the extension first, then without."""
    assert lookup_alias(maps, local, delimiter="+") == expected


def test_no_delimiter_no_fallback(maps: Maps) -> None:
    """Without recipient_delimiter, user+tag is only looked up whole."""
    assert lookup_alias(maps, "postmaster+tag") is None


def test_alias_failure_propagates() -> None:
    """A failing alias table raises TableError (defer, not bounce)."""
    with pytest.raises(TableError):
        lookup_alias(open_maps("fail:aliases", cache=TableCache()), "root")


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a, b c", ["a", "b", "c"]),
        ("|/bin/prog -x y, a", ["|/bin/prog -x y", "a"]),
        ("/var/mail/file", ["/var/mail/file"]),
    ],
)
def test_split_alias_value(value: str, items: list[str]) -> None:
    """Alias values split on commas and white space, except unquoted |command lines."""
    assert split_alias_value(value) == items
