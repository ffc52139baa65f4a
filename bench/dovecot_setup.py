"""dovecot_setup - a private Dovecot instance for the POP3 and IMAP benchmarks.

SYNOPSIS
    server = DovecotServer(workdir, passwd_text, uid, gid)
    server.start(); ... server.pop3_port, server.imap_port ...; server.stop()

DESCRIPTION
    Writes workdir/dovecot/dovecot.conf - only Dovecot's built-in defaults
    plus what a Debian Maildir + passwd-file setup sets:

        protocols = pop3 imap, listen = 127.0.0.1, ssl = no,
        auth_mechanisms = plain, disable_plaintext_auth = no,
        mail_location = maildir:~ (the passwd-file home is the Maildir),
        mail_uid/mail_gid = the mailbox owner,
        passdb and userdb: passwd-file workdir/dovecot/passwd,
        base_dir, state_dir, log_path, info_log_path inside workdir/dovecot,
        pop3 and imap inet listeners on free 127.0.0.1 ports
        (pop3s/imaps disabled: port 0)

    and runs it as root in the foreground,

        dovecot -F -c workdir/dovecot/dovecot.conf

    in its own session.  Login and mail processes are Dovecot's defaults
    (high-security mode: a login process per connection, a pop3/imap
    process per session), as a packaged Dovecot runs.  start() returns
    once both ports greet; stop() sends SIGTERM to the dovecot master
    (which stops its children), then SIGKILL to the session's process
    group only if it has not exited in 15 seconds.  A system Dovecot
    (ports 110/143, /run/dovecot) is never touched: every path and port
    is this instance's own.

FILES
    workdir/dovecot/dovecot.conf, passwd, run/ (base_dir), state/,
    dovecot.log, dovecot-info.log, stdout.log

REQUIREMENTS
    root; Debian's dovecot-pop3d and dovecot-imapd (Dovecot 2.3).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

from bench_measure import free_loopback_port, stop_session
from retrieval_run import LISTEN_HOST, wait_for_greeting

DOVECOT = "/usr/sbin/dovecot"


def dovecot_missing() -> str | None:
    """Why Dovecot cannot be benchmarked here, or None."""
    if shutil.which(DOVECOT) is None and not os.path.exists(DOVECOT):
        return "dovecot not installed (apt-get install -y dovecot-pop3d dovecot-imapd)"
    if os.geteuid() != 0:
        return "dovecot must be started as root"
    return None


def dovecot_conf(
    *, root: Path, passwd: Path, uid: int, gid: int, pop3_port: int, imap_port: int
) -> str:
    """The dovecot.conf text of the private instance."""
    return f"""\
# Written by bench/dovecot_setup.py; removed with its temporary directory.
instance_name = bench-{root.name}
protocols = pop3 imap
listen = {LISTEN_HOST}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot-info.log
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
mail_location = maildir:~
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {LISTEN_HOST}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {LISTEN_HOST}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class DovecotServer:
    """Dovecot 2.3 under `dovecot -F -c FILE`, serving the bench users."""

    name = "dovecot"

    def __init__(
        self,
        workdir: Path,
        passwd_text: str,
        uid: int,
        gid: int,
        mail_root: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.root = workdir / "dovecot"
        self.mail_root = mail_root or self.root / "mail"
        self.conf = self.root / "dovecot.conf"
        self.passwd = self.root / "passwd"
        self.passwd_text = passwd_text
        self.uid, self.gid = uid, gid
        self.pop3_port = free_loopback_port(LISTEN_HOST)
        self.imap_port = free_loopback_port(LISTEN_HOST)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def write_config(self) -> None:
        """Create the instance's directory, passwd-file and dovecot.conf."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # dovecot's auth and mail users traverse it
        self.mail_root.mkdir(parents=True, exist_ok=True)
        self.passwd.write_text(self.passwd_text)
        os.chmod(self.passwd, 0o644)
        self.conf.write_text(
            dovecot_conf(
                root=self.root,
                passwd=self.passwd,
                uid=self.uid,
                gid=self.gid,
                pop3_port=self.pop3_port,
                imap_port=self.imap_port,
            )
        )

    def start(self) -> None:
        """Configure, start `dovecot -F`, and wait until POP3 and IMAP greet."""
        self.write_config()
        self._out = open(self.root / "stdout.log", "wb")
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = self._proc
        deadline = time.monotonic() + self.startup_timeout
        try:
            for port, greeting in ((self.pop3_port, b"+OK"), (self.imap_port, b"* OK")):
                wait_for_greeting(
                    LISTEN_HOST, port, greeting, deadline, alive=lambda: proc.poll() is None
                )
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"dovecot: {e}\n{self.log_tail()}") from e

    def log_tail(self, lines: int = 15) -> str:
        """The end of Dovecot's logs, for error messages."""
        out = []
        for name in ("stdout.log", "dovecot.log"):
            try:
                text = (self.root / name).read_text(errors="replace")
            except OSError:
                continue
            out.extend(text.splitlines()[-lines:])
        return "\n".join(out)

    def root_pids(self) -> list[int]:
        """The dovecot master: login, auth and mail processes are its children."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self._proc.pid]

    def stop(self) -> None:
        """Stop the master (it stops its children); SIGKILL the group if stuck."""
        proc, self._proc = self._proc, None
        stop_session(proc)
        if self._out is not None:
            self._out.close()
            self._out = None
