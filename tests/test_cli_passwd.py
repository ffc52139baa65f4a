"""`pymta passwd`: hashes like doveadm pw, and updates passwd-files atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pymta.auth.passwdfile import parse_text
from pymta.auth.schemes import StoredPassword, verify
from pymta.cli.passwd import run


def asker(*answers: str) -> Callable[[str], str]:
    queue = list(answers)
    return lambda prompt: queue.pop(0)


def test_prints_argon2id_hash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without options it asks twice and prints an {ARGON2ID} hash of the password."""
    assert run([], str(tmp_path), ask=asker("pw1", "pw1")) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("{ARGON2ID}$argon2id$")
    assert verify("pw1", StoredPassword.parse(out))


@pytest.mark.parametrize("scheme", ["BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN"])
def test_scheme_option(scheme: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """-s SCHEME picks the scheme; the printed hash verifies."""
    assert run(["-s", scheme.lower()], str(tmp_path), ask=asker("x", "x")) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("{" + scheme + "}")
    assert verify("x", StoredPassword.parse(out))


def test_mismatch_and_empty_fail(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Different answers or an empty password exit 1 with a fatal message."""
    assert run([], str(tmp_path), ask=asker("a", "b")) == 1
    assert "don't match" in capsys.readouterr().err
    assert run([], str(tmp_path), ask=asker("", "")) == 1
    assert run(["-s", "CRAM-MD5"], str(tmp_path), ask=asker("a", "a")) == 1
    assert "unknown scheme" in capsys.readouterr().err


def test_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--stdin reads the password once from standard input (without its newline)."""
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert run(["--stdin", "-s", "PLAIN"], str(tmp_path)) == 0
    assert capsys.readouterr().out.strip() == "{PLAIN}from stdin"


def test_update_replaces_line_keeping_fields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--update replaces only the user's password field and keeps other lines and fields."""
    path = tmp_path / "passwd"
    path.write_text(
        "# users\n"
        "alice@example.org:{PLAIN}old:1000:1000::/home/alice::mail=maildir:~/Maildir\n"
        "bob@example.org:{PLAIN}bob\n"
    )
    os.chmod(path, 0o640)
    monkeypatch.setattr("sys.stdin", io.StringIO("new pw\n"))
    assert (
        run(["--stdin", "-u", "Alice@Example.org", "--update", str(path), "-s", "BLF-CRYPT"], "")
        == 0
    )
    lines = path.read_text().splitlines()
    assert lines[0] == "# users" and lines[2] == "bob@example.org:{PLAIN}bob"
    assert lines[1].startswith("alice@example.org:{BLF-CRYPT}$2y$")
    assert lines[1].endswith(":1000:1000::/home/alice::mail=maildir:~/Maildir")
    entry = parse_text(path.read_text())["alice@example.org"]
    assert entry.password is not None and verify("new pw", entry.password)
    assert entry.mail_location() == "/home/alice/Maildir"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"]


def test_update_adds_new_user_to_new_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A user not in the file is appended; a missing file is created mode 0600."""
    path = tmp_path / "passwd"
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert (
        run(["--stdin", "-s", "PLAIN", "-u", "carol@example.org", "--update", str(path)], "") == 0
    )
    assert path.read_text() == "carol@example.org:{PLAIN}pw\n"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_update_needs_user_and_valid_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--update without -u, or a user name with ':' or spaces, is refused before asking."""
    path = tmp_path / "passwd"
    assert run(["--update", str(path)], "", ask=asker("a", "a")) == 1
    assert run(["-u", "a:b", "--update", str(path)], "", ask=asker("a", "a")) == 1
    assert run(["-u", "a b", "--update", str(path)], "", ask=asker("a", "a")) == 1
    assert not path.exists()
