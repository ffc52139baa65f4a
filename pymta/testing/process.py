"""A real pymta (``twistd -n pymta``) in a subprocess, for tests.

pymta-only (DESIGN: the fixture none of Postfix or Dovecot ships). The
instance gets its own configuration and state under one directory and
listens on loopback ports chosen by the kernel (port 0); the class learns
them from the server's own "listening on" log lines. Waiting is always on
an event (a log line, a file changed, seen through inotify), with a
deadline, never a sleep. :class:`PymtaProcess` is the low-level form that
takes main.cf and master.cf text (pymta's own end-to-end tests use it);
:class:`pymta.testing.MailServer` is the friendly one.

Writes: the directory it is given. Starts: one twistd process, stopped by
:meth:`PymtaProcess.stop` or killed when the ``with`` block ends.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: The directory that holds the pymta package: on the server's PYTHONPATH,
#: so that a checkout and an installed pymta both run their own code.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_MASTER_CF = """\
127.0.0.1:0 inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
"""

DEFAULT_MAIN_CF = """\
myhostname = mx.example.test
mydomain = example.test
queue_directory = {root}/spool
data_directory = {root}/lib
inet_interfaces = loopback-only
mynetworks = 127.0.0.0/8
mydestination = $myhostname, localhost
alias_maps = texthash:$config_directory/aliases
alias_database = texthash:$config_directory/aliases
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$config_directory/vmailbox
virtual_mailbox_base = {root}/mail
# Local mail (root@localhost, bounces to postmaster) stays in the test's
# directory, never in the host's /var/mail.
mail_spool_directory = {root}/spool-mail
virtual_alias_maps = texthash:$config_directory/virtual
recipient_delimiter = +
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# Tests send no DNS query off this machine: a loopback port nobody serves.
pymta_dns_servers = 127.0.0.1:9
"""

_LISTENING = re.compile(r"(\S+) listening on (\S+):(\d+)")

#: master.cf line of a POP3 listener on a kernel-chosen port (its service name
#: differs from the SMTP one, "127.0.0.1:0", so that both can be told apart).
POP3_SERVICE = "[127.0.0.1]:0 inet n - n - - pop3d\n"

#: master.cf line of an IMAP listener on a kernel-chosen loopback port (a third
#: spelling of the address, so that its service name is unique too).
IMAP_SERVICE = "localhost:0 inet n - n - - imapd\n"

#: Logins of the test users (PLAIN keeps the tests fast; the schemes have
#: their own tests).
DEFAULT_PASSWD = "alice@example.test:{PLAIN}alice-pw::::::\nbob@example.test:{PLAIN}bob-pw::::::\n"


_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100


#: How often wait_for_file looks again when the kernel gives it no inotify
#: instance (fs.inotify.max_user_instances reached by other programs).
POLL_WITHOUT_INOTIFY = 0.05


def _inotify_init() -> int | None:
    """A non-blocking inotify descriptor, or None when the kernel has none
    to give (EMFILE: the user's instances are used up; ENFILE, ENOSYS)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.EMFILE, errno.ENFILE, errno.ENOSYS):
            return None
        raise OSError(err, "inotify_init1")
    return int(fd)


def wait_for_file(path: Path, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ready() holds, woken by inotify events in path's directory
    (a file another process writes: a maillog_file, a Maildir's new/).

    ``path`` is a directory, or a file in one. What does not exist yet (a
    Maildir the server makes on its first delivery) is waited for through
    its nearest existing ancestor; a directory is watched once it appears.
    A ready() that finds its file missing (FileNotFoundError) is not ready.
    Where the kernel gives no inotify instance (other programs of the same
    user hold them all), ready() is asked again every
    POLL_WITHOUT_INOTIFY seconds instead: slower to notice, never a
    failure of the test that waits."""
    fd = _inotify_init()
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
        watched: set[Path] = set()
        deadline = time.monotonic() + timeout
        while True:
            nearest = path if path.is_dir() else path.parent
            while not nearest.exists():
                nearest = nearest.parent
            if fd is not None and nearest not in watched:
                if libc.inotify_add_watch(fd, str(nearest).encode(), mask) < 0:
                    raise OSError(ctypes.get_errno(), f"inotify_add_watch {nearest}")
                watched.add(nearest)
            try:
                if ready():
                    return
            except FileNotFoundError:
                pass  # what ready() reads is not there yet: not ready
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{path}: condition not met in {timeout}s")
            if fd is None:
                time.sleep(min(POLL_WITHOUT_INOTIFY, remaining))
                continue
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                try:
                    os.read(fd, 65536)
                except BlockingIOError:
                    pass
    finally:
        if fd is not None:
            os.close(fd)


class PymtaProcess:
    """One pymta instance (``twistd -n pymta``) in a directory of its own."""

    def __init__(
        self,
        root: Path,
        main_cf_extra: str = "",
        master_cf: str = DEFAULT_MASTER_CF,
        vmailbox: str = (
            "alice@example.test example.test/alice/\nbob@example.test example.test/bob/\n"
        ),
        aliases: str = "postmaster: alice@example.test\n",
        virtual: str = "info@example.test alice@example.test, bob@example.test\n",
        passwd: str = DEFAULT_PASSWD,
    ) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "main.cf").write_text(DEFAULT_MAIN_CF.format(root=root) + main_cf_extra)
        (self.config_dir / "master.cf").write_text(master_cf)
        (self.config_dir / "vmailbox").write_text(vmailbox)
        (self.config_dir / "aliases").write_text(aliases)
        (self.config_dir / "virtual").write_text(virtual)
        (self.config_dir / "passwd").write_text(passwd)
        self.listeners = sum(
            1 for line in master_cf.splitlines() if " inet " in f" {line} " and line[:1] not in "# "
        )
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    # life cycle -----------------------------------------------------------

    def start(
        self,
        timeout: float = 30.0,
        listeners: int | None = None,
        twistd_options: Sequence[str] = (),
        python: str | None = None,
    ) -> PymtaProcess:
        """Start twistd and wait until its listeners (default: every inet
        service of master.cf) have bound their ports. ``twistd_options``
        (``-u nobody``, ``--pidfile PATH``) go before the plugin name, after
        the harness's own ``-n --pidfile=``, which they may override.
        ``python`` runs twistd (default: this interpreter); one that other
        users may run is needed for worker processes after ``-u``."""
        if listeners is None:
            listeners = self.listeners
        env = dict(os.environ)
        path = [str(PACKAGE_ROOT), env.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        env.pop("MAIL_CONFIG", None)
        self.lines = []
        self.ports = {}
        self.process = subprocess.Popen(
            [
                python or sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                *twistd_options,
                "pymta",
                "--config",
                str(self.config_dir),
            ],
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.ports) < listeners:
                if self.process.poll() is not None:
                    raise RuntimeError("pymta exited at start:\n" + "".join(self.lines))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("pymta did not start:\n" + "".join(self.lines))
                self._changed.wait(min(remaining, 0.5))
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.ports[match.group(1)] = int(match.group(3))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: the crash the queue must survive."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)
        if self._reader is not None:
            self._reader.join(30)

    def __enter__(self) -> PymtaProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    # observations -----------------------------------------------------------

    @property
    def smtp_port(self) -> int:
        return self.ports["127.0.0.1:0"]

    @property
    def pop3_port(self) -> int:
        return self.ports["[127.0.0.1]:0"]

    @property
    def imap_port(self) -> int:
        return self.ports["localhost:0"]

    def log(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[str]:
        """Wait until `count` log lines match the regular expression; return them."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process is not None
                    and self.process.poll() is not None
                    and not self._reader_alive()
                ):
                    raise TimeoutError(
                        f"no {count} log line(s) matching {pattern!r}:\n" + "".join(self.lines)
                    )
                self._changed.wait(min(remaining, 1.0))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def maildir(self, user: str, domain: str = "example.test") -> Path:
        return self.root / "mail" / domain / user

    def messages(self, user: str, domain: str = "example.test") -> list[bytes]:
        """The contents of every message in the user's Maildir new/ and cur/."""
        base = self.maildir(user, domain)
        found: list[bytes] = []
        for sub in ("new", "cur"):
            folder = base / sub
            if folder.is_dir():
                found.extend(p.read_bytes() for p in sorted(folder.iterdir()))
        return found
