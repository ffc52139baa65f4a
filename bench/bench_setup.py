"""bench_setup - the mail setup both benchmarked servers share.

SYNOPSIS
    from bench_setup import BenchServer, MailSetup

DESCRIPTION
    Postfix and pymta are configured alike, with Postfix's parameter
    names and meanings: nothing is a local destination (mydestination
    empty), one virtual mailbox domain bench.test whose users are listed
    in a texthash: virtual_mailbox_maps (no compiled map needed), each
    mapped to a Maildir (trailing "/") under virtual_mailbox_base, owned
    by one existing uid/gid; relay control permit_mynetworks,
    reject_unauth_destination with mynetworks 127.0.0.0/8; SMTP on one
    free loopback port; fsync left on.

    Each benchmark run sends to its own recipient (run1@bench.test,
    run2@...) so that runs never mix and a duplicate delivery shows up as
    more files than messages.

    MailSetup.main_cf(...) returns the common main.cf text, and
    MailSetup.master_cf(port) a master.cf with every service chroot-free
    and the smtpd listener on 127.0.0.1:port; servers add their own
    lines.

    BenchServer is the typing.Protocol each server driver implements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
LISTEN_HOST = "127.0.0.1"


class BenchServer(Protocol):
    """A mail server under test: started, measured, stopped."""

    name: str
    port: int

    def start(self) -> None:
        """Start the server and return once it greets on its port."""

    def stop(self) -> None:
        """Stop the server; safe to call twice or after a failed start."""

    def root_pids(self) -> list[int]:
        """Processes whose trees make up the server (for CPU accounting)."""

    def maildir_new(self, recipient: str) -> Path:
        """The new/ directory that mail to recipient lands in."""


@dataclass(frozen=True)
class MailSetup:
    """The users and mailbox owner shared by both servers."""

    recipients: tuple[str, ...]
    uid: int
    gid: int

    def vmailbox_text(self) -> str:
        """virtual_mailbox_maps source: address -> domain/user/ (Maildir)."""
        lines = []
        for address in self.recipients:
            local, domain = address.split("@", 1)
            lines.append(f"{address}\t{domain}/{local}/\n")
        return "".join(lines)

    def maildir_new(self, base: Path, recipient: str) -> Path:
        """Where mail to recipient lands under virtual_mailbox_base."""
        local, domain = recipient.split("@", 1)
        return base / domain / local / "new"

    def main_cf(self, *, config: Path, queue: Path, data: Path, mail: Path, log: Path) -> str:
        """The main.cf parameters both servers get."""
        return f"""\
# Written by bench/smtp_bench.py; removed with its temporary directory.
compatibility_level = 3.6
config_directory = {config}
queue_directory = {queue}
data_directory = {data}
maillog_file = {log}
maillog_file_prefixes = {log.parent}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $myhostname
inet_interfaces = {LISTEN_HOST}
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = texthash:{config}/vmailbox
virtual_mailbox_base = {mail}
virtual_minimum_uid = 1
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_relay_restrictions =
"""

    @staticmethod
    def master_cf(port: int) -> str:
        """Postfix's standard services, none chrooted, smtpd on the port."""
        return f"""\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{LISTEN_HOST}:{port} inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
