"""Build the checker, realm and portals from main.cf.

Parameters (pymta-only, named in main.cf style after Dovecot's settings):

``pymta_passdb = passwd-file:$config_directory/passwd``
    The password database, ``type:name``. Only ``passwd-file:PATH`` (Dovecot's
    format, see pymta.auth.passwdfile) exists now.
``pymta_auth_failure_delay = 2s``, ``pymta_auth_failure_max_delay = 15s``
    A failed login's reply waits ``pymta_auth_failure_delay`` (Dovecot's
    auth_failure_delay). A client or user with recent failures waits before
    its next check, right password or wrong: the delay doubled per recent
    failure, up to the maximum (Dovecot's auth penalty: 2, 4, 8, 15 s); a
    penalised client's checks run one at a time, each that long after the
    previous one (:mod:`pymta.auth.throttle`).
``pymta_auth_client_concurrency_limit = 10``
    Login attempts of one client in progress at a time; one more is
    refused at once with a temporary error.
``pymta_auth_client_ipv4_prefix_length = 32``, ``pymta_auth_client_ipv6_prefix_length = 64``
    The network a client address is penalised as (24 makes a whole /24
    one client).

The penalty table is ``$data_directory/auth_penalty``, shared by every
reactor process and opened at the first login (after a root master has
dropped its privileges; :mod:`pymta.auth.penalty`); a process that cannot
open it logs a warning and keeps its penalties in memory.

The mailbox of a user is found by :class:`~pymta.auth.locate.MailboxLocator`
(passwd-file ``mail=``/``home``, then ``virtual_mailbox_maps`` under
``virtual_mailbox_base``).

Writes: the penalty table file. A bad ``pymta_passdb`` value is a ConfigError naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

from pymta.auth.checker import PasswdFileChecker, RunInThread
from pymta.auth.locate import MailboxLocator
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.penalty import IPenaltyTable, SharedPenaltyTable
from pymta.auth.realm import MailRealm
from pymta.auth.throttle import LoginThrottle
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.config.expand import expand
from pymta.mailstore.interface import IMailStore

PASSDB_DEFAULT = "passwd-file:$config_directory/passwd"

#: The penalty table's file name under data_directory.
PENALTY_FILE = "auth_penalty"


def config_value(config: Config, name: str, default: str) -> str:
    """A parameter's expanded value, with default when the defaults table lacks it."""
    if config.raw(name) is not None:
        return config.get(name)
    return expand(default, config.raw, (name,))


def passwd_path(config: Config) -> str:
    """The passwd-file path from ``pymta_passdb``; ConfigError for another type."""
    value = config_value(config, "pymta_passdb", PASSDB_DEFAULT).strip()
    kind, sep, path = value.partition(":")
    if not sep or kind != "passwd-file" or not path:
        src = config.source("pymta_passdb")
        raise ConfigError(
            f"bad value {value!r}: expected passwd-file:/path/to/passwd",
            src.filename if src else None,
            src.lineno if src else None,
            "pymta_passdb",
        )
    return path


def throttle_from_config(
    config: Config, clock: IReactorTime, table: IPenaltyTable | None = None
) -> LoginThrottle:
    """The login throttle of the ``pymta_auth_*`` parameters (memory table by default)."""
    base = config.get_time("pymta_auth_failure_delay")
    cap = config.get_time("pymta_auth_failure_max_delay")
    return LoginThrottle(
        clock,
        base=base,
        cap=max(base, cap),
        table=table,
        concurrency_limit=max(1, config.get_int("pymta_auth_client_concurrency_limit")),
        ipv4_prefix=min(32, max(0, config.get_int("pymta_auth_client_ipv4_prefix_length"))),
        ipv6_prefix=min(128, max(0, config.get_int("pymta_auth_client_ipv6_prefix_length"))),
    )


def penalty_table(config: Config) -> IPenaltyTable:
    """The penalty table file under ``data_directory``, shared by all processes
    (opened at the first login; in memory, with a warning, if it cannot be)."""
    return SharedPenaltyTable(os.path.join(config.get("data_directory"), PENALTY_FILE))


def checker_from_config(
    config: Config,
    clock: IReactorTime,
    run_in_thread: RunInThread | None = None,
    table: IPenaltyTable | None = None,
) -> PasswdFileChecker:
    """The passwd-file checker of ``pymta_passdb`` (one per process, shared by protocols)."""
    passwd = PasswdFile(passwd_path(config), clock)
    throttle = throttle_from_config(config, clock, table)
    return PasswdFileChecker(passwd, clock, throttle=throttle, run_in_thread=run_in_thread)


_shared: dict[str, PasswdFileChecker] = {}


def shared_checker(config: Config, clock: IReactorTime) -> PasswdFileChecker:
    """One checker per passwd-file in this process, so POP3, IMAP and SMTP AUTH
    share one throttle (Dovecot's single auth process); its penalty table is
    the file every process of this pymta shares."""
    path = passwd_path(config)
    checker = _shared.get(path)
    if checker is None:
        checker = checker_from_config(config, clock, table=penalty_table(config))
        _shared[path] = checker
    return checker


def realm_from_config(
    config: Config,
    store: IMailStore,
    checker: PasswdFileChecker,
    virtual_mailbox_lookup: Callable[[str], str | None] | None = None,
) -> MailRealm:
    """The mail realm: passwd-file locations, then virtual_mailbox_maps under its base.

    virtual_mailbox_lookup looks an address up in ``virtual_mailbox_maps``
    (the caller opens the tables; None when there are none).
    """
    locator = MailboxLocator(
        checker.passwd, virtual_mailbox_lookup, config.get("virtual_mailbox_base")
    )
    return MailRealm(store, locator)


def portal_from_config(
    config: Config,
    store: IMailStore,
    clock: IReactorTime,
    virtual_mailbox_lookup: Callable[[str], str | None] | None = None,
    checker: PasswdFileChecker | None = None,
) -> Portal:
    """A Portal (realm + passwd-file checker) for one protocol; pass one shared checker."""
    if checker is None:
        checker = checker_from_config(config, clock)
    realm = realm_from_config(config, store, checker, virtual_mailbox_lookup)
    return Portal(realm, [checker])
