"""bench_pymta - a private pymta instance for the benchmark.

SYNOPSIS
    server = PymtaServer(workdir, setup)
    server.start(); ...; server.stop()

DESCRIPTION
    Builds a pymta instance under workdir/pymta with the same main.cf and
    master.cf as the Postfix instance (pymta's configuration is
    Postfix's), and runs

        python -c 'from twisted.scripts.twistd import run; run()' \\
            -n --pidfile= pymta --config workdir/pymta/etc

    with this checkout first on PYTHONPATH, so the plugin in
    twisted/plugins/ and the package in pymta/ are the ones measured
    even when pymta is not installed.  The server runs in its own
    session; stop() sends SIGTERM to twistd, then SIGKILL to that
    session's process group only if it has not exited in 15 seconds.

FILES
    workdir/pymta/etc/          main.cf, master.cf, vmailbox
    workdir/pymta/queue/        queue_directory
    workdir/pymta/data/         data_directory
    workdir/pymta/mail/         virtual_mailbox_base
    workdir/pymta/twistd.log    twistd's stdout and stderr
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from bench_measure import free_loopback_port, stop_session, wait_for_banner
from bench_setup import LISTEN_HOST, MailSetup

CHECKOUT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class TwistdProcess:
    """``twistd -n pymta --config CONFIG`` in its own session, with this
    checkout first on PYTHONPATH; subclasses set root, config and twistd_log
    and call :meth:`spawn` from their start()."""

    root: Path
    config: Path
    twistd_log: Path
    #: The tree whose pymta runs (first on PYTHONPATH), and a command its
    #: twistd runs under (e.g. valgrind's; empty: none).
    checkout: Path = CHECKOUT
    wrapper: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.checkout), env.get("PYTHONPATH", "")) if p
        )
        self._log_file = open(self.twistd_log, "wb")
        self._proc = subprocess.Popen(
            [*self.wrapper, *TWISTD, "-n", "--pidfile=", "pymta", "--config", str(self.config)],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self._proc

    def log_tail(self, lines: int = 15) -> str:
        """The end of twistd's output, for error messages."""
        try:
            text = self.twistd_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def root_pids(self) -> list[int]:
        """twistd: worker processes it starts are its descendants."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self._proc.pid]

    def stop(self) -> None:
        """Stop twistd (and anything left in its process group)."""
        proc, self._proc = self._proc, None
        stop_session(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class PymtaServer(TwistdProcess):
    """pymta under twistd -n, configured like the Postfix instance."""

    name = "pymta"

    def __init__(
        self,
        workdir: Path,
        setup: MailSetup,
        startup_timeout: float = 60.0,
        extra_main_cf: str = "",
    ) -> None:
        self.root = workdir / "pymta"
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.mail = self.root / "mail"
        self.log = self.root / "maillog"
        self.twistd_log = self.root / "twistd.log"
        self.setup = setup
        self.extra_main_cf = extra_main_cf
        self.port = free_loopback_port(LISTEN_HOST)
        self.startup_timeout = startup_timeout

    def write_config(self) -> None:
        """Create the instance's directories and configuration files."""
        for d in (self.config, self.queue, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail, self.setup.uid, self.setup.gid)
        main_cf = self.setup.main_cf(
            config=self.config, queue=self.queue, data=self.data, mail=self.mail, log=self.log
        )
        # pymta writes virtual mailboxes as its own user: it has no
        # virtual_uid_maps to set, and refuses one that names another uid.
        main_cf = "".join(
            line
            for line in main_cf.splitlines(keepends=True)
            if not line.startswith(("virtual_uid_maps", "virtual_gid_maps"))
        )
        main_cf += self.extra_main_cf
        (self.config / "main.cf").write_text(main_cf)
        (self.config / "master.cf").write_text(MailSetup.master_cf(self.port))
        (self.config / "vmailbox").write_text(self.setup.vmailbox_text())

    def start(self) -> None:
        """Configure, start twistd, and wait for the SMTP greeting."""
        self.write_config()
        proc = self.spawn()
        try:
            wait_for_banner(
                LISTEN_HOST,
                self.port,
                time.monotonic() + self.startup_timeout,
                alive=lambda: proc.poll() is None,
            )
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}; last lines of {self.twistd_log}:\n{self.log_tail()}") from e

    def maildir_new(self, recipient: str) -> Path:
        """new/ of recipient's Maildir under virtual_mailbox_base."""
        return self.setup.maildir_new(self.mail, recipient)
