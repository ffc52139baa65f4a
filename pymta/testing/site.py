"""The configuration of a test mail server, written from code.

pymta-only, shared by :class:`pymta.testing.MailServer` (a subprocess) and
:class:`pymta.testing.EmbeddedMailServer` (the test's own reactor): users
(address -> password), aliases (address -> addresses) and extra main.cf
lines become main.cf, master.cf, the vmailbox and virtual tables and a
passwd-file. SMTP, POP3 and IMAP listen on kernel-chosen loopback ports,
each on a spelling of the loopback address of its own so that the
listeners can be told apart. Writes: the configuration directory.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path

from pymta.testing.process import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE

__all__ = ["DEFAULT_USERS", "MASTER_CF", "Mailbox", "write_site"]

DEFAULT_USERS = {"alice@example.test": "alice-pw", "bob@example.test": "bob-pw"}

#: SMTP on "127.0.0.1:0", POP3 on "[127.0.0.1]:0", IMAP on "localhost:0".
MASTER_CF = DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE
SMTP_SERVICE_NAME, POP3_SERVICE_NAME, IMAP_SERVICE_NAME = (
    "127.0.0.1:0",
    "[127.0.0.1]:0",
    "localhost:0",
)

_MAIN_CF = """\
myhostname = mx.{domain}
mydomain = {domain}
queue_directory = {root}/spool
data_directory = {root}/lib
inet_interfaces = loopback-only
mynetworks = 127.0.0.0/8 [::1]/128
mydestination = $myhostname, localhost
alias_maps = texthash:$config_directory/aliases
alias_database = texthash:$config_directory/aliases
virtual_mailbox_domains = {domains}
virtual_mailbox_maps = texthash:$config_directory/vmailbox
virtual_mailbox_base = {root}/mail
# Local mail (root@localhost, bounces to postmaster) stays in the test's
# directory, never in the host's /var/mail.
mail_spool_directory = {root}/spool-mail
virtual_alias_maps = texthash:$config_directory/virtual
recipient_delimiter = +
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
pymta_dns_servers = 127.0.0.1:9
pymta_auth_failure_delay = 100ms
pymta_auth_failure_max_delay = 100ms
"""


def write_site(
    config_dir: Path,
    root: Path,
    users: Mapping[str, str],
    aliases: Mapping[str, Iterable[str]],
    main_cf: str = "",
    processes: int = 1,
) -> None:
    """Write every configuration file of a test server into config_dir;
    its state (queue, mailboxes) lives under root."""
    domains = sorted({a.rpartition("@")[2].lower() for a in [*users, *aliases]} or {"example.test"})
    text = _MAIN_CF.format(root=root, domain=domains[0], domains=", ".join(domains))
    if processes != 1:
        text += f"pymta_processes = {processes}\n"
    config_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "main.cf": text + main_cf,
        "master.cf": MASTER_CF,
        "vmailbox": "".join(f"{a} {a.rpartition('@')[2]}/{a.rpartition('@')[0]}/\n" for a in users),
        "passwd": "".join(f"{a}:{{PLAIN}}{p}::::::\n" for a, p in users.items()),
        "virtual": "".join(f"{a} {', '.join(t)}\n" for a, t in aliases.items()),
        "aliases": f"postmaster: {next(iter(users))}\n" if users else "",
    }
    for name, content in files.items():
        (config_dir / name).write_text(content)


def mailbox_path(root: Path, address: str) -> Path:
    """Where a user's Maildir is (virtual_mailbox_base/domain/user/)."""
    local, _, domain = address.rpartition("@")
    return root / "mail" / domain.lower() / local


class Mailbox:
    """One user's Maildir: what was delivered to the INBOX."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def raw(self) -> list[bytes]:
        """Each message's bytes, oldest first (by file name, as delivered)."""
        found: list[tuple[str, bytes]] = []
        for sub in ("new", "cur"):
            folder = self.path / sub
            if folder.is_dir():
                found.extend((p.name, p.read_bytes()) for p in folder.iterdir())
        return [data for _, data in sorted(found)]

    def messages(self) -> list[EmailMessage]:
        """Each message parsed with the standard library's email package."""
        return [
            email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
            for data in self.raw()
        ]

    def __len__(self) -> int:
        return len(self.raw())
