"""Build an imapd listener's factory from its (master.cf-overridden) Config.

Called by pymta.service for each master.cf ``imapd`` service. Wires the
mail store (one MaildirStore per process, shared with pop3d and passed in
by pymta.service), the shared passwd-file checker (``pymta_passdb``), the
realm (as pop3d's), the TLS context (``imapd_tls_*``; the embedded
default's self-signed certificate is made when
``pymta_tls_create_self_signed = yes``) and the trusted networks
(``imapd_plaintext_auth_networks``).

Writes: only a self-signed certificate, when configured so. Logs what it
creates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.logger import Logger

from pymta.auth.passdb import portal_from_config, shared_checker
from pymta.config.config import Config
from pymta.imap.factory import IMAPServerFactory
from pymta.imap.settings import IMAPSettings
from pymta.mailstore.interface import IMailStore
from pymta.netmatch import NetworkList
from pymta.pop3.service import virtual_mailbox_lookup

_log = Logger(namespace="pymta.imap")


def imap_tls(config: Config) -> Any:
    """The ServerTLS of imapd, or None (imapd_tls_security_level none or empty)."""
    from pymta.tls import ServerTLS, ensure_self_signed

    level = config.get("imapd_tls_security_level").strip().lower()
    cert = config.get("imapd_tls_cert_file").strip()
    if cert and level not in ("", "none") and config.get_bool("pymta_tls_create_self_signed"):
        key = config.get("imapd_tls_key_file").strip() or cert
        Path(cert).parent.mkdir(parents=True, exist_ok=True)
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        if ensure_self_signed(cert, key, config.get("myhostname")):
            _log.info("created a self-signed certificate in {cert}", cert=cert)
    return ServerTLS.from_config(config, "imapd")


def make_imap_factory(
    config: Config,
    reactor: Any,
    *,
    store: IMailStore | None = None,
) -> IMAPServerFactory:
    """The IMAPServerFactory of one imapd service."""
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
    return IMAPServerFactory(
        IMAPSettings.from_config(config), portal, imap_tls(config), reactor, trusted
    )
