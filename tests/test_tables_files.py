"""texthash: and hash: tables: source syntax, compile, reload after a change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymta.tables import TableError, open_table
from pymta.tables.hashdb import compile_db
from pymta.tables.source import looks_like_aliases, parse_aliases, parse_map


class FakeClock:
    """A settable clock for the once-a-second change checks."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("a b\n", {"a": "b"}),
        ("A  B c\n", {"a": "B c"}),
        ("a\tb\n", {"a": "b"}),
        ("# comment\n\na b\n  # indented comment\n", {"a": "b"}),
        ("a b,\n  c\n\td\n", {"a": "b, c d"}),
        ("a b\nA c\n", {"a": "b"}),
        ("2001:db8::1 REJECT\n", {"2001:db8::1": "REJECT"}),
    ],
)
def test_parse_map(text: str, entries: dict[str, str]) -> None:
    """postmap syntax: key whitespace value, continuation lines, comments, folded keys, first
    duplicate wins.
    """
    assert parse_map(text, "f").entries == entries


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        ("a\n", 1, "expected format: key whitespace value"),
        ("a b\n\nA c\n", 3, "duplicate entry"),
    ],
)
def test_parse_map_problems(text: str, lineno: int, message: str) -> None:
    """A key without value and a duplicate key are problems naming file and line."""
    problems = parse_map(text, "f").problems
    assert len(problems) == 1
    assert problems[0].lineno == lineno
    assert str(problems[0]).startswith(f"f, line {lineno}: {message}")


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("root: admin\n", {"root": "admin"}),
        ("Root:admin, bob\n", {"root": "admin, bob"}),
        ("list: a,\n  b,\n\tc\n", {"list": "a, b, c"}),
        ('"with space": x\n', {"with space": "x"}),
        ("inc: :include:/etc/list\n", {"inc": ":include:/etc/list"}),
        ("cmd: |/usr/bin/prog arg\n", {"cmd": "|/usr/bin/prog arg"}),
        ("# c\nMAILER-DAEMON: postmaster\n", {"mailer-daemon": "postmaster"}),
    ],
)
def test_parse_aliases(text: str, entries: dict[str, str]) -> None:
    """aliases(5) syntax: name: value, continuations, quoted names, :include: kept as a value."""
    assert parse_aliases(text, "f").entries == entries


@pytest.mark.parametrize(
    ("text", "message"),
    [("no colon here\n", "expected format: name: value"), ("empty:\n", "no value")],
)
def test_parse_aliases_problems(text: str, message: str) -> None:
    """aliases lines without a colon or without a value are problems naming file and line."""
    parsed = parse_aliases(text, "aliases")
    assert parsed.entries == {}
    assert len(parsed.problems) == 1
    assert str(parsed.problems[0]).startswith("aliases, line 1: ")
    assert message in str(parsed.problems[0])


@pytest.mark.parametrize(
    ("text", "is_aliases"),
    [
        ("root: admin\nabuse: root\n", True),
        ("root admin\n", False),
        ("root: admin\nabuse root\n", False),
        ("2001:db8::1 REJECT\n", False),
        ("# only comments\n", False),
    ],
)
def test_looks_like_aliases(text: str, is_aliases: bool) -> None:
    """A texthash: file is read with aliases syntax only when every entry has the name: shape."""
    assert looks_like_aliases(text) is is_aliases


def test_texthash_reads_aliases_shape(tmp_path: Path) -> None:
    """A texthash: table over an aliases file answers with the alias value."""
    path = tmp_path / "aliases"
    path.write_text("postmaster: alice@example.test\nroot: postmaster\n")
    table = open_table(f"texthash:{path}", strict=True)
    assert table.lookup("ROOT") == "postmaster"


def test_texthash_strict_rejects_bad_line(tmp_path: Path) -> None:
    """strict texthash: open fails on a syntax problem, naming file and line."""
    path = tmp_path / "t"
    path.write_text("a b\nlonely\n")
    with pytest.raises(TableError, match=r"t, line 2: expected format"):
        open_table(f"texthash:{path}", strict=True)
    assert open_table(f"texthash:{path}").lookup("a") == "b"


def _bump(path: Path, text: str) -> None:
    """Rewrite path and move its mtime, so the change is visible even on coarse clocks."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_texthash_reload_after_change(tmp_path: Path) -> None:
    """texthash: re-reads a changed file, but checks at most once a second of the injected clock."""
    path = tmp_path / "t"
    path.write_text("a old\n")
    clock = FakeClock()
    table = open_table(f"texthash:{path}", clock=clock)
    assert table.lookup("a") == "old"
    _bump(path, "a new-value\n")
    clock.now += 0.5
    assert table.lookup("a") == "old"
    clock.now += 0.6
    assert table.lookup("a") == "new-value"


def test_texthash_keeps_contents_when_file_vanishes(tmp_path: Path) -> None:
    """A texthash: file that disappears after opening keeps serving what was loaded."""
    path = tmp_path / "t"
    path.write_text("a b\n")
    clock = FakeClock()
    table = open_table(f"texthash:{path}", clock=clock)
    path.unlink()
    clock.now += 5
    assert table.lookup("a") == "b"


def test_hash_missing_db_is_open_failure(tmp_path: Path) -> None:
    """hash:FILE without FILE.db fails to open, even when FILE exists."""
    (tmp_path / "t").write_text("a b\n")
    with pytest.raises(TableError, match=r"t\.db"):
        open_table(f"hash:{tmp_path / 't'}", strict=True)


def test_hash_garbage_db_is_open_failure(tmp_path: Path) -> None:
    """A FILE.db that is not a pymta table is an open failure, not an empty table."""
    (tmp_path / "t.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(TableError):
        open_table(f"hash:{tmp_path / 't'}", strict=True)


def test_hash_reopens_replaced_db(tmp_path: Path) -> None:
    """hash: picks up a recompiled FILE.db after the next once-a-second check."""
    db = str(tmp_path / "t.db")
    compile_db(db, [("a", "old")])
    clock = FakeClock()
    table = open_table(f"hash:{tmp_path / 't'}", clock=clock)
    assert table.lookup("a") == "old"
    compile_db(db, [("a", "new"), ("b", "c")])
    assert table.lookup("b") is None
    clock.now += 1.0
    assert table.lookup("a") == "new"
    assert table.lookup("b") == "c"


def test_compile_db_leaves_no_temporary(tmp_path: Path) -> None:
    """compile_db writes FILE.db atomically and leaves no temporary file behind."""
    compile_db(str(tmp_path / "t.db"), [("a", "b")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]
