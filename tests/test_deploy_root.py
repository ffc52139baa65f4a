"""Deployment as documented: started as root, ``twistd -u/-g`` hands pymta's
state to the unprivileged user, and the pid file goes away at stop."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import smtplib
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.scripts.twistd import ServerOptions

from pymta.config import Config
from pymta.config.errors import ConfigError
from pymta.ownership import (
    RunAs,
    check_readable,
    give_state_to,
    may_remove_entries,
    prepare_twistd_files,
    twistd_run_as,
)
from tests.harness import REPO, PymtaServer, wait_for_file

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def _nobody() -> RunAs:
    entry = pwd.getpwnam("nobody")
    return RunAs(entry.pw_uid, entry.pw_gid)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temporary directory that nobody may traverse (pytest's tmp_path lies
    under a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="pymta-deploy-"))
    path.chmod(0o755)
    for ancestor in path.parents:
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            shutil.rmtree(path)
            pytest.skip(f"{ancestor} is not searchable by other users")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_readme_deployment_command_parses_as_twistd_options() -> None:
    """The README's deployment command is one twistd accepts: its -u, -g,
    --pidfile and --logfile before the plugin name, --config after it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```sh\n(twistd -u [^`]*?)```", readme)
    assert match, "README has no `twistd -u ...` deployment command"
    words = match.group(1).replace("\\\n", " ").split()
    # The pymta user may not exist here: parse with accounts that do.
    for i, word in enumerate(words[:-1]):
        if word in ("-u", "-g"):
            words[i + 1] = {"-u": "nobody", "-g": "nogroup"}[word]
    options = ServerOptions()
    options.parseOptions(words[1:])
    assert options.subCommand == "pymta"
    assert options.subOptions["config"] == "/etc/pymta"
    assert options["pidfile"].startswith("/run/pymta/")
    assert options["uid"] is not None and options["gid"] is not None


def test_run_as_only_when_root_switches_to_another_user() -> None:
    """Nothing is handed over unless the process is root and twistd's -u names
    another user; -u without -g means the user's primary group, as in twistd."""
    nobody = _nobody()
    assert twistd_run_as(None, euid=0) is None
    assert twistd_run_as({"uid": nobody.uid, "gid": None}, euid=1000) is None
    assert twistd_run_as({"uid": None, "gid": None}, euid=0) is None
    assert twistd_run_as({"uid": 0, "gid": 0}, euid=0) is None
    assert twistd_run_as({"uid": nobody.uid, "gid": None}, euid=0) == nobody
    assert twistd_run_as({"uid": nobody.uid, "gid": 7}, euid=0) == RunAs(nobody.uid, 7)


@needs_root
def test_pid_file_in_a_directory_the_user_cannot_clean_is_refused(shared_dir: Path) -> None:
    """A --pidfile in a root-owned directory (or a sticky one such as /tmp)
    stops the start with one line naming the directory and a place that
    works; a missing directory is made, owned by the user."""
    nobody = _nobody()
    with pytest.raises(ConfigError, match=r"could not remove its pid file from .*--pidfile"):
        prepare_twistd_files(str(shared_dir / "twistd.pid"), None, nobody)
    sticky = shared_dir / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert not may_remove_entries(sticky, nobody)
    prepare_twistd_files(
        str(shared_dir / "run" / "pymta.pid"), str(shared_dir / "log/t.log"), nobody
    )
    for made in (shared_dir / "run", shared_dir / "log"):
        assert made.stat().st_uid == nobody.uid
        assert may_remove_entries(made, nobody)


@needs_root
def test_state_is_given_to_the_user(shared_dir: Path) -> None:
    """Queue and data directories (with what root made in them), the mailbox
    base and a new mail log belong to the user afterwards."""
    nobody = _nobody()
    spool = shared_dir / "spool"
    (spool / "incoming").mkdir(parents=True, mode=0o700)
    (spool / "incoming" / "X").write_text("x")
    config = Config(
        {
            "queue_directory": str(spool),
            "data_directory": str(shared_dir / "lib"),
            "virtual_mailbox_base": str(shared_dir / "mail"),
            "maillog_file": str(shared_dir / "log" / "maillog"),
        }
    )
    give_state_to(config, nobody)
    for path in (
        spool,
        spool / "incoming",
        spool / "incoming" / "X",
        shared_dir / "lib",
        shared_dir / "mail",
        shared_dir / "log",
        shared_dir / "log" / "maillog",
    ):
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.uid, nobody.gid), path


@needs_root
def test_a_passwd_file_the_user_cannot_read_stops_the_start(shared_dir: Path) -> None:
    """A 0600 root passwd-file (what `pymta passwd --update` makes) would fail
    every POP3/IMAP login after the switch: with pop3d or imapd in master.cf
    the start stops with one line giving the chgrp/chmod that fixes it; once
    group-readable it starts. Without pop3d/imapd the file is not needed."""
    nobody = _nobody()
    passwd = shared_dir / "passwd"
    passwd.write_text("a@example.test:{PLAIN}x::::::\n")
    passwd.chmod(0o600)
    config = Config({"pymta_passdb": f"passwd-file:{passwd}"})
    with pytest.raises(
        ConfigError, match=r"pymta_passdb: .* not readable by user nobody.*chmod 0640"
    ):
        check_readable(config, ["smtpd", "imapd"], nobody)
    check_readable(config, ["smtpd"], nobody)
    os.chown(passwd, 0, nobody.gid)
    passwd.chmod(0o640)
    check_readable(config, ["pop3d"], nobody)


def test_a_system_directory_is_never_given_away() -> None:
    """queue_directory = /var would chown the whole of /var, virtual_mailbox_base
    = /var/mail the system's mail spool: refused instead."""
    run_as = RunAs(os.geteuid() + 12345, 12345)
    config = Config({"queue_directory": "/var", "data_directory": ""})
    with pytest.raises(ConfigError, match="queue_directory: /var is a system directory"):
        give_state_to(config, run_as)
    config = Config(
        {"queue_directory": "", "data_directory": "", "virtual_mailbox_base": "/var/mail"}
    )
    with pytest.raises(ConfigError, match="virtual_mailbox_base: /var/mail is a system directory"):
        give_state_to(config, run_as)
    assert os.stat("/var/mail").st_uid != run_as.uid


@needs_root
def test_twistd_as_root_with_u_delivers_and_removes_its_pid_file(shared_dir: Path) -> None:
    """`twistd -u nobody -g nogroup --pidfile DIR/run/pymta.pid pymta` started
    as root: the server runs as nobody, accepts and delivers a message (queue,
    mailbox and maillog_file writable by nobody), and SIGTERM leaves no pid
    file behind."""
    nobody = _nobody()
    maillog = shared_dir / "log" / "maillog"
    server = PymtaServer(shared_dir, main_cf_extra=f"maillog_file = {maillog}\n")
    for path in server.config_dir.iterdir():
        path.chmod(0o644)
    pidfile = shared_dir / "run" / "pymta.pid"
    with server:
        server.start(twistd_options=["-u", "nobody", "-g", "nogroup", "--pidfile", str(pidfile)])
        server.wait_for_log(r"set uid/gid")
        pid = int(pidfile.read_text())
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
        assert uids and {int(u) for u in uids.groups()} == {nobody.uid}
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
            client.sendmail(
                "x@client.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n"
            )
        wait_for_file(maillog, lambda: "status=sent" in maillog.read_text())
        assert len(server.messages("alice")) == 1
        # twistd ends by re-raising the SIGTERM that stopped it.
        assert server.stop() in (0, -signal.SIGTERM)
    assert not pidfile.exists()
    assert "No permission to delete pid file" not in server.log()
    assert "Traceback" not in server.log()
