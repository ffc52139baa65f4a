"""Build a managesieved listener's factory from its (master.cf-overridden) Config.

Called by :mod:`pymta.service` for each master.cf ``managesieved``
service. Wires the passwd-file checker IMAP and POP3 share
(``pymta_passdb``, with its failure delays), the users' homes (the
passwd-file home, else the Maildir, as :mod:`pymta.sieve.storage` finds
scripts), TLS from the ``imapd_tls_*`` parameters (one certificate for
the mailbox protocols, as Dovecot's ``ssl_cert``), plaintext logins from
``imapd_plaintext_auth_networks``, ``pymta_managesieve_timeout`` and the
Sieve limits. Writes nothing itself; logs nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from pymta.auth.passdb import shared_checker
from pymta.config.config import Config
from pymta.lmtpd.users import LookupFailed, RecipientDirectory
from pymta.managesieve.protocol import ManageSieveProtocol
from pymta.netmatch import NetworkList
from pymta.sieve.filter import RunInThread, thread_runner
from pymta.tls import listener_tls

_LOOPBACK = NetworkList(["127.0.0.0/8", "[::1]/128"], "loopback")


class ManageSieveFactory(Factory):
    """Makes one :class:`ManageSieveProtocol` per connection."""

    def __init__(
        self,
        checker: Any,
        homes: RecipientDirectory,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        *,
        tls: Any = None,
        plaintext_networks: NetworkList | None = None,
        timeout: float = 600.0,
        max_script_size: int = 1 << 20,
        max_redirects: int = 4,
    ) -> None:
        self.checker = checker
        self._homes = homes
        self.clock = clock
        self.run_in_thread = run_in_thread
        self.tls = tls
        self._plaintext = plaintext_networks
        self.timeout = timeout
        self.max_script_size = max_script_size
        self.max_redirects = max_redirects

    def buildProtocol(self, addr: Any) -> ManageSieveProtocol:
        return ManageSieveProtocol(self)

    def plaintext_allowed(self, ip: str) -> bool:
        """Whether a client at ``ip`` may log in without TLS."""
        if not ip:
            return False
        return _LOOPBACK.contains(ip) or (
            self._plaintext is not None and self._plaintext.contains(ip)
        )

    def home_for(self, user: str) -> str | None:
        """Where the user's scripts are (None: the user has no mailbox)."""
        try:
            mailbox = self._homes(user)
        except LookupFailed:
            return None
        return mailbox.home if mailbox is not None else None


def make_managesieve_factory(config: Config, reactor: Any) -> ManageSieveFactory:
    """The ManageSieveFactory of one managesieved service."""
    from pymta.auth.locate import virtual_mailbox_lookup

    checker = shared_checker(config, reactor)
    homes = RecipientDirectory(
        checker.passwd,
        virtual_mailbox_lookup(config),
        config.get("virtual_mailbox_base"),
    )
    return ManageSieveFactory(
        checker,
        homes,
        reactor,
        thread_runner(reactor),
        tls=listener_tls(config, "imapd"),
        plaintext_networks=NetworkList(
            config.get_list("imapd_plaintext_auth_networks"), "imapd_plaintext_auth_networks"
        ),
        timeout=config.get_time("pymta_managesieve_timeout"),
        max_script_size=config.get_int("pymta_sieve_max_script_size"),
        max_redirects=config.get_int("pymta_sieve_max_redirects"),
    )
