"""pymta install-sendmail: the fast sendmail launcher and its mailq/newaliases names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pymta
from pymta.cli.main import main
from pymta.sendmail.launcher import MARKER, InstallError, install

ROOT = str(Path(pymta.__file__).resolve().parent.parent)


def _config(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"queue_directory = {tmp_path / 'spool'}\n")
    return etc


def _env() -> dict[str, str]:
    """No PYTHONPATH: the launcher must find pymta by itself."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_launcher_submits_without_the_site_module(tmp_path: Path) -> None:
    """The launcher runs Python with -S, finds pymta from the path it was
    written with, and drops a message into maildrop; mailq and newaliases are
    links to it, and the mailq name lists the queue."""
    etc = _config(tmp_path)
    written = install(str(tmp_path / "sbin"), str(tmp_path / "bin"), sys.executable)
    sendmail = tmp_path / "sbin" / "sendmail"
    assert written == [str(sendmail), str(tmp_path / "bin/mailq"), str(tmp_path / "bin/newaliases")]
    assert sendmail.read_text().startswith(f"#!{sys.executable} -S\n")
    assert os.readlink(tmp_path / "bin" / "mailq") == "../sbin/sendmail"
    result = subprocess.run(
        [str(sendmail), "-C", str(etc), "user@example.org"],
        input=b"Subject: hi\n\nbody\n",
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "spool" / "maildrop").iterdir())) == 1
    listing = subprocess.run(
        [str(tmp_path / "bin" / "mailq"), "-C", str(etc)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    assert listing.returncode == 0, listing.stderr
    assert "Mail queue is empty" in listing.stdout


def test_full_environment_loads_site_packages_under_dash_s() -> None:
    """Started with -S, the modes that need installed packages get them:
    full_environment() loads the site module (pyOpenSSL, from site-packages, becomes importable)."""
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from pymta.sendmail.command import full_environment\n"
        "try:\n    import OpenSSL\nexcept ImportError:\n    pass\n"
        "else:\n    sys.exit('OpenSSL importable before site: the test proves nothing')\n"
        "full_environment()\nimport OpenSSL\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 0, result.stderr


def test_foreign_files_are_replaced_only_with_force(tmp_path: Path) -> None:
    """Another MTA's sendmail (or a link elsewhere) is kept unless --force;
    pymta's own launcher is replaced, so installing twice works."""
    sbin, bin_dir = tmp_path / "sbin", tmp_path / "bin"
    sbin.mkdir()
    (sbin / "sendmail").write_text("#!/bin/sh\n# Postfix's\n")
    with pytest.raises(InstallError, match="not pymta's; use --force"):
        install(str(sbin), str(bin_dir), sys.executable)
    assert (sbin / "sendmail").read_text().endswith("# Postfix's\n")
    install(str(sbin), str(bin_dir), sys.executable, force=True)
    assert MARKER in (sbin / "sendmail").read_text()
    install(str(sbin), str(bin_dir), sys.executable)  # ours: replaced quietly
    (bin_dir / "mailq").unlink()
    (bin_dir / "mailq").symlink_to("/usr/sbin/postqueue")
    assert main(["install-sendmail", "--sbin", str(sbin), "--bin", str(bin_dir)]) == 1
    assert main(["install-sendmail", "--sbin", str(sbin), "--bin", str(bin_dir), "--force"]) == 0
    assert os.readlink(bin_dir / "mailq") == "../sbin/sendmail"
