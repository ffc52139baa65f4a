"""open_table: the type registry, inline/static/fail, surrogates and strict mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from pymta.tables import TableError, open_table, split_spec
from pymta.tables.simple import SurrogateTable, parse_inline


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("{a=b}", {"a": "b"}),
        ("{ A=B , c=d }", {"a": "B", "c": "d"}),
        ("{ { A = B } }", {"a": "B"}),
        ("{ { key = value with spaces }, x=y }", {"key": "value with spaces", "x": "y"}),
        ("{}", {}),
        ("{a=b, a=c}", {"a": "b"}),
        ("{a==b}", {"a": "=b"}),
    ],
)
def test_parse_inline(name: str, expected: dict[str, str]) -> None:
    """inline: entries are key=value items of a Postfix list, braces group values with spaces."""
    assert parse_inline(name) == expected


@pytest.mark.parametrize("name", ["a=b", "{a}", "{=b}", "{ {novalue} }", "{ a = b }"])
def test_parse_inline_errors(name: str) -> None:
    """inline: without braces or with an item lacking key=value is an open error."""
    with pytest.raises(TableError):
        parse_inline(name)


@pytest.mark.parametrize(
    ("spec", "value"),
    [("static:OK", "OK"), ("static:{ two words }", "two words"), ("static:", "")],
)
def test_static(spec: str, value: str) -> None:
    """static: answers every key with its value, braces removed."""
    assert open_table(spec).lookup("x") == value


def test_fail_table_always_fails() -> None:
    """fail:name fails every lookup with a TableError naming the table."""
    with pytest.raises(TableError, match="fail:oops"):
        open_table("fail:oops").lookup("key")


@pytest.mark.parametrize("spec", ["nocolon", ":x", "bogus:x", "hash:", "inline:a=b"])
def test_strict_open_raises(spec: str) -> None:
    """With strict=True a table that cannot be opened raises TableError."""
    with pytest.raises(TableError):
        open_table(spec, strict=True)


def test_surrogate_on_open_failure(tmp_path: Path) -> None:
    """A table that fails to open becomes a surrogate that fails every lookup with the reason, and
    a warning is logged.
    """
    events: list[LogEvent] = []

    @implementer(ILogObserver)
    def observer(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        table = open_table(f"hash:{tmp_path / 'missing'}")
        assert isinstance(table, SurrogateTable)
        with pytest.raises(TableError, match=r"missing\.db"):
            table.lookup("a")
        with pytest.raises(TableError):
            table.lookup("b")
    finally:
        globalLogPublisher.removeObserver(observer)
    texts = [formatEvent(e) for e in events if e.get("log_namespace") == "pymta.tables"]
    assert any("is unavailable" in t and "missing.db" in t for t in texts)
    # Each failed lookup is a mail log warning, as Postfix's surrogate logs it.
    mail = [e["text"] for e in events if e.get("pymta_maillog")]
    assert len(mail) == 2
    assert mail[0] == (
        f"hash:{tmp_path / 'missing'} is unavailable. open database "
        f"{tmp_path / 'missing'}.db: No such file or directory"
    )


def test_a_source_without_its_db_says_how_to_compile_it(tmp_path: Path) -> None:
    """A hash: table whose source exists but was never compiled names the
    postmap command that fixes it."""
    (tmp_path / "vmailbox").write_text("a@example.test a/\n")
    table = open_table(f"hash:{tmp_path / 'vmailbox'}")
    with pytest.raises(TableError, match=r"compile it: pymta postmap hash:"):
        table.lookup("a@example.test")


@pytest.mark.parametrize("kind", ["btree", "lmdb"])
def test_btree_lmdb_are_hash(kind: str, tmp_path: Path) -> None:
    """btree: and lmdb: read the same FILE.db as hash:."""
    from pymta.tables.hashdb import compile_db

    compile_db(str(tmp_path / "t.db"), [("k", "v")])
    assert open_table(f"{kind}:{tmp_path / 't'}").lookup("K") == "v"


def test_split_spec() -> None:
    """split_spec separates the type (lower-cased) from the name at the first colon."""
    assert split_spec("HASH:/etc/x:y") == ("hash", "/etc/x:y")


def test_proxy_opens_the_inner_table() -> None:
    """proxy:type:name opens type:name directly (unix:passwd.byname too);
    proxy: of an unknown type still fails."""
    assert open_table("proxy:inline:{a=b}").lookup("a") == "b"
    line = open_table("proxy:unix:passwd.byname").lookup("root")
    assert line is not None and line.startswith("root:")
    with pytest.raises(TableError):
        open_table("proxy:nosuchtype:x").lookup("root")
