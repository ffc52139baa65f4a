"""lookup_address (virtual(5)/canonical(5) lookup order) and split_result."""

from __future__ import annotations

import pytest

from pymta.tables import TableError, lookup_address, open_table, split_extension, split_result


class Recorder:
    """A table that records the keys asked and answers from a dict."""

    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self.entries = entries or {}
        self.asked: list[str] = []

    def lookup(self, key: str) -> str | None:
        self.asked.append(key)
        return self.entries.get(key.lower())


def _local(domain: str) -> bool:
    return domain == "local.test"


@pytest.mark.parametrize(
    ("address", "delimiter", "local", "order"),
    [
        (
            "user+ext@remote.test",
            "+",
            False,
            ["user+ext@remote.test", "user@remote.test", "@remote.test"],
        ),
        (
            "user+ext@local.test",
            "+",
            True,
            ["user+ext@local.test", "user@local.test", "user+ext", "user", "@local.test"],
        ),
        ("user@local.test", "+", True, ["user@local.test", "user", "@local.test"]),
        ("user+ext@remote.test", "", False, ["user+ext@remote.test", "@remote.test"]),
        (
            "user-ext@remote.test",
            "+-",
            False,
            ["user-ext@remote.test", "user@remote.test", "@remote.test"],
        ),
        ("user+ext", "+", False, ["user+ext", "user"]),
        ("owner-list@remote.test", "-", False, ["owner-list@remote.test", "@remote.test"]),
        ("list-request@remote.test", "-", False, ["list-request@remote.test", "@remote.test"]),
    ],
)
def test_lookup_order(address: str, delimiter: str, local: bool, order: list[str]) -> None:
    """Keys are tried in Postfix's order; bare user forms only for local domains; -request/owner-
    not split.
    """
    table = Recorder()
    result = lookup_address(
        table, address, delimiter=delimiter, is_local_domain=_local if local else None
    )
    assert result is None
    assert table.asked == order


@pytest.mark.parametrize(
    ("entries", "address", "expected"),
    [
        ({"user+ext@d.test": "exact@x"}, "user+ext@d.test", "exact@x"),
        ({"user@d.test": "a@x, b"}, "user+ext@d.test", "a+ext@x, b+ext"),
        ({"@d.test": "catch@x"}, "user+ext@d.test", "catch+ext@x"),
        ({"@d.test": "catch@x"}, "user@d.test", "catch@x"),
        ({"user@d.test": '"q u"@x'}, "user+e@d.test", '"q u"+e@x'),
        ({"user@d.test": "a@x"}, "USER+Ext@D.test", "a+Ext@x"),
    ],
)
def test_extension_propagation(entries: dict[str, str], address: str, expected: str) -> None:
    """A match found without the extension gets the extension appended to each result address."""
    assert lookup_address(Recorder(entries), address, delimiter="+") == expected


def test_no_propagation_when_disabled() -> None:
    """propagate_extension=False returns the value unchanged (mailbox paths, access actions)."""
    table = Recorder({"user@d.test": "d.test/user/"})
    assert (
        lookup_address(table, "user+x@d.test", delimiter="+", propagate_extension=False)
        == "d.test/user/"
    )


def test_multi_character_delimiter_keeps_the_one_used() -> None:
    """With several delimiter characters, the one in the address is the one propagated."""
    table = Recorder({"user@d.test": "a@x"})
    assert lookup_address(table, "user-ext@d.test", delimiter="+-") == "a-ext@x"


def test_lookup_failure_propagates() -> None:
    """A failing table raises TableError from lookup_address (defer, not bounce)."""
    with pytest.raises(TableError):
        lookup_address(open_table("fail:x"), "a@b")


@pytest.mark.parametrize(
    ("local", "delimiter", "parts"),
    [
        ("user+ext", "+", ("user", "+", "ext")),
        ("user+a+b", "+", ("user", "+", "a+b")),
        ("+ext", "+", ("+ext", "", "")),
        ("user", "+", ("user", "", "")),
        ("user-x", "", ("user-x", "", "")),
    ],
)
def test_split_extension(local: str, delimiter: str, parts: tuple[str, str, str]) -> None:
    """The extension starts after the first delimiter character that is not the first character."""
    assert split_extension(local, delimiter) == parts


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a@x, b@y", ["a@x", "b@y"]),
        ("a@x b@y,,c", ["a@x", "b@y", "c"]),
        ('"a, b"@x, c', ['"a, b"@x', "c"]),
        ("  ", []),
    ],
)
def test_split_result(value: str, items: list[str]) -> None:
    """Results split on commas and white space, but not inside quotes."""
    assert split_result(value) == items
