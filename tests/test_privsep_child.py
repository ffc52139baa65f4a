"""The delivery child's mbox append: a lock held for a moment is waited
for (as Postfix retries deliver_lock_attempts times), and one that stays
held ends in 4.2.0 "mailbox busy" with nothing written."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pymta.privsep import child


def request(path: Path) -> dict[str, object]:
    return {"path": str(path), "sender": "a@example.org", "time": 0.0, "locks": ["fcntl"]}


def test_a_lock_released_soon_is_waited_for(tmp_path: Path) -> None:
    """Another process holds the fcntl lock and releases it 0.3 s later
    (after writing a line): the append waits and then succeeds, after
    that line (without the retries it would end in 4.2.0 at once)."""
    mbox = tmp_path / "mbox"
    mbox.write_bytes(b"")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(mbox)!r}, os.O_WRONLY | os.O_APPEND)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(0.3)\n"
            "os.write(fd, b'HOLDER\\n')\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"locked\n"
    outcome = child.append_mbox(request(mbox), io.BytesIO(b"Subject: x\n\nbody\n"))
    assert holder.wait() == 0
    assert outcome.status == "2.0.0"
    assert mbox.read_bytes().startswith(b"HOLDER\nFrom a@example.org  ")


def test_a_lock_that_stays_is_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dot lock that stays (and is not stale) ends in 4.2.0 after the
    attempts, with the mailbox untouched."""
    monkeypatch.setattr(child, "LOCK_ATTEMPTS", 3)
    mbox = tmp_path / "mbox"
    (tmp_path / "mbox.lock").write_bytes(b"")
    stamp = os.stat(tmp_path / "mbox.lock").st_mtime
    req = {**request(mbox), "locks": ["dotlock"], "time": stamp}
    with pytest.raises(child.Outcome) as info:
        child.append_mbox(req, io.BytesIO(b"x\n"))
    assert info.value.status == "4.2.0"
    assert "mailbox busy" in info.value.text
    assert not mbox.exists()
