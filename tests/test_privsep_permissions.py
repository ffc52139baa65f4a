"""pymta check reports the queue's wrong ownerships and modes as postfix
check does; pymta set-permissions gives the queue back to its owner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pymta.privsep.permissions import check_permissions, set_permissions
from tests.harness import REPO

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


def make_queue(root: Path) -> Path:
    queue = root / "spool"
    for name in ("incoming", "active", "deferred", "hold", "corrupt", "defer"):
        (queue / name).mkdir(parents=True, mode=0o700)
    (queue / "maildrop").mkdir()
    (queue / "maildrop").chmod(0o1733)
    queue.chmod(0o755)
    return queue


def test_a_correct_queue_has_no_problems(tmp_path: Path) -> None:
    """Directories 0700, files 0600, maildrop 1733, all the owner's: nothing to say."""
    queue = make_queue(tmp_path)
    (queue / "active" / "ABC").write_bytes(b"x")
    (queue / "active" / "ABC").chmod(0o600)
    assert check_permissions(str(queue)) == []
    assert check_permissions(str(tmp_path / "missing")) == []


@needs_root
def test_wrong_modes_and_owners_are_reported_and_set_back(tmp_path: Path) -> None:
    """A 0755 queue directory, a world-readable queue file, a file of
    another owner and an open maildrop are reported; set_permissions fixes
    each, and check is then silent."""
    queue = make_queue(tmp_path)
    (queue / "deferred").chmod(0o755)
    readable = queue / "active" / "READABLE"
    readable.write_bytes(b"x")
    readable.chmod(0o644)
    foreign = queue / "hold" / "FOREIGN"
    foreign.write_bytes(b"x")
    foreign.chmod(0o600)
    os.chown(foreign, 65534, 65534)
    (queue / "maildrop").chmod(0o777)
    problems = check_permissions(str(queue))
    assert f"{queue}/deferred: mode 0755, expected 0700" in problems
    assert any(p.startswith(f"{readable}: owner uid 0, mode 0644") for p in problems)
    assert any(p.startswith(f"{foreign}: owner uid 65534") for p in problems)
    assert f"{queue}/maildrop: mode 0777, expected 1733" in problems
    changed = set_permissions(str(queue), 0, 0)
    assert f"{foreign}: owner set to 0:0" in changed
    assert check_permissions(str(queue)) == []
    assert readable.stat().st_mode & 0o777 == 0o600


def pymta(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MAIL_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "pymta.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@needs_root
def test_check_and_set_permissions_commands(tmp_path: Path) -> None:
    """pymta check warns about a 0755 queue directory and names the fix;
    pymta set-permissions -u nobody gives the queue to nobody; check is
    then quiet about the queue."""
    etc = tmp_path / "etc"
    etc.mkdir()
    queue = make_queue(tmp_path)
    (queue / "deferred").chmod(0o755)
    (etc / "main.cf").write_text(f"queue_directory = {queue}\nmyhostname = mx.example.test\n")
    (etc / "master.cf").write_text("")
    result = pymta("check", "-c", str(etc), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        f"pymta: warning: {queue}/deferred: mode 0755, expected 0700 (fix: pymta set-permissions)"
        in result.stderr
    )
    result = pymta("set-permissions", "-c", str(etc), "-u", "nobody", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"pymta: {queue}/deferred: mode set to 0700" in result.stdout
    assert (queue / "deferred").stat().st_uid == 65534
    result = pymta("check", "-c", str(etc), cwd=tmp_path)
    assert str(queue) not in result.stderr
