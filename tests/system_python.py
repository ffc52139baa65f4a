"""A Python interpreter other Unix users may run, with pymta's requirements.

The python3 on PATH may live under /root (0700): a twistd started as root
with ``-u nobody`` then runs on, but the worker processes it spawns as
nobody cannot start. :func:`system_python` makes (once, then reuses) a venv
of Debian's /usr/bin/python3 under /tmp with setup.cfg's install_requires,
installed by pip from the configured index; the tests put the worktree on
PYTHONPATH as usual. Returns None when that cannot be done (no
/usr/bin/python3, no venv module, pip failed), for the test to skip.
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.harness import REPO

SYSTEM_PYTHON = "/usr/bin/python3"


def requirements() -> list[str]:
    """setup.cfg's install_requires."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    text = parser.get("options", "install_requires", fallback="")
    return [line.strip() for line in text.splitlines() if line.strip()]


def system_python() -> str | None:
    """The venv's python (made on first use), or None."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return None
    wanted = requirements()
    key = hashlib.sha256("\n".join([SYSTEM_PYTHON, *wanted]).encode()).hexdigest()[:12]
    venv = Path(f"/tmp/pymta-test-venv-{key}")
    python = venv / "bin" / "python"
    with open(f"/tmp/pymta-test-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time
        if (venv / "ready").exists():
            return str(python)
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run(
                [SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *wanted],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError):
            shutil.rmtree(venv, ignore_errors=True)
            return None
        os.chmod(venv, 0o755)
        (venv / "ready").write_text("")
    return str(python)
