"""A private Debian Postfix instance in front of pymta, for end-to-end tests.

Built under a directory of its own (``postfix -c DIR``: config, queue and
data directories, maillog_file), never chrooted, smtpd on a free loopback
port, every other service Postfix's standard one. The system's Postfix is
never touched: every command names this instance's config directory.
Needs root (Postfix's master runs as root and drops to ``postfix``) and
Debian's postfix package; :func:`postfix_missing` says why not otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_missing() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not os.access(POSTFIX, os.X_OK):
        return f"{POSTFIX} not found (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostfixInstance:
    """``postfix -c DIR`` with ``virtual_transport`` pointing at pymta."""

    def __init__(self, main_cf_extra: str, domain: str = "example.test") -> None:
        # Postfix's daemons (user postfix) must reach these paths: a
        # directory of its own under /tmp, not pytest's 0700 tmp_path.
        self.root = Path(tempfile.mkdtemp(prefix="pymta-postfix-", dir="/tmp"))
        self.root.chmod(0o711)
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.log = self.root / "maillog"
        self.port = free_port()
        for d in (self.config, self.queue, self.data):
            d.mkdir()
        shutil.chown(self.data, "postfix", "postfix")
        (self.config / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
config_directory = {self.config}
queue_directory = {self.queue}
data_directory = {self.data}
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
myhostname = front.{domain}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = static:ok
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_relay_restrictions =
"""
            + main_cf_extra
        )
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        self._started = False

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args], capture_output=True, text=True, check=False
        )

    def start(self, timeout: float = 30.0) -> None:
        """Create the queue directories, start, wait for the SMTP greeting."""
        check = self._postfix("check")
        if check.returncode != 0:
            raise RuntimeError(f"postfix check: {check.stderr}")
        result = self._postfix("start")
        if result.returncode != 0:
            raise RuntimeError(f"postfix start: {result.stderr}")
        self._started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("postfix did not greet")
            time.sleep(0.05)  # no event to wait on: a port that starts listening

    def master_pid(self) -> int | None:
        try:
            pid = int((self.data / "master.lock").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def maillog(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop this instance (only), then remove its directory."""
        try:
            if self._started:
                pid = self.master_pid()
                self._postfix("stop")
                deadline = time.monotonic() + 15
                while self.master_pid() is not None and time.monotonic() < deadline:
                    time.sleep(0.05)  # master.lock has no event to wait on
                if pid is not None and self.master_pid() is not None:
                    os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostfixInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
