"""The admin command behaves as a Unix command: --help, pipes, stdin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pymta.cli import main as cli
from tests.harness import REPO


def _pymta(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MAIL_CONFIG", None)
    return subprocess.run(  # type: ignore[call-overload]
        [sys.executable, "-m", "pymta.cli.main", *args],
        env=env,
        cwd=REPO,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`pymta postconf -d | head`: when the reader has gone, the command stops
    with status 141 (128 + SIGPIPE) and no traceback on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the worst case of `| head -1`: the reader left first
    try:
        result = _pymta("postconf", "-d", stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


@pytest.mark.parametrize("command", sorted(cli.COMMAND_TABLE))
def test_every_command_takes_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`pymta COMMAND --help` prints the command's usage and exits 0 for every
    command (postconf's -h keeps Postfix's meaning, values only)."""
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pymta {command}")
    assert cli.SUMMARY[command] in out
    assert cli.main(["help", command]) == 0
    assert capsys.readouterr().out == out


def test_passwd_reads_a_password_from_a_pipe() -> None:
    """`echo secret | pymta passwd -s PLAIN` hashes the piped password without
    --stdin (standard input is not a terminal)."""
    result = _pymta("passwd", "-s", "PLAIN", input="piped secret\n", capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{PLAIN}piped secret\n"


def test_state_and_compiled_tables_are_ignored_by_git() -> None:
    """twistd.pid, twistd.log and compiled tables (etc/*.db) never show up as
    changes of a clone."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "twistd.pid", "twistd.log", "etc/vmailbox.db", "var/spool"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.stdout.split() == ["twistd.pid", "twistd.log", "etc/vmailbox.db", "var/spool"]
