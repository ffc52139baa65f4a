"""pymta postmap / postalias / newaliases: compile, query, dump, errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pymta.cli.postmap import run_newaliases, run_postalias, run_postmap
from pymta.tables import open_table


def test_compile_and_query_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """postmap hash:FILE writes FILE.db; -q finds a key (exit 0) and misses another (exit 1)."""
    src = tmp_path / "virtual"
    src.write_text("Info@Example.test  alice@example.test, bob@example.test\n")
    assert run_postmap([f"hash:{src}"], str(tmp_path)) == 0
    assert (tmp_path / "virtual.db").exists()
    assert run_postmap(["-q", "info@EXAMPLE.test", f"hash:{src}"], str(tmp_path)) == 0
    assert capsys.readouterr().out == "alice@example.test, bob@example.test\n"
    assert run_postmap(["-q", "nobody@example.test", f"hash:{src}"], str(tmp_path)) == 1
    assert capsys.readouterr().out == ""
    assert open_table(f"hash:{src}").lookup("info@example.test") is not None


def test_default_type_is_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file named without type is compiled as default_database_type (hash)."""
    src = tmp_path / "access"
    src.write_text("1.2.3.4 REJECT\n")
    assert run_postmap([str(src)], str(tmp_path)) == 0
    assert run_postmap(["-q", "1.2.3.4", str(src)], str(tmp_path)) == 0
    assert capsys.readouterr().out == "REJECT\n"


@pytest.mark.parametrize(
    ("spec", "key", "value"),
    [
        ("inline:{a=b}", "A", "b"),
        ("static:{x y}", "any", "x y"),
    ],
)
def test_query_any_type(
    spec: str, key: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-q works on tables that need no file, too."""
    assert run_postmap(["-q", key, spec], str(tmp_path)) == 0
    assert capsys.readouterr().out == f"{value}\n"


def test_query_regexp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-q on a regexp: table applies the rules."""
    src = tmp_path / "r"
    src.write_text("/^(.*)@old\\.test$/ $1@new.test\n")
    assert run_postmap(["-q", "joe@old.test", f"regexp:{src}"], str(tmp_path)) == 0
    assert capsys.readouterr().out == "joe@new.test\n"


def test_query_keys_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-q - reads keys from stdin and prints key<TAB>value for each one found."""
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nmissing\nc\n"))
    assert run_postmap(["-q", "-", "inline:{a=1, c=3}"], str(tmp_path)) == 0
    assert capsys.readouterr().out == "a\t1\nc\t3\n"


def test_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-s prints every entry of a compiled table."""
    src = tmp_path / "t"
    src.write_text("b 2\na 1\n")
    assert run_postmap([f"hash:{src}"], str(tmp_path)) == 0
    assert run_postmap(["-s", f"hash:{src}"], str(tmp_path)) == 0
    assert capsys.readouterr().out == "a\t1\nb\t2\n"


def test_dump_unsupported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-s on a table that cannot be listed is a fatal error."""
    assert run_postmap(["-s", "static:x"], str(tmp_path)) == 1
    assert "pymta: fatal:" in capsys.readouterr().err


def test_warnings_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad source line is a warning naming file and line; the good lines are compiled."""
    src = tmp_path / "t"
    src.write_text("a 1\nlonely\n")
    assert run_postmap([f"hash:{src}"], str(tmp_path)) == 0
    err = capsys.readouterr().err
    assert f"pymta: warning: {src}, line 2: expected format: key whitespace value" in err
    assert open_table(f"hash:{src}").lookup("a") == "1"


def test_missing_file_is_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing source file is 'pymta: fatal: ...' and exit status 1."""
    assert run_postmap([f"hash:{tmp_path / 'nope'}"], str(tmp_path)) == 1
    assert capsys.readouterr().err.startswith("pymta: fatal: open ")


def test_query_missing_db_is_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-q on hash:FILE without FILE.db is a fatal error, not 'not found'."""
    (tmp_path / "t").write_text("a b\n")
    assert run_postmap(["-q", "a", f"hash:{tmp_path / 't'}"], str(tmp_path)) == 1
    assert "pymta: fatal:" in capsys.readouterr().err


def test_regexp_check_is_fatal_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """postmap regexp:FILE checks the rules and names the file and line of an error."""
    src = tmp_path / "r"
    src.write_text("/ok/ x\n/a(/ y\n")
    assert run_postmap([f"regexp:{src}"], str(tmp_path)) == 1
    assert f"pymta: fatal: {src}, line 2: bad pattern" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No table, or an unknown option, is a usage error with exit status 1."""
    assert run_postmap([], str(tmp_path)) == 1
    assert run_postmap(["-Z", "hash:x"], str(tmp_path)) == 1
    assert capsys.readouterr().err.count("pymta: fatal:") == 2


def test_postalias_compile_and_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """postalias compiles aliases(5) syntax; -q answers with the alias value."""
    src = tmp_path / "aliases"
    src.write_text("postmaster: alice@example.test\nroot:\n  postmaster\n")
    assert run_postalias([f"hash:{src}"], str(tmp_path)) == 0
    assert run_postalias(["-q", "ROOT", f"hash:{src}"], str(tmp_path)) == 0
    assert capsys.readouterr().out == "postmaster\n"


def test_newaliases_rebuilds_alias_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """newaliases compiles every hash: file in alias_database and checks texthash: ones."""
    (tmp_path / "aliases").write_text("root: admin\n")
    (tmp_path / "more").write_text("abuse: root\n")
    (tmp_path / "main.cf").write_text(
        "alias_database = hash:$config_directory/aliases, texthash:$config_directory/more\n"
    )
    assert run_newaliases([], str(tmp_path)) == 0
    assert open_table(f"hash:{tmp_path / 'aliases'}").lookup("root") == "admin"
    assert not (tmp_path / "more.db").exists()
    assert capsys.readouterr().err == ""


def test_newaliases_without_main_cf_is_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """newaliases needs main.cf in the configuration directory."""
    assert run_newaliases([], str(tmp_path / "none")) == 1
    assert "pymta: fatal:" in capsys.readouterr().err


def test_newaliases_warns_on_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """newaliases reports an aliases syntax problem with file and line, and builds the rest."""
    (tmp_path / "aliases").write_text("root: admin\nbroken line\n")
    (tmp_path / "main.cf").write_text("alias_database = hash:$config_directory/aliases\n")
    assert run_newaliases(["-c", str(tmp_path)], "/nonexistent") == 0
    assert "aliases, line 2: expected format: name: value" in capsys.readouterr().err
    assert open_table(f"hash:{tmp_path / 'aliases'}").lookup("root") == "admin"
