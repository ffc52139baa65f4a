"""Build an imapd listener's factory from its (master.cf-overridden) Config.

Called by pymta.service for each master.cf ``imapd`` service. Wires the
mail store (one MaildirStore per process, shared with pop3d and passed in
by pymta.service), the shared passwd-file checker (``pymta_passdb``), the
realm (as pop3d's), the TLS context (``imapd_tls_*``; the embedded
default's self-signed certificate is made when
``pymta_tls_create_self_signed = yes``) and the trusted networks
(``imapd_plaintext_auth_networks``), the quotas (``pymta_quota_rule``
and the passwd-file's ``userdb_quota_rule``, :mod:`pymta.imap.quota_commands`).
With ``imapd_tls_wrappermode = yes`` (IMAPS, port 993) the listener speaks
TLS from the first byte.

Writes: only a self-signed certificate, when configured so. Logs what it
creates.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from pymta.auth.locate import virtual_mailbox_lookup
from pymta.auth.passdb import portal_from_config, shared_checker
from pymta.auth.passwdfile import PasswdFileError
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.imap.factory import IMAPServerFactory
from pymta.imap.quota import IMAPQuota
from pymta.imap.scan import shared_scanning
from pymta.imap.settings import IMAPSettings
from pymta.mailstore.interface import IMailStore
from pymta.netmatch import NetworkList
from pymta.quota.policy import QuotaPolicy, user_rule
from pymta.tls import listener_tls
from pymta.userip import UserIPLimit

_log = Logger(namespace="pymta.imap")


def imap_tls(config: Config) -> Any:
    """The ServerTLS of imapd, or None (imapd_tls_security_level none or empty)."""
    return listener_tls(config, "imapd")


def imap_quota(config: Config, checker: Any) -> IMAPQuota:
    """QUOTA's limits: ``pymta_quota_rule`` and the users' passwd-file rules."""
    passwd = checker.passwd

    def rule_for(user: str) -> str | None:
        try:
            entry = passwd.lookup(user)
        except PasswdFileError:
            return None
        return user_rule(entry.extra) if entry is not None else None

    return IMAPQuota(QuotaPolicy.from_config(config), rule_for)


def make_imap_factory(
    config: Config,
    reactor: Any,
    *,
    store: IMailStore | None = None,
) -> Any:
    """The IMAPServerFactory of one imapd service (wrapped in TLS with
    ``imapd_tls_wrappermode = yes``)."""
    if store is None:
        from pymta.mailstore.maildir import MaildirStore

        store = MaildirStore(reactor, config.get("myhostname"))
    checker = shared_checker(config, reactor)
    portal = portal_from_config(
        config, store, reactor, virtual_mailbox_lookup(config), checker=checker
    )
    trusted = NetworkList(
        config.get_list("imapd_plaintext_auth_networks"), "imapd_plaintext_auth_networks"
    )
    tls = imap_tls(config)
    scan_in_thread, scan_gate = shared_scanning(reactor)
    factory = IMAPServerFactory(
        IMAPSettings.from_config(config),
        portal,
        tls,
        reactor,
        trusted,
        scan_in_thread=scan_in_thread,
        scan_gate=scan_gate,
    )
    factory.userip = UserIPLimit.from_config(config, "imapd", reactor)
    factory.quota = imap_quota(config, checker)
    if not config.get_bool("imapd_tls_wrappermode"):
        return factory
    if tls is None:
        raise ConfigError(
            "imapd_tls_wrappermode = yes needs imapd_tls_cert_file and imapd_tls_key_file "
            "and imapd_tls_security_level may or encrypt"
        )
    # IMAPS (port 993): TLS from the first byte; STARTTLS is then not offered.
    factory.tls = None
    return TLSMemoryBIOFactory(tls, False, factory)
