"""bench_postfix - a private Postfix instance for the benchmark.

SYNOPSIS
    server = PostfixServer(workdir, setup)
    server.start(); ...; server.stop()

DESCRIPTION
    Builds a complete Postfix instance under workdir/postfix: its own
    config_directory (main.cf, master.cf, the texthash: vmailbox map),
    queue_directory, data_directory, virtual_mailbox_base and
    maillog_file (postlogd), with every service chroot-free and smtpd on
    a free 127.0.0.1 port.  It is started with "postfix -c DIR start" and
    stopped with "postfix -c DIR stop" (then "abort", then a kill of its
    own master pid if that still lives).  A system Postfix that the
    Debian package may run on port 25 is never touched: every command
    names this instance's config directory.

    Requires root (Postfix's master runs as root and drops to mail_owner)
    and Debian's postfix package (apt-get install -y postfix).

FILES
    workdir/postfix/etc/        config_directory
    workdir/postfix/queue/      queue_directory (owned as postfix wants)
    workdir/postfix/data/       data_directory (master.lock: master pid)
    workdir/postfix/mail/       virtual_mailbox_base, owned by setup.uid
    workdir/postfix/maillog     the mail log
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench_measure import free_loopback_port, wait_for_banner
from bench_setup import LISTEN_HOST, MailSetup

POSTFIX = "/usr/sbin/postfix"


def postfix_missing() -> str | None:
    """Why Postfix cannot be benchmarked here, or None when it can."""
    for tool in (POSTFIX, "/usr/sbin/postconf"):
        if not os.access(tool, os.X_OK):
            return f"{tool} not found: apt-get install -y postfix"
    if os.geteuid() != 0:
        return "the private Postfix instance must be started as root"
    return None


class PostfixServer:
    """A Postfix instance living entirely under one directory."""

    name = "postfix"

    def __init__(self, workdir: Path, setup: MailSetup, startup_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.root = workdir / "postfix"
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.mail = self.root / "mail"
        self.log = self.root / "maillog"
        self.setup = setup
        self.port = free_loopback_port(LISTEN_HOST)
        self.startup_timeout = startup_timeout
        self._started = False

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            check=check,
            capture_output=True,
            text=True,
        )

    def write_config(self) -> None:
        """Create the instance's directories and configuration files."""
        for d in (self.config, self.queue, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
        # Postfix's daemons run as the postfix user and must reach their
        # directories through the bench's (mkdtemp: 0700) directory.
        self.workdir.chmod(0o711)
        self.root.chmod(0o755)
        shutil.chown(self.data, "postfix", "postfix")
        os.chown(self.mail, self.setup.uid, self.setup.gid)
        main_cf = self.setup.main_cf(
            config=self.config, queue=self.queue, data=self.data, mail=self.mail, log=self.log
        )
        (self.config / "main.cf").write_text(main_cf)
        (self.config / "master.cf").write_text(MailSetup.master_cf(self.port))
        (self.config / "vmailbox").write_text(self.setup.vmailbox_text())

    def start(self) -> None:
        """Configure, start the instance, and wait for its SMTP greeting."""
        self.write_config()
        # "postfix check" creates the missing queue directories with the
        # ownership and modes Postfix expects (post-install create-missing).
        self._postfix("check")
        self._started = True
        result = self._postfix("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stderr.strip()}")
        wait_for_banner(
            LISTEN_HOST,
            self.port,
            time.monotonic() + self.startup_timeout,
            alive=lambda: self.master_pid() is not None,
        )

    def master_pid(self) -> int | None:
        """The pid of this instance's master, if it runs."""
        try:
            pid = int((self.data / "master.lock").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def root_pids(self) -> list[int]:
        """The master: every other Postfix process is its descendant."""
        pid = self.master_pid()
        return [] if pid is None else [pid]

    def maildir_new(self, recipient: str) -> Path:
        """new/ of recipient's Maildir under virtual_mailbox_base."""
        return self.setup.maildir_new(self.mail, recipient)

    def stop(self) -> None:
        """Stop this instance only; never the system's Postfix."""
        if not self._started:
            return
        self._started = False
        pid = self.master_pid()
        if pid is None:
            return
        self._postfix("stop", check=False)
        deadline = time.monotonic() + 15
        while self.master_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.master_pid() is not None:
            self._postfix("abort", check=False)
            time.sleep(0.5)
        if self.master_pid() is not None:
            os.kill(pid, signal.SIGKILL)
