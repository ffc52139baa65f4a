"""Build a pop3d listener's factory from its (master.cf-overridden) Config.

Called by pymta.service for each master.cf ``pop3d`` service. Wires, in
order: the Maildir store (``MaildirStore``), the shared passwd-file checker
(``pymta_passdb``, one per process so every protocol shares the failure
throttle), the realm (passwd-file ``mail=``/``home``, then
``virtual_mailbox_maps`` under ``virtual_mailbox_base``), the TLS context
(``pop3d_tls_*``; the self-signed certificate of the embedded default is
made when ``pymta_tls_create_self_signed = yes``) and the trusted networks
(``pop3d_plaintext_auth_networks``). With ``pop3d_tls_wrappermode = yes``
the factory is wrapped in TLS (POP3S, port 995): TLS from the first byte,
STLS not offered.

Writes: only a self-signed certificate, when configured so. Logs what it
creates.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from pymta.auth.locate import virtual_mailbox_lookup
from pymta.auth.passdb import portal_from_config, shared_checker
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.mailstore.interface import IMailStore
from pymta.netmatch import NetworkList
from pymta.pop3.factory import POP3ServerFactory
from pymta.tls import listener_tls

_log = Logger(namespace="pymta.pop3")


def pop3_tls(config: Config) -> Any:
    """The ServerTLS of pop3d, or None (pop3d_tls_security_level none or empty)."""
    return listener_tls(config, "pop3d")


def make_pop3_factory(
    config: Config,
    reactor: Any,
    *,
    store: IMailStore | None = None,
) -> Any:
    """The POP3ServerFactory of one pop3d service (wrapped in TLS with
    ``pop3d_tls_wrappermode = yes``)."""
    if store is None:
        from pymta.mailstore.maildir import MaildirStore

        store = MaildirStore(reactor, config.get("myhostname"))
    checker = shared_checker(config, reactor)
    portal = portal_from_config(
        config, store, reactor, virtual_mailbox_lookup(config), checker=checker
    )
    trusted = NetworkList(
        config.get_list("pop3d_plaintext_auth_networks"), "pop3d_plaintext_auth_networks"
    )
    tls = pop3_tls(config)
    factory = POP3ServerFactory(config, portal, tls, reactor, trusted)
    if not config.get_bool("pop3d_tls_wrappermode"):
        return factory
    if tls is None:
        raise ConfigError(
            "pop3d_tls_wrappermode = yes needs pop3d_tls_cert_file and pop3d_tls_key_file "
            "and pop3d_tls_security_level may or encrypt",
            parameter="pop3d_tls_wrappermode",
        )
    # POP3S (port 995): TLS from the first byte; STLS is then not offered.
    factory.tls = None
    return TLSMemoryBIOFactory(tls, False, factory)
