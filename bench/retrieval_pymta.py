"""retrieval_pymta - a private pymta serving POP3 (and IMAP) for the benchmarks.

SYNOPSIS
    server = PymtaRetrievalServer(workdir, passwd_text, imap=False, extra_main_cf="")
    server.start(); ... server.pop3_port, server.imap_port ...; server.stop()

DESCRIPTION
    Writes workdir/pymta/etc/main.cf and master.cf - a pop3d listener and,
    with imap=True, an imapd listener on free 127.0.0.1 ports; the
    virtual domain bench.test; pymta_passdb = passwd-file:etc/passwd (the
    same Dovecot passwd-file the Dovecot instance reads, with its homes
    under this instance's mail root); TLS off (Dovecot runs with
    ssl = no); any extra main.cf lines given (--pymta-main-cf) - and runs

        python -c 'from twisted.scripts.twistd import run; run()' \\
            -n --pidfile= pymta --config workdir/pymta/etc

    with this checkout first on PYTHONPATH, in its own session.  start()
    returns once the listeners greet; stop() sends SIGTERM to twistd, then
    SIGKILL to that session's process group only if it has not exited in
    15 seconds.

    has_imapd() says whether this checkout's pymta builds an imapd
    listener yet (pymta.service.LISTENER_COMMANDS).

FILES
    workdir/pymta/etc/       main.cf, master.cf, passwd
    workdir/pymta/mail/      virtual_mailbox_base (the users' Maildirs)
    workdir/pymta/queue/, data/, maillog, twistd.log
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bench_measure import free_loopback_port
from bench_pymta import TwistdProcess
from retrieval_corpus import DOMAIN
from retrieval_run import LISTEN_HOST, wait_for_greeting

CHECKOUT = Path(__file__).resolve().parent.parent


def has_imapd() -> bool:
    """True when this checkout's pymta builds imapd listeners."""
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    from pymta.service import LISTENER_COMMANDS

    return "imapd" in LISTENER_COMMANDS


def pymta_main_cf(root: Path, extra: str = "") -> str:
    """main.cf of the retrieval instance."""
    return f"""\
# Written by bench/retrieval_pymta.py; removed with its temporary directory.
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
inet_interfaces = {LISTEN_HOST}
mynetworks = 127.0.0.0/8
mydestination =
alias_maps =
alias_database =
virtual_alias_maps =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {root}/mail
pymta_passdb = passwd-file:$config_directory/passwd
smtpd_tls_security_level = none
pop3d_tls_security_level = none
imapd_tls_security_level = none
# The benches hold many sessions per user, all from one loopback address.
imapd_max_userip_connections = 0
pop3d_max_userip_connections = 0
{extra}"""


def pymta_master_cf(pop3_port: int, imap_port: int | None) -> str:
    """master.cf of the retrieval instance: pop3d (and imapd) plus the unix services."""
    imap = f"{LISTEN_HOST}:{imap_port} inet n - n - - imapd\n" if imap_port else ""
    return (
        f"{LISTEN_HOST}:{pop3_port} inet n - n - - pop3d\n"
        + imap
        + """\
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
"""
    )


class PymtaRetrievalServer(TwistdProcess):
    """pymta under twistd -n with pop3d (and imapd) listeners."""

    name = "pymta"

    def __init__(
        self,
        workdir: Path,
        passwd_text: str,
        imap: bool = False,
        extra_main_cf: str = "",
        startup_timeout: float = 60.0,
    ) -> None:
        self.root = workdir / "pymta"
        self.config = self.root / "etc"
        self.mail_root = self.root / "mail"
        self.twistd_log = self.root / "twistd.log"
        self.passwd_text = passwd_text
        self.extra_main_cf = extra_main_cf
        self.pop3_port = free_loopback_port(LISTEN_HOST)
        self.imap_port = free_loopback_port(LISTEN_HOST) if imap else 0
        self.startup_timeout = startup_timeout

    def write_config(self) -> None:
        """Create the directories and configuration files."""
        for d in (self.config, self.mail_root, self.root / "queue", self.root / "data"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        (self.config / "main.cf").write_text(pymta_main_cf(self.root, self.extra_main_cf))
        (self.config / "master.cf").write_text(
            pymta_master_cf(self.pop3_port, self.imap_port or None)
        )
        (self.config / "passwd").write_text(self.passwd_text)

    def start(self) -> None:
        """Configure, start twistd, wait until the listeners greet."""
        self.write_config()
        proc = self.spawn()
        deadline = time.monotonic() + self.startup_timeout
        waits = [(self.pop3_port, b"+OK")]
        if self.imap_port:
            waits.append((self.imap_port, b"* OK"))
        try:
            for port, greeting in waits:
                wait_for_greeting(
                    LISTEN_HOST, port, greeting, deadline, alive=lambda: proc.poll() is None
                )
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"pymta: {e}\n{self.log_tail()}") from e
